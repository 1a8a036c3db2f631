"""Throughput of preprocessing on this machine: frame extraction and each optical-flow method.

    python bench/bench_preprocess.py                  # one process, OpenCV on 1 thread
    python bench/bench_preprocess.py --threads 0      # OpenCV's own thread count

Frame extraction = decode + resize 480x360 to short side 240 + JPEG write, on an MJPG video
generated in a temporary folder. Flow = one frame pair at short side 128 (128x170), grayscale. Each figure is the
median over `--repeats` runs. The flow section also prints the mean endpoint error of each method
against the known flow of a synthetic pair (a texture rotated by 3 degrees and shifted by (2, 1) px,
up to ~7 px) and against TV-L1 `accurate`, which is how the `fast` preset was chosen.
"""
import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from process_data.extract_flow import TVL1_PRESETS, make_flow_fn
from process_data.extract_frame import extract_video
from utils.cli_options import HelpFormatter
from utils.precision import describe_cpu

FLOW_METHODS = [("tvl1", "accurate"), ("tvl1", "fast"), ("farneback", "accurate"), ("dis", "accurate")]


def smooth_texture(h: int, w: int, seed: int) -> np.ndarray:
    """uint8 `[h, w]` blurred noise: texture every flow method can track."""
    noise = cv2.GaussianBlur(np.random.default_rng(seed).random((h, w), np.float32), (0, 0), 2.0)
    return cv2.normalize(noise, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def make_video(path: Path, n: int, size: tuple[int, int]) -> Path:
    """MJPG .avi of `n` colour frames `size` = (W, H): a texture panning 2 px per frame."""
    w, h = size
    big = cv2.merge([smooth_texture(h, w + 2 * n, s) for s in range(3)])
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, size)
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter cannot write MJPG to {path}")
    for i in range(n):
        writer.write(np.ascontiguousarray(big[:, 2 * i:2 * i + w]))
    writer.release()
    return path


def synthetic_pair(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frame1, frame2, true flow `[h, w, 2]`): frame2 is frame1 rotated 3 degrees about the centre and shifted (2, 1)."""
    img = smooth_texture(h, w, 7).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a, cx, cy = np.deg2rad(3.0), w / 2, h / 2
    fx = (np.cos(a) - 1) * (xx - cx) - np.sin(a) * (yy - cy) + 2
    fy = np.sin(a) * (xx - cx) + (np.cos(a) - 1) * (yy - cy) + 1
    nxt = cv2.remap(img, (xx - fx).astype(np.float32), (yy - fy).astype(np.float32), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REFLECT)
    return img.astype(np.uint8), nxt.astype(np.uint8), np.stack([fx, fy], -1)


def epe(a: np.ndarray, b: np.ndarray, margin: int = 8) -> float:
    """Mean endpoint error between two `[H, W, 2]` flows, ignoring a border where the warp is undefined."""
    return float(np.linalg.norm(a - b, axis=-1)[margin:-margin, margin:-margin].mean())


def bench_frames(tmp: Path, n: int, repeats: int) -> float:
    """Median frames/s of `extract_video` (decode, resize 480x360 -> 320x240, JPEG write)."""
    video = make_video(tmp / "bench.avi", n, (480, 360))
    rates = []
    for r in range(repeats):
        t0 = time.perf_counter()
        done = extract_video(video, tmp / f"frames{r}", 240)
        rates.append(done / (time.perf_counter() - t0))
    return statistics.median(rates)


def bench_flow(pairs: int, repeats: int) -> None:
    f1, f2, truth = synthetic_pair(128, 170)
    fns = {f"{m} {p}" if m == "tvl1" else m: make_flow_fn(m, p) for m, p in FLOW_METHODS}
    seconds: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):  # methods interleaved, so a load change on a shared machine hits all alike
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(pairs):
                fn(f1, f2)
            seconds[name].append((time.perf_counter() - t0) / pairs)
    reference = fns["tvl1 accurate"](f1, f2)
    for name, fn in fns.items():
        sec = statistics.median(seconds[name])
        flow = fn(f1, f2)
        print(f"flow {name:14s} 128x170: {1 / sec:8.1f} pairs/s ({1000 * sec:6.1f} ms/pair)  "
              f"EPE vs truth {epe(flow, truth):.3f} px, vs tvl1 accurate {epe(flow, reference):.3f} px")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    run = parser.add_argument_group("run")
    run.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is printed")
    run.add_argument("--frames", type=int, default=60, help="frames of the generated 480x360 video")
    run.add_argument("--pairs", type=int, default=3, help="flow pairs per timed repeat")
    run.add_argument("--threads", type=int, default=1, help="cv2.setNumThreads (0 = OpenCV's default)")
    return parser


def main(args: argparse.Namespace) -> None:
    if args.threads > 0:
        cv2.setNumThreads(args.threads)
    print(f"{describe_cpu()}; OpenCV {cv2.__version__}, {cv2.getNumThreads()} thread(s); tvl1 fast = {TVL1_PRESETS['fast']}")
    with tempfile.TemporaryDirectory() as tmp:
        fps = bench_frames(Path(tmp), args.frames, args.repeats)
    print(f"frame extraction 480x360 MJPG -> short side 240, JPEG q80: {fps:.1f} frames/s")
    bench_flow(args.pairs, args.repeats)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
