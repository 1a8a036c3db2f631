"""Block maps to vectors: the pooling of the cross-view losses and the one clip embedding of every
frozen-feature measurement (the pretraining probe, retrieval and t-SNE)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from utils.cli_options import POOL_MODES

L2_EPS = 1e-5


def l2_normalize(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``x / (‖x‖ + 1e-5)`` over ``dim``, the original CoCon's normalisation (``F.normalize`` clamps the norm
    at 1e-12 instead: the same vectors, gradients differing by up to 1e-4 relative)."""
    return x / (x.norm(p=2, dim=dim, keepdim=True) + L2_EPS)


def _max_pool_to_two(maps: torch.Tensor) -> torch.Tensor:
    """``[M, D, s, s]`` -> ``[M, D, 2, 2]`` by 2x2 max-pools of stride 2, padded by 1 where the side is odd.

    At s = 4 (128 px) this is the original's one max-pool, at s = 7 (224 px) its max-pool with padding 1
    (-> 4x4) and then a plain one. Sides the original does not define follow the same rule
    (3 -> 2, 5 -> 3 -> 2, 6 -> 3 -> 2); s <= 2 is returned as it is.
    """
    while maps.shape[-1] > 2:
        maps = F.max_pool2d(maps, kernel_size=2, stride=2, padding=maps.shape[-1] % 2)
    return maps


def pool_maps(maps: torch.Tensor, mode: str = "original") -> torch.Tensor:
    """One vector per block, not normalised: ``[B, N, D, s, s]`` -> ``[B, N, D]``.

    Args:
        maps: block feature maps.
        mode: ``original``, CoCon's pooling for the cross-view losses: max-pools down to 2x2
            (:func:`_max_pool_to_two`), then the average — a plain average at s <= 2 (64 px and below);
            ``avg``, the average of the ``s × s`` positions; ``max``, their maximum.
    """
    if maps.dim() != 5:
        raise ValueError(f"maps: expected a [B, N, D, s, s] tensor, got shape {tuple(maps.shape)}")
    if mode == "avg":
        return maps.mean(dim=(-2, -1))
    if mode == "max":
        return maps.amax(dim=(-2, -1))
    if mode != "original":
        raise ValueError(f"pool mode must be one of {POOL_MODES}, got {mode!r}")
    b, n, d, h, w = maps.shape
    return _max_pool_to_two(maps.reshape(b * n, d, h, w)).mean(dim=(-2, -1)).reshape(b, n, d)


def clip_embedding(maps: torch.Tensor, pool: str = "avg") -> torch.Tensor:
    """One unit vector per clip from an encoder's block maps.

    Each block's map is pooled over space and L2-normalised (the vectors the cooperative losses
    compare), the blocks are averaged and the mean is L2-normalised again.

    Args:
        maps: ``[B, N, D, s, s]``, e.g. ``DPCRNN.encode``'s output.
        pool: one of :data:`POOL_MODES` (see :func:`pool_maps`); retrieval uses ``avg``, as CoCLR's protocol.

    Returns:
        float32 ``[B, D]``.
    """
    pooled = pool_maps(maps.float(), pool)  # [B, N, D]
    return F.normalize(F.normalize(pooled, dim=-1).mean(dim=1), dim=-1)
