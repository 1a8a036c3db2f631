"""The multi-view video datasets shared by pretraining and evaluation, and their in-memory frame cache.

A dataset reads the videos of a split (:mod:`utils.video_index`) at the frames :mod:`utils.clip_sampling`
picks, through :mod:`utils.frame_reader`, and augments every view of a sample with one draw
(:mod:`utils.augmentation`).
"""
from __future__ import annotations

import abc
import itertools
import logging
import multiprocessing
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from utils.augmentation import (
    ClipGeometry,
    augment_uint8,
    center_square,
    crop_resize_uint8,
    random_sized_crop,
    to_blocks_uint8,
)
from utils.cli_options import COLOUR_JITTER_MODES
from utils.clip_sampling import check_clip_length, clip_indices, video_group_indices
from utils.distributed import local_world_size
from utils.frame_reader import (
    FrameReader,
    decode_each,
    decode_reduction,
    is_jpeg_view,
    list_present,
    nearest_present,
    smallest_crop_side,
    stored_size,
    warn_distant_fill,
)
from utils.video_index import VideoEntry, VideoIndex
from utils.views import VIEWS, view_dir

log = logging.getLogger(__name__)


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
    holds its own copy, so the check counts one copy per process on this node (``LOCAL_WORLD_SIZE``):
    every process checks before any has filled its cache.

    Args:
        datasets: the datasets to fill (each gets its own cache).
        loader_workers: ``--num_workers`` of their loaders (for the start-method warning).
        threads: decoding threads (default: the CPU count, at most 8).
        flag: the flag named in messages.

    Returns:
        Bytes held by the caches.

    Raises:
        MemoryError: the estimated size of every process's copy exceeds 80 % of the memory the kernel
            reports as available.
    """
    estimate = sum(ds.estimate_cache_bytes() for ds in datasets)
    copies = local_world_size()
    available = available_memory()
    if available is not None and estimate * copies > 0.8 * available:
        each = f" for each of the {copies} processes on this node (torchrun's LOCAL_WORLD_SIZE)" if copies > 1 else ""
        raise MemoryError(
            f"{flag}: the decoded frames need about {estimate / 2**30:.1f} GiB{each} but {available / 2**30:.1f} GiB is "
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
    method = multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_context().get_start_method()
    if loader_workers > 0 and method != "fork":
        log.warning("%s: DataLoader workers start by %r, not fork, so each of the %d workers receives a copy of "
                    "the cache (%.0f MiB each)", flag, method, loader_workers, total / 2**20)
    return total


class _ViewsDataset(Dataset, abc.ABC):
    """Videos read in several views on shared frame indices; subclasses decide which frames and crops.

    Frames are decoded at reduced resolution where the smallest crop the dataset can take keeps
    at least the output size (:func:`~utils.frame_reader.decode_reduction`), cropped and resized in uint8, augmented in
    uint8, and handed over as uint8 blocks: the model's side makes them float
    (:func:`~utils.augmentation.model_input`).
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

    @abc.abstractmethod
    def reachable_frames(self, index: int) -> np.ndarray:
        """1-based RGB frame indices this dataset may ever read of video ``index``."""

    def reduction(self, view: str, full_hw: tuple[int, int]) -> int:
        """JPEG decode reduction of ``view`` for frames stored at ``full_hw`` (1: full decode)."""
        if not self.reduced_decoding or not is_jpeg_view(view):
            return 1
        side = smallest_crop_side(*full_hw, self.random_crops, self.crop_scale, self.crop_ratio)
        return decode_reduction(side, self.sizes[view])

    def _decoder(self, folder: Path, view: str, unique: np.ndarray) -> tuple[Iterator[np.ndarray], tuple[int, int]]:
        """The stored frames ``unique`` of ``view`` in ``folder``, decoded at the view's reduction one at a time
        as they are taken (:func:`~utils.frame_reader.decode_each`), and their stored size."""
        if self.reduced_decoding and is_jpeg_view(view):  # the reduction needs the size first: the JPEG header has it
            full_hw = stored_size(folder, view, int(unique[0]))
            return decode_each(folder, view, unique, self.reduction(view, full_hw)), full_hw
        frames = decode_each(folder, view, unique)
        first = next(frames)
        return itertools.chain([first], frames), first.shape[:2]

    def _load(self, index: int, view: str, frames: np.ndarray) -> tuple[Iterable[np.ndarray], np.ndarray, tuple[int, int]]:
        """``view``'s frames nearest to the 1-based ``frames`` of video ``index``.

        Returns:
            the distinct frames, decoded only as they are taken (each is cropped and resized right
            after it is decoded, so a sample never holds all its full-size frames at once); the
            position among them of each requested frame; and the stored size before any reduction.
        """
        if self.cache is not None:
            cached = self.cache[(index, view)]
            unique, inverse = nearest_present(cached.indices, frames)
            return [cached.frames[i] for i in np.searchsorted(cached.indices, unique)], inverse, cached.full_hw
        folder = view_dir(self.entries[index].frame_dir, view)
        unique, inverse = self.reader.nearest(folder, view, frames)
        decoded, full_hw = self._decoder(folder, view, unique)
        return decoded, inverse, full_hw

    def _read(self, index: int, frames: np.ndarray) -> tuple[dict[str, tuple], float]:
        """Every view at the 1-based ``frames`` (see :meth:`_load`), and the width/height of the first."""
        loaded = {view: self._load(index, view, frames) for view in self.views}
        height, width = loaded[self.views[0]][2]
        return loaded, width / height

    def _transform(self, loaded: dict[str, tuple], geometry: ClipGeometry, rng: np.random.Generator | None,
                   colour_jitter: str = "frame") -> dict[str, torch.Tensor]:
        """Each view through its pipeline, cut into blocks: uint8 ``[K/SL, C, SL, S, S]``."""
        out = {}
        for view in self.views:
            decoded, inverse, _ = loaded[view]
            small = crop_resize_uint8(decoded, geometry, self.sizes[view])
            if len(inverse) != len(small) or np.any(inverse != np.arange(len(inverse))):
                small = small[inverse]
            clip = augment_uint8(small, VIEWS[view], geometry.flip, rng, bgr=view == "imgs", colour_jitter=colour_jitter)
            out[view] = to_blocks_uint8(clip, self.seq_len)
        return out

    def _cache_video(self, index: int) -> dict[str, CachedFrames]:
        """Every view's reachable frames of video ``index``, decoded."""
        frame_dir, frames = self.entries[index].frame_dir, self.reachable_frames(index)
        out = {}
        for view in self.views:
            folder = view_dir(frame_dir, view)
            unique, inverse = nearest_present(list_present(folder, view), frames)
            warn_distant_fill(folder, view, frames, unique[inverse])
            decoded, full_hw = self._decoder(folder, view, unique)
            out[view] = CachedFrames(unique, np.stack(list(decoded)), full_hw)
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

    Each item is ``{view: uint8 [N, C, SL, S, S], "label": int, "index": int}`` (see
    :func:`~utils.augmentation.model_input` for the encoder's float). Random draws come
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
        colour_jitter: with ``train``, RGB colour jitter and grayscale drawn per ``"frame"`` (the
            original's) or once per ``"clip"``.
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
        colour_jitter: str = "frame",
    ) -> None:
        super().__init__(entries, views, sizes, num_seq, seq_len, ds, reduced_decoding)
        check_clip_length(self.entries.num_frames, num_seq, seq_len, ds)
        if colour_jitter not in COLOUR_JITTER_MODES:
            raise ValueError(f"--colour_jitter must be one of {COLOUR_JITTER_MODES}, got {colour_jitter!r}")
        self.train, self.hflip, self.random_start, self.seed = train, hflip, random_start, seed
        self.colour_jitter = colour_jitter
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
        return {**self._transform(loaded, geometry, rng, self.colour_jitter), "label": int(self.entries.labels[index]), "index": index}


class VideoGroupDataset(_ViewsDataset):
    """Whole videos for testing: every group of blocks of a video, centre-cropped, no augmentation.

    Each item is ``{view: uint8 [G, N, C, SL, S, S], "label": int, "index": int}``; ``G`` differs
    between videos, so load with ``batch_size=1`` (or a collate that keeps a list).
    """

    def __init__(self, entries: Sequence[VideoEntry], views: Sequence[str], sizes: dict[str, int], num_seq: int,
                 seq_len: int, ds: int, reduced_decoding: bool = True) -> None:
        super().__init__(entries, views, sizes, num_seq, seq_len, ds, reduced_decoding)
        check_clip_length(self.entries.num_frames, num_seq, seq_len, ds)

    def reachable_frames(self, index: int) -> np.ndarray:
        groups = video_group_indices(int(self.entries.num_frames[index]), self.num_seq, self.seq_len, self.ds)
        return np.unique(groups)

    def __getitem__(self, index: int) -> dict:
        groups = video_group_indices(int(self.entries.num_frames[index]), self.num_seq, self.seq_len, self.ds)
        loaded, aspect = self._read(index, groups.reshape(-1))
        blocks = self._transform(loaded, center_square(aspect), rng=None)  # [G·N, C, SL, S, S]
        item: dict = {view: x.view(len(groups), self.num_seq, *x.shape[1:]) for view, x in blocks.items()}
        return {**item, "label": int(self.entries.labels[index]), "index": index}
