"""Reading the stored frames of every view: reduced-resolution JPEG decoding, frames missing on disk filled
from their nearest neighbour, and the checks that every requested view is on disk.

File names and encodings are those of :mod:`utils.layout`; the views' folders those of :mod:`utils.views`.
"""
from __future__ import annotations

import errno
import logging
import math
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from utils.errors import DataError
from utils.files import read_npz
from utils.keypoints import COCO_KEYPOINTS
from utils.layout import FLOW_Y, HEATMAPS, FileSeries
from utils.video_index import VideoEntry
from utils.views import VIEWS, view_dir

log = logging.getLogger(__name__)
NUM_JOINTS = len(COCO_KEYPOINTS)  # channels of a stored heatmap

# OpenCV's own threads fight the DataLoader's worker processes for the same cores.
cv2.setNumThreads(1)

# Reduced-resolution decoding: libjpeg scales in the DCT, so a 1/2, 1/4 or 1/8 decode skips most of
# the work of a full one (for other formats OpenCV decodes fully, then resizes).
COLOR_DECODE_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                8: cv2.IMREAD_REDUCED_COLOR_8}
GRAY_DECODE_FLAGS = {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
               8: cv2.IMREAD_REDUCED_GRAYSCALE_8}
REDUCTIONS = (8, 4, 2, 1)
# JPEG start-of-frame markers (SOF0..SOF15 except DHT, JPG and DAC), which carry the frame size.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_LISTING_CACHE = 4096  # folders whose frame listing a FrameReader keeps


def _end_of_image(data: bytes) -> bool:
    """Whether JPEG bytes end with the end-of-image marker (a file cut short decodes grey below the cut)."""
    return data[-64:].rstrip(b"\x00").endswith(b"\xff\xd9")


def _read_image(path: str, flags: int, advice: str) -> np.ndarray:
    """One JPEG frame decoded with OpenCV's ``flags``; ``advice`` says how to rewrite it.

    Raises:
        DataError: the file is missing, not an image, or cut short (no end-of-image marker).
        PermissionError: this user may not read it.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DataError(f"{path} is missing; {advice}") from None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags) if data else None
    if image is None and not os.access(path, os.R_OK):
        raise PermissionError(errno.EACCES, "permission denied: cannot read the frame; give this user read access to "
                              "the dataset", str(path))
    if data and not _end_of_image(data):
        raise DataError(f"{path} is cut short (no JPEG end-of-image marker, so it decodes at most in part); {advice}")
    if image is None:
        raise DataError(f"cannot decode {path} (empty or not an image); {advice}")
    return image


def _advice(view: str) -> str:
    """What rewrites a damaged file of ``view``."""
    if VIEWS[view].is_flow:
        return "extract the video's flow again (process_data/extract_flow.py)"
    if view == "imgs":
        return "extract the video's frames again (process_data/extract_frame.py)"
    return "delete the video's folder and run process_data/extract_features.py again"


def check_view_array(array: np.ndarray, path: str | Path, files: FileSeries) -> None:
    """Refuse a heatmap or mask array that is not of the stored format (:mod:`utils.layout`).

    Raises:
        DataError: naming the file, what it holds and what was expected.
    """
    heatmap = files == HEATMAPS
    expected = f"uint8 [{NUM_JOINTS}, h, w], 255 = 1.0" if heatmap else "uint8 [h, w], 0 or 255 (255 = person)"
    shape_ok = array.ndim == 3 and array.shape[0] == NUM_JOINTS if heatmap else array.ndim == 2
    if not shape_ok or array.dtype != np.uint8:
        raise DataError(f"{'heatmap' if heatmap else 'mask'} {path} holds {array.dtype} {list(array.shape)}, expected "
                        f"{expected}; {_advice('kphm')}")
    if not heatmap and array.max(initial=0) == 1:
        raise DataError(f"mask {path} holds 0/1, expected 0/255 (255 = person): it would train at 1/255 intensity; "
                        f"{_advice('seg')}, or store the mask times 255")


def _read_npz(path: str | Path, files: FileSeries) -> np.ndarray:
    what = "heatmap" if files == HEATMAPS else "mask"
    array = read_npz(path, (files.key,), what, _advice("kphm"))[files.key]
    check_view_array(array, path, files)
    return array


def check_same_size(frames: Sequence[np.ndarray], folder: Path, view: str, indices: Sequence[int]) -> None:
    """Refuse the frames of one video and view when they differ in size (a mixed or half-rewritten folder).

    Raises:
        DataError: naming the folder, two differing frames and their sizes.
    """
    sizes = [frame.shape for frame in frames]
    odd = next((i for i, size in enumerate(sizes) if size != sizes[0]), None)
    if odd is not None:
        raise DataError(
            f"{view} frames of {folder} differ in size: frame {indices[0]} is {sizes[0]}, frame {indices[odd]} is "
            f"{sizes[odd]}; delete the folder and extract the view again (process_data/)"
        )


def is_jpeg_view(view: str) -> bool:
    """The view is stored as JPEGs, which can be decoded at reduced resolution."""
    return VIEWS[view].files.suffix == ".jpg"


def jpeg_size(path: str | Path) -> tuple[int, int] | None:
    """``(height, width)`` from a JPEG's frame header, without decoding; ``None`` if none is found."""
    with open(path, "rb") as f:
        if f.read(2) != b"\xff\xd8":
            return None
        while True:
            marker = f.read(2)
            if len(marker) < 2 or marker[0] != 0xFF:
                return None
            code = marker[1]
            if code == 0x01 or 0xD0 <= code <= 0xD8:  # markers without a length
                continue
            length = int.from_bytes(f.read(2), "big")
            if code in _SOF_MARKERS:
                header = f.read(5)  # precision, height, width
                return (int.from_bytes(header[1:3], "big"), int.from_bytes(header[3:5], "big")) if len(header) == 5 else None
            if code == 0xDA or length < 2:  # image data before any frame header
                return None
            f.seek(length - 2, os.SEEK_CUR)


