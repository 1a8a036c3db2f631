"""Evaluation logic of ``test/test.py``: whole-video scores, metrics, probability files, view
ensembles, retrieval features, recall@k, the linear probe and figures.

Probability file (``np.savez``, read with ``allow_pickle=False``), one row per test video:

- ``probs``: float32 ``[V, K]``, softmax averaged over all groups of blocks of the video;
- ``labels``: int64 ``[V]``, 0-based true class;
- ``videos``: str ``[V]``, the video's RGB frame folder as listed in the split csv;
- ``class_names``: str ``[K]``, from ``classInd.txt``;
- ``view``: str scalar, the view (``imgs``, ``flow``, …, or ``a+b`` for an ensemble).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from utils.errors import DataError, check_finite
from utils.files import atomic_write, read_npz, write_json  # write_json: ev.write_json for test.py and the demo
from utils.metrics import ConfusionMatrix, save_figure, topk_accuracy
from utils.video_data import VideoEntry, read_frame
from utils.views import VIEWS

DEFAULT_ENSEMBLE_WEIGHTS = {"imgs": 2.0, "flow": 2.0, "farne": 2.0, "seg": 1.0, "kphm": 1.0}
RECALL_KS = (1, 5, 10, 20, 50)
_PROB_KEYS = ("probs", "labels", "videos", "class_names", "view")


log = logging.getLogger("cocon.evaluation")


# ---------------------------------------------------------------- small atomic writers (utils.files)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (:func:`utils.files.atomic_write`); ``write_json`` likewise."""
    return atomic_write(path, text)


def _save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> Path:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return atomic_write(path, buffer.getbuffer())


# ---------------------------------------------------------------- whole-video scores and metrics


def _chunks(groups: torch.Tensor, batch_size: int) -> Iterable[torch.Tensor]:
    for start in range(0, groups.shape[0], batch_size):
        yield groups[start : start + batch_size]


