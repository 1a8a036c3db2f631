import numpy as np
import torch

from utils.metrics import AverageMeter, ConfusionMatrix, topk_accuracy


def test_average_meter_weights_by_count():
    meter = AverageMeter()
    meter.update(1.0, n=3)
    meter.update(5.0, n=1)
    assert meter.avg == 2.0 and meter.val == 5.0 and meter.count == 4


def test_topk_accuracy_hand_case():
    scores = torch.tensor([[0.1, 0.5, 0.4], [0.7, 0.2, 0.1], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    target = torch.tensor([2, 0, 0, 2])
    # top-1 hits: row 1 only; top-2 adds row 0 (0.4 is second); top-3 (= all) is everything.
    assert topk_accuracy(scores, target, topk=(1, 2, 5)) == [0.25, 0.5, 1.0]


def test_confusion_matrix_counts_accuracies_and_plot(tmp_path):
    cm = ConfusionMatrix(3)
    cm.update([0, 1, 1, 2, 0], [0, 1, 2, 2, 1])
    assert cm.matrix.tolist() == [[1, 0, 0], [1, 1, 0], [0, 1, 1]]
    assert cm.accuracy() == 3 / 5
    assert np.allclose(cm.per_class_accuracy(), [1.0, 0.5, 0.5])
    assert abs(cm.mean_class_accuracy() - 2 / 3) < 1e-9
    path = cm.plot(tmp_path / "cm.png", ["run", "jump", "swim"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["cm.png"]


def test_class_without_test_videos_is_ignored_in_mean_class_accuracy():
    cm = ConfusionMatrix(3)
    cm.update([0, 1], [0, 0])
    assert np.isnan(cm.per_class_accuracy()[1])
    assert cm.mean_class_accuracy() == 0.5
