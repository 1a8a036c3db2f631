"""The whole CoCon story on the built-in synthetic dataset, with the project's own CLI scripts.

    python scripts/demo.py                       # what `make demo` runs (one seed, CPU sizes)
    python scripts/demo.py --seeds 0 1 2 --out runs/demo_3seeds --epochs 12 --ft_epochs 12

1. data: make_synthetic.py -> extract_frame.py -> write_csv.py -> extract_flow.py -> extract_features.py
2. pretrain, same backbone/epochs/batch: (a) CoCon on imgs_flow_seg_kphm, (b) DPC on imgs alone
3. evaluate the RGB encoders of (a), (b) and (c) random init: fine-tune + whole-video test (top-1) and
   retrieval (R@1, R@5); fine-tune CoCon's other views and fuse the four into the view ensemble
4. a table shaped like the paper's Table 6: results.md, results.json and results.png in --out

Every step is a subprocess running one of the repo's scripts; the exact commands are written to
<out>/commands.sh and each step's time to <out>/timings.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from utils.evaluation import write_json, write_text
from utils.metrics import save_figure

REPO = Path(__file__).resolve().parents[1]
COCON_VIEWS = ("imgs", "flow", "seg", "kphm")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--data_root", type=Path, default=REPO / "data" / "synthetic", help="dataset folder")
    data.add_argument("--classes", type=int, default=10, help="synthetic classes")
    data.add_argument("--videos_per_class", type=int, default=30, help="synthetic videos per class")
    data.add_argument("--frames", type=int, default=64, help="frames per synthetic video")
    data.add_argument("--flow_method", default="dis", choices=("tvl1", "farneback", "dis"),
                      help="optical flow of the flow view (dis: ~150 pairs/s here; tvl1: ~2)")
    model = parser.add_argument_group("model and schedule")
    model.add_argument("--net", default="resnet10", help="backbone of every encoder")
    model.add_argument("--img_dim", type=int, default=32, help="input side of every view (CPU-sized)")
    model.add_argument("--num_seq", type=int, default=5, help="blocks per clip")
    model.add_argument("--seq_len", type=int, default=4, help="frames per block")
    model.add_argument("--pred_step", type=int, default=2, help="predicted blocks")
    model.add_argument("--ds", type=int, default=2, help="frame stride")
    model.add_argument("--batch_size", type=int, default=16, help="clips per step")
    model.add_argument("--epochs", type=int, default=4, help="pretraining epochs (CoCon and DPC alike)")
    model.add_argument("--ft_epochs", type=int, default=5, help="fine-tuning epochs")
    model.add_argument("--ft_lr", type=float, default=1e-3, help="fine-tuning learning rate")
    run = parser.add_argument_group("run")
    run.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds; the table gives mean ± std")
    run.add_argument("--out", type=Path, default=REPO / "runs" / "demo", help="output folder")
    run.add_argument("--num_workers", type=int, default=2, help="data loading processes")
    return parser


class Runner:
    """Runs the repo's scripts as subprocesses, logging each command and its time."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.timings: dict[str, float] = {}
        self.commands: list[str] = []

    def __call__(self, name: str, script: str, *args: object) -> None:
        cmd = [sys.executable, str(REPO / script), *map(str, args)]
        self.commands.append(f"# {name}\n{shlex.join(cmd)}")
        write_text(self.out / "commands.sh", "\n".join(self.commands) + "\n")
        print(f"\n== {name}: {shlex.join([script, *map(str, args)])}", flush=True)
        start = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.timings[name] = round(time.perf_counter() - start, 1)
        write_json(self.out / "timings.json", self.timings)


def prepare_data(run: Runner, args: argparse.Namespace) -> Path:
    """Synthetic videos -> frames, split lists, flow, heatmaps and masks (each step resumable)."""
    root = args.data_root
    if not (root / "splits" / "classInd.txt").is_file():
        run("make synthetic videos", "process_data/make_synthetic.py", "--out", root, "--classes", args.classes,
            "--videos_per_class", args.videos_per_class, "--frames", args.frames, "--workers", 2)
    run("extract frames", "process_data/extract_frame.py", "--video_root", root / "videos",
        "--frame_root", root / "frame", "--dim", 128, "--workers", 2)
    csv_root = args.out / "csv"
    run("write split lists", "process_data/write_csv.py", "--dataset", "synthetic", "--frame_root", root / "frame",
        "--out", csv_root)
    run("extract flow", "process_data/extract_flow.py", "--frame_root", root / "frame", "--flow_root", root / "flow",
        "--method", args.flow_method, "--workers", 2)
    run("render heatmaps and masks", "process_data/extract_features.py", "--frame_root", root / "frame",
        "--backend", "annotations", "--annotations", root / "annotations", "--workers", 2)
    run("draw one clip in all views", "scripts/draw_views.py", "--csv_root", csv_root, "--out", args.out / "views.png")
    return csv_root


