"""What explains whether CoCon helps a view: similarity agreement between views, and per-term gradients.

The cooperative loss asks two views' block-similarity matrices to agree; :func:`similarity_agreement`
measures how far they do (the Pearson correlation of their off-diagonal entries: 1 = the same
ranking of which blocks are alike). :func:`term_gradient_norms` splits the gradient reaching one
view's backbone by loss kind (its own CPC, its sync terms, its cooperative terms), so a run shows
whether the cross-view terms move the RGB encoder at all or are drowned by CPC. :func:`cpc_parts` splits
CPC's accuracy into its questions — which clip a prediction belongs to, which of that clip's future
moments it is, and (with a map larger than 1×1) which place — because an encoder can answer the first
and the last from appearance alone; :func:`heldout_cpc_parts` measures them on held-out clips.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from train.losses import cpc_logits, pool_blocks


def block_similarities(feature: Tensor, pool: str = "original") -> Tensor:
    """Cosine similarities between all blocks of a batch, as the cooperative loss sees them (its
    normalisation adds 1e-5 to the norm, so the diagonal is 1 within about 1e-5 / ‖pooled block‖).

    Args:
        feature: one view's maps [B, N, D, s, s].
        pool: pooling of the cross-view losses (see ``utils.embedding.pool_maps``).

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
def similarity_agreement(outputs: dict[str, tuple[Tensor, Tensor]], pool: str = "original") -> dict[str, float]:
    """``agree/<a>-<b>``: correlation of two views' block-similarity matrices (off the diagonal), per pair.

    Args:
        outputs: view -> (pred, feature [B, N, D, s, s]).
        pool: pooling of the cross-view losses.
    """
    sims = {view: block_similarities(feature.detach().float(), pool) for view, (_, feature) in outputs.items()}
    return {f"agree/{a}-{b}": _pearson_off_diagonal(sims[a], sims[b]) for a, b in itertools.combinations(sims, 2)}


@torch.no_grad()
def cpc_parts(outputs: dict[str, tuple[Tensor, Tensor]], temperature: float) -> dict[str, float]:
    """Each view's CPC top-1 split into "which clip", "which moment" and "which place".

    For a prediction of step p at position (y, x) of clip b:
    - ``cpc_clip_top1/<view>``: its true map scores highest among the same step and position of every
      clip of the batch (chance 1/B) — solvable from a clip's look alone;
    - ``cpc_moment_top1/<view>``: its true map scores highest among clip b's own maps at the same position
      and every predicted step (chance 1/P) — only an encoder that sees what changes within the clip can do it;
    - ``cpc_place_top1/<view>``: the same among clip b's own maps at the same step and every position
      (chance 1/s²; only with a map larger than 1×1) — solvable from where things are in the frame.

    Args:
        outputs: view -> (pred [B, P, D, s, s], feature [B, N, D, s, s]).
        temperature: divisor of the scores (does not change a ranking, kept for equal logits).
    """
    stats = {}
    for view, (pred, feature) in outputs.items():
        b, p, _, h, w = pred.shape
        k = p * h * w
        logits = cpc_logits(pred.float(), feature[:, -p:].float(), temperature).view(b, k, b, k)
        own = torch.arange(b, device=logits.device)
        across = logits.permute(0, 1, 3, 2).diagonal(dim1=1, dim2=2)  # [B, B', k]: same step and position
        within = logits[own, :, own, :].reshape(b, p, h * w, p, h * w)  # clip b's own maps
        moments = within.diagonal(dim1=2, dim2=4)  # [B, P, P', s²]: same position
        places = within.diagonal(dim1=1, dim2=3)  # [B, s², s²', P]: same step
        stats[f"cpc_clip_top1/{view}"] = (across.argmax(dim=1) == own[:, None]).float().mean().item()
        steps = torch.arange(p, device=logits.device)
        stats[f"cpc_moment_top1/{view}"] = (moments.argmax(dim=2) == steps[:, None]).float().mean().item()
        if h * w > 1:
            spots = torch.arange(h * w, device=logits.device)
            stats[f"cpc_place_top1/{view}"] = (places.argmax(dim=2) == spots[:, None]).float().mean().item()
    return stats


@torch.no_grad()
def heldout_cpc_parts(model: nn.Module, view: str, batches: Iterable[Tensor]) -> dict[str, float]:
    """:func:`cpc_parts` of one encoder over held-out clips, with the number of predictions behind each rate.

    Args:
        model: a DPC-RNN in eval mode; ``model(x)`` returns (pred, feature).
        view: the view's name (the keys' suffix).
        batches: the view's model inputs [B, N, C, SL, S, S]; "which clip" is chosen within each batch.

    Returns:
        the rates of :func:`cpc_parts` (averaged over predictions), and ``<part>_n/<view>``: how many
        predictions each rate counts.
    """
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for x in batches:
        pred, feature = model(x)
        b, p, _, h, w = pred.shape
        for key, rate in cpc_parts({view: (pred, feature)}, 1.0).items():
            sums[key] = sums.get(key, 0.0) + rate * b * p * h * w
            counts[key] = counts.get(key, 0) + b * p * h * w
    return {**{key: sums[key] / counts[key] for key in sums},
            **{key.replace("_top1/", "_n/"): counts[key] for key in counts}}


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
