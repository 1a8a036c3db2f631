"""The pretraining probe: a quick check of frozen clip embeddings against the labels (ridge accuracy, k-means)
and of the views' agreement (mutual information of their k-means clusterings)."""
from __future__ import annotations

import itertools

import numpy as np

# Clips the probe uses at most (a seeded subset beyond): k-means over Kinetics' whole validation set takes
# minutes, and under torchrun the other processes wait for rank 0 meanwhile.
PROBE_MAX_CLIPS = 8192


def probe(features: dict[str, np.ndarray], labels: np.ndarray, num_classes: int, seed: int,
          max_clips: int = PROBE_MAX_CLIPS) -> dict[str, float]:
    """Quick quality check of frozen features: ridge accuracy, k-means vs labels, k-means agreement of views.

    The ridge classifier is fit on a seeded, class-stratified half of the clips and scored on the other half.
    Beyond ``max_clips`` clips, all of it runs on a seeded subset of that many.

    Args:
        features: view -> clip embeddings ``[V, D]`` of the V validation clips.
        labels: ``[V]`` class indices.
        num_classes: the k of k-means (at most V).
        seed: seed of the halves, of the subset and of k-means.
        max_clips: the most clips used.

    Returns:
        ``ridge_acc/<view>`` (when the fit half has two classes), ``kmeans_ari/<view>``,
        ``kmeans_vmeasure/<view>`` and ``kmeans_nmi/<a>-<b>``.
    """
    # Imported here: scikit-learn takes a second to load, paid only by runs that probe.
    from sklearn.cluster import KMeans
    from sklearn.linear_model import RidgeClassifier
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, v_measure_score

    rng = np.random.default_rng(seed)
    if len(labels) > max_clips:
        keep = np.sort(rng.choice(len(labels), max_clips, replace=False))
        features, labels = {view: x[keep] for view, x in features.items()}, labels[keep]
    halves = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    fit = np.concatenate([h[0::2] for h in halves] or [np.zeros(0, np.int64)]).astype(np.int64)
    held = np.concatenate([h[1::2] for h in halves] or [np.zeros(0, np.int64)]).astype(np.int64)
    stats, clusters = {}, {}
    for view, x in features.items():
        if len(np.unique(labels[fit])) >= 2 and len(held):
            stats[f"ridge_acc/{view}"] = float(RidgeClassifier().fit(x[fit], labels[fit]).score(x[held], labels[held]))
        k = max(1, min(num_classes, len(labels)))
        clusters[view] = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(x)
        stats[f"kmeans_ari/{view}"] = float(adjusted_rand_score(labels, clusters[view]))
        stats[f"kmeans_vmeasure/{view}"] = float(v_measure_score(labels, clusters[view]))
    for a, b in itertools.combinations(clusters, 2):
        stats[f"kmeans_nmi/{a}-{b}"] = float(normalized_mutual_info_score(clusters[a], clusters[b]))
    return stats
