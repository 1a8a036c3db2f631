"""One clip embedding for every frozen-feature measurement: the pretraining probe, retrieval and t-SNE."""
from __future__ import annotations

import torch
import torch.nn.functional as F

POOLS = ("avg", "max")


def clip_embedding(maps: torch.Tensor, pool: str = "avg") -> torch.Tensor:
    """One unit vector per clip from an encoder's block maps.

    Each block's map is pooled over space and L2-normalised (the vectors the cooperative losses
    compare), the blocks are averaged and the mean is L2-normalised again.

    Args:
        maps: ``[B, N, D, s, s]``, e.g. ``DPCRNN.encode``'s output.
        pool: ``avg`` or ``max`` over the ``s × s`` positions.

    Returns:
        float32 ``[B, D]``.
    """
    if maps.dim() != 5:
        raise ValueError(f"maps: expected a [B, N, D, s, s] tensor, got shape {tuple(maps.shape)}")
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    maps = maps.float()
    pooled = maps.mean(dim=(-2, -1)) if pool == "avg" else maps.amax(dim=(-2, -1))  # [B, N, D]
    return F.normalize(F.normalize(pooled, dim=-1).mean(dim=1), dim=-1)
