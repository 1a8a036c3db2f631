"""Draw one video in all four views — RGB, optical flow as colour, keypoint heatmaps, person mask.

    python scripts/draw_views.py --csv_root process_data/data/synthetic                 # -> runs/views.png
    python scripts/draw_views.py --csv_root process_data/data/synthetic --out assets/views.png   # README's figure

Reads the processed files exactly as training does (utils.frame_reader.FrameReader), so the
figure shows what the encoders are fed. The default output is under runs/, so a first try never
replaces the figure the repository tracks.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from utils.cli import run_cli
from utils.cli_options import HelpFormatter
from utils.frame_reader import FrameReader
from utils.layout import REPO_ROOT
from utils.metrics import save_figure
from utils.video_index import VideoEntry, load_split

ROWS = (("imgs", "RGB"), ("flow", "optical flow"), ("kphm", "keypoint heatmaps"), ("seg", "person mask"))


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--csv_root", type=Path, required=True, help="folder with train_split01.csv and classInd.txt")
    parser.add_argument("--video", type=int, default=0, help="row of the train list to draw")
    parser.add_argument("--video_name", default=None,
                        help="draw the video whose frame folder has this name, from the train or test list "
                        "(instead of --video)")
    parser.add_argument("--first", type=int, default=1, help="first frame shown (1-based)")
    parser.add_argument("--frames", type=int, default=6, help="frames to show")
    parser.add_argument("--stride", type=int, default=4, help="frame stride between columns")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "views.png", help="output PNG")
    return parser


def flow_to_colour(flow: np.ndarray) -> np.ndarray:
    """uint8 stored flow ``[H, W, 2]`` (128 = still) → RGB: hue = direction, brightness = speed."""
    fx, fy = flow[..., 0].astype(np.float32) - 128, flow[..., 1].astype(np.float32) - 128
    magnitude, angle = cv2.cartToPolar(fx, fy, angleInDegrees=True)
    hsv = np.zeros((*fx.shape, 3), np.uint8)
    hsv[..., 0] = (angle / 2).astype(np.uint8)
    hsv[..., 1] = 255
    hsv[..., 2] = np.clip(magnitude * 255 / max(8.0, float(np.percentile(magnitude, 99))), 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def to_picture(view: str, frame: np.ndarray) -> np.ndarray:
    """One stored frame ``[H, W, C]`` uint8 as something imshow can draw."""
    if view == "imgs":
        return frame
    if view == "flow":
        return flow_to_colour(frame)
    if view == "kphm":
        return cv2.applyColorMap(frame.max(axis=-1), cv2.COLORMAP_INFERNO)[..., ::-1]
    return frame[..., 0]


def pick_video(csv_root: Path, row: int, name: str | None) -> tuple[VideoEntry, list[str]]:
    """The video to draw and the class names.

    Args:
        csv_root: folder of the split lists.
        row: row of the train list, used when `name` is None.
        name: a video's frame folder name, looked up in the train list, then the test list.
    Raises:
        ValueError: no video of that name.
    """
    entries, class_names = load_split(csv_root, "train")
    if name is None:
        return entries[row], class_names
    for entry in [*entries, *load_split(csv_root, "test")[0]]:
        if entry.frame_dir.name == name:
            return entry, class_names
    raise ValueError(f"--video_name {name}: no video folder of that name in the train or test list of {csv_root}")


def main(args: argparse.Namespace) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entry, class_names = pick_video(args.csv_root, args.video, args.video_name)
    indices = args.first + np.arange(args.frames) * args.stride
    indices = np.minimum(indices, entry.num_frames - 1)
    reader = FrameReader()
    views = {view: reader.read(entry.frame_dir, view, indices).numpy() for view, _ in ROWS}
    aspect = views["imgs"].shape[1] / views["imgs"].shape[2]  # height / width of the frames
    cell = 1.6 if aspect >= 0.75 else 2.2  # inches per column: wide frames get wider columns
    fig, axes = plt.subplots(len(ROWS), args.frames,
                             figsize=(cell * args.frames + 1.2, cell * aspect * len(ROWS) + 0.4 + 0.3 * (aspect < 0.75)))
    for r, (view, title) in enumerate(ROWS):
        for c, frame in enumerate(views[view]):
            ax = axes[r, c]
            ax.imshow(to_picture(view, frame), cmap="gray" if view == "seg" else None, vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(title.replace(" ", "\n"), fontsize=9)
            if r == 0:
                ax.set_title(f"frame {indices[c]}", fontsize=8)
    fig.suptitle(f"one clip of class '{class_names[entry.label]}' in the four views", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, args.out)


if __name__ == "__main__":
    run_cli(lambda args: print(main(args)), get_args_parser())
