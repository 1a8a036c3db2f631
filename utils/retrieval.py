"""Measurements on frozen video features: nearest-neighbour retrieval (recall@k, CoCLR's protocol)
and the linear probe."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

RECALL_KS = (1, 5, 10, 20, 50)

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


def linear_probe(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, seed: int = 0
) -> dict[str, float]:
    """Logistic regression on standardised frozen features; train and test top-1.

    A convex fit with L-BFGS needs no learning rate, epoch count or schedule, is deterministic and
    takes seconds on cached video features, so the number depends on the features alone.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(train_y)) < 2:
        raise ValueError(f"the linear probe needs training videos of at least 2 classes, got {len(train_y)} video(s) of "
                         f"{len(np.unique(train_y))}: use a split whose train list holds several classes")
    scaler = StandardScaler().fit(train_x)
    classifier = LogisticRegression(max_iter=2000, C=1.0, random_state=seed)
    classifier.fit(scaler.transform(train_x), train_y)
    return {
        "train_top1": float(classifier.score(scaler.transform(train_x), train_y)),
        "test_top1": float(classifier.score(scaler.transform(test_x), test_y)),
    }
