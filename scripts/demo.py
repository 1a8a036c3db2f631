"""The whole CoCon story on the built-in synthetic dataset, with the project's own CLI scripts.

    python scripts/demo.py                                                          # `make demo`: one seed, frozen evaluation
    python scripts/demo.py --seeds 0 1 2 --epochs 12 --ft_epochs 3 --ceiling_epochs 20 --out runs/science  # science

1. data: make_synthetic.py -> extract_frame.py -> write_csv.py -> extract_flow.py -> extract_features.py
2. pretrain, same backbone/epochs/batch: (a) CoCon on --views (default imgs_flow_kphm), (b) DPC on imgs alone
3. evaluate every encoder frozen — kNN retrieval (R@1 = 1-nearest-neighbour accuracy) and a linear probe — for
   (c) random init, DPC, and each CoCon view; with --ft_epochs, also fine-tune each and test on whole videos,
   and fuse CoCon's views into the ensemble; with --ceiling_epochs, train RGB from scratch with labels
4. results.md / results.json (mean ± std over seeds), results.png, learning_curves.png (pretraining and
   fine-tuning curves, per-term gradient norms into RGB, similarity agreement) and similarity.png (one
   batch's block-similarity matrices before and after CoCon) in --out

Every step is a subprocess running one of the repo's scripts; the exact commands are written to
<out>/commands.sh and each step's time to <out>/timings.json. Run again with the same --out, the demo
resumes: data steps skip what exists, pretraining and fine-tuning go on from their last finished epoch
(--resume), and the evaluations, tables and figures are made again.
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

from utils.cli import run_cli
from utils.cli_options import HelpFormatter, add_colour_jitter_flag
from utils.files import atomic_write, write_json
from utils.metrics import save_figure

REPO = Path(__file__).resolve().parents[1]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--data_root", type=Path, default=REPO / "data" / "synthetic", help="dataset folder")
    data.add_argument("--classes", type=int, default=10, help="synthetic classes")
    data.add_argument("--videos_per_class", type=int, default=30, help="synthetic videos per class")
    data.add_argument("--frames", type=int, default=64, help="frames per synthetic video")
    data.add_argument("--scenes", type=int, default=6,
                      help="looks (figure size and place, background, clothes) the synthetic videos share, "
                      "independently of the class")
    data.add_argument("--ball_speed", type=float, default=0.0,
                      help="top speed of the synthetic videos' distracting ball (frame sides per frame; 0: still)")
    data.add_argument("--drift", type=float, default=1.0,
                      help="scale of the synthetic videos' slow camera pan and lighting drift (0: fixed camera, steady light)")
    data.add_argument("--flow_method", default="dis", choices=("tvl1", "farneback", "dis"),
                      help="optical flow of the flow view (dis: ~150 pairs/s here; tvl1: ~2)")
    model = parser.add_argument_group("model and schedule")
    model.add_argument("--views", default="imgs_flow_kphm", help="CoCon's views, joined by '_' (imgs first)")
    model.add_argument("--net", default="resnet10", help="backbone of every encoder")
    model.add_argument("--img_dim", type=int, default=64,
                       help="input side of every view (64: a 2×2 final map, so CPC has same-clip spatial negatives)")
    model.add_argument("--num_seq", type=int, default=5, help="blocks per clip")
    model.add_argument("--seq_len", type=int, default=4, help="frames per block")
    model.add_argument("--pred_step", type=int, default=2, help="predicted blocks")
    model.add_argument("--ds", type=int, default=2, help="frame stride")
    model.add_argument("--batch_size", type=int, default=16, help="clips per step")
    model.add_argument("--lr", type=float, default=1e-3, help="pretraining learning rate")
    model.add_argument("--temp_division", default="once", choices=("twice", "once"),
                       help="CPC scores <p, z>/T^2 (twice, the original's) or /T (once)")
    add_colour_jitter_flag(model)
    model.add_argument("--epochs", type=int, default=6, help="pretraining epochs (CoCon and DPC alike; the science run uses 12, "
                       "after which DPC retrieves better than random init)")
    model.add_argument("--ft_epochs", type=int, default=0,
                       help="fine-tuning epochs of every encoder, then whole-video test and the view ensemble (0: frozen "
                            "evaluation only, as `make demo`)")
    model.add_argument("--ft_lr", type=float, default=1e-3, help="fine-tuning learning rate")
    model.add_argument("--ceiling_epochs", type=int, default=0,
                       help="epochs of the supervised RGB ceiling (from scratch, first seed only; 0: skip)")
    run = parser.add_argument_group("run")
    run.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds; the table gives mean ± std")
    run.add_argument("--out", type=Path, default=REPO / "runs" / "demo", help="output folder")
    run.add_argument("--num_workers", type=int, default=2, help="data loading processes")
    run.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                     help="bf16 autocast in pretraining and evaluation where the CPU has it (AVX512-BF16 or AMX; "
                          "float32 elsewhere, with a warning) or on CUDA; --no-amp: float32")
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
        atomic_write(self.out / "commands.sh", "\n".join(self.commands) + "\n")
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
            "--videos_per_class", args.videos_per_class, "--frames", args.frames, "--scenes", args.scenes, "--ball_speed", args.ball_speed,
            "--drift", args.drift, "--workers", 2)
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


def block_poses(keypoints: np.ndarray, blocks: np.ndarray, size: int) -> np.ndarray:
    """Mean pose of each block in input pixels: ``keypoints`` [T, 17, 3] (x, y in [0, 1]) at the clip's
    1-based frame indices ``blocks`` [N, SL], scaled to a ``size``-px input -> [N, 17, 2]."""
    return keypoints[blocks - 1, :, :2].mean(axis=1) * size


def pixel_change(clips: list[np.ndarray], scenes: list[int]) -> tuple[float, float]:
    """Mean absolute change (0-1 pixel scale) between consecutive blocks of a clip, and between the same
    block of two clips of one scene.

    Args:
        clips: per video, one view's clip as the encoder gets it, uint8 [N, C, SL, S, S].
        scenes: each video's scene (videos of scene -1 have looks of their own and are not paired).
    """
    x = [clip.astype(np.float32) / 255 for clip in clips]
    within = float(np.mean([np.abs(c[1:] - c[:-1]).mean() for c in x]))
    pairs = [np.abs(x[i] - x[j]).mean() for i in range(len(x)) for j in range(i + 1, len(x))
             if scenes[i] == scenes[j] >= 0]
    return within, float(np.mean(pairs)) if pairs else float("nan")


def measure_motion(args: argparse.Namespace, csv_root: Path) -> dict[str, float]:
    """How much a test clip changes between consecutive blocks at the input size, against how much two
    clips of one scene differ: what CPC's "which moment" and "which clip" have to go on.

    Joints (ground truth): the displacement between consecutive blocks' mean poses in input pixels, mean
    over the 17 joints and the fastest joint (medians over the videos). Pixels: mean absolute change
    per view (:func:`pixel_change`) on the middle clip of every test video, centre crop.
    """
    from utils.video_data import MultiViewClipDataset
    from utils.video_index import load_split
    from utils.views import VIEWS

    entries, _ = load_split(csv_root, "test")
    views = args.views.split("_")
    dataset = MultiViewClipDataset(entries, views, {v: VIEWS[v].size(args.img_dim) for v in views}, args.num_seq,
                                   args.seq_len, args.ds, train=False, hflip=False)
    mean_joint, top_joint, scenes, clips = [], [], [], {v: [] for v in views}
    for index, entry in enumerate(entries):
        frame_dir = Path(entry.frame_dir)
        annotation = np.load(args.data_root / "annotations" / frame_dir.parent.name / f"{frame_dir.name}.npz")
        blocks = dataset.reachable_frames(index).reshape(args.num_seq, args.seq_len)
        poses = block_poses(annotation["keypoints"], blocks, args.img_dim)
        moved = np.linalg.norm(np.diff(poses, axis=0), axis=-1)  # [N-1, 17]
        mean_joint.append(moved.mean())
        top_joint.append(moved.max(axis=1).mean())
        scenes.append(int(annotation["scene"]) if "scene" in annotation else -1)
        item = dataset[index]
        for view in views:
            clips[view].append(item[view].numpy())
    report = {"joint_px_mean": float(np.median(mean_joint)), "joint_px_fastest": float(np.median(top_joint))}
    for view in views:
        report[f"within_{view}"], report[f"across_{view}"] = pixel_change(clips[view], scenes)
    return report


def motion_text(report: dict[str, float], args: argparse.Namespace) -> str:
    """One paragraph of :func:`measure_motion`'s numbers."""
    views = ", ".join(f"{VIEW_NAMES[v]} {report[f'within_{v}']:.3f} against {report[f'across_{v}']:.3f}"
                      for v in args.views.split("_"))
    return (f"Motion at the input size ({args.img_dim} px, blocks {args.seq_len * args.ds} frames apart, test clips): "
            f"between consecutive blocks the joints of the mean pose move {report['joint_px_mean']:.1f} px "
            f"(fastest joint {report['joint_px_fastest']:.1f} px; medians over videos); mean absolute pixel change "
            f"between consecutive blocks of a clip against between two clips of one scene: {views}.\n")


