"""The fine-tuned action classifier of the flags: built, loaded from a ``--test`` checkpoint whose recorded
settings and classes must match this run's, and tested on whole videos (softmax averaged over every group
of blocks of a video; probabilities, metrics and tables written by :func:`eval_setup.report`).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from action_classifier import ActionClassifier
from eval_setup import check_lists, check_weights_finite, csv_root, default_out_dir, group_loader, report, view_size

from utils.checkpoint import CheckpointError, clean_state_dict, load_checkpoint, state_dict_of
from utils.distributed import gather_objects, is_main_process, shard
from utils.eval_files import VideoProbabilities
from utils.precision import to_channels_last
from utils.video_index import VideoEntry, load_split
from utils.views import VIEWS, view_backbone
from utils.whole_video import predict_videos

# Flags that shape the classifier; a fine-tuned checkpoint records them in "args" (--num_seq and --ds choose the
# test clips and may differ: see checkpoint_settings).
_CLASSIFIER_FLAGS = ("net", "img_dim", "seq_len", "gru_input")


def build_classifier(args: argparse.Namespace, num_classes: int, track_running_stats: bool) -> ActionClassifier:
    """A randomly initialised classifier of ``--modality`` with the model flags.

    Args:
        args: the parsed flags (``net``, ``modality``, ``img_dim``, ``seq_len``, ``num_seq``, ``dropout``, ``gru_input``).
        num_classes: K, the classes of ``classInd.txt``.
        track_running_stats: BatchNorm running statistics in the backbone
            (see :func:`eval_setup.pretrain_running_stats`).
    """
    return ActionClassifier(
        backbone=view_backbone(args.modality, args.net), in_channels=VIEWS[args.modality].channels,
        img_dim=view_size(args), seq_len=args.seq_len, num_seq=args.num_seq, num_classes=num_classes,
        dropout=args.dropout, gru_input=args.gru_input, track_running_stats=track_running_stats,
    )


def _effective(flag: str, value: object, args: argparse.Namespace) -> object:
    """What a flag value means for ``--modality`` (views other than imgs cap --net and --img_dim)."""
    if flag == "net":
        return view_backbone(args.modality, str(value))
    if flag == "img_dim":
        return VIEWS[args.modality].size(int(value))
    return value


def check_classifier_settings(checkpoint: dict, path: Path, args: argparse.Namespace, class_names: list[str]) -> None:
    """Refuse a fine-tuned checkpoint whose recorded flags or classes differ from this run's.

    Args:
        checkpoint: the loaded checkpoint; its ``args`` and ``class_names`` are checked where present.
        path: the checkpoint file, for messages.
        args: the parsed flags.
        class_names: the classes of this run's ``classInd.txt``.

    Raises:
        CheckpointError: naming the flag (or ``classInd.txt``) and both values.
    """
    saved = checkpoint.get("args") or {}
    for flag in _CLASSIFIER_FLAGS:
        if flag in saved and _effective(flag, saved[flag], args) != _effective(flag, getattr(args, flag), args):
            raise CheckpointError(f"--test {path} was fine-tuned with --{flag} {saved[flag]!r}, "
                                  f"but --{flag} is {getattr(args, flag)!r}")
    names = checkpoint.get("class_names")
    if names is not None and list(names) != list(class_names):
        shorter = min(len(names), len(class_names))
        diff = next((i for i, (a, b) in enumerate(zip(names, class_names)) if a != b), shorter)
        raise CheckpointError(
            f"--test {path} was fine-tuned on {len(names)} classes, but {csv_root(args) / 'classInd.txt'} lists "
            f"{len(class_names)}; they first differ at class {diff + 1}: "
            f"{(list(names) + ['<none>'])[diff]!r} vs {(list(class_names) + ['<none>'])[diff]!r}"
        )


def load_classifier(path: Path, args: argparse.Namespace, class_names: list[str]) -> ActionClassifier:
    """A fine-tuned classifier of ``--modality`` from ``path``, every key required, in eval mode.

    Args:
        path: the ``--test`` checkpoint.
        args: the parsed flags; the checkpoint's recorded model flags must match them.
        class_names: the classes of ``classInd.txt``; the checkpoint's must match them.

    Raises:
        CheckpointError: another view, other model flags or classes, or weights that do not fit.
        NonFiniteError: a weight is NaN or infinite.
    """
    checkpoint = load_checkpoint(path, map_location="cpu")
    if checkpoint.get("mode") not in (None, args.modality):
        raise CheckpointError(f"--test {path} is a classifier of the {checkpoint['mode']!r} view, "
                              f"but --modality is {args.modality!r}")
    check_classifier_settings(checkpoint, path, args, class_names)
    num_classes = len(class_names)
    model = build_classifier(args, num_classes, bool(checkpoint.get("track_running_stats", True)))
    try:
        model.load_state_dict(clean_state_dict(state_dict_of(checkpoint, path)))
    except RuntimeError as err:
        raise CheckpointError(
            f"--test {path} does not fit a {num_classes}-class {args.modality} classifier with --net {args.net} "
            f"(a pretraining checkpoint goes to --pretrain): {' '.join(str(err).split())[:600]}"
        ) from err
    check_weights_finite(model, f"--test {path}")
    return model.to(args.device).eval()


def test_classifier(checkpoint: Path, args: argparse.Namespace, entries: list[VideoEntry], class_names: list[str],
                    out_dir: Path, amp_dtype: torch.dtype | None = None) -> dict | None:
    """Whole-video test of a classifier checkpoint; writes the report files into ``out_dir``.

    Under torchrun each process tests its share of the videos on its own device; rank 0 gathers the
    probabilities, writes the report and returns its figures (the other processes return ``None``).

    Args:
        checkpoint: the fine-tuned classifier.
        args: the parsed flags.
        entries: the test videos.
        class_names: the classes of ``classInd.txt``.
        out_dir: where the probabilities and the report go.
        amp_dtype: autocast dtype of ``--amp``, or ``None`` for float32.
    """
    model = load_classifier(checkpoint, args, class_names)
    if amp_dtype is not None:
        to_channels_last(model)
    mine = shard(len(entries))
    probs, labels, indices = predict_videos(model, group_loader([entries[i] for i in mine], args), args.modality,
                                            args.batch_size, args.device, progress=is_main_process(), amp_dtype=amp_dtype)
    parts = gather_objects((probs, labels, np.asarray(mine, dtype=np.int64)[indices]))
    if not is_main_process():
        return None
    probs, labels, indices = (np.concatenate(column) for column in zip(*parts))
    order = np.argsort(indices, kind="stable")
    videos = np.array([str(entries[i].frame_dir) for i in indices[order]])
    result = VideoProbabilities(probs[order], labels[order], videos, np.array(class_names), args.modality)
    return report(result, out_dir, "test", {"checkpoint": str(checkpoint), "split": args.split})


def test_checkpoint(args: argparse.Namespace, amp_dtype: torch.dtype | None = None) -> dict | None:
    """``--test CKPT``: the whole-video test of that checkpoint on the test split, into ``--out_dir``
    (default: beside the checkpoint, see :func:`eval_setup.default_out_dir`)."""
    entries, class_names = load_split(csv_root(args), "test", args.split)
    try:
        train, _ = load_split(csv_root(args), "train", args.split)
        check_lists(train, entries, class_names, "training", "--test")
    except FileNotFoundError:  # a test list alone: nothing to compare it with
        pass
    out_dir = args.out_dir or default_out_dir(args.test, args)
    return test_classifier(args.test, args, entries, class_names, out_dir, amp_dtype)