def common_flags(args: argparse.Namespace, csv_root: Path, seed: int) -> list[object]:
    return ["--dataset", "synthetic", "--csv_root", csv_root, "--net", args.net, "--img_dim", args.img_dim,
            "--num_seq", args.num_seq, "--seq_len", args.seq_len, "--ds", args.ds, "--seed", seed,
            "--num_workers", args.num_workers]


def pretrain(run: Runner, args: argparse.Namespace, csv_root: Path, seed: int, name: str, views: str) -> Path:
    """Pretrain one method; return its model/ folder."""
    save_dir = args.out / f"seed{seed}" / "pretrain" / name
    run(f"seed {seed}: pretrain {name} ({views})", "train/model_trainer.py", *common_flags(args, csv_root, seed),
        "--modalities", views, "--pred_step", args.pred_step, "--batch_size", args.batch_size,
        "--epochs", args.epochs, "--save_dir", save_dir, "--prefix", name, "--ft_freq", args.epochs,
        "--vis_log_freq", 100)
    return only(save_dir.glob("*/model"))


def finetune(run: Runner, args: argparse.Namespace, csv_root: Path, seed: int, name: str, view: str,
             pretrained: Path | str) -> dict:
    """Fine-tune one view's encoder and test it on whole videos; return the test results."""
    save_dir = args.out / f"seed{seed}" / "finetune" / f"{name}_{view}"
    run(f"seed {seed}: fine-tune + test {name} {view}", "test/test.py", *common_flags(args, csv_root, seed),
        "--modality", view, "--pretrain", pretrained, "--batch_size", args.batch_size, "--epochs", args.ft_epochs,
        "--lr", args.ft_lr, "--save_dir", save_dir)
    return json.loads(only(save_dir.glob("*/eval/*/test_results.json")).read_text())


def retrieval(run: Runner, args: argparse.Namespace, csv_root: Path, seed: int, name: str,
              pretrained: Path | str) -> dict:
    out_dir = args.out / f"seed{seed}" / "retrieval" / name
    run(f"seed {seed}: retrieval {name} imgs", "test/test.py", *common_flags(args, csv_root, seed),
        "--modality", "imgs", "--pretrain", pretrained, "--retrieval", "--linear_probe",
        "--batch_size", args.batch_size, "--out_dir", out_dir)
    recall = json.loads((out_dir / "retrieval.json").read_text())["recall"]
    probe = json.loads((out_dir / "linear_probe.json").read_text())
    return {"R@1": recall["1"], "R@5": recall["5"], "linear_probe": probe["test_top1"]}


def ensemble(run: Runner, args: argparse.Namespace, csv_root: Path, seed: int, probs: dict[str, str]) -> dict:
    out_dir = args.out / f"seed{seed}" / "ensemble"
    flags = [x for view, path in probs.items() for x in (f"--prob_{view}", path)]
    run(f"seed {seed}: ensemble {'+'.join(probs)}", "test/test.py", "--dataset", "synthetic", "--csv_root", csv_root,
        "--ensemble", 1, *flags, "--out_dir", out_dir)
    return json.loads(only(out_dir.glob("ensemble_results.json")).read_text())


def only(paths) -> Path:
    found = sorted(paths)
    if len(found) != 1:
        raise RuntimeError(f"expected exactly one output, found {found}")
    return found[0]


def one_seed(run: Runner, args: argparse.Namespace, csv_root: Path, seed: int) -> dict[str, dict]:
    """Every row of the table for one training seed."""
    cocon = pretrain(run, args, csv_root, seed, "cocon", "_".join(COCON_VIEWS))
    dpc = pretrain(run, args, csv_root, seed, "dpc", "imgs")
    encoders = {"random init": "random", "DPC": dpc / "mode_imgs_best.pth.tar",
                "CoCon RGB": cocon / "mode_imgs_best.pth.tar"}
    rows: dict[str, dict] = {}
    cocon_probs: dict[str, str] = {}
    for method, checkpoint in encoders.items():
        name = method.split()[0].lower()
        test = finetune(run, args, csv_root, seed, name, "imgs", checkpoint)
        rows[method] = {"top1": test["top1"], **retrieval(run, args, csv_root, seed, name, checkpoint)}
        if method == "CoCon RGB":
            cocon_probs["imgs"] = test["probs"]
    for view in COCON_VIEWS[1:]:
        test = finetune(run, args, csv_root, seed, "cocon", view, cocon / f"mode_{view}_best.pth.tar")
        cocon_probs[view] = test["probs"]
        rows[f"CoCon {view} alone"] = {"top1": test["top1"]}
    rows["CoCon ensemble"] = {"top1": ensemble(run, args, csv_root, seed, cocon_probs)["top1"]}
    return rows