def common_flags(args: argparse.Namespace, csv_root: Path, seed: int) -> list[object]:
    return ["--dataset", "synthetic", "--csv_root", csv_root, "--net", args.net, "--img_dim", args.img_dim,
            "--num_seq", args.num_seq, "--seq_len", args.seq_len, "--ds", args.ds, "--seed", seed,
            "--num_workers", args.num_workers, "--batch_size", args.batch_size, "--amp" if args.amp else "--no-amp"]


def pretrain(run: Runner, args: argparse.Namespace, csv_root: Path, seed: int, name: str, views: str) -> Path:
    """Pretrain one method; return its model/ folder."""
    save_dir = args.out / f"seed{seed}" / "pretrain" / name
    run(f"seed {seed}: pretrain {name} ({views})", "train/model_trainer.py", *common_flags(args, csv_root, seed),
        "--modalities", views, "--pred_step", args.pred_step, "--epochs", args.epochs, "--lr", args.lr,
        "--temp_division", args.temp_division, "--colour_jitter", args.colour_jitter, "--save_dir", save_dir,
        "--prefix", name, "--ft_freq", 0, "--vis_log_freq", 100, "--cache_frames", *resume_flags(save_dir))
    return only(save_dir.glob("*/model"))


def resume_flags(save_dir: Path) -> list[object]:
    """``--resume <model dir>`` when an earlier demo run left epoch checkpoints in ``save_dir``: the run goes
    on from its last finished epoch (or only tests, when every epoch is done)."""
    started = [model for model in save_dir.glob("*/model") if any(model.glob("*_epoch*.pth.tar"))]
    return ["--resume", only(started)] if started else []


