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
    assert "| random init | 1 | – | 15.0 ± 7.1 | 30.0 ± 14.1 | – | – |" in markdown
    assert "| CoCon ensemble | 4 | synthetic | 75.0 ± 7.1 | – | – | – |" in markdown
    assert "flow view: dis optical flow" in markdown and "(mean ± std)" in markdown
    chart = demo.bar_chart(table, tmp_path / "results.png", "test", chance=10)
    assert chart.read_bytes()[:4] == b"\x89PNG"
