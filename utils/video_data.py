"""Video data shared by pretraining and evaluation: split lists, clip sampling, frame reading, datasets.

Layout (see :mod:`utils.layout`): split lists ``<csv_root>/train_split01.csv`` (rows ``<video frame dir>,<num frames>``),
``classInd.txt`` (``<1-based id> <class name>``); frames ``…/frame/<class>/<video>/image_00001.jpg``
with the other views in sibling trees (see :mod:`utils.views`).
"""
from __future__ import annotations

import logging
import math
import os
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence, overload

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from utils.augmentation import (
    ClipGeometry,
    augment_uint8,
    center_square,
    crop_resize_uint8,
    random_sized_crop,
    to_float,
)
from utils.errors import DataError, UsageError
from utils.files import read_npz
from utils.layout import read_class_index  # re-exported: torch-free, shared with write_csv.py
from utils.views import VIEWS, view_dir


# OpenCV's own threads fight the DataLoader's worker processes for the same cores.
cv2.setNumThreads(1)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoEntry:
    """One video of a split: its RGB frame folder, frame count and 0-based class label."""

    frame_dir: Path
    num_frames: int
    label: int


class VideoIndex(Sequence[VideoEntry]):
    """The videos of a split in flat arrays; items are :class:`VideoEntry` objects built on access.

    DataLoader workers fork from the main process and share its memory until a page is written.
    Reading a Python object writes its reference count, so a list of per-video objects is copied
    into every worker page by page as the epoch reads it (for 240k videos, hundreds of MiB per
    worker). Here the paths are slices of one byte buffer and the counts and labels are numpy
    arrays: three objects whatever the number of videos, and their data pages are never written.

    Args:
        paths: uint8 buffer of the UTF-8 frame folders, each followed by a newline.
        offsets: int64 ``[V + 1]``: path ``i`` is ``paths[offsets[i] : offsets[i + 1] - 1]``.
        num_frames: int64 ``[V]`` frames per video.
        labels: int64 ``[V]`` 0-based classes.
    """

    def __init__(self, paths: np.ndarray, offsets: np.ndarray, num_frames: np.ndarray, labels: np.ndarray) -> None:
        if not len(offsets) == len(num_frames) + 1 == len(labels) + 1:
            raise ValueError(f"VideoIndex: {len(offsets)} offsets for {len(num_frames)} counts and {len(labels)} labels")
        self.paths = np.asarray(paths, np.uint8)
        self.offsets = np.asarray(offsets, np.int64)
        self.num_frames = np.asarray(num_frames, np.int64)
        self.labels = np.asarray(labels, np.int64)

    @classmethod
    def from_rows(cls, paths: Sequence[str], num_frames: Sequence[int], labels: Sequence[int]) -> VideoIndex:
        """An index of ``paths`` (frame folders as strings) with their counts and labels.

        Raises:
            ValueError: a path holds a newline, the separator of the buffer.
        """
        if not paths:
            return cls(np.zeros(0, np.uint8), np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
        buffer = np.frombuffer(("\n".join(paths) + "\n").encode(), np.uint8)
        ends = np.flatnonzero(buffer == ord("\n"))
        if len(ends) != len(paths):
            raise ValueError("VideoIndex: a video path holds a newline")
        offsets = np.concatenate([[0], ends + 1])
        return cls(buffer, offsets, np.asarray(num_frames, np.int64), np.asarray(labels, np.int64))

    @classmethod
    def from_entries(cls, entries: Sequence[VideoEntry]) -> VideoIndex:
        """An index of :class:`VideoEntry` objects (an index is returned as it is)."""
        if isinstance(entries, VideoIndex):
            return entries
        entries = list(entries)
        return cls.from_rows([str(e.frame_dir) for e in entries], [e.num_frames for e in entries],
                             [e.label for e in entries])

    def __len__(self) -> int:
        return len(self.num_frames)

    def path(self, i: int) -> str:
        """Frame folder of video ``i`` as written in the split list."""
        return bytes(self.paths[self.offsets[i] : self.offsets[i + 1] - 1]).decode()

    @overload
    def __getitem__(self, i: int) -> VideoEntry: ...

    @overload
    def __getitem__(self, i: slice | Sequence[int] | np.ndarray) -> VideoIndex: ...

    def __getitem__(self, i):
        if isinstance(i, (int, np.integer)):
            if not -len(self) <= i < len(self):
                raise IndexError(f"video {i} out of range for an index of {len(self)} videos")
            i = int(i) % len(self)
            return VideoEntry(Path(self.path(i)), int(self.num_frames[i]), int(self.labels[i]))
        if isinstance(i, slice):
            return self.take(np.arange(len(self))[i])
        return self.take(i)

    def __iter__(self) -> Iterator[VideoEntry]:
        for i in range(len(self)):
            yield self[i]

    def take(self, indices: Sequence[int] | np.ndarray) -> VideoIndex:
        """The videos at ``indices`` (in that order) as a new index, gathered without a Python loop."""
        idx = np.asarray(indices, np.int64).reshape(-1)
        starts = self.offsets[idx]
        lengths = self.offsets[idx + 1] - starts
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        source = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        return VideoIndex(self.paths[source], offsets, self.num_frames[idx], self.labels[idx])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, VideoIndex):
            return (np.array_equal(self.num_frames, other.num_frames) and np.array_equal(self.labels, other.labels)
                    and np.array_equal(self.offsets, other.offsets) and np.array_equal(self.paths, other.paths))
        if isinstance(other, Sequence) and not isinstance(other, str):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # compared by value, like the list it replaces

    def __repr__(self) -> str:
        return f"VideoIndex({len(self)} videos, {self.paths.nbytes} path bytes)"


