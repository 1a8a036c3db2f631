"""A tiny multi-view dataset on disk for the dataset and trainer tests.

Every view's content encodes what the tests check:
- frame index ``i``: a uniform level ``LEVEL * i`` (RGB green, flow y, keypoint channel 1), so the
  frames a clip used can be read back from those views;
- position: a horizontal ramp 0 → 255 (RGB red, flow x, keypoint channel 0, the mask), so the crop
  box (and a flip) each view saw can be compared across views stored at different resolutions.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

LEVEL = 8  # grey level per frame index; frames 1..30 stay below 255
RGB_HW = (48, 64)  # RGB and flow are stored at this size, heatmaps and masks at half of it
MAP_HW = (24, 32)


def ramp(h: int, w: int) -> np.ndarray:
    """uint8 ``[h, w]`` rising from 0 at the left edge to 255 at the right."""
    row = np.round(np.linspace(0, 255, w)).astype(np.uint8)
    return np.tile(row, (h, 1))


def _write_jpg(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise OSError(f"cannot write {path}")


def write_video(root: Path, cls: str, video: str, num_frames: int, views: Sequence[str]) -> Path:
    """Write one video's views under ``root/{frame,flow,heatmaps,segmasks}/<cls>/<video>``; return its frame dir."""
    h, w = RGB_HW
    mh, mw = MAP_HW
    frame_dir = root / "frame" / cls / video
    for i in range(1, num_frames + 1):
        level = np.full((h, w), LEVEL * i, np.uint8)
        if "imgs" in views:
            frame_dir.mkdir(parents=True, exist_ok=True)
            rgb = np.stack([ramp(h, w), level, np.full((h, w), 128, np.uint8)], axis=-1)
            _write_jpg(frame_dir / f"image_{i:05d}.jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if "flow" in views and i < num_frames:  # flow has one frame fewer than RGB
            flow_dir = root / "flow" / cls / video
            flow_dir.mkdir(parents=True, exist_ok=True)
            _write_jpg(flow_dir / f"flow_x_{i:05d}.jpg", ramp(h, w))
            _write_jpg(flow_dir / f"flow_y_{i:05d}.jpg", level)
        if "kphm" in views and i % 2 == 1:  # heatmaps every other frame, as the original computed them
            hm_dir = root / "heatmaps" / cls / video
            hm_dir.mkdir(parents=True, exist_ok=True)
            hm = np.zeros((17, mh, mw), np.uint8)
            hm[0], hm[1] = ramp(mh, mw), LEVEL * i
            np.savez_compressed(hm_dir / f"heatmap_{i:05d}.npz", hm=hm)
        if "seg" in views:
            seg_dir = root / "segmasks" / cls / video
            seg_dir.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(seg_dir / f"segmask_{i:05d}.npz", seg=ramp(mh, mw))
    return frame_dir


def make_tiny_dataset(
    root: Path,
    classes: Sequence[str] = ("jump", "wave"),
    videos_per_class: int = 5,
    num_frames: int = 24,
    views: Sequence[str] = ("imgs", "flow", "kphm", "seg"),
) -> Path:
    """Write frames of every view, ``train_split01.csv``, ``test_split01.csv`` and ``classInd.txt``.

    The last video of each class goes to the test list, the others to the train list.

    Returns:
        the csv folder (``root/csv``).
    """
    csv_root = root / "csv"
    csv_root.mkdir(parents=True, exist_ok=True)
    train_rows, test_rows = [], []
    for cls in classes:
        for k in range(videos_per_class):
            frame_dir = write_video(root / "data", cls, f"v_{cls}_{k:02d}", num_frames, views)
            (test_rows if k == videos_per_class - 1 else train_rows).append(f"{frame_dir},{num_frames}")
    (csv_root / "train_split01.csv").write_text("\n".join(train_rows) + "\n")
    (csv_root / "test_split01.csv").write_text("\n".join(test_rows) + "\n")
    (csv_root / "classInd.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(classes, 1)))
    return csv_root
