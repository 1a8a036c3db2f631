"""Clip sampling: which 1-based frames a training clip or a whole-video test reads.

A clip is ``num_seq`` contiguous blocks of ``seq_len`` frames taken every ``ds`` frames. One rule
(:func:`clip_stride`) reads a video too short for a clip at ``ds`` at a smaller stride, for training clips,
whole-video test groups and frozen-encoder features alike; :func:`check_clip_length` says how many videos that is.
"""
from __future__ import annotations

import logging

import numpy as np

from utils.errors import UsageError

log = logging.getLogger(__name__)


def clip_stride(num_frames: int, num_seq: int, seq_len: int, ds: int) -> int:
    """The stride a video is read at, in training, whole-video testing and feature extraction alike.

    ``ds`` where a clip of ``num_seq × seq_len`` frames at stride ``ds`` fits the video, else the largest
    stride that fits; a video shorter than a clip even at stride 1 is read at stride 1 and repeats its
    last frame.
    """
    span = num_seq * seq_len
    if span <= 1 or (span - 1) * ds + 1 <= num_frames:
        return ds
    return max(1, min(ds, (num_frames - 1) // (span - 1)))


def clip_indices(
    num_frames: int, num_seq: int, seq_len: int, ds: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """1-based frame indices of one clip: ``num_seq`` contiguous blocks of ``seq_len`` frames at
    :func:`clip_stride`. ``rng=None`` takes the middle of the video (evaluation).

    Returns:
        int64 ``[num_seq, seq_len]``.
    """
    if num_frames < 1:
        raise ValueError("a video needs at least one frame")
    span = num_seq * seq_len
    stride = clip_stride(num_frames, num_seq, seq_len, ds)
    max_start = max(0, num_frames - ((span - 1) * stride + 1))
    start = int(rng.integers(0, max_start + 1)) if rng is not None else max_start // 2
    frames = np.minimum(start + np.arange(span) * stride, num_frames - 1) + 1
    return frames.reshape(num_seq, seq_len)


def video_group_indices(num_frames: int, num_seq: int, seq_len: int, ds: int) -> np.ndarray:
    """Every frame at :func:`clip_stride`, cut into ``seq_len`` blocks, in groups of ``num_seq`` blocks
    overlapping by half; the last group is aligned to the end so no block is left out.

    Returns:
        int64 ``[G, num_seq, seq_len]`` of 1-based frame indices.
    """
    sampled = np.arange(0, num_frames, clip_stride(num_frames, num_seq, seq_len, ds)) + 1
    needed = num_seq * seq_len
    if len(sampled) < needed:
        # Too short for one group even at stride 1: repeat the last frame rather than wrap around.
        sampled = np.concatenate([sampled, np.full(needed - len(sampled), sampled[-1])])
    n_blocks = len(sampled) // seq_len
    blocks = sampled[: n_blocks * seq_len].reshape(n_blocks, seq_len)
    step = max(1, num_seq // 2)
    starts = list(range(0, n_blocks - num_seq + 1, step))
    if starts[-1] != n_blocks - num_seq:
        starts.append(n_blocks - num_seq)
    return np.stack([blocks[s : s + num_seq] for s in starts])


def check_clip_length(num_frames: np.ndarray, num_seq: int, seq_len: int, ds: int) -> int:
    """Warn once how many videos are shorter than a clip at stride ``ds`` and what :func:`clip_stride` does
    about it, and refuse when most videos would fill most of a clip by repeating their last frame.

    Args:
        num_frames: frames of each video.
        num_seq, seq_len, ds: ``--num_seq`` blocks of ``--seq_len`` frames every ``--ds`` frames.

    Returns:
        the number of videos shorter than a clip at stride ``ds``.

    Raises:
        UsageError: over half of the videos have fewer than half the frames of a clip at stride 1.
    """
    span = num_seq * seq_len
    counts = np.asarray(num_frames)
    needed = (span - 1) * ds + 1
    short = int((counts < needed).sum())
    padded = int((counts < span).sum())
    mostly = int((2 * counts < span).sum())
    if len(counts) and 2 * mostly > len(counts):
        raise UsageError(
            f"--num_seq {num_seq} × --seq_len {seq_len} = {span} frames per clip, but {mostly} of {len(counts)} videos "
            f"have fewer than {span // 2 + span % 2}: most of their clips would repeat the last frame; lower "
            "--num_seq or --seq_len"
        )
    if short:
        strides = sorted({clip_stride(int(n), num_seq, seq_len, ds) for n in counts[counts < needed]})
        repeat = (f"; {padded} of them are shorter than {span} frames and repeat their last frame" if padded else "")
        log.warning("%d of %d videos are shorter than a clip of --num_seq %d × --seq_len %d frames at --ds %d (%d frames; "
                    "shortest: %d): they are read at the largest stride that fits (%s), in training and testing "
                    "alike%s", short, len(counts), num_seq, seq_len, ds, needed, int(counts.min()),
                    ", ".join(map(str, strides)), repeat)
    return short
