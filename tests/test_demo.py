import importlib.util
from pathlib import Path

import numpy as np

_SPEC = importlib.util.spec_from_file_location("demo", Path(__file__).resolve().parents[1] / "scripts" / "demo.py")
demo = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(demo)


def test_results_table_mean_and_spread_over_seeds(tmp_path):
    per_seed = {
        0: {"random init": {"top1": 0.10, "R@1": 0.2}, "CoCon ensemble": {"top1": 0.70}},
        1: {"random init": {"top1": 0.20, "R@1": 0.4}, "CoCon ensemble": {"top1": 0.80}},
    }
    table = demo.summarise(per_seed)
    assert np.allclose(table["random init"]["top1"], [10.0, 20.0])
    assert demo.fmt(table["random init"]["top1"]) == "15.0 ± 7.1"  # sample std of (10, 20)
    assert demo.fmt([42.0]) == "42.0" and demo.fmt(None) == "–"
    args = demo.get_args_parser().parse_args(["--seeds", "0", "1"])
    markdown = demo.markdown_table(table, args)
    # columns: frozen kNN R@1, linear probe, fine-tuned top-1, which clip, which moment; rows without results
    # are left out
    assert "| random init | 1 | – | 30.0 ± 14.1 | – | 15.0 ± 7.1 | – | – |" in markdown
    assert "| CoCon ensemble | 3 | synthetic | – | – | 75.0 ± 7.1 | – | – |" in markdown  # 3 views by default
    assert "| DPC |" not in markdown
    assert "flow view: dis optical flow" in markdown and "(mean ± std)" in markdown
    chart = demo.bar_chart(table, tmp_path / "results.png", "test", chance=10)
    assert chart.read_bytes()[:4] == b"\x89PNG"


def test_learning_curves_read_the_runs_logs(tmp_path):
    pre = tmp_path / "seed0" / "pretrain"
    for method, views in (("dpc", ["imgs"]), ("cocon", ["imgs", "flow"])):
        exp = pre / method / "exp"
        exp.mkdir(parents=True)
        lines = []
        for epoch in (1, 2):
            val = {f"cpc_top1/{v}": 0.1 * epoch for v in views}
            train = {"grad_norm/imgs/cpc": 1.0, "grad_norm/imgs/coop": 0.1} if method == "cocon" else {}
            if method == "cocon":
                val["agree/imgs-flow"] = 0.2 * epoch
            lines.append(demo.json.dumps({"epoch": epoch, "val": val, "train": train}))
        (exp / "log.jsonl").write_text("\n".join(lines) + "\n")
    ft = tmp_path / "seed0" / "finetune" / "random_imgs" / "exp"
    ft.mkdir(parents=True)
    (ft / "log.jsonl").write_text(demo.json.dumps({"epoch": 1, "val": {"top1": 0.3}}) + "\n")
    assert demo.read_jsonl(ft / "log.jsonl")[0]["val"]["top1"] == 0.3
    figure = demo.learning_curves(tmp_path, [0], tmp_path / "curves.png")
    assert figure.read_bytes()[:4] == b"\x89PNG"


def test_block_motion_and_pixel_change():
    keypoints = np.zeros((8, 17, 3), np.float32)
    keypoints[:, 9, 0] = np.arange(8) / 64  # one joint moving 1 px per frame at a 64-px input
    blocks = np.arange(1, 9).reshape(2, 4)  # 1-based frame indices, 2 blocks of 4
    poses = demo.block_poses(keypoints, blocks, 64)
    assert poses.shape == (2, 17, 2) and np.allclose(poses[1, 9] - poses[0, 9], [4, 0])
    still = np.full((2, 1, 1, 2, 2), 100, np.uint8)
    moving = still.copy()
    moving[1] = 151  # the second block 51/255 = 0.2 brighter
    within, across = demo.pixel_change([still, moving, still], [0, 0, 1])
    assert abs(within - 0.2 / 3) < 1e-6  # one of three clips changes by 0.2
    assert abs(across - 0.1) < 1e-6  # one pair of scene 0, one block of two differing by 0.2
    assert np.isnan(demo.pixel_change([still], [-1])[1])