@torch.no_grad()
def predict_videos(
    model: Callable[[torch.Tensor], torch.Tensor],
    items: Iterable[dict],
    view: str,
    batch_size: int,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Softmax averaged over all groups of each video.

    Args:
        model: maps blocks ``[g, N, C, SL, H, W]`` to logits ``[g, K]`` (in eval mode).
        items: per video ``{view: [G, N, C, SL, H, W], "label": int, "index": int}``
            (a :class:`~utils.video_data.VideoGroupDataset` loader with ``batch_size=1`` unwrapped).
        view: the key of the blocks in each item.
        batch_size: groups sent through the model at once.
        device: where the model runs.
        progress: show a tqdm bar.

    Returns:
        ``probs`` float32 ``[V, K]``, ``labels`` int64 ``[V]``, ``indices`` int64 ``[V]``.
    """
    probs, labels, indices = [], [], []
    for item in tqdm(items, desc="test", disable=not progress):
        scores = [F.softmax(model(chunk.to(device)).float(), dim=1) for chunk in _chunks(item[view], batch_size)]
        probs.append(torch.cat(scores).mean(dim=0).cpu())  # [K]
        labels.append(int(item["label"]))
        indices.append(int(item["index"]))
    return torch.stack(probs).numpy().astype(np.float32), np.array(labels, np.int64), np.array(indices, np.int64)


def classification_metrics(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[dict, ConfusionMatrix]:
    """Top-1, top-5 and mean per-class accuracy of video scores, and their confusion matrix.

    Args:
        probs: ``[V, K]`` scores.
        labels: ``[V]`` 0-based true classes.
        num_classes: K.
    """
    top1, top5 = topk_accuracy(torch.from_numpy(probs), torch.from_numpy(labels), (1, 5))
    confusion = ConfusionMatrix(num_classes)
    confusion.update(probs.argmax(axis=1), labels)
    stats = {
        "top1": top1,
        "top5": top5,
        "mean_class_accuracy": confusion.mean_class_accuracy(),
        "num_videos": int(len(labels)),
        "num_classes": int(num_classes),
    }
    return stats, confusion


def per_class_table(confusion: ConfusionMatrix, class_names: Sequence[str]) -> tuple[str, str]:
    """Per-class accuracy as a markdown table and a csv (``class_id,class,videos,correct,accuracy``)."""
    totals = confusion.matrix.sum(axis=1)
    correct = np.diag(confusion.matrix)
    md = ["| id | class | videos | correct | accuracy % |", "|---:|---|---:|---:|---:|"]
    csv = ["class_id,class,videos,correct,accuracy"]
    for i, name in enumerate(class_names):
        acc = correct[i] / totals[i] if totals[i] else float("nan")
        md.append(f"| {i + 1} | {name} | {totals[i]} | {correct[i]} | {100 * acc:.1f} |")
        csv.append(f"{i + 1},{name},{totals[i]},{correct[i]},{acc:.4f}")
    return "\n".join(md) + "\n", "\n".join(csv) + "\n"


def write_classification_report(
    out_dir: str | Path, stem: str, probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str], title: str
) -> tuple[dict, dict[str, Path]]:
    """Metrics plus ``<stem>_confusion.png``, ``<stem>_per_class.md`` and ``<stem>_per_class.csv``."""
    out_dir = Path(out_dir)
    stats, confusion = classification_metrics(probs, labels, len(class_names))
    md, csv = per_class_table(confusion, class_names)
    files = {
        "confusion": confusion.plot(out_dir / f"{stem}_confusion.png", class_names, title=title),
        "per_class_md": write_text(out_dir / f"{stem}_per_class.md", md),
        "per_class_csv": write_text(out_dir / f"{stem}_per_class.csv", csv),
    }
    return stats, files


# ---------------------------------------------------------------- probability files


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
    return VideoProbabilities(
        probs.astype(np.float32), labels.astype(np.int64), videos.astype(str), names.astype(str), str(arrays["view"])
    )


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
        files: view name → its probability file's contents (two or more; ``test/test.py`` passes them in
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


# ---------------------------------------------------------------- features for retrieval and the probe


@torch.no_grad()
def extract_video_features(
    encode: Callable[[torch.Tensor], torch.Tensor],
    items: Iterable[dict],
    view: str,
    batch_size: int,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """One feature per video: each group's maps pooled and L2-normalised, averaged over groups.

    Args:
        encode: blocks ``[g, N, C, SL, H, W]`` → maps ``[g, N, D, s, s]`` (``DPCRNN.encode``, eval mode).
        items: per video ``{view: [G, N, C, SL, H, W], "label": int, ...}``.
        view: the key of the blocks.
        batch_size: groups encoded at once.
        device: where the encoder runs.
        progress: show a tqdm bar.

    Returns:
        float32 ``[V, D]`` and int64 labels ``[V]``.
    """
    features, labels = [], []
    for item in tqdm(items, desc="features", disable=not progress):
        pooled = []
        for chunk in _chunks(item[view], batch_size):
            z = encode(chunk.to(device))  # [g, N, D, s, s]
            pooled.append(F.normalize(z.float().mean(dim=(1, 3, 4)), dim=1).cpu())  # [g, D]
        features.append(torch.cat(pooled).mean(dim=0))
        labels.append(int(item["label"]))
    return torch.stack(features).numpy().astype(np.float32), np.array(labels, np.int64)


def feature_cache_key(checkpoint: str | Path, settings: Mapping[str, object]) -> str:
    """A key naming the checkpoint file (absolute path and mtime) and the extraction settings."""
    path = Path(checkpoint)
    stamp = f"{path.resolve()}@{path.stat().st_mtime_ns}" if path.is_file() else str(checkpoint)
    return json.dumps({"checkpoint": stamp, **{k: str(v) for k, v in settings.items()}}, sort_keys=True)


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


# ---------------------------------------------------------------- retrieval


RANK_CHUNK_BYTES = 64 * 2**20  # similarity rows held at once by rank_gallery (larger is no faster)


def center_normalize(features: np.ndarray) -> np.ndarray:
    """Subtract the set's mean feature, then L2-normalise each row (CoCLR's retrieval protocol).

    One copy of ``features`` is made (a 240k × 256 float32 gallery: 235 MiB), no further temporaries.
    """
    centred = features - features.mean(axis=0, keepdims=True)
    norms = np.sqrt(np.einsum("ij,ij->i", centred, centred))
    centred /= np.maximum(norms, 1e-12)[:, None]
    return centred


def _top_k_stable(similarity: torch.Tensor, k: int) -> torch.Tensor:
    """Columns of the ``k`` largest values of each row, best first, ties to the lower column.

    ``torch.topk`` leaves the order of equal values unspecified; sorting its result by column and
    then stably by value restores the order of a stable full sort. Which of several equal values
    make the cut is unspecified too: a row whose (k+1)-th value equals its k-th is redone with a
    full stable sort of that row alone.
    """
    extra = int(k < similarity.shape[1])
    values, columns = torch.topk(similarity, k + extra, dim=1)
    cut_through_tie = values[:, k - 1] == values[:, k] if extra else torch.zeros(len(values), dtype=torch.bool)
    values, columns = values[:, :k], columns[:, :k]
    columns, by_column = torch.sort(columns, dim=1)
    values = values.gather(1, by_column)
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    ranked = columns.gather(1, order)
    for row in torch.nonzero(cut_through_tie).flatten().tolist():
        ranked[row] = torch.sort(similarity[row], descending=True, stable=True).indices[:k]
    return ranked


def rank_gallery(
    query: np.ndarray, gallery: np.ndarray, k: int, chunk_bytes: int = RANK_CHUNK_BYTES
) -> np.ndarray:
    """Indices ``[Q, min(k, G)]`` of each query's most cosine-similar gallery rows (rows already normalised).

    The order is that of a stable argsort of the whole ``Q × G`` similarity matrix (ties to the
    lower gallery index), but the matrix is computed a block of queries at a time and only each
    block's top k is kept: 20k queries in a 240k gallery would otherwise need 18 GiB.

    Args:
        query, gallery: features ``[Q, D]`` and ``[G, D]``.
        k: neighbours per query (capped at ``G``).
        chunk_bytes: memory of one block of similarity rows.
    """
    k = min(k, gallery.shape[0])
    dtype = np.result_type(query.dtype, gallery.dtype, np.float32)
    gallery_t = torch.from_numpy(np.ascontiguousarray(gallery, dtype=dtype))
    rows = max(1, chunk_bytes // (np.dtype(dtype).itemsize * max(1, gallery.shape[0])))
    ranked = np.empty((query.shape[0], k), np.int64)
    for start in range(0, query.shape[0], rows):
        block = torch.from_numpy(np.ascontiguousarray(query[start : start + rows], dtype=dtype))
        ranked[start : start + rows] = _top_k_stable(block @ gallery_t.T, k).numpy()
    return ranked


def retrieval_recall(
    query: np.ndarray,
    query_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    ks: Sequence[int] = RECALL_KS,
) -> dict[int, float]:
    """Recall@k: the share of queries with a gallery video of their class among their k nearest.

    Each set is centred by its own mean and L2-normalised first; k is capped at the gallery size.

    Args:
        query, gallery: features ``[Q, D]``, ``[G, D]``.
        query_labels, gallery_labels: classes ``[Q]``, ``[G]``.
        ks: the k values.
    """
    ranked = rank_gallery(center_normalize(query), center_normalize(gallery), max(ks))
    hits = gallery_labels[ranked] == query_labels[:, None]  # [Q, k_max]
    return {k: float(hits[:, :k].any(axis=1).mean()) for k in ks}


def recall_table(recalls: Mapping[int, float], title: str) -> str:
    """A markdown table of recall@k in percent."""
    ks = sorted(recalls)
    head = "| " + " | ".join(f"R@{k}" for k in ks) + " |"
    rule = "|" + "---:|" * len(ks)
    row = "| " + " | ".join(f"{100 * recalls[k]:.1f}" for k in ks) + " |"
    return f"{title}\n\n{head}\n{rule}\n{row}\n"


# ---------------------------------------------------------------- linear probe


def linear_probe(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, seed: int = 0
) -> dict[str, float]:
    """Logistic regression on standardised frozen features; train and test top-1.

    A convex fit with L-BFGS needs no learning rate, epoch count or schedule, is deterministic and
    takes seconds on cached video features, so the number depends on the features alone.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    classifier = LogisticRegression(max_iter=2000, C=1.0, random_state=seed)
    classifier.fit(scaler.transform(train_x), train_y)
    return {
        "train_top1": float(classifier.score(scaler.transform(train_x), train_y)),
        "test_top1": float(classifier.score(scaler.transform(test_x), test_y)),
    }


