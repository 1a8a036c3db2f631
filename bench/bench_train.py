"""Pretraining speed on this machine: training throughput and memory, step overhead, data overhead.

    python bench/bench_train.py                      # resnet18, imgs + flow, 64 and 128 px
    python bench/bench_train.py --sizes 64 --steps 3 --threads 2

Figures (each the median of ``--steps`` timed repetitions after ``--warmup``):
- clips/s of one full training step (both encoders forward, CoCon loss, backward, Adam) on random
  tensors, and the peak resident memory of the process;
- step / bare backbone: that step's time over the backbones' forward+backward alone on the same
  batch (goal <= 1.15: the GRU, predictor, losses and optimiser add little);
- sample / decode: producing one sample through MultiViewClipDataset (imgs + flow, 240-px JPEGs)
  over decoding the same JPEG files with cv2 (goal <= 1.5: augmentation adds little).
"""
from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
from tqdm import tqdm

from train.losses import CoConLossConfig, cocon_loss
from train.model_3d import DPCRNN
from train.model_trainer import build_optimizer, forward_views
from utils.video_data import MultiViewClipDataset, VideoEntry, clip_indices
from utils.views import VIEWS

BENCH_VIEWS = ("imgs", "flow")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser("CoCon pretraining benchmark", description=__doc__.split("\n\n")[0])
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
    data.add_argument("--data_dim", type=int, default=128, help="img_dim of the dataset benchmark")
    data.add_argument("--frame_height", type=int, default=240, help="stored frame height (width 4/3 of it)")
    data.add_argument("--samples", type=int, default=10, help="samples timed in the dataset benchmark")
    return parser


def median_seconds(fns: list[Callable[[], object]], steps: int, warmup: int) -> list[float]:
    """Median wall time of each of ``fns`` over ``steps`` calls after ``warmup`` calls.

    The functions are timed in turn within each repetition, so a change in the machine's load
    (other processes on shared cores) affects them alike.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(steps):
        for fn, record in zip(fns, times):
            start = time.perf_counter()
            fn()
            record.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def bench_training_step(img_dim: int, args: argparse.Namespace) -> dict[str, float]:
    """Full-step and bare-backbone times of two views at ``img_dim``, and clips/s."""
    torch.manual_seed(0)
    sizes = {v: VIEWS[v].size(img_dim) for v in BENCH_VIEWS}
    models = {
        v: DPCRNN(args.net, VIEWS[v].channels, sizes[v], args.seq_len, args.num_seq, args.pred_step) for v in BENCH_VIEWS
    }
    optimizers = {v: build_optimizer(m, 1e-3, 1e-5, 1.0) for v, m in models.items()}
    batch = {
        v: torch.randn(args.batch_size, args.num_seq, VIEWS[v].channels, args.seq_len, sizes[v], sizes[v])
        for v in BENCH_VIEWS
    }
    cfg = CoConLossConfig()
    device = torch.device("cpu")

    def full_step() -> None:
        outputs = forward_views(models, batch, device)
        loss, _ = cocon_loss(outputs, cfg)
        loss.backward()
        for opt in optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)

    def bare_backbones() -> None:
        for view, model in models.items():
            model.backbone(batch[view].flatten(0, 1)).sum().backward()
        for model in models.values():
            model.zero_grad(set_to_none=True)

    step, bare = median_seconds([full_step, bare_backbones], args.steps, args.warmup)
    return {"step_s": step, "bare_s": bare, "ratio": step / bare, "clips_per_s": args.batch_size / step}


def write_video(folder: Path, num_frames: int, height: int) -> Path:
    """A video of textured 4:3 frames (JPEG quality 80) and its flow; returns its frame folder."""
    rng = np.random.default_rng(0)
    width = height * 4 // 3
    frame_dir, flow_dir = folder / "frame" / "c" / "v", folder / "flow" / "c" / "v"
    frame_dir.mkdir(parents=True)
    flow_dir.mkdir(parents=True)
    base = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (9, 9), 3)
    quality = [cv2.IMWRITE_JPEG_QUALITY, 80]
    for i in range(1, num_frames + 1):
        cv2.imwrite(str(frame_dir / f"image_{i:05d}.jpg"), np.roll(base, 2 * i, axis=1), quality)
        for axis in ("x", "y"):
            cv2.imwrite(str(flow_dir / f"flow_{axis}_{i:05d}.jpg"), np.roll(base[..., 0], i, axis=0), quality)
    return frame_dir


def bench_dataset(args: argparse.Namespace) -> dict[str, float]:
    """One sample through MultiViewClipDataset vs decoding the same JPEGs with cv2."""
    num_frames = 3 * args.num_seq * args.seq_len + 10
    with tempfile.TemporaryDirectory() as tmp:
        frame_dir = write_video(Path(tmp), num_frames, args.frame_height)
        entry = VideoEntry(frame_dir, num_frames, 0)
        sizes = {v: VIEWS[v].size(args.data_dim) for v in BENCH_VIEWS}
        dataset = MultiViewClipDataset([entry], BENCH_VIEWS, sizes, args.num_seq, args.seq_len, ds=3)
        indices = clip_indices(num_frames, args.num_seq, args.seq_len, 3).reshape(-1)
        flow_dir = Path(tmp) / "flow" / "c" / "v"
        epoch = iter(range(10**6))

        def sample() -> None:
            dataset.set_epoch(next(epoch))
            dataset[0]

        def decode() -> None:
            for i in indices:
                cv2.imread(str(frame_dir / f"image_{i:05d}.jpg"), cv2.IMREAD_COLOR)
                cv2.imread(str(flow_dir / f"flow_x_{i:05d}.jpg"), cv2.IMREAD_GRAYSCALE)
                cv2.imread(str(flow_dir / f"flow_y_{i:05d}.jpg"), cv2.IMREAD_GRAYSCALE)

        sample_s, decode_s = median_seconds([sample, decode], args.samples, 2)
    return {"sample_s": sample_s, "decode_s": decode_s, "ratio": sample_s / decode_s}


def main(args: argparse.Namespace) -> dict:
    """Run and print every benchmark; return the figures."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    results: dict = {"threads": torch.get_num_threads()}
    for img_dim in tqdm(args.sizes, desc="training step"):
        results[f"step_{img_dim}"] = bench_training_step(img_dim, args)
    results["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results["data"] = bench_dataset(args)
    print(f"{args.net}, views {'+'.join(BENCH_VIEWS)}, batch {args.batch_size} x {args.num_seq} blocks x "
          f"{args.seq_len} frames, {results['threads']} torch threads")
    for img_dim in args.sizes:
        r = results[f"step_{img_dim}"]
        print(f"  {img_dim:>3} px: {r['clips_per_s']:.2f} clips/s (step {r['step_s']:.3f} s); "
              f"step / bare backbone fwd+bwd = {r['ratio']:.3f} (goal <= 1.15)")
    print(f"  peak resident memory {results['peak_rss_mib']:.0f} MiB")
    d = results["data"]
    print(f"  one sample at {args.data_dim} px from {args.frame_height}-px JPEGs: {1000 * d['sample_s']:.1f} ms; "
          f"decoding its JPEGs alone {1000 * d['decode_s']:.1f} ms; ratio {d['ratio']:.2f} (goal <= 1.5)")
    return results


if __name__ == "__main__":
    main(get_args_parser().parse_args())
