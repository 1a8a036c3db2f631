"""The files evaluation writes and reads back: per-video class probabilities and the cache of
frozen-encoder video features, both ``.npz`` without pickled objects, written atomically.

Probability file (``np.savez``, read with ``allow_pickle=False``), one row per test video:

- ``probs``: float32 ``[V, K]``, softmax averaged over all groups of blocks of the video;
- ``labels``: int64 ``[V]``, 0-based true class;
- ``videos``: str ``[V]``, the video's RGB frame folder as listed in the split csv;
- ``class_names``: str ``[K]``, from ``classInd.txt``;
- ``view``: str scalar, the view (``imgs``, ``flow``, …, or ``a+b`` for an ensemble).

Feature cache ``features_<hash>.npz``: the key (checkpoint and settings, see :func:`feature_cache_key`)
and the arrays it caches (``train_features`` ``[V, D]``, ``train_labels`` ``[V]``, and the same for test).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.errors import DataError, check_finite
from utils.files import atomic_write, read_npz

_PROB_KEYS = ("probs", "labels", "videos", "class_names", "view")

log = logging.getLogger("cocon.evaluation")


def _save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> Path:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return atomic_write(path, buffer.getbuffer())

@dataclass
class VideoProbabilities:
    """Per-video class probabilities of one view (or an ensemble) on one split; see the module doc."""

    probs: np.ndarray
    labels: np.ndarray
    videos: np.ndarray
    class_names: np.ndarray
    view: str

def save_probabilities(path: str | Path, result: VideoProbabilities) -> Path:
    """Write a probability file (``.npz``, no pickled objects), atomically.

    Raises:
        NonFiniteError: a probability is NaN or infinite (the model's weights or inputs diverged).
    """
    check_finite(result.probs, f"{result.view} probabilities for {path}",
                 "the classifier's outputs are not numbers: check its checkpoint (a diverged fine-tuning run?)")
    return _save_npz(
        Path(path),
        {
            "probs": np.asarray(result.probs, np.float32),
            "labels": np.asarray(result.labels, np.int64),
            "videos": np.asarray([str(v) for v in result.videos], dtype=str),
            "class_names": np.asarray([str(c) for c in result.class_names], dtype=str),
            "view": np.asarray(result.view, dtype=str),
        },
    )


def load_probabilities(path: str | Path) -> VideoProbabilities:
    """Read a probability file written by :func:`save_probabilities`.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: a key is missing, or shapes/dtypes are not as documented.
    """
    arrays = read_npz(path, _PROB_KEYS, "probability file", "write it again with test/test.py --test")
    probs, labels, videos, names = arrays["probs"], arrays["labels"], arrays["videos"], arrays["class_names"]
    if not np.issubdtype(probs.dtype, np.floating) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"probability file {path}: probs {probs.dtype} and labels {labels.dtype}; expected float and int")
    if probs.ndim != 2 or labels.shape != (probs.shape[0],) or videos.shape != (probs.shape[0],):
        raise ValueError(
            f"probability file {path}: probs {probs.shape}, labels {labels.shape}, videos {videos.shape}; "
            "expected [V, K], [V], [V]"
        )
    if names.shape != (probs.shape[1],):
        raise ValueError(f"probability file {path}: {names.shape[0]} class names for {probs.shape[1]} columns")
    check_finite(probs, f"probability file {path}", "write it again with test/test.py --test from a sound checkpoint")
    row_error = float(np.abs(probs.sum(axis=1, dtype=np.float64) - 1).max()) if len(probs) else 0.0
    if len(probs) and (probs.min() < 0 or row_error > 1e-3):
        raise DataError(
            f"probability file {path}: rows are not probabilities (values {probs.min():.3g} to {probs.max():.3g}, a row "
            f"sum off 1 by {row_error:.3g}); write it again with test/test.py --test"
        )
    return VideoProbabilities(
        probs.astype(np.float32), labels.astype(np.int64), videos.astype(str), names.astype(str), str(arrays["view"])
    )


def feature_cache_key(checkpoint: str | Path, settings: Mapping[str, object]) -> str:
    """A key naming the checkpoint file (absolute path and mtime) and the extraction settings."""
    path = Path(checkpoint)
    stamp = f"{path.resolve()}@{path.stat().st_mtime_ns}" if path.is_file() else str(checkpoint)
    return json.dumps({"checkpoint": stamp, **{k: str(v) for k, v in settings.items()}}, sort_keys=True)

def frames_stamp(folders: Iterable[Path], first_file: str) -> str:
    """A digest of each video folder's mtime and its first frame file's mtime and size: it changes when the
    frames are extracted again (a feature cache keyed on it is not reused for other frames).

    Args:
        folders: the view folders of the videos, in list order.
        first_file: the name of a video's first stored file of that view.
    """
    digest = hashlib.sha1()
    for folder in folders:
        for path in (Path(folder), Path(folder) / first_file):
            try:
                stat = path.stat()
                digest.update(f"{path}|{stat.st_mtime_ns}|{stat.st_size}\n".encode())
            except OSError:
                digest.update(f"{path}|missing\n".encode())
    return digest.hexdigest()


def feature_cache_path(folder: str | Path, key: str) -> Path:
    """``<folder>/features_<hash of key>.npz``."""
    return Path(folder) / f"features_{hashlib.sha1(key.encode()).hexdigest()[:12]}.npz"

def save_features(path: str | Path, key: str, arrays: Mapping[str, np.ndarray]) -> Path:
    """Cache feature arrays with their key (atomic ``.npz``, no pickled objects).

    Raises:
        NonFiniteError: a feature is NaN or infinite (the encoder's weights or inputs are not sound).
    """
    for name, array in arrays.items():
        if np.issubdtype(np.asarray(array).dtype, np.floating):
            check_finite(array, f"encoder {name}", "the encoder's outputs are not numbers: check its --pretrain checkpoint")
    return _save_npz(Path(path), {"key": np.asarray(key, dtype=str), **{k: np.asarray(v) for k, v in arrays.items()}})

def load_features(path: str | Path, key: str) -> dict[str, np.ndarray] | None:
    """The cached arrays if ``path`` exists, is sound and was written for ``key``; otherwise ``None``
    (a corrupt cache is only logged: the features are computed again and it is rewritten)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        arrays = read_npz(path, ("key",), "feature cache", "it is computed again", all_arrays=True)
    except DataError as err:
        log.warning("%s", err)
        return None
    if str(arrays.pop("key")) != key:
        return None
    if not all(np.isfinite(a).all() for a in arrays.values() if np.issubdtype(a.dtype, np.floating)):
        log.warning("feature cache %s holds non-finite values; it is computed again", path)
        return None
    return arrays
