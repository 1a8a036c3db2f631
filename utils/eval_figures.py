"""Figures of the frozen-encoder evaluation: a t-SNE of the test videos and a grid of their nearest
train videos."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from utils.frame_reader import read_frame
from utils.metrics import save_figure
from utils.video_index import VideoEntry


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
