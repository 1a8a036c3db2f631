"""What explains whether CoCon helps a view: similarity agreement between views, and per-term gradients.

The cooperative loss asks two views' block-similarity matrices to agree; :func:`similarity_agreement`
measures how far they do (the Pearson correlation of their off-diagonal entries: 1 = the same
ranking of which blocks are alike). :func:`term_gradient_norms` splits the gradient reaching one
view's backbone by loss kind (its own CPC, its sync terms, its cooperative terms), so a run shows
whether the cross-view terms move the RGB encoder at all or are drowned by CPC.
"""
from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

from train.losses import pool_blocks


def block_similarities(feature: Tensor, pool: str = "avg") -> Tensor:
    """Cosine similarities between all blocks of a batch, as the cooperative loss sees them.

    Args:
        feature: one view's maps [B, N, D, s, s].
        pool: "avg" or "max" over the s x s positions.

    Returns:
        [B*N, B*N] cosine matrix, rows ordered (b, n).
    """
    u = pool_blocks(feature, pool).flatten(0, 1)  # [B*N, D]
    return u @ u.T


def _pearson_off_diagonal(a: Tensor, b: Tensor) -> float:
    off = ~torch.eye(len(a), dtype=torch.bool, device=a.device)
    x, y = a[off].double(), b[off].double()
    x, y = x - x.mean(), y - y.mean()
    denom = (x.norm() * y.norm()).item()
    return float((x @ y).item() / denom) if denom > 0 else 0.0


@torch.no_grad()
def similarity_agreement(outputs: dict[str, tuple[Tensor, Tensor]], pool: str = "avg") -> dict[str, float]:
    """``agree/<a>-<b>``: correlation of two views' block-similarity matrices (off the diagonal), per pair.

    Args:
        outputs: view -> (pred, feature [B, N, D, s, s]).
        pool: pooling of the cross-view losses.
    """
    sims = {view: block_similarities(feature.detach().float(), pool) for view, (_, feature) in outputs.items()}
    return {f"agree/{a}-{b}": _pearson_off_diagonal(sims[a], sims[b]) for a, b in itertools.combinations(sims, 2)}


def term_gradient_norms(terms: dict[str, Tensor], view: str, backbone: nn.Module) -> dict[str, float]:
    """L2 norm of the gradient that each kind of loss term sends into ``view``'s backbone.

    Kinds: ``cpc`` (the view's own CPC), ``sync`` and ``coop`` (the sum over the pairs that contain the
    view), all with their loss weights. The graph is kept, so the caller's backward still works.

    Args:
        terms: the weighted terms of :func:`train.losses.cocon_terms`.
        view: whose backbone to measure, e.g. "imgs".
        backbone: that view's backbone module.

    Returns:
        ``grad_norm/<view>/<kind>`` -> norm, for the kinds present.
    """
    params = [p for p in backbone.parameters() if p.requires_grad]
    kinds: dict[str, list[Tensor]] = {}
    for key, term in terms.items():
        kind, names = key.split("/", 1)
        if view in names.split("-"):
            kinds.setdefault(kind, []).append(term)
    norms = {}
    for kind, parts in kinds.items():
        grads = torch.autograd.grad(torch.stack(parts).sum(), params, retain_graph=True, allow_unused=True)
        squares = [g.float().pow(2).sum() for g in grads if g is not None]
        norms[f"grad_norm/{view}/{kind}"] = float(torch.stack(squares).sum().sqrt()) if squares else 0.0
    return norms