def read_stored(folder: str | Path, view: str, index: int, reduce: int = 1) -> np.ndarray:
    """One stored frame of ``view`` as decoded: uint8 ``[H, W, C]``, images in OpenCV's BGR order.

    Args:
        folder: the view's folder of the video.
        view: the view name.
        index: 1-based frame index of the file.
        reduce: decode JPEGs at 1/``reduce`` of their size (1, 2, 4 or 8); arrays are read as stored.
    """
    files = VIEWS[view].files
    path = f"{folder}{os.sep}{files.name(index)}"  # pathlib joins cost more than small decodes
    if view == "imgs":
        return _read_image(path, COLOR_DECODE_FLAGS[reduce], _advice(view))
    if VIEWS[view].is_flow:
        x = _read_image(path, GRAY_DECODE_FLAGS[reduce], _advice(view))
        y = _read_image(f"{folder}{os.sep}{FLOW_Y.name(index)}", GRAY_DECODE_FLAGS[reduce], _advice(view))
        return cv2.merge([x, y])
    if view == "kphm":
        return _read_npz(path, files).transpose(1, 2, 0)
    return _read_npz(path, files)[..., None]


def decode_each(folder: Path, view: str, indices: Sequence[int], reduce: int = 1) -> Iterator[np.ndarray]:
    """:func:`read_stored` of each of ``indices``, one frame per step of the iterator.

    Raises:
        DataError: a frame differs in size from the first (:func:`check_same_size`).
    """
    first = None
    for index in indices:
        frame = read_stored(folder, view, int(index), reduce)
        first = frame if first is None else first
        check_same_size((first, frame), folder, view, (int(indices[0]), int(index)))
        yield frame


def read_frame(folder: Path, view: str, index: int) -> np.ndarray:
    """One stored frame of ``view`` as uint8 ``[H, W, C]`` (RGB for images)."""
    frame = read_stored(folder, view, index)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if view == "imgs" else frame


def stored_size(folder: Path, view: str, index: int) -> tuple[int, int]:
    """``(height, width)`` of a stored frame: from the JPEG header, else by reading the frame."""
    if is_jpeg_view(view):
        size = jpeg_size(folder / VIEWS[view].files.name(index))
        if size is not None:
            return size
    return read_stored(folder, view, index).shape[:2]


def smallest_crop_side(
    height: int, width: int, random_crops: bool, scale: tuple[float, float], ratio: tuple[float, float]
) -> float:
    """Shortest side in pixels of any crop a dataset can take of a ``height × width`` frame.

    Args:
        height, width: the frame's size.
        random_crops: :func:`~utils.augmentation.random_sized_crop` (else the centred square).
        scale, ratio: its area and width/height ranges.
    """
    short = min(height, width)
    if not random_crops:
        return float(short)
    # A crop of area a·H·W and ratio r has sides sqrt(a·r·H·W) and sqrt(a·H·W/r).
    return min(float(short), math.sqrt(scale[0] * height * width * min(ratio[0], 1 / ratio[1])))


def decode_reduction(crop_side: float, size: int) -> int:
    """Largest JPEG decode reduction (8, 4, 2 or 1) that leaves the smallest crop at least ``size`` px.

    The crop is then still shrunk (or kept) to ``size``, never enlarged, so the sample has the detail
    a full decode would give it.
    """
    return next((f for f in REDUCTIONS if crop_side >= f * size), 1)  # 1 also when the crop is enlarged


def list_present(folder: Path, view: str) -> np.ndarray:
    """Sorted 1-based indices of ``view``'s frames present in ``folder``.

    Raises:
        FileNotFoundError: the folder cannot be listed or holds no frame of the view.
    """
    files = VIEWS[view].files
    try:
        names = os.listdir(folder)
    except OSError as err:
        raise FileNotFoundError(f"{view} folder {folder} cannot be listed: {err}") from err
    indices = [i for i in map(files.index, names) if i is not None]
    if not indices:
        raise FileNotFoundError(f"{view} folder {folder} holds no {files.glob} files")
    return np.array(sorted(indices), np.int32)


