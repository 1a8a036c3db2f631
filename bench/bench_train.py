"""Pretraining speed on this machine: training throughput and memory, step overhead, data overhead,
and whether ``--amp`` changes what is learnt.

    python bench/bench_train.py                      # resnet18, imgs + flow, 64 and 128 px, fp32 and --amp
    python bench/bench_train.py --sizes 64 --steps 3 --threads 2 --schedule_epochs 0

Figures (each the median of ``--steps`` timed repetitions after ``--warmup``):
- clips/s of one full training step (both encoders forward, CoCon loss, backward, Adam) on random
  tensors, in float32 and as ``--amp`` sets it up (utils.precision: bf16 autocast where the CPU has
  native bf16, channels-last 3-D weights), the speed-up of ``--amp`` (goal >= 1.7), and the peak
  resident memory of the process;
- step / bare backbone: that step's time over the backbones' forward+backward alone on the same
  batch in the same precision (goal <= 1.15: the GRU, predictor, losses and optimiser add little);
- sample / decode: one sample through MultiViewClipDataset (imgs + flow, 240-px JPEGs) over decoding
  the same JPEG files in full with cv2, at each ``--data_dim`` (goals: <= 1.25 at 128 px, <= 0.75 at
  64 px; see bench/bench_loader.py);
- validation CPC top-1 after the same short schedule (``--schedule_epochs`` of train/model_trainer.py
  on a small synthetic dataset written to a temporary folder) with and without ``--amp``, for each
  of ``--schedule_seeds``: the difference between the precisions against the spread between seeds.
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_loader
import torch
from tqdm import tqdm

from train.losses import CoConLossConfig, cocon_loss
from train.model_3d import DPCRNN
from train.model_trainer import build_optimizer
from train.model_trainer import get_args_parser as trainer_parser
from train.model_trainer import main as pretrain
from train.pretrain_loop import forward_views
from utils.augmentation import model_input
from utils.cli_options import HelpFormatter
from utils.precision import amp_dtype_for, autocast, describe_amp, describe_cpu, match_layout, to_channels_last
from utils.views import VIEWS

REPO_ROOT = Path(__file__).resolve().parents[1]

BENCH_VIEWS = ("imgs", "flow")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    model = parser.add_argument_group("training step")
    model.add_argument("--net", default="resnet18", help="backbone of both views")
    model.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="img_dim values to time")
    model.add_argument("--batch_size", type=int, default=4, help="clips per step")
    model.add_argument("--num_seq", type=int, default=8, help="blocks per clip")
    model.add_argument("--seq_len", type=int, default=5, help="frames per block")
    model.add_argument("--pred_step", type=int, default=3, help="predicted blocks")
    timing = parser.add_argument_group("timing")
    timing.add_argument("--steps", type=int, default=5, help="timed repetitions (the median is reported)")
    timing.add_argument("--warmup", type=int, default=2, help="untimed repetitions first")
    timing.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    data = parser.add_argument_group("data")
    data.add_argument("--data_dim", type=int, nargs="+", default=[128, 64], help="img_dim values of the dataset benchmark")
    data.add_argument("--frame_height", type=int, default=240, help="stored frame height (width 4/3 of it)")
    data.add_argument("--samples", type=int, default=5, help="turns of the dataset benchmark (see bench_loader.py)")
    schedule = parser.add_argument_group("learning with and without --amp")
    schedule.add_argument("--schedule_epochs", type=int, default=3, help="pretraining epochs of each run (0: skip)")
    schedule.add_argument("--schedule_seeds", type=int, nargs="+", default=[0, 1], help="seeds; each runs fp32 and --amp")
    schedule.add_argument("--schedule_dim", type=int, default=64, help="img_dim of the runs")
    schedule.add_argument("--schedule_classes", type=int, default=6, help="classes of the synthetic dataset")
    schedule.add_argument("--schedule_videos", type=int, default=10, help="videos per class")
    return parser


median_seconds = bench_loader.median_seconds


def bench_training_step(img_dim: int, args: argparse.Namespace, amp: bool = False) -> dict[str, float]:
    """Full-step and bare-backbone times of two views at ``img_dim`` in one precision, and clips/s.

    Args:
        img_dim: RGB side (flow takes its own size).
        args: the parsed flags.
        amp: set the step up as ``--amp`` does (autocast dtype and channels-last weights).
    """
    torch.manual_seed(0)
    device = torch.device("cpu")
    amp_dtype = amp_dtype_for(amp, device)
    sizes = {v: VIEWS[v].size(img_dim) for v in BENCH_VIEWS}
    models = {
        v: DPCRNN(args.net, VIEWS[v].channels, sizes[v], args.seq_len, args.num_seq, args.pred_step) for v in BENCH_VIEWS
    }
    if amp_dtype is not None:
        for model in models.values():
            to_channels_last(model)
    optimizers = {v: build_optimizer(m, 1e-3, 1e-5, 1.0) for v, m in models.items()}
    batch = {  # uint8, as the loaders hand it over; the step makes it float, the bare backbones get it made
        v: torch.randint(0, 256, (args.batch_size, args.num_seq, VIEWS[v].channels, args.seq_len, sizes[v], sizes[v]),
                         dtype=torch.uint8)
        for v in BENCH_VIEWS
    }
    inputs = {v: model_input(x, v, device) for v, x in batch.items()}
    cfg = CoConLossConfig()

    def full_step() -> None:
        outputs = forward_views(models, batch, device, amp_dtype)
        loss, _ = cocon_loss(outputs, cfg)
        loss.backward()
        for opt in optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)

    def bare_backbones() -> None:
        for view, model in models.items():
            with autocast(device, amp_dtype):
                out = model.backbone(match_layout(inputs[view].flatten(0, 1), model.backbone.conv1))
            out.float().sum().backward()
        for model in models.values():
            model.zero_grad(set_to_none=True)

    step, bare = median_seconds([full_step, bare_backbones], args.steps, args.warmup)
    return {"step_s": step, "bare_s": bare, "ratio": step / bare, "clips_per_s": args.batch_size / step,
            "precision": describe_amp(amp_dtype)}


def make_schedule_data(folder: Path, args: argparse.Namespace) -> Path:
    """A small synthetic dataset (frames and DIS flow) made by the project's own scripts; returns its csv root."""
    root, csv_root = folder / "synthetic", folder / "csv"
    steps = [
        ("make_synthetic.py", "--out", root, "--classes", args.schedule_classes, "--videos_per_class",
         args.schedule_videos, "--frames", 48, "--workers", 2),
        ("extract_frame.py", "--video_root", root / "videos", "--frame_root", root / "frame", "--dim", 128, "--workers", 2),
        ("write_csv.py", "--dataset", "synthetic", "--frame_root", root / "frame", "--out", csv_root),
        ("extract_flow.py", "--frame_root", root / "frame", "--flow_root", root / "flow", "--method", "dis", "--workers", 2),
    ]
    for script, *flags in steps:
        command = [sys.executable, str(REPO_ROOT / "process_data" / script), *map(str, flags)]
        subprocess.run(command, check=True, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
    return csv_root


def schedule_top1(csv_root: Path, save_dir: Path, seed: int, amp: bool, args: argparse.Namespace) -> dict[str, float]:
    """Validation CPC top-1 (mean over views) after ``--schedule_epochs`` of pretraining, and the run's seconds."""
    flags = ["--dataset", "synthetic", "--csv_root", str(csv_root), "--save_dir", str(save_dir), "--net", args.net,
             "--modalities", "_".join(BENCH_VIEWS), "--img_dim", str(args.schedule_dim), "--batch_size", "4",
             "--epochs", str(args.schedule_epochs), "--seed", str(seed), "--ft_freq", "0", "--num_workers", "1",
             "--print_freq", "1000", "--vis_log_freq", "100000", "--cache_frames", "--amp" if amp else "--no-amp",
             "--prefix", f"bench_{'amp' if amp else 'fp32'}"]
    start = time.time()
    history = pretrain(trainer_parser().parse_args(flags))["history"]
    return {"top1": history[-1]["val"]["cpc_top1"], "seconds": time.time() - start}


def bench_schedule(args: argparse.Namespace) -> dict:
    """Validation CPC top-1 with and without ``--amp`` for every seed, on one small synthetic dataset."""
    with tempfile.TemporaryDirectory() as tmp:
        csv_root = make_schedule_data(Path(tmp), args)
        runs = {(seed, amp): schedule_top1(csv_root, Path(tmp) / "runs", seed, amp, args)
                for seed in args.schedule_seeds for amp in (False, True)}
    fp32 = [runs[(s, False)]["top1"] for s in args.schedule_seeds]
    mixed = [runs[(s, True)]["top1"] for s in args.schedule_seeds]
    return {"fp32": fp32, "amp": mixed, "amp_minus_fp32": [m - f for m, f in zip(mixed, fp32)],
            "fp32_seed_spread": max(fp32) - min(fp32),
            "seconds": {"fp32": sum(runs[(s, False)]["seconds"] for s in args.schedule_seeds),
                        "amp": sum(runs[(s, True)]["seconds"] for s in args.schedule_seeds)}}


def report_schedule(r: dict, args: argparse.Namespace) -> None:
    """Print :func:`bench_schedule`'s figures."""
    seeds = ", ".join(map(str, args.schedule_seeds))
    print(f"  validation CPC top-1 after {args.schedule_epochs} epochs at {args.schedule_dim} px (seeds {seeds}): "
          f"fp32 {' '.join(f'{x:.3f}' for x in r['fp32'])}, --amp {' '.join(f'{x:.3f}' for x in r['amp'])}; "
          f"--amp minus fp32 {' '.join(f'{x:+.3f}' for x in r['amp_minus_fp32'])} against a spread of "
          f"{r['fp32_seed_spread']:.3f} between fp32 seeds; wall time fp32 {r['seconds']['fp32']:.0f} s, "
          f"--amp {r['seconds']['amp']:.0f} s")


def main(args: argparse.Namespace) -> dict:
    """Run and print every benchmark; return the figures."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    results: dict = {"threads": torch.get_num_threads()}
    for img_dim in tqdm(args.sizes, desc="training step"):
        for amp in (False, True):
            results[f"step_{img_dim}_{'amp' if amp else 'fp32'}"] = bench_training_step(img_dim, args, amp)
    results["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    threads = torch.get_num_threads()
    loader_args = argparse.Namespace(sizes=args.data_dim, frame_height=args.frame_height, samples=args.samples,
                                     num_seq=args.num_seq, seq_len=args.seq_len, ds=3)
    results["data"] = bench_loader.bench_loader(loader_args)
    torch.set_num_threads(threads)
    if args.schedule_epochs > 0:
        results["schedule"] = bench_schedule(args)
    print(f"{describe_cpu()}; {args.net}, views {'+'.join(BENCH_VIEWS)}, batch {args.batch_size} x {args.num_seq} "
          f"blocks x {args.seq_len} frames, {results['threads']} torch threads")
    for img_dim in args.sizes:
        fp32, amp = results[f"step_{img_dim}_fp32"], results[f"step_{img_dim}_amp"]
        for r in (fp32, amp):
            print(f"  {img_dim:>3} px, {r['precision']}: {r['clips_per_s']:.2f} clips/s (step {r['step_s']:.3f} s); "
                  f"step / bare backbone fwd+bwd = {r['ratio']:.3f} (goal <= 1.15)")
        if amp["precision"] == "float32":
            print(f"  {img_dim:>3} px: --amp is float32 on this CPU (no native bf16), so no speed-up is expected")
        else:
            print(f"  {img_dim:>3} px: --amp / fp32 throughput = {amp['clips_per_s'] / fp32['clips_per_s']:.2f} (goal >= 1.7)")
    print(f"  peak resident memory {results['peak_rss_mib']:.0f} MiB")
    bench_loader.report(results["data"], args.frame_height)
    if "schedule" in results:
        report_schedule(results["schedule"], args)
    return results


if __name__ == "__main__":
    main(get_args_parser().parse_args())
