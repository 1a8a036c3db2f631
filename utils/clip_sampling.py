"""Clip sampling: which 1-based frames a training clip or a whole-video test reads.

A clip is ``num_seq`` contiguous blocks of ``seq_len`` frames taken every ``ds`` frames.
"""
from __future__ import annotations

import logging

import numpy as np

from utils.errors import UsageError

log = logging.getLogger(__name__)


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

