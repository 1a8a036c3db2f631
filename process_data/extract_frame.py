"""Decode videos into JPEG frame folders: `<frame_root>/<class>/<video>/image_00001.jpg`.

    python process_data/extract_frame.py --video_root data/ucf101/videos --frame_root data/ucf101/frame --workers 8
    python process_data/extract_frame.py --video_root data/kinetics400/videos/train --frame_root data/kinetics400/frame/train --dim 150

Frames are 1-based with 5 digits, JPEG quality 80, short side `--dim` with the aspect ratio kept
(DPC's layout; frames from mmaction2/denseflow are linked in by import_rawframes.py). Each video is
written into a temporary folder that is renamed into place when complete, so a rerun skips finished
videos and redoes interrupted ones; `<frame_root>/manifest.json` records `--dim` and the JPEG quality, and
a rerun with another `--dim` into the same root is refused rather than mixing two sizes. Videos that
cannot be decoded, decode to no frame, or decode to clearly fewer frames than their header states (a
truncated file) are listed in `<frame_root>/failed.txt` and get no folder. Files of the class folders
that are not videos (by extension) are counted and reported as skipped. A video whose resolution changes
mid-stream is named in a warning, and its later frames are resized to the size of its first frames (the
loader needs one size per folder; a change of aspect ratio stretches them). A full disk stops the run
with one line saying so (exit status 1).
"""
import argparse
import sys
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from process_data.common import (
    VIDEO_EXTS,
    atomic_dir,
    check_manifest,
    finish_run,
    list_videos,
    other_files,
    parallel_map,
    short_side_size,
    write_image,
)
from utils.cli import run_cli
from utils.cli_options import HelpFormatter
from utils.layout import FRAMES

JPEG_QUALITY = 80


def resize_short_side(frame: np.ndarray, dim: int) -> np.ndarray:
    """Resize so the short side is `dim`, keeping the aspect ratio.

    INTER_AREA when shrinking (no aliasing), INTER_LINEAR when enlarging.

    Args:
        frame: image `[H, W, C]` or `[H, W]`.
        dim: target short side in pixels.
    """
    h, w = frame.shape[:2]
    new_h, new_w = short_side_size(h, w, dim)
    if (new_h, new_w) == (h, w):
        return frame
    interp = cv2.INTER_AREA if dim < min(h, w) else cv2.INTER_LINEAR
    return cv2.resize(frame, (new_w, new_h), interpolation=interp)


def _truncated(decoded: int, header_count: int) -> bool:
    # Container frame counts are estimates for some formats (off by a few, or absent: <= 0);
    # a real truncation loses far more than that.
    return header_count > 0 and decoded < header_count - max(2, 0.05 * header_count)