def finetune(run: Runner, args: argparse.Namespace, csv_root: Path, seed: int, name: str, view: str,
             pretrained: Path | str, epochs: int) -> dict:
    """Fine-tune one view's encoder and test it on whole videos; return the test results."""
    save_dir = args.out / f"seed{seed}" / "finetune" / f"{name}_{view}"
    run(f"seed {seed}: fine-tune + test {name} {view}", "test/test.py", *common_flags(args, csv_root, seed),
        "--modality", view, "--pretrain", pretrained, "--epochs", epochs, "--lr", args.ft_lr,
        "--colour_jitter", args.colour_jitter, "--save_dir", save_dir, "--cache_frames", *resume_flags(save_dir))
    return json.loads(only(save_dir.glob("*/eval/*/test_results.json")).read_text())


def frozen_eval(run: Runner, args: argparse.Namespace, csv_root: Path, seed: int, name: str, view: str,
                pretrained: Path | str) -> dict:
    """kNN retrieval (R@1 = 1-nearest-neighbour accuracy) and linear probe of a frozen encoder."""
    out_dir = args.out / f"seed{seed}" / "frozen" / f"{name}_{view}"
    run(f"seed {seed}: frozen kNN + linear probe {name} {view}", "test/test.py", *common_flags(args, csv_root, seed),
        "--modality", view, "--pretrain", pretrained, "--retrieval", "--linear_probe", "--out_dir", out_dir)
    recall = json.loads((out_dir / "retrieval.json").read_text())["recall"]
    probe = json.loads((out_dir / "linear_probe.json").read_text())
    return {"R@1": recall["1"], "R@5": recall["5"], "linear_probe": probe["test_top1"]}


