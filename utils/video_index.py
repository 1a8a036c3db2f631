"""The videos of a split: the split lists on disk, the memory-light index of them, and the held-out validation set.

Layout (see :mod:`utils.layout`): split lists ``<csv_root>/train_split01.csv`` (rows ``<video frame dir>,<num frames>``),
``classInd.txt`` (``<1-based id> <class name>``).
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import numpy as np

from utils.errors import DataError
from utils.layout import FRAMES, read_class_index

COUNT_SAMPLE = 64  # videos of a list whose frame counts are compared with the disk


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
    path = split_csv_path(csv_root, part, split)
    index = read_split_csv(path, class_names)
    check_listed_counts(index, path)
    return index, class_names


def check_listed_counts(index: VideoIndex, path: Path) -> None:
    """Refuse a list whose frame counts disagree with the frames on disk for most of its videos (up to
    :data:`COUNT_SAMPLE` evenly spaced ones are compared; folders missing on disk are left to the view checks).

    Raises:
        DataError: naming the list, how many videos disagree, an example, and what to rerun.
    """
    picked = np.unique(np.linspace(0, len(index) - 1, min(COUNT_SAMPLE, len(index))).round().astype(int))
    checked, off = 0, []
    for i in picked:
        try:
            names = os.listdir(index.path(int(i)))
        except OSError:
            continue
        checked += 1
        on_disk = sum(FRAMES.index(name) is not None for name in names)
        if on_disk != index.num_frames[i]:
            off.append((index.path(int(i)), int(index.num_frames[i]), on_disk))
    if checked and 2 * len(off) > checked:
        video, listed, on_disk = off[0]
        raise DataError(
            f"{path}: the frame counts of {len(off)} of {checked} videos checked disagree with the frames on disk (e.g. "
            f"{video}: {listed} listed, {on_disk} on disk), so the frames were extracted again after the list was "
            "written: rerun process_data/write_csv.py"
        )


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

