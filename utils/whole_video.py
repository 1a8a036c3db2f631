"""One pass of a model over every group of blocks of every test video: the video's class
probabilities (a classifier) or its clip embedding (a frozen encoder).

Items come from a :class:`~utils.video_data.VideoGroupDataset` loader with ``batch_size=1`` unwrapped:
per video ``{view: [G, N, C, SL, H, W], "label": int, "index": int}``. Under ``--amp`` the model runs in
``amp_dtype`` (:func:`utils.precision.autocast`); its outputs are cast to float32 before the softmax or
the embedding.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from utils.augmentation import model_input
from utils.embedding import clip_embedding
from utils.precision import autocast


def _group_means(model: Callable[[torch.Tensor], torch.Tensor], items: Iterable[dict], view: str, batch_size: int,
                 device: torch.device | str, amp_dtype: torch.dtype | None, per_group: Callable, desc: str,
                 progress: bool) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Per video, ``per_group`` of the model's float32 output for every group, averaged over the groups.

    Returns the means ``[V, ...]``, labels int64 ``[V]`` and dataset indices int64 ``[V]``.
    """
    device = torch.device(device)
    means, labels, indices = [], [], []
    for item in tqdm(items, desc=desc, disable=not progress):
        groups = []
        for start in range(0, item[view].shape[0], batch_size):
            with autocast(device, amp_dtype):
                output = model(model_input(item[view][start : start + batch_size], view, device))
            groups.append(per_group(output.float()))
        means.append(torch.cat(groups).mean(dim=0).cpu())
        labels.append(int(item["label"]))
        indices.append(int(item["index"]))
    return torch.stack(means), np.array(labels, np.int64), np.array(indices, np.int64)


@torch.no_grad()
def predict_videos(model: Callable[[torch.Tensor], torch.Tensor], items: Iterable[dict], view: str, batch_size: int,
                   device: torch.device | str = "cpu", progress: bool = False,
                   amp_dtype: torch.dtype | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Softmax averaged over all groups of each video.

    Args:
        model: maps blocks ``[g, N, C, SL, H, W]`` to logits ``[g, K]`` (in eval mode).
        items: per video ``{view: [G, N, C, SL, H, W], "label": int, "index": int}``.
        view: the key of the blocks in each item.
        batch_size: groups sent through the model at once.
        device: where the model runs.
        progress: show a tqdm bar.
        amp_dtype: autocast dtype of ``--amp``, or ``None`` for float32.

    Returns:
        ``probs`` float32 ``[V, K]``, ``labels`` int64 ``[V]``, ``indices`` int64 ``[V]``.
    """
    probs, labels, indices = _group_means(model, items, view, batch_size, device, amp_dtype,
                                          lambda logits: F.softmax(logits, dim=1), "test", progress)
    return probs.numpy().astype(np.float32), labels, indices


@torch.no_grad()
def extract_video_features(encode: Callable[[torch.Tensor], torch.Tensor], items: Iterable[dict], view: str,
                           batch_size: int, device: torch.device | str = "cpu", progress: bool = False,
                           amp_dtype: torch.dtype | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One feature per video: each group's :func:`~utils.embedding.clip_embedding`, averaged over groups.

    Args:
        encode: blocks ``[g, N, C, SL, H, W]`` → maps ``[g, N, D, s, s]`` (``DPCRNN.encode``, eval mode).
        items, view, batch_size, device, progress, amp_dtype: as for :func:`predict_videos`.

    Returns:
        float32 ``[V, D]`` and int64 labels ``[V]``.
    """
    features, labels, _ = _group_means(encode, items, view, batch_size, device, amp_dtype, clip_embedding, "features",
                                       progress)
    return features.numpy().astype(np.float32), labels
