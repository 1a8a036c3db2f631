"""Fake multi-view videos on disk, named and encoded through the data contract (utils.layout, utils.views).

:func:`write_view_frame` stores one frame of any view as the preprocessing scripts would; every test that
writes a fake video goes through it. :func:`make_tiny_dataset` writes a tiny dataset with split lists for
the dataset and trainer tests; every view's content encodes what the tests check:
- frame index ``i``: a uniform level ``LEVEL * i`` (RGB green, flow y, keypoint channel 1), so the
  frames a clip used can be read back from those views;
- position: a horizontal ramp 0 → 255 (RGB red, flow x, keypoint channel 0, the mask), so the crop
  box (and a flip) each view saw can be compared across views stored at different resolutions.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from utils.augmentation import model_input
from utils.layout import FLOW_Y
from utils.views import VIEWS, view_dir

LEVEL = 8  # grey level per frame index; frames 1..30 stay below 255
RGB_HW = (48, 64)  # RGB and flow are stored at this size, heatmaps and masks at half of it
MAP_HW = (24, 32)


def as_model_input(item: dict) -> dict:
    """A dataset item with every view's uint8 blocks made the encoder's float (on the CPU)."""
    return {key: model_input(value, key, "cpu") if key in VIEWS else value for key, value in item.items()}


def ramp(h: int, w: int) -> np.ndarray:
    """uint8 ``[h, w]`` rising from 0 at the left edge to 255 at the right."""
    row = np.round(np.linspace(0, 255, w)).astype(np.uint8)
    return np.tile(row, (h, 1))


def _write_jpg(path: Path, image: np.ndarray, quality: int) -> None:
    if not cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, quality]):
        raise OSError(f"cannot write {path}")


def write_view_frame(frame_dir: Path, view: str, index: int, data: np.ndarray, quality: int = 95) -> Path:
    """Store frame ``index`` of ``view`` for the video whose RGB frames are (to be) in ``frame_dir``.

    Args:
        frame_dir: the video's RGB frame folder, ``…/frame/<class>/<video>``; the other views go to its siblings.
        view: a name of :data:`utils.views.VIEWS`.
        index: 1-based frame index.
        data: uint8 as stored: ``[H, W, 3]`` RGB for ``imgs``; ``[H, W, 2]`` encoded x and y for flow views;
            ``[17, h, w]`` for ``kphm``; ``[h, w]`` for ``seg``.
        quality: JPEG quality of the image views.
    Returns:
        the view's folder.
    """
    folder = view_dir(frame_dir, view)
    folder.mkdir(parents=True, exist_ok=True)
    files = VIEWS[view].files
    if view == "imgs":
        _write_jpg(folder / files.name(index), cv2.cvtColor(data, cv2.COLOR_RGB2BGR), quality)
    elif VIEWS[view].is_flow:
        _write_jpg(folder / files.name(index), np.ascontiguousarray(data[..., 0]), quality)
        _write_jpg(folder / FLOW_Y.name(index), np.ascontiguousarray(data[..., 1]), quality)
    else:
        files.save_array(folder, index, data)
    return folder


def write_video(root: Path, cls: str, video: str, num_frames: int, views: Sequence[str]) -> Path:
    """Write one video's views under ``root/{frame,flow,heatmaps,segmasks}/<cls>/<video>``; return its frame dir."""
    h, w = RGB_HW
    mh, mw = MAP_HW
    frame_dir = root / "frame" / cls / video
    for i in range(1, num_frames + 1):
        level = np.full((h, w), LEVEL * i, np.uint8)
        if "imgs" in views:
            write_view_frame(frame_dir, "imgs", i, np.stack([ramp(h, w), level, np.full((h, w), 128, np.uint8)], -1))
        if "flow" in views and i < num_frames:  # flow has one frame fewer than RGB
            write_view_frame(frame_dir, "flow", i, np.stack([ramp(h, w), level], -1))
        if "kphm" in views and i % 2 == 1:  # heatmaps every other frame, as the original computed them
            hm = np.zeros((17, mh, mw), np.uint8)
            hm[0], hm[1] = ramp(mh, mw), LEVEL * i
            write_view_frame(frame_dir, "kphm", i, hm)
        if "seg" in views:
            write_view_frame(frame_dir, "seg", i, ramp(mh, mw))
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