def extract_video(video: Path, out_dir: Path, dim: int, notes: list[str] | None = None) -> int:
    """Decode every frame of `video` into `out_dir/image_%05d.jpg` (1-based), created atomically.

    Args:
        video: the video file.
        out_dir: the frame folder to create; must not exist.
        dim: short side of the written frames.
        notes: gets a warning when the resolution changes mid-stream (later frames take the first size).
    Returns:
        the number of frames written.
    Raises:
        ValueError: the video cannot be opened, has no decodable frame, or is truncated.
        OSError: a frame cannot be written (naming it; ``ENOSPC`` on a full disk).
    """
    cap = cv2.VideoCapture(str(video))
    try:
        if not cap.isOpened():
            raise ValueError(f"{video}: cannot be opened by cv2.VideoCapture (corrupt or unsupported)")
        header_count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        with atomic_dir(out_dir) as tmp:
            n, first_hw, out_hw = 0, None, None
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                n += 1
                if first_hw is None:
                    first_hw = frame.shape[:2]
                    out_hw = short_side_size(*first_hw, dim)
                elif frame.shape[:2] != first_hw and notes is not None and not notes:
                    notes.append(f"warning: {video}: the resolution changes at frame {n}, from {first_hw[1]}x{first_hw[0]} "
                                 f"to {frame.shape[1]}x{frame.shape[0]}; every frame is saved at {out_hw[1]}x{out_hw[0]}")
                resized = resize_short_side(frame, dim) if frame.shape[:2] == first_hw else _resize_to(frame, out_hw)
                write_image(tmp / FRAMES.name(n), resized, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if n == 0:
                raise ValueError(f"{video}: opened but no frame could be decoded (empty or corrupt)")
            if _truncated(n, header_count):
                raise ValueError(f"{video}: decoded {n} of the {header_count} frames its header states (truncated?)")
    finally:
        cap.release()
    return n


def _resize_to(frame: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """``frame``, of another size than its video's first frames, resized to theirs (INTER_AREA when shrinking)."""
    h, w = frame.shape[:2]
    interp = cv2.INTER_AREA if out_hw[0] * out_hw[1] < h * w else cv2.INTER_LINEAR
    return cv2.resize(frame, (out_hw[1], out_hw[0]), interpolation=interp)


def _extract_one(job: tuple[Path, Path], dim: int) -> tuple[int, list[str]]:
    video, out_dir = job
    notes: list[str] = []
    return extract_video(video, out_dir, dim, notes), notes


def plan_jobs(
    videos: list[Path], video_root: Path, frame_root: Path,
) -> tuple[list[tuple[Path, Path]], list[Path], list[tuple[str, str]]]:
    """Split videos into jobs to run, finished ones to skip, and name clashes to report.

    Args:
        videos: video files under `video_root/<class>/`.
        video_root: the video root.
        frame_root: the frame root.
    Returns:
        (jobs as (video, out_dir), skipped out_dirs, failures as (name, reason)).
    """
    jobs, skipped, failures, seen = [], [], [], {}
    for video in videos:
        rel = video.relative_to(video_root)
        out_dir = frame_root / rel.parent / video.stem
        if out_dir in seen:
            failures.append((str(rel), f"same frame folder {out_dir} as {seen[out_dir]}; rename one"))
            continue
        seen[out_dir] = rel
        if out_dir.is_dir():
            skipped.append(out_dir)
        else:
            jobs.append((video, out_dir))
    return jobs, skipped, failures


def get_args_parser() -> argparse.ArgumentParser:
    """The command line of extract_frame.py."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    io = parser.add_argument_group("input/output")
    io.add_argument("--video_root", type=Path, required=True,
                    help=f"folder of <class>/<video> files ({', '.join(VIDEO_EXTS)})")
    io.add_argument("--frame_root", type=Path, required=True,
                    help="output folder; frames go to <frame_root>/<class>/<video>/image_00001.jpg")
    img = parser.add_argument_group("frames")
    img.add_argument("--dim", type=int, default=240,
                     help="short side of the saved frames in pixels (240 UCF101/HMDB51, 150 or 256 Kinetics)")
    run = parser.add_argument_group("run")
    run.add_argument("--workers", type=int, default=1, help="parallel processes (1 = in this process)")
    return parser


def main(args: argparse.Namespace) -> dict:
    """Extract the frames of every video under --video_root; return the done/skipped/failed/frames counts."""
    if args.dim <= 0:
        raise ValueError(f"--dim must be a positive number of pixels, got {args.dim}")
    video_root, frame_root = Path(args.video_root), Path(args.frame_root)
    videos = list_videos(video_root)
    if not videos:
        raise FileNotFoundError(f"--video_root {video_root} has no <class>/<video> files with extensions {VIDEO_EXTS}")
    others = other_files(video_root)
    if others:
        kinds = sorted({p.suffix.lower() or "(none)" for p in others})
        print(f"extract_frame: skipped {len(others)} file(s) that are not videos (extensions {', '.join(kinds)}; "
              f"videos are {' '.join(VIDEO_EXTS)}); first: {others[0].relative_to(video_root)}", file=sys.stderr)
    check_manifest(frame_root, {"dim": args.dim, "jpeg_quality": JPEG_QUALITY}, "process_data/extract_frame.py",
                   {"opencv": cv2.__version__}, "pass another --frame_root")
    jobs, skipped, failures = plan_jobs(videos, video_root, frame_root)
    results = parallel_map(partial(_extract_one, dim=args.dim), jobs, args.workers, desc="extract frames")
    frames = 0
    for (video, _), res in zip(jobs, results):
        if isinstance(res, Exception):
            failures.append((str(video.relative_to(video_root)), str(res)))
            continue
        frames += res[0]
        for note in res[1]:
            print(note, file=sys.stderr)
    return finish_run("extract_frame", frame_root, failures, done=sum(not isinstance(r, Exception) for r in results),
                      skipped=len(skipped), frames=frames)


if __name__ == "__main__":
    run_cli(main, get_args_parser())
