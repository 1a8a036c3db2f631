"""Late fusion of views: the weighted average of their per-video class probabilities, after checking
that the probability files cover the same videos and classes."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from utils.eval_files import VideoProbabilities
from utils.views import VIEWS

DEFAULT_ENSEMBLE_WEIGHTS = {"imgs": 2.0, "flow": 2.0, "farne": 2.0, "seg": 1.0, "kphm": 1.0}


def _first(items: Iterable[str], n: int = 3) -> str:
    items = sorted(items)
    return ", ".join(items[:n]) + (", …" if len(items) > n else "")

def align_probabilities(reference: VideoProbabilities, other: VideoProbabilities, names: tuple[str, str]) -> VideoProbabilities:
    """``other`` reordered to ``reference``'s videos, after checking both cover the same videos and classes.

    Args:
        reference, other: the two files' contents.
        names: how to call them in messages (e.g. the flags ``--prob_imgs``, ``--prob_flow``).

    Raises:
        ValueError: other classes, other videos (how many differ on each side, and the first few),
            or the same video with another label.
    """
    a, b = names
    if list(reference.class_names) != list(other.class_names):
        if set(reference.class_names) == set(other.class_names):
            raise ValueError(f"{a} and {b} list the same classes in another order, so their columns do not match: "
                             "write both with the same classInd.txt")
        raise ValueError(
            f"{a} and {b} have different classes ({len(reference.class_names)} vs {len(other.class_names)}; "
            f"first differing: {_first(set(reference.class_names) ^ set(other.class_names))})"
        )
    ref_videos, other_videos = set(reference.videos), set(other.videos)
    if ref_videos != other_videos or len(other.videos) != len(reference.videos):
        only_a, only_b = ref_videos - other_videos, other_videos - ref_videos
        raise ValueError(
            f"{a} ({len(reference.videos)} videos) and {b} ({len(other.videos)} videos) cover different videos "
            f"(another split?): {len(only_a)} only in {a} (e.g. {_first(only_a)}), "
            f"{len(only_b)} only in {b} (e.g. {_first(only_b)})"
        )
    row = {v: i for i, v in enumerate(other.videos)}
    order = np.array([row[v] for v in reference.videos])
    aligned = VideoProbabilities(other.probs[order], other.labels[order], other.videos[order], other.class_names, other.view)
    wrong = np.flatnonzero(aligned.labels != reference.labels)
    if wrong.size:
        raise ValueError(f"{a} and {b} give {wrong.size} videos different labels (e.g. {reference.videos[wrong[0]]})")
    return aligned

def parse_ensemble_weights(spec: str | None) -> dict[str, float]:
    """``imgs=2,flow=2,seg=1,kphm=1`` → a weight per view (views not named keep the defaults)."""
    weights = dict(DEFAULT_ENSEMBLE_WEIGHTS)
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        view, sep, value = part.partition("=")
        view = view.strip()
        if not sep or view not in VIEWS:
            raise ValueError(f"--ensemble_weights: expected 'view=weight' with a view of {sorted(VIEWS)}, got {part!r}")
        try:
            weights[view] = float(value)
        except ValueError as err:
            raise ValueError(f"--ensemble_weights: weight of {view!r} is not a number: {value!r}") from err
        if weights[view] < 0:
            raise ValueError(f"--ensemble_weights: weight of {view!r} must be >= 0, got {value}")
    return weights

def ensemble_probabilities(files: Mapping[str, VideoProbabilities], weights: Mapping[str, float]) -> VideoProbabilities:
    """Weighted average of the views' probabilities, videos aligned to the first file.

    Args:
        files: view name → its probability file's contents (two or more; ``test/ensemble.py`` passes them in
            :data:`utils.views.VIEWS` order).
        weights: view name → weight; the weights are normalised to sum to one.

    Raises:
        ValueError: fewer than two files, zero total weight, or files that do not cover the same
            videos and classes (see :func:`align_probabilities`).
    """
    if len(files) < 2:
        raise ValueError(f"--ensemble needs at least two probability files, got {len(files)}")
    views = list(files)
    reference = files[views[0]]
    total = sum(weights[v] for v in views)
    if total <= 0:
        raise ValueError(f"--ensemble_weights: weights of {views} sum to {total}; at least one must be > 0")
    fused = np.zeros_like(reference.probs, dtype=np.float64)
    for view in views:
        aligned = reference if view == views[0] else align_probabilities(
            reference, files[view], (f"--prob_{views[0]}", f"--prob_{view}")
        )
        fused += weights[view] / total * aligned.probs
    return VideoProbabilities(
        fused.astype(np.float32), reference.labels, reference.videos, reference.class_names, "+".join(views)
    )