# ---------------------------------------------------------------- figures


def tsne_figure(features: np.ndarray, labels: np.ndarray, class_names: Sequence[str], path: str | Path, seed: int = 0) -> Path:
    """t-SNE of video features coloured by class, with a legend; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    n = features.shape[0]
    if n < 3:
        raise ValueError(f"t-SNE needs at least 3 videos, got {n}")
    perplexity = float(min(30.0, max(1.0, (n - 1) / 3)))
    points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)
    present = sorted(set(labels.tolist()))
    cmap = plt.get_cmap("tab20" if len(class_names) > 10 else "tab10")
    fig, ax = plt.subplots(figsize=(9, 7))
    for label in present:
        mask = labels == label
        ax.scatter(points[mask, 0], points[mask, 1], s=14, color=cmap(label % cmap.N), label=class_names[label])
    ax.legend(fontsize=6 if len(present) > 20 else 8, loc="center left", bbox_to_anchor=(1.0, 0.5),
              ncol=max(1, len(present) // 35 + 1), markerscale=1.5)
    ax.set_title(f"t-SNE of {n} test videos (perplexity {perplexity:.0f})")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return save_figure(fig, path)


def middle_frame(entry: VideoEntry) -> np.ndarray:
    """The middle RGB frame of a video, uint8 ``[H, W, 3]``."""
    return read_frame(Path(entry.frame_dir), "imgs", max(1, (entry.num_frames + 1) // 2))


def _bordered(image: np.ndarray, colour: tuple[int, int, int], width: int) -> np.ndarray:
    out = image.copy()
    out[:width], out[-width:], out[:, :width], out[:, -width:] = colour, colour, colour, colour
    return out


def nearest_neighbour_figure(
    queries: Sequence[VideoEntry],
    neighbours: Sequence[Sequence[VideoEntry]],
    class_names: Sequence[str],
    path: str | Path,
) -> Path:
    """Rows: a query's middle frame, then its retrieved videos' middle frames, framed green when
    of the query's class and red otherwise; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 1 + max(len(n) for n in neighbours)
    fig, axes = plt.subplots(len(queries), cols, figsize=(1.8 * cols, 1.9 * len(queries)), squeeze=False)
    for row, (query, found) in enumerate(zip(queries, neighbours)):
        axes[row, 0].imshow(middle_frame(query))
        axes[row, 0].set_title(f"query: {class_names[query.label]}", fontsize=7)
        for col, hit in enumerate(found, start=1):
            frame = middle_frame(hit)
            width = max(2, frame.shape[0] // 20)
            colour = (0, 200, 0) if hit.label == query.label else (220, 0, 0)
            axes[row, col].imshow(_bordered(frame, colour, width))
            axes[row, col].set_title(f"{col}: {class_names[hit.label]}", fontsize=7)
        for ax in axes[row]:
            ax.axis("off")
    fig.suptitle("nearest train videos of test queries (green: same class, red: other)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