# ---------------------------------------------------------------- split lists


def read_split_csv(path: str | Path, class_names: Sequence[str]) -> VideoIndex:
    """Videos of a split csv; the label is the class folder (the frame folder's parent).

    Builds no object per video (see :class:`VideoIndex`): 240k rows take well under a second.

    Raises:
        FileNotFoundError: the csv is missing.
        ValueError: a malformed row or a class that ``class_names`` does not know.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split list {path} does not exist; write it with process_data/write_csv.py")
    label_of = {name: i for i, name in enumerate(class_names)}
    label_of_folder: dict[str, int] = {}  # Path() per row would dominate the build time
    videos, counts, labels = [], [], []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        video, _, count = line.rpartition(",")
        if not video or not count.strip().isdigit():
            raise ValueError(f"{path}:{lineno}: expected '<video frame dir>,<num frames>', got {line!r}")
        folder, _, name = video.rstrip("/").rpartition("/")
        label = label_of_folder.get(folder) if name not in ("", ".") else None
        if label is None:
            class_name = Path(video).parent.name
            if class_name not in label_of:
                raise ValueError(f"{path}:{lineno}: class {class_name!r} is not in classInd.txt")
            label = label_of[class_name]
            if name not in ("", "."):
                label_of_folder[folder] = label
        videos.append(video)
        counts.append(int(count))
        labels.append(label)
    if not videos:
        raise ValueError(f"split list {path} lists no videos")
    return VideoIndex.from_rows(videos, counts, labels)


def split_csv_path(csv_root: str | Path, part: str, split: int = 1) -> Path:
    """Path of the ``part`` ('train' or 'test') list of ``split``.

    UCF101/HMDB51-style roots have ``train_split01.csv``/``test_split01.csv``; Kinetics-style roots
    have ``train_split.csv``/``val_split.csv`` (its val set is its test set).
    """
    csv_root = Path(csv_root)
    numbered = csv_root / f"{part}_split{split:02d}.csv"
    if numbered.is_file():
        return numbered
    single = csv_root / ("val_split.csv" if part == "test" else f"{part}_split.csv")
    if single.is_file():
        return single
    raise FileNotFoundError(
        f"no {part} list for split {split} in {csv_root} (looked for {numbered.name} and {single.name}); "
        "write it with process_data/write_csv.py or pass --csv_root"
    )


def load_split(csv_root: str | Path, part: str, split: int = 1) -> tuple[VideoIndex, list[str]]:
    """Videos of one part of a split, and the class names of ``<csv_root>/classInd.txt``."""
    class_names = read_class_index(Path(csv_root) / "classInd.txt")
    return read_split_csv(split_csv_path(csv_root, part, split), class_names), class_names


def holdout_split(entries: Sequence[VideoEntry], fraction: float, seed: int = 0) -> tuple[VideoIndex, VideoIndex]:
    """Split off a seeded, class-stratified validation set (the test split is never used for it).

    Every class with at least two videos keeps one in training and gives
    ``round(fraction · count)`` (at least one) to validation.

    Args:
        entries: the videos (a :class:`VideoIndex` or a sequence of :class:`VideoEntry`).
        fraction: share of each class held out, in (0, 1).
        seed: seed of the draw.

    Returns:
        ``(train, val)``, class by class in label order.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    index = VideoIndex.from_entries(entries)
    by_label = np.argsort(index.labels, kind="stable")  # each class's videos in listed order
    labels, starts = np.unique(index.labels[by_label], return_index=True)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for members in np.split(by_label, starts[1:]) if len(labels) else []:
        order = rng.permutation(len(members))
        n_val = min(len(members) - 1, max(1, round(fraction * len(members))))
        val.append(members[order[:n_val]])
        train.append(members[order[n_val:]])
    empty = np.zeros(0, np.int64)
    return index.take(np.concatenate(train or [empty])), index.take(np.concatenate(val or [empty]))


