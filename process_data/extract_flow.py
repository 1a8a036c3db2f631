"""Compute optical flow between consecutive frames: `<flow_root>/<class>/<video>/flow_{x,y}_00001.jpg`.

    python process_data/extract_flow.py --frame_root data/ucf101/frame --workers 8                      # TV-L1 -> data/ucf101/flow
    python process_data/extract_flow.py --frame_root data/ucf101/frame --method farneback --workers 8   # -> data/ucf101/farne
    python process_data/extract_flow.py --frame_root data/kinetics400/frame/train --workers 8          # -> data/kinetics400/flow/train

Pair index i holds the flow from frame i to frame i+1, so a video of n frames gets n-1 pairs.
Flow is computed on grayscale frames and stored as 8-bit grayscale JPEG (quality 95) with the
dense_flow convention `round((clip(f, -bound, bound) + bound) * 255 / (2 * bound))`
(`utils.layout.encode_flow`, which the loader's reading mirrors).
Each video is written into a temporary folder renamed into place when complete, so a rerun skips
finished videos; failures are listed in `<flow_root>/failed.txt`. `<flow_root>/manifest.json` records
the method, preset, bound and `--dim`: a rerun with other settings into the same root is refused (say
`--method tvl1` into a DIS tree), never skipping videos of another method or mixing two sizes. Run in
this process (`--workers 1`), a second progress bar counts each video's frame pairs (TV-L1 at its
`accurate` preset takes seconds a pair); with workers, the bar counts videos. A full disk stops the run
with one line saying so (exit status 1).

Methods (timings from bench/bench_preprocess.py):
- `tvl1` (default, the paper's flow view): cv2.optflow.DualTVL1OpticalFlow. Preset `accurate` is
  OpenCV's default (5 scales of step 0.8, 5 warps, 30 inner x 10 outer iterations); `fast` uses
  4 scales of step 0.5, 2 warps, 5 inner x 1 outer iterations: 10-15x faster, with a mean
  endpoint difference to `accurate` of about 0.08 px (and 0.19 px to the true flow, accurate 0.21)
  on a 128x170 textured pair moving up to ~7 px.
- `farneback`: cv2.calcOpticalFlowFarneback(pyr_scale 0.5, levels 3, winsize 15, iterations 3,
  poly_n 5, poly_sigma 1.2), the `farne` view.
- `dis`: cv2.DISOpticalFlow PRESET_MEDIUM (as accurate as TV-L1 on that pair, 50-90x faster;
  PRESET_FAST was 6x faster again but 40% further from the true flow).
"""
import argparse
from collections.abc import Callable
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from process_data.common import atomic_dir, check_manifest, finish_run, list_video_dirs, parallel_map, write_image
from process_data.extract_frame import resize_short_side
from utils.cli import run_cli
from utils.cli_options import HelpFormatter
from utils.layout import FARNE_TREE, FLOW_TREE, FLOW_X, FLOW_Y, FRAMES, encode_flow, sibling_folder

METHODS = ("tvl1", "farneback", "dis")
TVL1_PRESETS = {
    "accurate": {},
    "fast": {"ScalesNumber": 4, "ScaleStep": 0.5, "WarpingsNumber": 2, "InnerIterations": 5, "OuterIterations": 1},
}
FLOW_JPEG_QUALITY = 95

FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def make_flow_fn(method: str, tvl1_preset: str = "accurate") -> FlowFn:
    """Return `fn(prev_gray, next_gray) -> flow [H, W, 2] float32` (x then y, in pixels).

    Args:
        method: `tvl1`, `farneback` or `dis`.
        tvl1_preset: `accurate` or `fast` (TV-L1 only).
    """
    if method == "tvl1":
        if tvl1_preset not in TVL1_PRESETS:
            raise ValueError(f"--tvl1_preset must be one of {list(TVL1_PRESETS)}, got {tvl1_preset!r}")
        tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
        for name, value in TVL1_PRESETS[tvl1_preset].items():
            getattr(tvl1, f"set{name}")(value)
        return lambda prev, nxt: tvl1.calc(prev, nxt, None)
    if method == "farneback":
        return lambda prev, nxt: cv2.calcOpticalFlowFarneback(prev, nxt, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        return lambda prev, nxt: dis.calc(prev, nxt, None)
    raise ValueError(f"--method must be one of {METHODS}, got {method!r}")


def read_gray(path: Path, dim: int | None = None) -> np.ndarray:
    """Read an image as uint8 grayscale `[H, W]`, optionally resized to short side `dim`.

    Args:
        path: image file.
        dim: short side in pixels, or None to keep the size.
    """
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ValueError(f"{path}: cannot be read as an image")
    return img if dim is None else resize_short_side(img, dim)


def frame_paths(video_dir: Path) -> list[Path]:
    """The frames `image_00001.jpg…image_<n>.jpg` of a video folder, checked to be numbered 1..n.

    Args:
        video_dir: one video's frame folder.
    Raises:
        ValueError: the numbering has a gap.
    """
    names = sorted(p.name for p in video_dir.glob(FRAMES.glob))
    expected = [FRAMES.name(i) for i in range(1, len(names) + 1)]
    if names != expected:
        missing = sorted(set(expected) - set(names))[:3]
        raise ValueError(f"{video_dir}: frames are not numbered image_00001..{len(names):05d} (missing {missing})")
    return [video_dir / n for n in names]


def extract_video_flow(video_dir: Path, out_dir: Path, flow_fn: FlowFn, bound: float, dim: int | None = None,
                       progress: bool = False) -> int:
    """Write `flow_x_%05d.jpg`/`flow_y_%05d.jpg` for every consecutive frame pair into `out_dir` (atomic).

    Args:
        video_dir: frame folder with `image_00001.jpg…`.
        out_dir: flow folder to create; must not exist.
        flow_fn: from `make_flow_fn`.
        bound: encoding bound in pixels.
        dim: short side to compute flow at, or None for the frames' size.
        progress: show a progress bar over the video's frame pairs (it is removed when the video is done).
    Returns:
        the number of pairs written (frames - 1).
    Raises:
        ValueError: fewer than 2 frames, a gap in the numbering, or an unreadable frame.
        OSError: a flow image cannot be written (naming it; ``ENOSPC`` on a full disk).
    """
    frames = frame_paths(video_dir)
    if len(frames) < 2:
        raise ValueError(f"{video_dir}: {len(frames)} frame(s); flow needs at least 2")
    params = [cv2.IMWRITE_JPEG_QUALITY, FLOW_JPEG_QUALITY]
    pairs = tqdm(enumerate(frames[1:], 1), total=len(frames) - 1, desc=f"  {video_dir.parent.name}/{video_dir.name}",
                 unit="pair", leave=False, disable=not progress)
    with atomic_dir(out_dir) as tmp, pairs:
        prev = read_gray(frames[0], dim)
        for i, path in pairs:
            nxt = read_gray(path, dim)
            if nxt.shape != prev.shape:
                raise ValueError(f"{path}: size {nxt.shape} differs from the previous frame's {prev.shape}")
            flow = encode_flow(flow_fn(prev, nxt), bound)  # [H, W, 2]
            for c, files in enumerate((FLOW_X, FLOW_Y)):
                write_image(tmp / files.name(i), np.ascontiguousarray(flow[..., c]), params)
            prev = nxt
    return len(frames) - 1


def _flow_one(job: tuple[Path, Path], method: str, tvl1_preset: str, bound: float, dim: int | None,
              single_thread: bool) -> int:
    if single_thread:
        cv2.setNumThreads(1)  # one video per process already fills the cores
    video_dir, out_dir = job
    return extract_video_flow(video_dir, out_dir, make_flow_fn(method, tvl1_preset), bound, dim, progress=not single_thread)


def default_flow_root(frame_root: Path, method: str) -> Path:
    """`…/<dataset>/farne` for farneback, `…/<dataset>/flow` for tvl1 and dis, where the loader looks.

    The last path component named `frame` of the resolved `frame_root` is swapped (`utils.layout.sibling_folder`):
    `…/kinetics400/frame/train` -> `…/kinetics400/flow/train`.

    Args:
        frame_root: the RGB frame root.
        method: the flow method.
    Raises:
        ValueError: `frame_root` has no `frame` component; --flow_root must then be given.
    """
    folder = FARNE_TREE if method == "farneback" else FLOW_TREE
    try:
        return sibling_folder(Path(frame_root).resolve(), folder)
    except ValueError as exc:
        raise ValueError(f"--frame_root {frame_root} has no 'frame' folder in its path (expected …/<dataset>/frame); "
                         f"pass --flow_root") from exc


def get_args_parser() -> argparse.ArgumentParser:
    """The command line of extract_flow.py."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    io = parser.add_argument_group("input/output")
    io.add_argument("--frame_root", type=Path, required=True, help="frame root with <class>/<video>/image_00001.jpg")
    io.add_argument("--flow_root", type=Path, default=None,
                    help="output root (default: --frame_root with its 'frame' folder renamed flow, or farne for farneback)")
    flow = parser.add_argument_group("flow")
    flow.add_argument("--method", choices=METHODS, default="tvl1", help="flow algorithm (tvl1 is the paper's flow view)")
    flow.add_argument("--tvl1_preset", choices=list(TVL1_PRESETS), default="accurate",
                      help="accurate = OpenCV defaults; fast = 10-15x faster, ~0.08 px from accurate")
    flow.add_argument("--bound", type=float, default=20.0,
                      help="flow in pixels is clipped to [-bound, bound] before 8-bit encoding")
    flow.add_argument("--dim", type=int, default=None,
                      help="compute flow at this short side (e.g. 128, the flow view's size); default: the frames' size")
    run = parser.add_argument_group("run")
    run.add_argument("--workers", type=int, default=1, help="parallel processes over videos (1 = in this process)")
    return parser


def main(args: argparse.Namespace) -> dict:
    """Compute the flow of every video under --frame_root; return the done/skipped/failed/pairs counts."""
    if args.bound <= 0:
        raise ValueError(f"--bound must be > 0 pixels, got {args.bound}")
    if args.dim is not None and args.dim <= 0:
        raise ValueError(f"--dim must be a positive number of pixels, got {args.dim}")
    frame_root = Path(args.frame_root).resolve()
    flow_root = Path(args.flow_root) if args.flow_root is not None else default_flow_root(frame_root, args.method)
    if flow_root.resolve() == frame_root:
        raise ValueError(f"--flow_root {flow_root} must differ from --frame_root")
    make_flow_fn(args.method, args.tvl1_preset)  # fail on a bad choice before starting workers
    video_dirs = list_video_dirs(frame_root)
    if not video_dirs:
        raise FileNotFoundError(f"--frame_root {frame_root} has no <class>/<video>/ folders")
    settings = {"method": args.method, "tvl1_preset": args.tvl1_preset if args.method == "tvl1" else None,
                "bound": args.bound, "dim": args.dim}
    check_manifest(flow_root, settings, "process_data/extract_flow.py", {"opencv": cv2.__version__},
                   "pass another --flow_root")
    jobs, skipped = [], 0
    for d in video_dirs:
        out_dir = flow_root / d.relative_to(frame_root)
        if out_dir.is_dir():
            skipped += 1
        else:
            jobs.append((d, out_dir))
    fn = partial(_flow_one, method=args.method, tvl1_preset=args.tvl1_preset, bound=args.bound, dim=args.dim,
                 single_thread=args.workers > 1)
    results = parallel_map(fn, jobs, args.workers, desc=f"{args.method} flow")
    failures = [(str(d.relative_to(frame_root)), str(r))
                for (d, _), r in zip(jobs, results) if isinstance(r, Exception)]
    return finish_run(f"extract_flow ({args.method}) -> {flow_root}", flow_root, failures,
                      done=len(jobs) - len(failures), skipped=skipped,
                      pairs=sum(r for r in results if not isinstance(r, Exception)))


if __name__ == "__main__":
    run_cli(main, get_args_parser())
