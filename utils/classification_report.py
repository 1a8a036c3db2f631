"""Metrics of whole-video class probabilities: top-1, top-5, mean per-class accuracy, the confusion
matrix and the per-class tables written beside them."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from utils.files import atomic_write
from utils.metrics import ConfusionMatrix, topk_accuracy


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
        "per_class_md": atomic_write(out_dir / f"{stem}_per_class.md", md),
        "per_class_csv": atomic_write(out_dir / f"{stem}_per_class.csv", csv),
    }
    return stats, files
