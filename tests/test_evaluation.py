"""Known-answer tests of the evaluation library (utils/whole_video.py, classification_report.py,
eval_files.py, ensemble.py, retrieval.py): whole-video scores and clip embeddings, probability files,
ensembles, retrieval recall, the linear probe and the feature cache."""
import math
import os

import numpy as np
import pytest
import torch
from torch import nn

from utils.classification_report import classification_metrics, per_class_table
from utils.ensemble import ensemble_probabilities, parse_ensemble_weights
from utils.eval_files import (
    VideoProbabilities,
    feature_cache_key,
    feature_cache_path,
    load_features,
    load_probabilities,
    save_features,
    save_probabilities,
)
from utils.retrieval import linear_probe, rank_gallery, recall_table, retrieval_recall
from utils.whole_video import extract_video_features, predict_videos

torch.set_num_threads(1)


class FixedLogits(nn.Module):
    """Returns fixed logits per (video, group); the input's mask level encodes them as 10·video + group."""

    def __init__(self, table: dict[tuple[int, int], list[float]]) -> None:
        super().__init__()
        self.table = table

    def forward(self, blocks: torch.Tensor) -> torch.Tensor:
        codes = (blocks.flatten(1)[:, 0] * 255).round().long().tolist()  # seg pixels arrive as level / 255
        return torch.tensor([self.table[(c // 10, c % 10)] for c in codes])


def _items(groups_per_video: list[int], labels: list[int]) -> list[dict]:
    items = []
    for v, (g, label) in enumerate(zip(groups_per_video, labels)):
        codes = torch.tensor([10 * v + k for k in range(g)], dtype=torch.uint8).view(g, 1, 1, 1, 1, 1)  # [G, N, C, SL, H, W]
        items.append({"seg": codes, "label": label, "index": v})
    return items


def test_fixed_classifier_gives_hand_computed_top1_top5_and_mean_class():
    table = {
        # video 0, label 0: logit average favours class 1, softmax average class 0 (the protocol's).
        (0, 0): [5, 0, 0, 0, 0, 0],
        (0, 1): [-5, 1, 0, 0, 0, 0],
        (1, 0): [0, 3, 4, 0, 0, 0],  # label 1 ranked 2nd: top-5 hit, top-1 miss
        (2, 0): [6, 0, 5, 4, 3, 2],  # label 1 ranked 6th: miss
        (3, 0): [0, 0, 9, 0, 0, 0],  # label 2 ranked 1st
    }
    labels = [0, 1, 1, 2]
    probs, got_labels, indices = predict_videos(FixedLogits(table), _items([2, 1, 1, 1], labels), "seg", batch_size=1)
    assert probs.shape == (4, 6) and np.allclose(probs.sum(axis=1), 1, atol=1e-6)
    assert got_labels.tolist() == labels and indices.tolist() == [0, 1, 2, 3]
    # softmax of [5,0,0,0,0,0] and [-5,1,0,0,0,0], averaged, by hand:
    z0, z1 = math.exp(5) + 5, math.exp(-5) + math.e + 4
    expected0 = 0.5 * (math.exp(5) / z0 + math.exp(-5) / z1)
    assert probs[0, 0] == pytest.approx(expected0, rel=1e-5)
    assert probs[0].argmax() == 0
    stats, confusion = classification_metrics(probs, got_labels, 6)
    assert stats["top1"] == pytest.approx(0.5)
    assert stats["top5"] == pytest.approx(0.75)
    assert stats["mean_class_accuracy"] == pytest.approx((1 + 0 + 1) / 3)  # classes 0: 1/1, 1: 0/2, 2: 1/1
    assert confusion.matrix[1, 2] == 1 and confusion.matrix[1, 0] == 1
    md, csv = per_class_table(confusion, [f"c{i}" for i in range(6)])
    assert "| 2 | c1 | 2 | 0 | 0.0 |" in md
    assert csv.splitlines()[1] == "1,c0,1,1,1.0000"


def _probs(videos: list[str], seed: int, view: str = "imgs", k: int = 4) -> VideoProbabilities:
    rng = np.random.default_rng(seed)
    p = rng.random((len(videos), k)).astype(np.float32)
    return VideoProbabilities(p / p.sum(1, keepdims=True), np.arange(len(videos)) % k, np.array(videos),
                                 np.array([f"class{i}" for i in range(k)]), view)


def test_probability_file_round_trip_is_pickle_free(tmp_path):
    original = _probs([f"/d/frame/c/v{i}" for i in range(5)], 0)
    path = save_probabilities(tmp_path / "probs_imgs.npz", original)
    with np.load(path, allow_pickle=False) as data:
        assert data["probs"].dtype == np.float32 and data["labels"].dtype == np.int64
        assert data["videos"].dtype.kind == "U" and str(data["view"]) == "imgs"
    loaded = load_probabilities(path)
    assert np.array_equal(loaded.probs, original.probs) and list(loaded.videos) == list(original.videos)
    np.savez(tmp_path / "bad.npz", probs=original.probs)
    with pytest.raises(ValueError, match="lacks"):
        load_probabilities(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_probabilities(tmp_path / "missing.npz")


def test_ensemble_of_identical_files_equals_each_file(tmp_path):
    videos = [f"/d/frame/c/v{i}" for i in range(6)]
    a = _probs(videos, 1)
    path = save_probabilities(tmp_path / "p.npz", a)
    files = {"imgs": load_probabilities(path), "flow": load_probabilities(path)}
    fused = ensemble_probabilities(files, parse_ensemble_weights(None))
    assert np.allclose(fused.probs, a.probs, atol=1e-7) and fused.view == "imgs+flow"


def test_ensemble_weights_and_video_order():
    videos = [f"v{i}" for i in range(5)]
    a, b = _probs(videos, 2), _probs(videos, 3, view="seg")
    order = [4, 2, 0, 1, 3]  # the same videos in another order are aligned, not refused
    b_shuffled = VideoProbabilities(b.probs[order], b.labels[order], b.videos[order], b.class_names, "seg")
    fused = ensemble_probabilities({"imgs": a, "seg": b_shuffled}, parse_ensemble_weights(None))
    assert np.allclose(fused.probs, (2 * a.probs + 1 * b.probs) / 3, atol=1e-6)
    fused = ensemble_probabilities({"imgs": a, "seg": b}, parse_ensemble_weights("imgs=1,seg=3"))
    assert np.allclose(fused.probs, 0.25 * a.probs + 0.75 * b.probs, atol=1e-6)
    with pytest.raises(ValueError, match="--ensemble_weights"):
        parse_ensemble_weights("rgb=2")


def test_probability_file_of_another_split_is_refused_naming_the_difference():
    a = _probs(["s1/v0", "s1/v1", "common/v2"], 4)
    b = _probs(["s2/v7", "s2/v8", "common/v2"], 4, view="flow")
    with pytest.raises(ValueError, match=r"cover different videos.*2 only in --prob_imgs \(e\.g\. s1/v0") as err:
        ensemble_probabilities({"imgs": a, "flow": b}, parse_ensemble_weights(None))
    assert "s2/v7" in str(err.value)
    c = _probs(["s1/v0", "s1/v1", "common/v2"], 4, view="flow", k=3)
    with pytest.raises(ValueError, match="different classes"):
        ensemble_probabilities({"imgs": a, "flow": c}, parse_ensemble_weights(None))
    reordered = _probs(["s1/v0", "s1/v1", "common/v2"], 4, view="flow")
    reordered.class_names = reordered.class_names[::-1]
    with pytest.raises(ValueError, match="same classes in another order"):
        ensemble_probabilities({"imgs": a, "flow": reordered}, parse_ensemble_weights(None))


def test_retrieval_recall_on_hand_made_features():
    # Gallery: ±e1, ±e2 (mean zero); queries come in ± pairs (mean zero), so centring changes nothing.
    gallery = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]], np.float32)
    gallery_labels = np.array([0, 1, 2, 3])
    query = np.array([[1, 0.2], [-1, -0.2], [0.1, 1], [-0.1, -1]], np.float32)
    # Rankings: q0 e1,e2,-e2,-e1 → label 1 at rank 4; q1 -e1 first → hit at 1;
    # q2 e2,e1,-e1,-e2 → label 3 at rank 4; q3 -e2,-e1,e1 → label 0 at rank 3.
    query_labels = np.array([1, 1, 3, 0])
    expected = {1: 0.25, 2: 0.25, 3: 0.5, 4: 1.0, 50: 1.0}
    assert retrieval_recall(query, query_labels, gallery, gallery_labels, (1, 2, 3, 4, 50)) == expected
    # Each set is centred by its own mean: a common offset of either set changes nothing.
    shifted = retrieval_recall(query + 3, query_labels, gallery - [5, 2], gallery_labels, (1, 2, 3, 4, 50))
    assert shifted == expected
    table = recall_table(expected, "title")
    assert "| R@1 | R@2 | R@3 | R@4 | R@50 |" in table and "| 25.0 | 25.0 | 50.0 | 100.0 | 100.0 |" in table


def test_extract_video_features_pools_normalises_and_averages_groups():
    def encode(blocks):  # [g, N, C, SL, H, W] → maps [g, N, D=2, s=1, s=1]
        value = blocks.flatten(1)[:, 0]
        return torch.stack([value, 1 - value], dim=1).view(-1, 1, 2, 1, 1).expand(-1, 3, 2, 1, 1)

    items = [{"seg": torch.tensor([255, 0], dtype=torch.uint8).view(2, 1, 1, 1, 1, 1), "label": 4, "index": 0}]  # mask levels 1, 0
    feats, labels = extract_video_features(encode, items, "seg", batch_size=1)
    # groups give unit vectors [1, 0] and [0, 1]; their average is [0.5, 0.5]
    assert np.allclose(feats, [[0.5, 0.5]]) and labels.tolist() == [4]


def test_linear_probe_separates_separable_features():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 5
    train_y, test_y = np.repeat(np.arange(3), 10), np.repeat(np.arange(3), 4)
    train_x = centres[train_y] + rng.normal(size=(30, 16))
    test_x = centres[test_y] + rng.normal(size=(12, 16))
    result = linear_probe(train_x, train_y, test_x, test_y)
    assert result["test_top1"] == 1.0 and result["train_top1"] == 1.0
    shuffled = linear_probe(train_x, train_y, test_x, (test_y + 1) % 3)
    assert shuffled["test_top1"] == 0.0


def test_feature_cache_is_keyed_by_checkpoint_mtime_and_settings(tmp_path):
    ckpt = tmp_path / "mode_imgs_best.pth.tar"
    ckpt.write_bytes(b"x")
    key = feature_cache_key(ckpt, {"size": 64})
    path = feature_cache_path(tmp_path, key)
    save_features(path, key, {"train_features": np.ones((2, 3), np.float32)})
    assert np.array_equal(load_features(path, key)["train_features"], np.ones((2, 3)))
    assert feature_cache_key(ckpt, {"size": 128}) != key
    ckpt.write_bytes(b"y")
    os.utime(ckpt, ns=(1, 1))
    new_key = feature_cache_key(ckpt, {"size": 64})
    assert new_key != key and load_features(path, new_key) is None


@pytest.mark.parametrize("k", [1, 5, 40, 100])
def test_chunked_top_k_ranking_equals_a_stable_full_argsort(k):
    # Small integer features: every similarity is exact whatever the summation order, and ties abound.
    rng = np.random.default_rng(0)
    gallery = rng.integers(-2, 3, (40, 6)).astype(np.float32)
    gallery[10] = gallery[3]  # exact duplicates tie for every query
    query = rng.integers(-2, 3, (23, 6)).astype(np.float32)
    expected = np.argsort(-(query @ gallery.T), axis=1, kind="stable")[:, : min(k, 40)]
    # 64 bytes per block: a block of one query row at a time, the most chunks possible.
    assert np.array_equal(rank_gallery(query, gallery, k, chunk_bytes=64), expected)
    assert np.array_equal(rank_gallery(query, gallery, k), expected)


def test_linear_probe_of_a_single_class_says_what_is_missing():
    x = np.random.default_rng(0).normal(size=(4, 3))
    with pytest.raises(ValueError, match="at least 2 classes, got 4 video.* of 1"):
        linear_probe(x, np.zeros(4, int), x, np.zeros(4, int))
