"""Pretraining datasets: the train split's videos, minus a held-out validation set, as multi-view clips.

The loading itself (split lists, clip sampling, frame reading, augmentation) lives in
:mod:`utils.video_index`, :mod:`utils.clip_sampling`, :mod:`utils.frame_reader` and :mod:`utils.video_data`,
shared with the evaluation scripts in ``test/``; this module only picks the pieces for CoCon
pretraining. Validation is held out of the *train* split (seeded, class-stratified), never taken
from the test split.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from train.pretrain_flags import SAMPLING_MODES
from utils.distributed import once_on_main
from utils.frame_reader import check_views_on_disk
from utils.split_checks import repeated_videos, small_validation
from utils.video_data import MultiViewClipDataset
from utils.video_index import holdout_split, load_split, split_csv_path
from utils.views import VIEWS

log = logging.getLogger(__name__)


def view_sizes(views: Sequence[str], img_dim: int) -> dict[str, int]:
    """Input side of each view when RGB is fed at ``img_dim``: flow at most 128, heatmaps and masks at most 64.

    See :meth:`utils.views.View.size`.
    """
    return {view: VIEWS[view].size(img_dim) for view in views}


def build_pretrain_datasets(
    csv_root: str | Path,
    split: int,
    views: Sequence[str],
    img_dim: int,
    num_seq: int,
    seq_len: int,
    ds: int,
    hflip: bool,
    sampling: str,
    val_fraction: float,
    seed: int,
    colour_jitter: str = "frame",
    clips_per_step: int = 1,
) -> tuple[MultiViewClipDataset, MultiViewClipDataset, list[str]]:
    """Training and held-out validation clips of the train list of ``split``.

    Args:
        csv_root: folder with ``train_split0<split>.csv`` (or ``train_split.csv``) and ``classInd.txt``.
        split: split number (1-3; single-split datasets ignore it).
        views: view names, e.g. ``["imgs", "flow"]``.
        img_dim: RGB side; other views take their own size (:func:`view_sizes`).
        num_seq, seq_len, ds: blocks per clip, frames per block, frame stride.
        hflip: allow horizontal flips in training.
        sampling: "dynamic" (random clip start) or "center" (middle clip; crops and colours still random).
        val_fraction: share of each class's training videos held out for validation.
        seed: seed of the hold-out split and of the augmentation draws.
        colour_jitter: RGB photometrics drawn per ``"frame"`` or per ``"clip"`` in training.
        clips_per_step: training clips of one step over every GPU and process; more than the training videos
            is refused from the list alone, before the views on disk are scanned.

    Returns:
        ``(train_ds, val_ds, class_names)``; validation clips are the middle clip, centre-cropped.

    Raises:
        ValueError: an unknown ``sampling``, no video left for validation (every class has a
            single training video), or fewer training videos than ``clips_per_step``.
        FileNotFoundError: a missing split list or class index, or a view missing on disk.
    """
    if sampling not in SAMPLING_MODES:
        raise ValueError(f"--sampling must be one of {SAMPLING_MODES}, got {sampling!r}")
    entries, class_names = load_split(csv_root, "train", split)
    train_list = split_csv_path(csv_root, "train", split)
    repeated_videos(entries, str(train_list))
    train_entries, val_entries = holdout_split(entries, val_fraction, seed)
    if not val_entries:
        raise ValueError(
            f"--val_fraction {val_fraction} holds out no validation video from {train_list}: "
            "every class has a single training video, which stays in training; add videos per class"
        )
    if clips_per_step > len(train_entries):
        raise ValueError(f"--batch_size: {clips_per_step} clips per step exceed the {len(train_entries)} training videos "
                         f"of {train_list} ({len(val_entries)} more are held out for validation); lower --batch_size")
    once_on_main(check_views_on_disk, entries, views, f"train split {split} of {csv_root}")  # one scan, not one per rank
    small_validation(len(val_entries), "pretraining")
    sizes = view_sizes(views, img_dim)
    common = dict(views=views, sizes=sizes, num_seq=num_seq, seq_len=seq_len, ds=ds, seed=seed)
    train_ds = MultiViewClipDataset(
        train_entries, train=True, hflip=hflip, random_start=sampling == "dynamic", colour_jitter=colour_jitter, **common
    )
    val_ds = MultiViewClipDataset(val_entries, train=False, hflip=False, random_start=False, **common)
    log.info(
        "%d training and %d held-out validation videos of %d classes from %s (views %s, sizes %s)",
        len(train_ds), len(val_ds), len(class_names), csv_root, "_".join(views), sizes,
    )
    return train_ds, val_ds, class_names