TABLE_ROWS = (
    ("random init", "1", "–"), ("DPC", "1 (imgs)", "synthetic"), ("CoCon RGB", "4", "synthetic"),
    ("CoCon flow alone", "4", "synthetic"), ("CoCon seg alone", "4", "synthetic"),
    ("CoCon kphm alone", "4", "synthetic"), ("CoCon ensemble", "4", "synthetic"),
)
METRICS = (("top1", "top-1 %"), ("R@1", "R@1 %"), ("R@5", "R@5 %"), ("linear_probe", "linear probe %"))


def summarise(per_seed: dict[int, dict[str, dict]]) -> dict[str, dict[str, list[float]]]:
    """method -> metric -> values over seeds (in %)."""
    table: dict[str, dict[str, list[float]]] = {}
    for rows in per_seed.values():
        for method, metrics in rows.items():
            for metric, value in metrics.items():
                table.setdefault(method, {}).setdefault(metric, []).append(100 * value)
    return table


def fmt(values: list[float] | None) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}"


def markdown_table(table: dict, args: argparse.Namespace) -> str:
    seeds = ", ".join(map(str, args.seeds))
    lines = [
        f"Synthetic dataset ({args.classes} classes × {args.videos_per_class} videos), {args.net} at {args.img_dim} px, "
        f"{args.num_seq}×{args.seq_len} frames (stride {args.ds}), pretrain {args.epochs} epochs, fine-tune "
        f"{args.ft_epochs} epochs; flow view: {args.flow_method} optical flow; seeds {seeds}"
        + (" (mean ± std)" if len(args.seeds) > 1 else "") + ".",
        "",
        "| method | views | pretrain | " + " | ".join(label for _, label in METRICS) + " |",
        "|---|---|---|" + "---:|" * len(METRICS),
    ]
    for method, views, data in TABLE_ROWS:
        cells = [fmt(table.get(method, {}).get(metric)) for metric, _ in METRICS]
        lines.append(f"| {method} | {views} | {data} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(table: dict, path: Path, title: str, chance: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = ["random init", "DPC", "CoCon RGB", "CoCon ensemble"]
    metrics = [("top1", "fine-tuned top-1"), ("R@1", "retrieval R@1")]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.38
    x = np.arange(len(methods))
    for i, (metric, label) in enumerate(metrics):
        values = [table.get(m, {}).get(metric) for m in methods]
        means = [np.mean(v) if v else 0 for v in values]
        errors = [np.std(v, ddof=1) if v and len(v) > 1 else 0 for v in values]
        bars = ax.bar(x + (i - 0.5) * width, means, width, yerr=errors, capsize=3, label=label)
        for bar, v in zip(bars, values):
            if v:
                ax.annotate(f"{np.mean(v):.0f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    ax.axhline(chance, color="gray", linestyle="--", linewidth=1, label=f"chance ({chance:.0f}%)")
    ax.set_xticks(x, methods)
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return save_figure(fig, path)


def main(args: argparse.Namespace) -> dict:
    args.out.mkdir(parents=True, exist_ok=True)
    run = Runner(args.out)
    start = time.perf_counter()
    csv_root = prepare_data(run, args)
    per_seed = {seed: one_seed(run, args, csv_root, seed) for seed in args.seeds}
    table = summarise(per_seed)
    markdown = markdown_table(table, args)
    write_text(args.out / "results.md", markdown)
    write_json(args.out / "results.json", {"per_seed": per_seed, "timings_s": run.timings, "args": {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}})
    seeds = f"{len(args.seeds)} seed{'s' if len(args.seeds) > 1 else ''}"
    bar_chart(table, args.out / "results.png", f"synthetic actions, {args.net} {args.img_dim}px, {seeds}",
              chance=100 / args.classes)
    print("\n" + markdown)
    print(f"total {time.perf_counter() - start:.0f} s; results, chart and TensorBoard logs (*/img/) under {args.out}")
    return table


if __name__ == "__main__":
    main(get_args_parser().parse_args())
