"""Meters, top-k accuracy and a confusion matrix that draws itself."""
from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from utils.files import atomic_write


class AverageMeter:
    """Running average of a scalar (``update(value, n)`` adds ``n`` samples of ``value``)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.val = 0.0
        self.sum = 0.0
        self.count = 0

    def update(self, value: float, n: int = 1) -> None:
        self.val = float(value)
        self.sum += float(value) * n
        self.count += n

    @property
    def avg(self) -> float:
        return self.sum / self.count if self.count else 0.0


def topk_accuracy(scores: torch.Tensor, target: torch.Tensor, topk: Sequence[int] = (1, 5)) -> list[float]:
    """Fraction of rows of ``scores`` ``[B, K]`` whose ``target`` ``[B]`` is among the top k (k capped at K)."""
    maxk = min(max(topk), scores.shape[1])
    ranked = scores.topk(maxk, dim=1).indices  # [B, maxk]
    hits = ranked.eq(target.view(-1, 1))
    return [hits[:, : min(k, maxk)].any(dim=1).float().mean().item() for k in topk]


class ConfusionMatrix:
    """Counts ``matrix[true, predicted]`` over a test set."""

    def __init__(self, num_classes: int) -> None:
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, predicted: Sequence[int] | np.ndarray, target: Sequence[int] | np.ndarray) -> None:
        np.add.at(self.matrix, (np.asarray(target), np.asarray(predicted)), 1)

    def per_class_accuracy(self) -> np.ndarray:
        """Recall of each class (NaN for a class with no test video)."""
        totals = self.matrix.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.diag(self.matrix) / totals

    def mean_class_accuracy(self) -> float:
        return float(np.nanmean(self.per_class_accuracy()))

    def accuracy(self) -> float:
        return float(np.trace(self.matrix) / max(1, self.matrix.sum()))

    def plot(self, path: str | Path, class_names: Sequence[str], title: str = "Confusion matrix") -> Path:
        """Save a row-normalised heat map with class names (PNG), written atomically."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        n = len(class_names)
        with np.errstate(invalid="ignore", divide="ignore"):
            normalised = np.nan_to_num(self.matrix / self.matrix.sum(axis=1, keepdims=True))
        side = min(40.0, max(5.0, 0.28 * n + 2))
        fig, ax = plt.subplots(figsize=(side, side))
        image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
        ticks = np.arange(n)
        font = max(4, min(10, int(300 / max(n, 1))))
        ax.set_xticks(ticks, class_names, rotation=90, fontsize=font)
        ax.set_yticks(ticks, class_names, fontsize=font)
        if n <= 20:
            for i in range(n):
                for j in range(n):
                    if self.matrix[i, j]:
                        colour = "white" if normalised[i, j] > 0.5 else "black"
                        ax.text(j, i, str(self.matrix[i, j]), ha="center", va="center", fontsize=font, color=colour)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{title} (top-1 {100 * self.accuracy():.1f}%, mean class {100 * self.mean_class_accuracy():.1f}%)")
        fig.colorbar(image, ax=ax, fraction=0.046)
        fig.tight_layout()
        return save_figure(fig, path)


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Save a matplotlib figure atomically (:func:`utils.files.atomic_write`; the format follows the suffix) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format=path.suffix.lstrip(".") or "png", dpi=dpi)
    finally:
        plt.close(fig)
    return atomic_write(path, buffer.getbuffer())