# ---------------------------------------------------------------- clip sampling


def clip_indices(
    num_frames: int, num_seq: int, seq_len: int, ds: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """1-based frame indices of one clip: ``num_seq`` contiguous blocks of ``seq_len`` frames every ``ds``.

    A video too short for stride ``ds`` gets the largest stride that fits; one too short even for
    stride 1 repeats its last frame. ``rng=None`` takes the middle of the video (evaluation).

    Returns:
        int64 ``[num_seq, seq_len]``.
    """
    if num_frames < 1:
        raise ValueError("a video needs at least one frame")
    span = num_seq * seq_len
    stride = ds
    while stride > 1 and (span - 1) * stride + 1 > num_frames:
        stride -= 1
    max_start = max(0, num_frames - ((span - 1) * stride + 1))
    start = int(rng.integers(0, max_start + 1)) if rng is not None else max_start // 2
    frames = np.minimum(start + np.arange(span) * stride, num_frames - 1) + 1
    return frames.reshape(num_seq, seq_len)


def video_group_indices(num_frames: int, num_seq: int, seq_len: int, ds: int) -> np.ndarray:
    """Every frame at stride ``ds``, cut into ``seq_len`` blocks, in groups of ``num_seq`` blocks
    overlapping by half; the last group is aligned to the end so no block is left out.

    Returns:
        int64 ``[G, num_seq, seq_len]`` of 1-based frame indices.
    """
    sampled = np.arange(0, num_frames, ds) + 1
    needed = num_seq * seq_len
    if len(sampled) < needed:
        # Too short for one group: repeat the last frame rather than wrap around.
        sampled = np.concatenate([sampled, np.full(needed - len(sampled), sampled[-1])])
    n_blocks = len(sampled) // seq_len
    blocks = sampled[: n_blocks * seq_len].reshape(n_blocks, seq_len)
    step = max(1, num_seq // 2)
    starts = list(range(0, n_blocks - num_seq + 1, step))
    if starts[-1] != n_blocks - num_seq:
        starts.append(n_blocks - num_seq)
    return np.stack([blocks[s : s + num_seq] for s in starts])


def check_clip_length(num_frames: np.ndarray, num_seq: int, seq_len: int) -> int:
    """Say how many videos are shorter than a clip (their clips repeat the last frame), and refuse
    when most videos would fill most of a clip that way.

    Args:
        num_frames: frames of each video.
        num_seq, seq_len: ``--num_seq`` blocks of ``--seq_len`` frames: a clip needs their product.

    Returns:
        the number of padded videos.

    Raises:
        UsageError: over half of the videos have fewer than half the frames of a clip.
    """
    span = num_seq * seq_len
    counts = np.asarray(num_frames)
    padded = int((counts < span).sum())
    mostly = int((2 * counts < span).sum())
    if len(counts) and 2 * mostly > len(counts):
        raise UsageError(
            f"--num_seq {num_seq} × --seq_len {seq_len} = {span} frames per clip, but {mostly} of {len(counts)} videos "
            f"have fewer than {span // 2 + span % 2}: most of their clips would repeat the last frame; lower "
            "--num_seq or --seq_len"
        )
    if padded:
        log.warning("%d of %d videos are shorter than a clip of --num_seq %d × --seq_len %d = %d frames: their clips "
                    "repeat the last frame (shortest: %d frames)", padded, len(counts), num_seq, seq_len, span,
                    int(counts.min()))
    return padded


# ---------------------------------------------------------------- reading views


# Reduced-resolution decoding: libjpeg scales in the DCT, so a 1/2, 1/4 or 1/8 decode skips most of
# the work of a full one (for other formats OpenCV decodes fully, then resizes).
_COLOR_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                8: cv2.IMREAD_REDUCED_COLOR_8}
_GRAY_FLAGS = {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
               8: cv2.IMREAD_REDUCED_GRAYSCALE_8}
REDUCTIONS = (8, 4, 2, 1)
# JPEG start-of-frame markers (SOF0..SOF15 except DHT, JPG and DAC), which carry the frame size.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_LISTING_CACHE = 4096  # folders whose frame listing a FrameReader keeps


def _read_image(path: str | Path, flags: int) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    if image is None:
        raise ValueError(f"cannot decode {path} (missing, truncated or not an image)")
    return image


def _read_npz(path: str | Path, key: str) -> np.ndarray:
    what = "heatmap" if key == "hm" else "mask"
    advice = f"delete {Path(path).parent} and run process_data/extract_features.py again"
    return read_npz(path, (key,), what, advice)[key]


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
    return VIEWS[view].pattern.endswith(".jpg")


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
    path = f"{folder}{os.sep}{VIEWS[view].pattern.format(index)}"  # pathlib joins cost more than small decodes
    if view == "imgs":
        return _read_image(path, _COLOR_FLAGS[reduce])
    if VIEWS[view].is_flow:
        x = _read_image(path, _GRAY_FLAGS[reduce])
        y = _read_image(path.replace("flow_x_", "flow_y_"), _GRAY_FLAGS[reduce])
        return cv2.merge([x, y])
    if view == "kphm":
        return _read_npz(path, "hm").transpose(1, 2, 0)
    return _read_npz(path, "seg")[..., None]


def read_frame(folder: Path, view: str, index: int) -> np.ndarray:
    """One stored frame of ``view`` as uint8 ``[H, W, C]`` (RGB for images)."""
    frame = read_stored(folder, view, index)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if view == "imgs" else frame


def stored_size(folder: Path, view: str, index: int) -> tuple[int, int]:
    """``(height, width)`` of a stored frame: from the JPEG header, else by reading the frame."""
    if is_jpeg_view(view):
        size = jpeg_size(folder / VIEWS[view].pattern.format(index))
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
    prefix, suffix = VIEWS[view].pattern.split("{")[0], Path(VIEWS[view].pattern).suffix
    try:
        names = os.listdir(folder)
    except OSError as err:
        raise FileNotFoundError(f"{view} folder {folder} cannot be listed: {err}") from err
    indices = [
        int(n[len(prefix) : -len(suffix)])
        for n in names
        if n.startswith(prefix) and n.endswith(suffix) and n[len(prefix) : -len(suffix)].isdigit()
    ]
    if not indices:
        raise FileNotFoundError(f"{view} folder {folder} holds no {prefix}*{suffix} files")
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
        """:func:`nearest_present` among ``view``'s frames in ``folder``."""
        return nearest_present(self.available(folder, view), indices)

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


# ---------------------------------------------------------------- frame cache


@dataclass(frozen=True)
class CachedFrames:
    """Decoded frames of one view of one video, as the dataset would read them from disk.

    Args:
        indices: int32 ``[K]`` sorted 1-based indices of the stored frames held.
        frames: uint8 ``[K, h, w, C]`` decoded at the dataset's reduction (images BGR).
        full_hw: the stored frames' size before the reduction (the crop's aspect comes from it).
    """

    indices: np.ndarray
    frames: np.ndarray
    full_hw: tuple[int, int]


def available_memory() -> int | None:
    """Bytes the kernel reports as available (``MemAvailable``); ``None`` where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def fill_frame_caches(
    datasets: Sequence[_ViewsDataset], loader_workers: int, threads: int | None = None, flag: str = "--cache_frames"
) -> int:
    """Decode every frame the datasets can read into memory, before their DataLoaders start.

    Forked DataLoader workers share the main process's memory until they write to it, and the
    cached frames are only read, so the memory is paid once whatever the number of workers, and
    no epoch reads the disk again. (A cache filled inside the workers would be per worker and,
    without persistent workers, lost at the end of every epoch.) Under ``torchrun`` each process
    holds its own copy.

    Args:
        datasets: the datasets to fill (each gets its own cache).
        loader_workers: ``--num_workers`` of their loaders (for the start-method warning).
        threads: decoding threads (default: the CPU count, at most 8).
        flag: the flag named in messages.

    Returns:
        Bytes held by the caches.

    Raises:
        MemoryError: the estimated size exceeds 80 % of the memory the kernel reports as available.
    """
    estimate = sum(ds.estimate_cache_bytes() for ds in datasets)
    available = available_memory()
    if available is not None and estimate > 0.8 * available:
        raise MemoryError(
            f"{flag}: the decoded frames need about {estimate / 2**30:.1f} GiB but {available / 2**30:.1f} GiB is "
            "available; drop the flag, or use fewer views or a smaller --img_dim"
        )
    started = time.time()
    threads = threads or min(8, os.cpu_count() or 1)
    total = sum(ds.fill_cache(threads) for ds in datasets)
    frames = sum(len(c.indices) for ds in datasets for c in (ds.cache or {}).values())
    log.info("%s: %d frames of %d videos (%s) decoded in %.1f s, holding %.0f MiB (estimated %.0f MiB), "
             "shared by the %d DataLoader workers", flag, frames, sum(len(ds) for ds in datasets),
             "_".join(datasets[0].views) if datasets else "", time.time() - started, total / 2**20,
             estimate / 2**20, loader_workers)
    import multiprocessing

    method = multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_context().get_start_method()
    if loader_workers > 0 and method != "fork":
        log.warning("%s: DataLoader workers start by %r, not fork, so each of the %d workers receives a copy of "
                    "the cache (%.0f MiB each)", flag, method, loader_workers, total / 2**20)
    return total


# ---------------------------------------------------------------- datasets


class _ViewsDataset(Dataset):
    """Videos read in several views on shared frame indices; subclasses decide which frames and crops.

    Frames are decoded at reduced resolution where the smallest crop the dataset can take keeps
    at least the output size (:func:`decode_reduction`), cropped and resized in uint8, augmented in
    uint8, and converted to float once, already cut into blocks.
    """

    random_crops = False  # random-sized crops (else the centred square): the smallest crop bounds the reduction
    crop_scale: tuple[float, float] = (0.5, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __init__(
        self,
        entries: Sequence[VideoEntry],
        views: Sequence[str],
        sizes: dict[str, int],
        num_seq: int,
        seq_len: int,
        ds: int,
        reduced_decoding: bool = True,
    ) -> None:
        self.entries = VideoIndex.from_entries(entries)
        self.views = list(views)
        self.sizes = dict(sizes)
        self.num_seq, self.seq_len, self.ds = num_seq, seq_len, ds
        self.reduced_decoding = reduced_decoding
        self.reader = FrameReader()
        self.cache: dict[tuple[int, str], CachedFrames] | None = None

    def __len__(self) -> int:
        return len(self.entries)

    def reachable_frames(self, index: int) -> np.ndarray:
        """1-based RGB frame indices this dataset may ever read of video ``index``."""
        raise NotImplementedError

    def reduction(self, view: str, full_hw: tuple[int, int]) -> int:
        """JPEG decode reduction of ``view`` for frames stored at ``full_hw`` (1: full decode)."""
        if not self.reduced_decoding or not is_jpeg_view(view):
            return 1
        side = smallest_crop_side(*full_hw, self.random_crops, self.crop_scale, self.crop_ratio)
        return decode_reduction(side, self.sizes[view])

    def _decode(self, folder: Path, view: str, unique: np.ndarray) -> tuple[list[np.ndarray], tuple[int, int]]:
        """The stored frames ``unique`` of ``view`` in ``folder`` at the view's reduction, and their full size."""
        full_hw = stored_size(folder, view, int(unique[0])) if self.reduced_decoding and is_jpeg_view(view) else None
        reduce = self.reduction(view, full_hw) if full_hw is not None else 1
        frames = [read_stored(folder, view, int(i), reduce) for i in unique]
        check_same_size(frames, folder, view, unique)
        return frames, full_hw or frames[0].shape[:2]

    def _load(self, index: int, view: str, frames: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, tuple[int, int]]:
        """``view``'s frames nearest to the 1-based ``frames`` of video ``index``.

        Returns:
            the distinct decoded frames, the position among them of each requested frame, and the
            stored size before any reduction.
        """
        if self.cache is not None:
            cached = self.cache[(index, view)]
            unique, inverse = nearest_present(cached.indices, frames)
            return [cached.frames[i] for i in np.searchsorted(cached.indices, unique)], inverse, cached.full_hw
        folder = view_dir(self.entries[index].frame_dir, view)
        unique, inverse = self.reader.nearest(folder, view, frames)
        decoded, full_hw = self._decode(folder, view, unique)
        return decoded, inverse, full_hw

    def _read(self, index: int, frames: np.ndarray) -> tuple[dict[str, tuple], float]:
        """Every view at the 1-based ``frames`` (see :meth:`_load`), and the width/height of the first."""
        loaded = {view: self._load(index, view, frames) for view in self.views}
        height, width = loaded[self.views[0]][2]
        return loaded, width / height

    def _transform(self, loaded: dict[str, tuple], geometry: ClipGeometry, rng: np.random.Generator | None) -> dict[str, torch.Tensor]:
        """Each view through its pipeline, cut into blocks: float ``[K/SL, C, SL, S, S]``."""
        out = {}
        for view in self.views:
            decoded, inverse, _ = loaded[view]
            small = crop_resize_uint8(decoded, geometry, self.sizes[view])
            if len(inverse) != len(small) or np.any(inverse != np.arange(len(inverse))):
                small = small[inverse]
            clip = augment_uint8(small, VIEWS[view], geometry.flip, rng, bgr=view == "imgs")
            out[view] = to_float(clip, VIEWS[view], self.seq_len)
        return out

    def _cache_video(self, index: int) -> dict[str, CachedFrames]:
        """Every view's reachable frames of video ``index``, decoded."""
        frame_dir, frames = self.entries[index].frame_dir, self.reachable_frames(index)
        out = {}
        for view in self.views:
            folder = view_dir(frame_dir, view)
            unique, _ = nearest_present(list_present(folder, view), frames)
            decoded, full_hw = self._decode(folder, view, unique)
            out[view] = CachedFrames(unique, np.stack(decoded), full_hw)
        return out

    def estimate_cache_bytes(self, sample: int = 32) -> int:
        """Bytes :meth:`fill_cache` would hold, extrapolated from ``sample`` evenly spaced videos by frame count."""
        if len(self) == 0:
            return 0
        reachable = np.array([len(self.reachable_frames(i)) for i in range(len(self))])
        picked = np.unique(np.linspace(0, len(self) - 1, min(sample, len(self))).round().astype(int))
        per_frame = 0.0
        for view in self.views:
            held = 0
            for i in picked:
                folder = view_dir(self.entries[int(i)].frame_dir, view)
                unique, _ = nearest_present(list_present(folder, view), self.reachable_frames(int(i)))
                height, width = stored_size(folder, view, int(unique[0]))
                reduce = self.reduction(view, (height, width))
                held += len(unique) * -(-height // reduce) * -(-width // reduce) * VIEWS[view].channels
            per_frame += held / reachable[picked].sum()
        return int(per_frame * reachable.sum())

    def fill_cache(self, threads: int = 1) -> int:
        """Decode every frame this dataset can read into memory (see :func:`fill_frame_caches`).

        Args:
            threads: decoding threads (OpenCV and zlib release the GIL).

        Returns:
            Bytes held.
        """
        self.cache = None
        cache: dict[tuple[int, str], CachedFrames] = {}
        with ThreadPoolExecutor(max(1, threads)) as pool:
            for index, views in enumerate(pool.map(self._cache_video, range(len(self)))):
                cache.update({(index, view): cached for view, cached in views.items()})
        self.cache = cache
        return sum(c.frames.nbytes + c.indices.nbytes for c in cache.values())


class MultiViewClipDataset(_ViewsDataset):
    """One clip per video per epoch, every requested view on the same frames and the same crop.

    Each item is ``{view: float [N, C, SL, S, S], "label": int, "index": int}``. Random draws come
    from ``(seed, epoch, index)``, so a run is repeatable and a resumed run sees the same data.

    Args:
        entries: the videos.
        views: view names (see :data:`utils.views.VIEWS`).
        sizes: output side per view.
        num_seq, seq_len, ds: blocks per clip, frames per block, frame stride.
        train: random clip start, random-sized crop, flip and RGB colour augmentation;
            otherwise the middle clip and a centre crop.
        hflip: allow horizontal flips (off for datasets whose classes are mirror images).
        random_start: with ``train``, draw the clip's start ("dynamic" sampling); otherwise
            always take the middle clip and augment only crops and colours.
        seed: base seed of the random draws.
        reduced_decoding: decode JPEGs at 1/2, 1/4 or 1/8 size where the smallest possible crop
            keeps at least the output size (off: always decode fully).
    """

    def __init__(
        self,
        entries: Sequence[VideoEntry],
        views: Sequence[str],
        sizes: dict[str, int],
        num_seq: int = 8,
        seq_len: int = 5,
        ds: int = 3,
        train: bool = True,
        hflip: bool = True,
        random_start: bool = True,
        seed: int = 0,
        reduced_decoding: bool = True,
    ) -> None:
        super().__init__(entries, views, sizes, num_seq, seq_len, ds, reduced_decoding)
        check_clip_length(self.entries.num_frames, num_seq, seq_len)
        self.train, self.hflip, self.random_start, self.seed = train, hflip, random_start, seed
        self.random_crops = train
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's random draws (call before creating the epoch's loader iterator)."""
        self.epoch = epoch

    def reachable_frames(self, index: int) -> np.ndarray:
        num_frames = int(self.entries.num_frames[index])
        if self.train and self.random_start:
            return np.arange(1, num_frames + 1)
        return clip_indices(num_frames, self.num_seq, self.seq_len, self.ds).reshape(-1)

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.train else None
        start_rng = rng if self.random_start else None
        num_frames = int(self.entries.num_frames[index])
        frames = clip_indices(num_frames, self.num_seq, self.seq_len, self.ds, start_rng).reshape(-1)
        loaded, aspect = self._read(index, frames)
        if rng is None:
            geometry = center_square(aspect)
        else:
            geometry = random_sized_crop(rng, aspect, self.crop_scale, self.crop_ratio,
                                         flip_prob=0.5 if self.hflip else 0.0)
        return {**self._transform(loaded, geometry, rng), "label": int(self.entries.labels[index]), "index": index}


class VideoGroupDataset(_ViewsDataset):
    """Whole videos for testing: every group of blocks of a video, centre-cropped, no augmentation.

    Each item is ``{view: float [G, N, C, SL, S, S], "label": int, "index": int}``; ``G`` differs
    between videos, so load with ``batch_size=1`` (or a collate that keeps a list).
    """

    def reachable_frames(self, index: int) -> np.ndarray:
        groups = video_group_indices(int(self.entries.num_frames[index]), self.num_seq, self.seq_len, self.ds)
        return np.unique(groups)

    def __getitem__(self, index: int) -> dict:
        groups = video_group_indices(int(self.entries.num_frames[index]), self.num_seq, self.seq_len, self.ds)
        loaded, aspect = self._read(index, groups.reshape(-1))
        blocks = self._transform(loaded, center_square(aspect), rng=None)  # [G·N, C, SL, S, S]
        item: dict = {view: x.view(len(groups), self.num_seq, *x.shape[1:]) for view, x in blocks.items()}
        return {**item, "label": int(self.entries.labels[index]), "index": index}
