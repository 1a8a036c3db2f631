"""CLI runs of train/model_trainer.py on a tiny multi-view frame tree (resnet10, 32-64 px, CPU)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_dataset import make_tiny_dataset

from train import model_trainer
from train.losses import CoConLossConfig
from train.model_3d import DPCRNN
from train.model_trainer import get_args_parser, main
from train.pretrain_loop import RunContext, accumulation_group, train_one_epoch
from train.pretrain_run import TrainState, experiment_dir
from utils.checkpoint import CheckpointError, load_checkpoint
from utils.distributed import DistInfo
from utils.files import append_jsonl

torch.set_num_threads(1)

ALL_VIEWS = ["imgs", "flow", "seg", "kphm"]


@pytest.fixture(scope="module")
def csv_root(tmp_path_factory):
    # 6 videos per class: 5 in the train list, 1 per class held out -> 8 training clips = 4 batches of 2.
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny"), videos_per_class=6, num_frames=20)


def _args(csv_root, save_dir, *extra, views="imgs_flow"):
    argv = ["--dataset", "tiny", "--net", "resnet10", "--img_dim", "32", "--modalities", views,
            "--num_seq", "4", "--seq_len", "2", "--ds", "2", "--pred_step", "2", "--batch_size", "2",
            "--num_workers", "0", "--save_dir", str(save_dir), "--val_fraction", "0.2", "--ft_freq", "0",
            "--print_freq", "1000", "--vis_log_freq", "1000", "--epochs", "1"]
    if csv_root is not None:
        argv += ["--csv_root", str(csv_root)]
    return get_args_parser().parse_args(argv + list(extra))


def _history(exp_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (exp_dir / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_epochs_write_checkpoints_best_copies_and_logs(csv_root, tmp_path):
    # 2 of each class's 5 videos held out: the probe's ridge classifier gets one per class to fit.
    args = _args(csv_root, tmp_path, "--epochs", "2", "--ft_freq", "1", "--vis_log_freq", "3", "--print_freq", "2",
                 "--val_fraction", "0.4", views="_".join(ALL_VIEWS))
    result = main(args)
    exp = result["exp_dir"]
    assert exp == experiment_dir(args) and exp.name == (
        "cocon_tiny-32_resnet10_imgs_flow_seg_kphm_bs2_seq4_len2_ds2_pred2_lr0.001_sync10_dot10_temp0.07_split1_seed0")
    assert json.loads((exp / "args.json").read_text())["modalities"] == "imgs_flow_seg_kphm"
    for view in ALL_VIEWS:
        for name in ("epoch1", "epoch2", "best"):
            ckpt = load_checkpoint(exp / "model" / f"mode_{view}_{name}.pth.tar")  # weights_only
            assert ckpt["mode"] == view and ckpt["net"] == "resnet10" and ckpt["iteration"] > 0
            assert set(ckpt) >= {"epoch", "state_dict", "best_acc", "optimizer", "scheduler", "args"}
            assert not any(k.startswith("module.") for k in ckpt["state_dict"])
        assert load_checkpoint(exp / "model" / f"mode_{view}_epoch2.pth.tar")["epoch"] == 2
    # The checkpoint loads into a fresh encoder of that view, every key matching.
    model = DPCRNN("resnet10", 17, 64, seq_len=2, num_seq=4, pred_step=2)
    model.load_state_dict(load_checkpoint(exp / "model" / "mode_kphm_epoch2.pth.tar")["state_dict"])

    history = _history(exp)
    assert [h["epoch"] for h in history] == [1, 2] and history[0]["best"] == ALL_VIEWS
    for view in ALL_VIEWS:
        # Each view's best copy is its own best epoch (first of ties: only a strict gain rewrites it).
        accs = [h["val"][f"cpc_top1/{view}"] for h in history]
        best = load_checkpoint(exp / "model" / f"mode_{view}_best.pth.tar")
        assert best["epoch"] == 1 + accs.index(max(accs)) and best["best_acc"] == max(accs)
        assert [view in h["best"] for h in history] == [True, accs[1] > accs[0]]
    assert history[-1]["iteration"] == 6 and history[-1]["steps"] == 6  # 6 training clips, batch 2
    for key in ("cpc/imgs", "cpc_top1/kphm", "sync/imgs-flow", "coop/seg-kphm", "total"):
        assert key in history[0]["train"] and key in history[0]["val"]
    probe = history[0]["probe"]
    assert {"ridge_acc/imgs", "kmeans_ari/flow", "kmeans_vmeasure/seg", "kmeans_nmi/imgs-kphm"} <= set(probe)
    assert set(history[0]["lr"]) >= {"imgs/backbone", "kphm/head"}

    events = list((exp / "img").glob("events.out.tfevents.*"))
    assert len(events) == 1
    raw = events[0].read_bytes()
    for tag in (b"train/cpc/flow", b"train/coop/imgs-seg", b"val/cpc_top1", b"lr/seg/head", b"probe/ridge_acc/imgs",
                b"input/kphm", b"input/imgs", b"cos_sim/imgs-flow/positive", b"cos_sim/seg-kphm/negative"):
        assert tag in raw, tag


@pytest.mark.slow
def test_each_view_keeps_its_own_best_epoch(csv_root, tmp_path, monkeypatch):
    # Scripted validation accuracies: the views peak at different epochs (imgs at 2, flow at 3), and the
    # mean over views (0.45, 0.35, 0.55) would pick epoch 3 for both.
    scripted = {"imgs": [0.3, 0.5, 0.4], "flow": [0.6, 0.2, 0.7]}
    real_evaluate = model_trainer.evaluate

    def evaluate(*args, **kwargs):
        stats, features, labels = real_evaluate(*args, **kwargs)
        epoch = len(_history(exp)) if (exp / "log.jsonl").exists() else 0
        stats.update({f"cpc_top1/{view}": accs[epoch] for view, accs in scripted.items()})
        return stats, features, labels

    args = _args(csv_root, tmp_path, "--epochs", "3", "--sampling", "center")
    exp = experiment_dir(args)
    monkeypatch.setattr(model_trainer, "evaluate", evaluate)
    main(args)
    history = _history(exp)
    assert [h["best"] for h in history] == [["imgs", "flow"], ["imgs"], ["flow"]]
    for view in scripted:
        accs = [h["val"][f"cpc_top1/{view}"] for h in history]
        best = load_checkpoint(exp / "model" / f"mode_{view}_best.pth.tar")
        assert best["epoch"] == 1 + accs.index(max(accs)) and best["best_acc"] == max(accs)
        assert load_checkpoint(exp / "model" / f"mode_{view}_epoch3.pth.tar")["best_acc"] == max(accs)


def _run_and_load(args) -> tuple[Path, dict]:
    exp = main(args)["exp_dir"]
    views = args.modalities.split("_")
    return exp, {v: load_checkpoint(exp / "model" / f"mode_{v}_epoch{args.epochs}.pth.tar") for v in views}


@pytest.mark.slow
def test_resume_equals_straight_run(csv_root, tmp_path):
    _, straight = _run_and_load(_args(csv_root, tmp_path / "a", "--epochs", "2"))
    exp, _ = _run_and_load(_args(csv_root, tmp_path / "b", "--epochs", "1"))
    # A run killed during epoch 2 left only epoch 1's checkpoints: resume from the folder.
    _, resumed = _run_and_load(_args(csv_root, tmp_path / "b", "--epochs", "2", "--resume", str(exp / "model")))
    for view in ("imgs", "flow"):
        a, b = straight[view], resumed[view]
        assert a["epoch"] == b["epoch"] == 2 and a["iteration"] == b["iteration"] == 8
        for key, tensor in a["state_dict"].items():
            assert torch.equal(tensor, b["state_dict"][key]), key
        for pid, pstate in a["optimizer"]["state"].items():
            assert torch.equal(pstate["exp_avg"], b["optimizer"]["state"][pid]["exp_avg"])
        assert a["scheduler"] == b["scheduler"] and a["best_acc"] == b["best_acc"]
    hist_a, hist_b = _history(tmp_path / "a" / exp.name), _history(exp)
    assert [h["epoch"] for h in hist_b] == [1, 2]
    assert hist_a[1]["train"] == hist_b[1]["train"] and hist_a[1]["val"] == hist_b[1]["val"]
    # The resumed run stays in its experiment folder: the original args.json is kept, the new flags written beside it.
    assert json.loads((exp / "args.json").read_text())["epochs"] == 1
    assert json.loads((exp / "args_resume1.json").read_text())["epochs"] == 2
    # Resuming from one view's checkpoint file picks the same epoch for every view; --start-epoch overrides.
    result = main(_args(csv_root, tmp_path / "c", "--epochs", "2", "--resume", str(exp / "model" / "mode_flow_epoch1.pth.tar"),
                        "--start-epoch", "2"))
    assert result["history"] == [] and result["exp_dir"] == exp and not (tmp_path / "c").exists()


@pytest.mark.parametrize("accum, steps", [(1, 4), (2, 2), (3, 2)])  # 3: after batch 3 and at the epoch's end
def test_grad_accum_steps_every_k_batches(csv_root, tmp_path, accum, steps):
    exp, ckpts = _run_and_load(_args(csv_root, tmp_path, "--grad_accum", str(accum), views="imgs"))
    adam_steps = {int(s["step"]) for s in ckpts["imgs"]["optimizer"]["state"].values()}
    assert adam_steps == {steps} and ckpts["imgs"]["steps"] == steps and ckpts["imgs"]["iteration"] == 4


def _batch(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"imgs": torch.randint(0, 256, (2, 4, 3, 2, 32, 32), dtype=torch.uint8, generator=g), "label": torch.zeros(2, dtype=torch.long),
            "index": torch.arange(2)}


def _step_gradients(batches: list[dict], grad_accum: int) -> list[torch.Tensor]:
    """The backbone's first-conv gradient at each optimiser step (SGD at lr 0: the weights never move)."""
    torch.manual_seed(0)
    model = DPCRNN("resnet10", 3, 32, seq_len=2, num_seq=4, pred_step=2)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):  # the GRU's dropout would make a batch's gradient depend on its turn
            module.p = 0.0
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    grads = []
    opt.register_step_pre_hook(lambda *_: grads.append(model.backbone.conv1.weight.grad.clone()))
    ctx = RunContext(models={"imgs": model}, optimizers={"imgs": opt}, schedulers={}, scaler=None, train_loader=batches,
                     val_loader=[], loss_cfg=CoConLossConfig(temperature=0.07), info=DistInfo(0, 1, 0, torch.device("cpu"), False),
                     amp_dtype=None, num_classes=2, exp_dir=Path("unused"))
    args = _args(None, "unused", "--grad_accum", str(grad_accum))
    state = TrainState()
    train_one_epoch(ctx, 0, state, args)
    assert state.steps == len(grads) and state.iteration == len(batches)
    return grads