def nearest_present(present: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The stored frames nearest to the requested ones (a tie goes to the later frame).

    Args:
        present: sorted 1-based indices of the stored frames.
        indices: requested 1-based frame indices.

    Returns:
        ``unique`` sorted stored indices to read, and ``inverse`` with ``unique[inverse]`` the frame
        used for each requested index.
    """
    wanted, inverse = np.unique(indices, return_inverse=True)
    pos = np.clip(np.searchsorted(present, wanted), 0, len(present) - 1)
    left = np.clip(pos - 1, 0, len(present) - 1)
    nearest = np.where(np.abs(present[left] - wanted) < np.abs(present[pos] - wanted), present[left], present[pos])
    unique, back = np.unique(nearest, return_inverse=True)
    return unique, back[inverse]


# A stored frame this far from the requested one means frames are missing, not sparse by design
# (heatmaps and masks every other frame, flow one frame short).
FILL_GAP_WARNING = 4
_MAX_FILL_WARNINGS = 20
_fill_warnings: set[str] = set()


def warn_distant_fill(folder: Path, view: str, requested: np.ndarray, used: np.ndarray) -> None:
    """Log (once per folder, for the first few folders of a process) a clip filled from far-off frames.

    Args:
        folder: the view's folder of the video.
        view: the view.
        requested, used: the 1-based frames asked for and the stored ones read for them.
    """
    distance = np.abs(np.asarray(used, np.int64) - np.asarray(requested, np.int64))
    if not len(distance) or distance.max() <= FILL_GAP_WARNING:
        return
    if len(_fill_warnings) >= _MAX_FILL_WARNINGS or str(folder) in _fill_warnings:
        return
    _fill_warnings.add(str(folder))
    worst = int(distance.argmax())
    log.warning("%s frames of %s are missing: frame %d is read for frame %d, %d frames away, so clips repeat frames; "
                "extract the video's %s again (process_data/)%s", view, folder, int(used[worst]), int(requested[worst]),
                int(distance[worst]), view, "; no more such warnings" if len(_fill_warnings) == _MAX_FILL_WARNINGS else "")


class FrameReader:
    """Reads frames of any view, filling a frame missing on disk from its nearest neighbour.

    Heatmaps and masks may exist only every other frame and flow has one frame fewer than RGB;
    the indices present are listed once per folder and kept for the last few thousand folders
    (an unbounded cache would grow every DataLoader worker by one array per video).
    """

    def __init__(self, max_folders: int = _LISTING_CACHE) -> None:
        self._available: OrderedDict[Path, np.ndarray] = OrderedDict()
        self.max_folders = max_folders

    def available(self, folder: Path, view: str) -> np.ndarray:
        """Sorted 1-based indices of ``view``'s frames present in ``folder``."""
        present = self._available.get(folder)
        if present is None:
            present = self._available[folder] = list_present(folder, view)
            if len(self._available) > self.max_folders:
                self._available.popitem(last=False)
        else:
            self._available.move_to_end(folder)
        return present

    def nearest(self, folder: Path, view: str, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:func:`nearest_present` among ``view``'s frames in ``folder`` (logs frames filled from far off)."""
        unique, inverse = nearest_present(self.available(folder, view), indices)
        warn_distant_fill(folder, view, indices, unique[inverse])
        return unique, inverse

    def read(self, frame_dir: Path, view: str, indices: np.ndarray) -> torch.Tensor:
        """uint8 ``[K, H, W, C]`` of ``view`` at the 1-based RGB frame ``indices`` (shape ``[K]``)."""
        folder = view_dir(frame_dir, view)
        unique, inverse = self.nearest(folder, view, indices)
        frames = [read_frame(folder, view, int(i)) for i in unique]
        check_same_size(frames, folder, view, unique)
        return torch.from_numpy(np.stack(frames)[inverse])


def missing_views(entries: Sequence[VideoEntry], views: Sequence[str]) -> dict[str, list[Path]]:
    """For each view, the videos whose folder of that view is missing or empty."""
    missing: dict[str, list[Path]] = {}
    for view in views:
        absent = []
        for entry in entries:
            folder = view_dir(entry.frame_dir, view)
            try:
                with os.scandir(folder) as it:
                    if next(it, None) is None:
                        absent.append(folder)
            except PermissionError as err:
                raise PermissionError(err.errno, f"{view} folder {folder} cannot be read (permission denied); give this "
                                      "user read access to the dataset", str(folder)) from err
            except OSError:
                absent.append(folder)
        if absent:
            missing[view] = absent
    return missing


def check_views_on_disk(entries: Sequence[VideoEntry], views: Sequence[str], split_name: str) -> None:
    """Raise before training if any requested view is missing for any listed video.

    Raises:
        FileNotFoundError: naming, per view, how many videos lack it and the first few folders.
    """
    missing = missing_views(entries, views)
    if not missing:
        return
    lines = [f"{split_name}: views missing on disk for {len(entries)} listed videos:"]
    for view, folders in missing.items():
        shown = ", ".join(str(f) for f in folders[:3])
        lines.append(f"  {view}: {len(folders)} missing (e.g. {shown})")
    lines.append("Extract them with process_data/ (extract_flow.py, extract_features.py) or drop the view.")
    raise FileNotFoundError("\n".join(lines))

