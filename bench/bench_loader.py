"""Clip loader speed: one sample through MultiViewClipDataset against decoding its JPEGs.

    python bench/bench_loader.py                  # imgs + flow from 240-px JPEGs, at 128 and 64 px
    python bench/bench_loader.py --samples 3 --sizes 64

Figures, each the median over ``--samples`` turns of a few calls in a row (the functions take turns, so
a change in the machine's load hits them alike), on one thread as in a DataLoader worker:
- sample / decode: one training sample (random clip start, crop, flip, colour jitter, imgs + flow)
  over decoding the same JPEG files at full resolution with cv2 (goals: <= 1.25 at 128 px; <= 0.75
  at 64 px, where the JPEGs are decoded at reduced resolution);
- the JPEG decode reduction each view got, the time of decoding the JPEGs so alone (over in full),
  and the same sample with reduced decoding off;
- a sample from the in-memory frame cache (``--cache_frames``) and the cache's memory.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from utils.cli_options import HelpFormatter
from utils.clip_sampling import clip_indices
from utils.frame_reader import COLOR_DECODE_FLAGS, GRAY_DECODE_FLAGS
from utils.precision import describe_cpu
from utils.video_data import MultiViewClipDataset
from utils.video_index import VideoEntry
from utils.views import VIEWS

BENCH_VIEWS = ("imgs", "flow")
GOALS = {128: 1.25, 64: 0.75}
IN_A_ROW = 4  # samples in a row per turn, as a worker makes them (the first is not timed)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 64], help="img_dim values to time")
    parser.add_argument("--frame_height", type=int, default=240, help="stored frame height (width 4/3 of it)")
    parser.add_argument("--samples", type=int, default=5,
                        help=f"turns, each timing {IN_A_ROW - 1} calls of every function (the median is reported)")
    parser.add_argument("--num_seq", type=int, default=8, help="blocks per clip")
    parser.add_argument("--seq_len", type=int, default=5, help="frames per block")
    parser.add_argument("--ds", type=int, default=3, help="frame stride")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall time, or this process's CPU time (steadier on a machine other jobs keep busy)")
    return parser


def median_seconds(
    fns: list[Callable[[], object]], steps: int, warmup: int, clock: Callable[[], float] = time.perf_counter,
    in_a_row: int = 1,
) -> list[float]:
    """Median time of one call of each of ``fns``, over ``steps`` turns after ``warmup`` untimed calls.

    The functions take turns, starting from a different one at each turn, so a change in the
    machine's load (other processes on shared cores) and any effect of going first hit them alike.

    Args:
        fns: the functions.
        steps, warmup: turns timed, and untimed calls of each function first.
        clock: wall time by default; ``time.process_time`` counts only this process's CPU time, which
            other processes on a busy machine disturb far less (for single-threaded work only).
        in_a_row: calls of a function per turn. With more than one, the first call of each turn goes
            untimed: it pays for the caches the other functions filled, which a function that runs on its
            own (a DataLoader worker making sample after sample) never does.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for step in range(steps):
        for k in range(len(fns)):
            i = (step + k) % len(fns)
            for call in range(in_a_row):
                start = clock()
                fns[i]()
                if call > 0 or in_a_row == 1:
                    times[i].append(clock() - start)
    return [statistics.median(t) for t in times]


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


def _sampler(dataset: MultiViewClipDataset) -> Callable[[], object]:
    """A new epoch's draw of the dataset's only video at every call."""
    epochs = iter(range(10**9))

    def sample() -> object:
        dataset.set_epoch(next(epochs))
        return dataset[0]

    return sample