def test_short_last_accumulation_group_is_weighted_like_a_full_one():
    assert [accumulation_group(i, 4, 3) for i in range(4)] == [(3, False), (3, False), (3, True), (1, True)]
    batches = [_batch(seed) for seed in range(4)]
    first, last = _step_gradients(batches, grad_accum=3)
    singles = [_step_gradients([b], grad_accum=1)[0] for b in batches]
    # A group's step is the mean gradient of its batches: 3 batches, then the epoch's last one alone.
    torch.testing.assert_close(first, sum(singles[:3]) / 3)
    torch.testing.assert_close(last, singles[3])


def test_log_lines_are_appended_whole_and_synced(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    for epoch in (1, 2):
        append_jsonl({"epoch": epoch, "val": {"x": 0.5}}, tmp_path / "log.jsonl")
    assert len(synced) == 2 and [h["epoch"] for h in _history(tmp_path)] == [1, 2]


def test_seed_split_and_temp_name_the_experiment(tmp_path):
    names = {experiment_dir(_args(None, tmp_path, *extra)).name
             for extra in ([], ["--seed", "1"], ["--split", "2"], ["--temp", "0.1"])}
    assert len(names) == 4


def test_restore_checkpoint_that_does_not_fill_the_encoder_fails(csv_root, tmp_path):
    flow = DPCRNN("resnet10", 2, 32, seq_len=2, num_seq=4, pred_step=2).state_dict()
    torch.save({"state_dict": flow}, tmp_path / "flow_no_mode.pth.tar")
    partial = {k: v for k, v in DPCRNN("resnet10", 3, 32, seq_len=2, num_seq=4, pred_step=2).state_dict().items()
               if not k.startswith("backbone.layer4.")}
    torch.save({"mode": "imgs", "state_dict": partial}, tmp_path / "imgs_partial.pth.tar")
    for name, match in (("flow_no_mode", "2 channels"), ("imgs_partial", "backbone parameters do not fit")):
        args = _args(csv_root, tmp_path / "runs", "--imgs_restore_ckpt", str(tmp_path / f"{name}.pth.tar"))
        with pytest.raises(CheckpointError, match=rf"--imgs_restore_ckpt .*{name}.*{match}"):
            main(args)
        assert not (tmp_path / "runs").exists()


def test_nan_loss_stops_naming_view_and_term(csv_root, tmp_path):
    bad = DPCRNN("resnet10", 2, 32, seq_len=2, num_seq=4, pred_step=2)
    with torch.no_grad():
        bad.network_pred[0].weight.fill_(float("nan"))
    torch.save({"mode": "flow", "state_dict": bad.state_dict()}, tmp_path / "bad_flow.pth.tar")
    args = _args(csv_root, tmp_path, "--flow_restore_ckpt", str(tmp_path / "bad_flow.pth.tar"))
    with pytest.raises(FloatingPointError, match=r"cpc/flow = nan") as err:
        main(args)
    assert "imgs" not in str(err.value) and "epoch 0, batch 0" in str(err.value)
    assert not list((experiment_dir(args) / "model").glob("*.pth.tar"))


@pytest.mark.slow
def test_training_lowers_the_loss(csv_root, tmp_path):
    """What learning guarantees with margin, not one trajectory. With the original's CPC scores ⟨p, z⟩/T² a
    16-step run at lr 1e-3 is chaotic (its path depends on the CPU's convolution kernels); scores divided once
    by T at lr 3e-4 descend steadily. Averaged over the last 3 of 8 epochs, the CPC loss of the two views is
    about half the first epoch's and far below chance (2 views × ln 4: 2 clips × 2 steps × 1 position per
    row). Over seeds 0-9, with AVX-512 and with AVX2 kernels (ONEDNN_MAX_CPU_ISA=AVX2): last/first 0.37-0.55,
    last CPC 1.20-1.68, total last/first 0.73-0.84, CPC top-1 (sum of views) up by 0.56-0.94."""
    exp = main(_args(csv_root, tmp_path, "--epochs", "8", "--sampling", "center", "--temp_division", "once",
                     "--lr", "3e-4"))["exp_dir"]
    epochs = [entry["train"] for entry in _history(exp)]

    def last_three(key: str) -> float:
        return sum(e[key] for e in epochs[-3:]) / 3

    first_cpc = epochs[0]["cpc/imgs"] + epochs[0]["cpc/flow"]
    last_cpc = last_three("cpc/imgs") + last_three("cpc/flow")
    assert last_cpc < 0.7 * first_cpc
    assert last_cpc < 0.9 * 2 * math.log(4)
    assert last_three("total") < 0.92 * epochs[0]["total"]
    first_top1 = epochs[0]["cpc_top1/imgs"] + epochs[0]["cpc_top1/flow"]
    assert last_three("cpc_top1/imgs") + last_three("cpc_top1/flow") > first_top1 + 0.3


@pytest.mark.parametrize("extra, error, match", [
    (["--modalities", "imgs_depth"], ValueError, r"--modalities .*depth"),
    (["--img_dim", "100"], ValueError, "--img_dim"),
    (["--pred_step", "4"], ValueError, "--pred_step"),
    (["--net", "resnet7"], ValueError, "--net"),
    (["--grad_accum", "0"], ValueError, "--grad_accum"),
    (["--val_fraction", "1.5"], ValueError, "--val_fraction"),
    (["--seg_restore_ckpt", "x.pth.tar"], ValueError, "--seg_restore_ckpt .* not in --modalities"),
    (["--imgs_restore_ckpt", "/no/such.pth.tar"], Exception, "/no/such.pth.tar does not exist"),
    (["--resume", "/no/such/model"], FileNotFoundError, "--resume /no/such/model"),
    (["--batch_size", "64"], ValueError, r"--batch_size: 64 clips per step exceed the 8 training videos of .*train_split01.csv"),
    (["--resume", "x", "--flow_restore_ckpt", "y"], ValueError, "--resume and --flow_restore_ckpt are exclusive"),
    (["--grad_diag_freq", "-1"], ValueError, "--grad_diag_freq must be >= 0"),
    (["--lr", "-1"], ValueError, "--lr must be > 0, got -1"),
    (["--wd", "-0.1"], ValueError, "--wd must be >= 0, got -0.1"),
])
def test_bad_flags_fail_at_start(csv_root, tmp_path, monkeypatch, extra, error, match):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(error, match=match):
        main(_args(csv_root, tmp_path, *extra))
    assert not (tmp_path / "runs").exists() and not list(tmp_path.glob("*/model/*.pth.tar"))


def test_missing_dataset_and_view_on_disk(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--dataset no_such_set.*write_csv.py"):
        main(_args(None, tmp_path, "--dataset", "no_such_set"))
    rgb_only = make_tiny_dataset(tmp_path / "rgb", videos_per_class=4, num_frames=10, views=("imgs",))
    with pytest.raises(FileNotFoundError, match=r"flow: 6 missing"):
        main(_args(rgb_only, tmp_path, views="imgs_flow"))


@pytest.mark.slow
def test_seed_command_line_help_runs_from_train_folder_and_root():
    root = Path(__file__).resolve().parents[1]
    for cwd, script in ((root / "train", "model_trainer.py"), (root, "train/model_trainer.py")):
        out = subprocess.run([sys.executable, script, "--help"], cwd=cwd, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "--imgs_restore_ckpt" in out.stdout and "--grad_accum" in out.stdout
        assert "fp16 with a grad scaler under DataParallel" in " ".join(out.stdout.split())
