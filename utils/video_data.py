"""Video data shared by pretraining and evaluation: split lists, clip sampling, frame reading, datasets.

Layout (SPEC.md): split lists ``<csv_root>/train_split01.csv`` (rows ``<video frame dir>,<num frames>``),
``classInd.txt`` (``<1-based id> <class name>``); frames ``…/frame/<class>/<video>/image_00001.jpg``
with the other views in sibling trees (see :mod:`utils.views`).
"""
from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from utils.augmentation import ClipGeometry, center_square, random_sized_crop, transform_view
from utils.views import VIEWS, view_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CSV_ROOT = REPO_ROOT / "process_data" / "data"

# OpenCV's own threads fight the DataLoader's worker processes for the same cores.
cv2.setNumThreads(1)


@dataclass(frozen=True)
class VideoEntry:
    """One video of a split: its RGB frame folder, frame count and 0-based class label."""

    frame_dir: Path
    num_frames: int
    label: int


# ---------------------------------------------------------------- split lists


def read_class_index(path: str | Path) -> list[str]:
    """Class names in label order from a ``classInd.txt`` (``<1-based id> <name>`` per line).

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: a malformed line, or ids that are not 1..K.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"class index {path} does not exist; write it with process_data/write_csv.py"
        )
    names: dict[int, str] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise ValueError(f"{path}:{lineno}: expected '<1-based id> <class name>', got {line!r}")
        names[int(parts[0])] = parts[1].strip()
    if sorted(names) != list(range(1, len(names) + 1)):
        raise ValueError(f"{path}: class ids must be 1..{len(names)} without gaps")
    return [names[i] for i in range(1, len(names) + 1)]


def read_split_csv(path: str | Path, class_names: Sequence[str]) -> list[VideoEntry]:
    """Videos of a split csv; the label is the class folder (the frame folder's parent).

    Raises:
        FileNotFoundError: the csv is missing.
        ValueError: a malformed row or a class that ``class_names`` does not know.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split list {path} does not exist; write it with process_data/write_csv.py")
    label_of = {name: i for i, name in enumerate(class_names)}
    entries = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        video, _, count = line.rpartition(",")
        if not video or not count.strip().isdigit():
            raise ValueError(f"{path}:{lineno}: expected '<video frame dir>,<num frames>', got {line!r}")
        frame_dir = Path(video)
        if frame_dir.parent.name not in label_of:
            raise ValueError(f"{path}:{lineno}: class {frame_dir.parent.name!r} is not in classInd.txt")
        entries.append(VideoEntry(frame_dir, int(count), label_of[frame_dir.parent.name]))
    if not entries:
        raise ValueError(f"split list {path} lists no videos")
    return entries


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


def load_split(csv_root: str | Path, part: str, split: int = 1) -> tuple[list[VideoEntry], list[str]]:
    """Videos of one part of a split, and the class names of ``<csv_root>/classInd.txt``."""
    class_names = read_class_index(Path(csv_root) / "classInd.txt")
    return read_split_csv(split_csv_path(csv_root, part, split), class_names), class_names


def holdout_split(
    entries: Sequence[VideoEntry], fraction: float, seed: int = 0
) -> tuple[list[VideoEntry], list[VideoEntry]]:
    """Split off a seeded, class-stratified validation set (the test split is never used for it).

    Every class with at least two videos keeps one in training and gives
    ``round(fraction · count)`` (at least one) to validation.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    by_class: dict[int, list[VideoEntry]] = defaultdict(list)
    for entry in entries:
        by_class[entry.label].append(entry)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in sorted(by_class):
        videos = by_class[label]
        order = rng.permutation(len(videos))
        n_val = min(len(videos) - 1, max(1, round(fraction * len(videos))))
        val += [videos[i] for i in order[:n_val]]
        train += [videos[i] for i in order[n_val:]]
    return train, val


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


# ---------------------------------------------------------------- reading views


def _read_image(path: Path, flags: int) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    if image is None:
        raise ValueError(f"cannot decode {path} (missing, truncated or not an image)")
    return image


def _read_npz(path: Path, key: str) -> np.ndarray:
    try:
        with np.load(path) as data:
            return data[key]
    except (OSError, KeyError, ValueError) as err:
        raise ValueError(f"cannot read array {key!r} from {path}: {err}") from err


def read_frame(folder: Path, view: str, index: int) -> np.ndarray:
    """One stored frame of ``view`` as uint8 ``[H, W, C]`` (RGB for images)."""
    name = VIEWS[view].pattern.format(index)
    if view == "imgs":
        return cv2.cvtColor(_read_image(folder / name, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    if VIEWS[view].is_flow:
        x = _read_image(folder / name, cv2.IMREAD_GRAYSCALE)
        y = _read_image(folder / name.replace("flow_x_", "flow_y_"), cv2.IMREAD_GRAYSCALE)
        return np.stack([x, y], axis=-1)
    if view == "kphm":
        return _read_npz(folder / name, "hm").transpose(1, 2, 0)
    return _read_npz(folder / name, "seg")[..., None]


class FrameReader:
    """Reads frames of any view, filling a frame missing on disk from its nearest neighbour.

    Heatmaps and masks may exist only every other frame and flow has one frame fewer than RGB;
    the indices present are listed once per folder and cached.
    """

    def __init__(self) -> None:
        self._available: dict[Path, np.ndarray] = {}

    def available(self, folder: Path, view: str) -> np.ndarray:
        """Sorted 1-based indices of ``view``'s frames present in ``folder``."""
        if folder not in self._available:
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
            self._available[folder] = np.array(sorted(indices))
        return self._available[folder]

    def read(self, frame_dir: Path, view: str, indices: np.ndarray) -> torch.Tensor:
        """uint8 ``[K, H, W, C]`` of ``view`` at the 1-based RGB frame ``indices`` (shape ``[K]``)."""
        folder = view_dir(frame_dir, view)
        present = self.available(folder, view)
        unique, inverse = np.unique(indices, return_inverse=True)
        pos = np.clip(np.searchsorted(present, unique), 0, len(present) - 1)
        left = np.clip(pos - 1, 0, len(present) - 1)
        nearest = np.where(np.abs(present[left] - unique) < np.abs(present[pos] - unique), present[left], present[pos])
        frames = np.stack([read_frame(folder, view, int(i)) for i in nearest])
        return torch.from_numpy(frames[inverse])


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


# ---------------------------------------------------------------- datasets


def _blocks(clip: torch.Tensor, num_seq: int, seq_len: int) -> torch.Tensor:
    """``[N·SL, C, H, W]`` → ``[N, C, SL, H, W]``."""
    _, c, h, w = clip.shape
    return clip.view(num_seq, seq_len, c, h, w).transpose(1, 2).contiguous()


class _ViewsDataset(Dataset):
    """Videos read in several views on shared frame indices; subclasses decide which frames."""

    def __init__(
        self, entries: Sequence[VideoEntry], views: Sequence[str], sizes: dict[str, int], num_seq: int, seq_len: int, ds: int
    ) -> None:
        self.entries = list(entries)
        self.views = list(views)
        self.sizes = dict(sizes)
        self.num_seq, self.seq_len, self.ds = num_seq, seq_len, ds
        self.reader = FrameReader()

    def __len__(self) -> int:
        return len(self.entries)

    def _read(self, entry: VideoEntry, frames: np.ndarray) -> tuple[dict[str, torch.Tensor], float]:
        """Every view at the 1-based ``frames``, uint8 ``[K, H, W, C]``, and the width/height of the first."""
        raw = {view: self.reader.read(entry.frame_dir, view, frames) for view in self.views}
        _, height, width, _ = raw[self.views[0]].shape
        return raw, width / height

    def _transform(
        self, raw: dict[str, torch.Tensor], geometry: ClipGeometry, rng: np.random.Generator | None
    ) -> dict[str, torch.Tensor]:
        """Each view through its pipeline, cut into blocks: ``[K/SL, C, SL, S, S]``."""
        out = {}
        for view in self.views:
            clip = transform_view(raw[view], VIEWS[view], geometry, self.sizes[view], rng)
            out[view] = _blocks(clip, len(clip) // self.seq_len, self.seq_len)
        return out


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
    ) -> None:
        super().__init__(entries, views, sizes, num_seq, seq_len, ds)
        self.train, self.hflip, self.random_start, self.seed = train, hflip, random_start, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's random draws (call before creating the epoch's loader iterator)."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict:
        entry = self.entries[index]
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.train else None
        start_rng = rng if self.random_start else None
        frames = clip_indices(entry.num_frames, self.num_seq, self.seq_len, self.ds, start_rng).reshape(-1)
        raw, aspect = self._read(entry, frames)
        if rng is None:
            geometry = center_square(aspect)
        else:
            geometry = random_sized_crop(rng, aspect, flip_prob=0.5 if self.hflip else 0.0)
        return {**self._transform(raw, geometry, rng), "label": entry.label, "index": index}


class VideoGroupDataset(_ViewsDataset):
    """Whole videos for testing: every group of blocks of a video, centre-cropped, no augmentation.

    Each item is ``{view: float [G, N, C, SL, S, S], "label": int, "index": int}``; ``G`` differs
    between videos, so load with ``batch_size=1`` (or a collate that keeps a list).
    """

    def __getitem__(self, index: int) -> dict:
        entry = self.entries[index]
        groups = video_group_indices(entry.num_frames, self.num_seq, self.seq_len, self.ds)
        raw, aspect = self._read(entry, groups.reshape(-1))
        blocks = self._transform(raw, center_square(aspect), rng=None)  # [G·N, C, SL, S, S]
        item: dict = {view: x.view(len(groups), self.num_seq, *x.shape[1:]) for view, x in blocks.items()}
        return {**item, "label": entry.label, "index": index}