def bench_size(frame_dir: Path, num_frames: int, img_dim: int, args: argparse.Namespace) -> dict[str, float]:
    """Sample times at ``img_dim`` (reduced decoding on and off, from the cache) and the decode time."""
    entry = VideoEntry(frame_dir, num_frames, 0)
    sizes = {v: VIEWS[v].size(img_dim) for v in BENCH_VIEWS}
    clip = dict(num_seq=args.num_seq, seq_len=args.seq_len, ds=args.ds)
    reduced = MultiViewClipDataset([entry], BENCH_VIEWS, sizes, **clip)
    full = MultiViewClipDataset([entry], BENCH_VIEWS, sizes, **clip, reduced_decoding=False)
    cached = MultiViewClipDataset([entry], BENCH_VIEWS, sizes, **clip)
    cache_bytes = cached.fill_cache()
    indices = clip_indices(num_frames, args.num_seq, args.seq_len, args.ds).reshape(-1)
    flow_dir = frame_dir.parents[2] / "flow" / "c" / "v"

    stored = (args.frame_height, args.frame_height * 4 // 3)
    reductions = {v: reduced.reduction(v, stored) for v in BENCH_VIEWS}

    def decoder(imgs_flag: int, flow_flag: int) -> Callable[[], None]:
        def decode() -> None:
            for i in indices:
                cv2.imread(str(frame_dir / f"image_{i:05d}.jpg"), imgs_flag)
                cv2.imread(str(flow_dir / f"flow_x_{i:05d}.jpg"), flow_flag)
                cv2.imread(str(flow_dir / f"flow_y_{i:05d}.jpg"), flow_flag)

        return decode

    decode = decoder(cv2.IMREAD_COLOR, cv2.IMREAD_GRAYSCALE)
    decode_reduced = decoder(COLOR_DECODE_FLAGS[reductions["imgs"]], GRAY_DECODE_FLAGS[reductions["flow"]])
    clock = time.process_time if getattr(args, "clock", "wall") == "cpu" else time.perf_counter
    sample_s, full_s, cached_s, decode_s, reduced_s = median_seconds(
        [_sampler(reduced), _sampler(full), _sampler(cached), decode, decode_reduced], args.samples, 2, clock, IN_A_ROW
    )
    return {
        "sample_s": sample_s, "full_decode_sample_s": full_s, "cached_sample_s": cached_s, "decode_s": decode_s,
        "ratio": sample_s / decode_s, "full_decode_ratio": full_s / decode_s, "cached_ratio": cached_s / decode_s,
        "reduced_decode_ratio": reduced_s / decode_s, "cache_mib": cache_bytes / 2**20,
        **{f"reduction_{v}": r for v, r in reductions.items()},
    }


def bench_loader(args: argparse.Namespace) -> dict[int, dict[str, float]]:
    """:func:`bench_size` at every ``--sizes`` on one video written to a temporary folder."""
    num_frames = 3 * args.num_seq * args.seq_len + 10
    with tempfile.TemporaryDirectory() as tmp:
        frame_dir = write_video(Path(tmp), num_frames, args.frame_height)
        return {dim: bench_size(frame_dir, num_frames, dim, args) for dim in args.sizes}


def report(results: dict[int, dict[str, float]], frame_height: int) -> None:
    """Print the figures of :func:`bench_loader`."""
    for dim, r in results.items():
        goal = GOALS.get(dim)
        verdict = f" (goal <= {goal}: {'met' if r['ratio'] <= goal else 'MISSED'})" if goal else ""
        print(f"  one {dim}-px {'+'.join(BENCH_VIEWS)} sample from {frame_height}-px JPEGs: "
              f"{1000 * r['sample_s']:.1f} ms; decoding its JPEGs in full {1000 * r['decode_s']:.1f} ms; "
              f"ratio {r['ratio']:.2f}{verdict}")
        print(f"      decode reduction imgs 1/{r['reduction_imgs']}, flow 1/{r['reduction_flow']} "
              f"(decoding the JPEGs so: {r['reduced_decode_ratio']:.2f} of in full); "
              f"with full decoding {1000 * r['full_decode_sample_s']:.1f} ms (ratio {r['full_decode_ratio']:.2f}); "
              f"from the frame cache {1000 * r['cached_sample_s']:.1f} ms (ratio {r['cached_ratio']:.2f}), "
              f"cache {r['cache_mib']:.1f} MiB for the video's {VIEWS['imgs'].name}+flow frames")


def main(args: argparse.Namespace) -> dict[int, dict[str, float]]:
    """Run and print the loader benchmark; return its figures."""
    torch.set_num_threads(1)  # as in a DataLoader worker
    results = bench_loader(args)
    print(f"{describe_cpu()}; clip loader, {args.num_seq} blocks x {args.seq_len} frames, stride {args.ds}, 1 thread, "
          f"{'CPU' if args.clock == 'cpu' else 'wall'} time")
    report(results, args.frame_height)
    return results


if __name__ == "__main__":
    main(get_args_parser().parse_args())