def cpc_diagnostics(args: argparse.Namespace, csv_root: Path, run_dir: Path, view: str,
                    checkpoint: Path | None) -> dict[str, float]:
    """CPC's "which clip" and "which moment" of one encoder on the test clips (the middle clip of every
    test video, batches of up to --batch_size clips in a fixed shuffled order): see
    :func:`train.diagnostics.heldout_cpc_parts`. ``checkpoint`` None: the encoder at random init, built as
    the pretraining run in ``run_dir`` built it (same seed)."""
    import torch

    from train.diagnostics import heldout_cpc_parts
    from train.model_3d import DPCRNN
    from utils.augmentation import model_input
    from utils.checkpoint import load_pretrained
    from utils.video_data import MultiViewClipDataset
    from utils.video_index import load_split
    from utils.views import VIEWS, view_backbone

    run_args = json.loads((run_dir / "args.json").read_text())
    torch.manual_seed(run_args["seed"])
    model = DPCRNN(view_backbone(view, args.net), VIEWS[view].channels, VIEWS[view].size(args.img_dim), args.seq_len,
                   args.num_seq, args.pred_step, run_args["l2_norm"], gru_relu=run_args.get("gru_relu", False))
    if checkpoint is not None:
        load_pretrained(model, checkpoint, view)
    entries, _ = load_split(csv_root, "test")
    dataset = MultiViewClipDataset(entries, [view], {view: VIEWS[view].size(args.img_dim)}, args.num_seq,
                                   args.seq_len, args.ds, train=False, hflip=False)
    order = np.random.default_rng(0).permutation(len(dataset))
    groups = np.array_split(order, -(-len(order) // args.batch_size))
    batches = (model_input(torch.stack([dataset[int(i)][view] for i in group]), view, "cpu") for group in groups)
    parts = heldout_cpc_parts(model.eval(), view, batches)
    return {"clip": parts[f"cpc_clip_top1/{view}"], "moment": parts[f"cpc_moment_top1/{view}"],
            "predictions": parts[f"cpc_moment_n/{view}"]}


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
    views = args.views.split("_")
    cocon = pretrain(run, args, csv_root, seed, "cocon", args.views)
    dpc = pretrain(run, args, csv_root, seed, "dpc", "imgs")
    encoders = {"random init": ("imgs", "random"), "DPC": ("imgs", dpc / "mode_imgs_best.pth.tar"),
                **{f"CoCon {VIEW_NAMES[v]}": (v, cocon / f"mode_{v}_best.pth.tar") for v in views}}
    rows: dict[str, dict] = {}
    cocon_probs: dict[str, str] = {}
    for method, (view, checkpoint) in encoders.items():
        name = method.split()[0].lower()
        rows[method] = frozen_eval(run, args, csv_root, seed, name, view, checkpoint)
        parts = cpc_diagnostics(args, csv_root, (cocon if name == "cocon" else dpc).parent, view,
                                None if checkpoint == "random" else checkpoint)
        write_json(args.out / f"seed{seed}" / "cpc_parts" / f"{name}_{view}.json", parts)
        rows[method].update(clip=parts["clip"], moment=parts["moment"])
        if args.ft_epochs:
            test = finetune(run, args, csv_root, seed, name, view, checkpoint, args.ft_epochs)
            rows[method]["top1"] = test["top1"]
            if name == "cocon":
                cocon_probs[view] = test["probs"]
    if cocon_probs:
        rows["CoCon ensemble"] = {"top1": ensemble(run, args, csv_root, seed, cocon_probs)["top1"]}
    return rows


def supervised_ceiling(run: Runner, args: argparse.Namespace, csv_root: Path, seed: int) -> dict[str, dict]:
    """The RGB encoder trained from scratch with labels for --ceiling_epochs: what RGB can reach at this input size."""
    test = finetune(run, args, csv_root, seed, "ceiling", "imgs", "random", args.ceiling_epochs)
    return {"supervised RGB ceiling": {"top1": test["top1"]}}


VIEW_NAMES = {"imgs": "RGB", "flow": "flow", "seg": "seg", "kphm": "kphm"}
TABLE_ROWS = (
    ("random init", "1", "–"), ("DPC", "1 (imgs)", "synthetic"), ("CoCon RGB", "V", "synthetic"),
    ("CoCon flow", "V", "synthetic"), ("CoCon seg", "V", "synthetic"), ("CoCon kphm", "V", "synthetic"),
    ("CoCon ensemble", "V", "synthetic"), ("supervised RGB ceiling", "1", "– (labels)"),
)
METRICS = (("R@1", "frozen kNN R@1 %"), ("linear_probe", "linear probe %"), ("top1", "fine-tuned top-1 %"))
DIAGNOSTICS = (("clip", "which clip %"), ("moment", "which moment %"))


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


def markdown_table(table: dict, args: argparse.Namespace, notes: str = "") -> str:
    seeds = ", ".join(map(str, args.seeds))
    lines = [
        f"Synthetic dataset ({args.classes} classes × {args.videos_per_class} videos), {args.net} at {args.img_dim} px, "
        f"{args.num_seq}×{args.seq_len} frames (stride {args.ds}), batch {args.batch_size}, pretrain {args.epochs} "
        f"epochs (CPC scores divided by T {args.temp_division}, colour jitter per {args.colour_jitter}), fine-tune "
        f"{args.ft_epochs} epochs (ceiling: {args.ceiling_epochs}, seed {args.seeds[0]}); flow view: {args.flow_method} "
        f"optical flow; seeds {seeds}"
        + (" (mean ± std)" if len(args.seeds) > 1 else "") + f"; chance {100 / args.classes:.0f} %.",
        "",
        *([notes, ""] if notes else []),
        "| method | views | pretrain | " + " | ".join(label for _, label in METRICS + DIAGNOSTICS) + " |",
        "|---|---|---|" + "---:|" * len(METRICS + DIAGNOSTICS),
    ]
    for method, views, data in TABLE_ROWS:
        if method in table:
            cells = [fmt(table[method].get(metric)) for metric, _ in METRICS + DIAGNOSTICS]
            views = views.replace("V", str(len(args.views.split("_"))))  # CoCon's rows: its number of views
            lines.append(f"| {method} | {views} | {data} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(table: dict, path: Path, title: str, chance: float) -> Path:
    """Mean ± std of each metric for the RGB encoders and the ensemble, with the chance level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in ("random init", "DPC", "CoCon RGB", "CoCon ensemble", "supervised RGB ceiling") if m in table]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.8 / len(METRICS)
    x = np.arange(len(methods))
    for i, (metric, label) in enumerate(METRICS):
        values = [table[m].get(metric) for m in methods]
        means = [np.mean(v) if v else 0 for v in values]
        errors = [np.std(v, ddof=1) if v and len(v) > 1 else 0 for v in values]
        bars = ax.bar(x + (i - (len(METRICS) - 1) / 2) * width, means, width, yerr=errors, capsize=3, label=label)
        for bar, v in zip(bars, values):
            if v:
                ax.annotate(f"{np.mean(v):.0f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
    ax.axhline(chance, color="gray", linestyle="--", linewidth=1, label=f"chance ({chance:.0f}%)")
    ax.set_xticks(x, [m.replace("supervised RGB ceiling", "supervised\nceiling") for m in methods], fontsize=8)
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return save_figure(fig, path)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def learning_curves(out: Path, seeds: list[int], path: Path) -> Path:
    """Pretraining curves of DPC and CoCon (validation CPC top-1 of RGB, the gradient each loss kind sends into
    the RGB backbone, RGB's similarity agreement with the other views) and fine-tuning curves of the three methods."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    colours = {"dpc": "tab:orange", "cocon": "tab:green", "random": "tab:blue"}
    for seed in seeds:
        for method in ("dpc", "cocon"):
            log_path = next((out / f"seed{seed}" / "pretrain" / method).glob("*/log.jsonl"), None)
            records = read_jsonl(log_path) if log_path else []
            epochs = [r["epoch"] for r in records]
            label = method.upper() if method == "dpc" else "CoCon"
            axes[0].plot(epochs, [100 * r["val"]["cpc_top1/imgs"] for r in records], color=colours[method],
                         label=label if seed == seeds[0] else None)
            if method == "cocon":
                for kind, style in (("cpc", "-"), ("sync", "--"), ("coop", ":")):
                    # measured every --grad_diag_freq iterations: only some epochs have a value
                    measured = [(r["epoch"], r["train"][f"grad_norm/imgs/{kind}"]) for r in records
                                if f"grad_norm/imgs/{kind}" in r["train"]]
                    axes[1].plot(*zip(*measured), style, color="tab:green", label=kind if seed == seeds[0] else None)
                for view, colour in (("flow", "tab:purple"), ("seg", "tab:gray"), ("kphm", "tab:red")):
                    axes[2].plot(epochs, [r["val"].get(f"agree/imgs-{view}", np.nan) for r in records], color=colour,
                                 label=f"RGB vs {view}" if seed == seeds[0] else None)
        for method in ("random", "dpc", "cocon"):
            log_path = next((out / f"seed{seed}" / "finetune" / f"{method}_imgs").glob("*/log.jsonl"), None)
            records = read_jsonl(log_path) if log_path else []
            axes[3].plot([r["epoch"] for r in records], [100 * r["val"]["top1"] for r in records],
                         color=colours[method], label={"random": "random init", "dpc": "DPC", "cocon": "CoCon RGB"}[method]
                         if seed == seeds[0] else None)
    titles = ("pretraining: val CPC top-1 of RGB (%)", "CoCon: grad norm into RGB backbone", "CoCon: val similarity "
              "agreement (r)", "fine-tuning RGB: val top-1 (%)")
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    axes[1].set_yscale("log")
    fig.tight_layout()
    return save_figure(fig, path)


def main(args: argparse.Namespace) -> dict:
    args.out.mkdir(parents=True, exist_ok=True)
    run = Runner(args.out)
    start = time.perf_counter()
    csv_root = prepare_data(run, args)
    motion = measure_motion(args, csv_root)
    print("\n" + motion_text(motion, args), flush=True)
    per_seed = {seed: one_seed(run, args, csv_root, seed) for seed in args.seeds}
    if args.ceiling_epochs:
        per_seed[args.seeds[0]].update(supervised_ceiling(run, args, csv_root, args.seeds[0]))
    table = summarise(per_seed)
    parts = json.loads(next((args.out / f"seed{args.seeds[0]}" / "cpc_parts").glob("dpc_*.json")).read_text())
    notes = (f"Which clip / which moment: CPC's choice among the clips of a batch (up to {args.batch_size}) and "
             f"among a clip's {args.pred_step} future blocks at the same place (chance 1/{args.pred_step}), on "
             f"{parts['predictions']} predictions of the test clips per encoder. " + motion_text(motion, args))
    markdown = markdown_table(table, args, notes)
    atomic_write(args.out / "results.md", markdown)
    write_json(args.out / "results.json", {"per_seed": per_seed, "motion": motion, "timings_s": run.timings, "args": {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}})
    seeds = f"{len(args.seeds)} seed{'s' if len(args.seeds) > 1 else ''}"
    bar_chart(table, args.out / "results.png", f"synthetic actions, {args.net} {args.img_dim}px, {seeds}",
              chance=100 / args.classes)
    learning_curves(args.out, args.seeds, args.out / "learning_curves.png")
    cocon_model = only((args.out / f"seed{args.seeds[0]}" / "pretrain" / "cocon").glob("*/model"))
    run("block-similarity figure", "scripts/draw_similarity.py", "--csv_root", csv_root, "--model_dir", cocon_model,
        "--out", args.out / "similarity.png")
    print("\n" + markdown)
    print(f"total {time.perf_counter() - start:.0f} s; results, figures and TensorBoard logs (*/img/) under {args.out}")
    return table


if __name__ == "__main__":
    run_cli(main, get_args_parser())
