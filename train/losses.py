"""CoCon losses: per-view dense predictive coding (CPC) and the cross-view sync and cooperative terms.

All functions are pure and vectorised. Under distributed training the trainer all-gathers the
encoder outputs (with gradient) before calling them, so negatives span the whole global batch.

CPC scores follow the original: with ``--l2_norm`` (unit-length predictions and targets) the predicted
and the true maps are *each* divided by the temperature T, so a score is ⟨p, z⟩ / T² (an effective
temperature of 0.0049 at T = 0.07); without ``--l2_norm`` scores are raw dot products. Dividing once,
⟨p, z⟩ / T, is a common variant, kept behind ``--temp_division once`` (see :func:`cpc_temperature`).

Shapes used throughout:
    pred    [B, P, D, s, s]  predicted maps of the last P blocks
    feature [B, N, D, s, s]  true maps z of all N blocks (CPC targets are z[:, -P:])
    u, v    [B, N, D]        one unit vector per block of a view (see `pool_blocks`)
"""
import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from utils.cli_options import TEMP_DIVISIONS
from utils.embedding import l2_normalize, pool_maps


def cpc_temperature(temp: float, l2_norm: bool, division: str = "twice") -> float:
    """The divisor of the CPC scores ⟨p, z⟩ for the pretraining flags.

    Args:
        temp: ``--temp``.
        l2_norm: ``--l2_norm``; without it the original scores raw dot products (divisor 1).
        division: ``--temp_division``: "twice" (the original: p / T and z / T, so T²) or "once" (T).
    """
    if division not in TEMP_DIVISIONS:
        raise ValueError(f"--temp_division must be one of {TEMP_DIVISIONS}, got {division!r}")
    if temp <= 0:
        raise ValueError(f"--temp must be > 0, got {temp}")
    if not l2_norm:
        return 1.0
    return temp**2 if division == "twice" else temp


def _flatten_maps(maps: Tensor, name: str) -> Tensor:
    """[B, P, D, s, s] -> [B*P*s*s, D], rows ordered (b, p, y, x)."""
    if maps.dim() != 5:
        raise ValueError(f"{name}: expected a [B, P, D, s, s] tensor, got shape {tuple(maps.shape)}")
    d = maps.shape[2]
    return maps.permute(0, 1, 3, 4, 2).reshape(-1, d)


def cpc_logits(pred: Tensor, target: Tensor, temperature: float) -> Tensor:
    """Score every predicted map position against every true one.

    Args:
        pred: predicted maps [B, P, D, s, s].
        target: true maps of the same blocks [B, P, D, s, s].
        temperature: scores are divided by it; 1.0 keeps raw dot products.

    Returns:
        logits [M, M], M = B*P*s*s, rows = predictions, columns = targets.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    # Both sides are flattened in the same (b, p, y, x) order, so the positive of row i
    # (same sample, same step, same position) is column i: no mask tensor is needed.
    p = _flatten_maps(pred, "pred")  # [M, D]
    t = _flatten_maps(target, "target")  # [M, D]
    return p @ t.T / temperature  # [M, M]


def cpc_loss(pred: Tensor, target: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """Cross-entropy of the CPC scores against their diagonal positives.

    Args:
        pred: predicted maps [B, P, D, s, s].
        target: true maps of the same blocks [B, P, D, s, s].
        temperature: scores are divided by it; 1.0 keeps raw dot products.

    Returns:
        (scalar loss, logits [M, M]).
    """
    logits = cpc_logits(pred, target, temperature)
    labels = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, labels), logits


def cpc_accuracy(logits: Tensor, topk: tuple[int, ...] = (1, 3)) -> list[float]:
    """Top-k accuracy in [0, 1] of square logits whose target for row i is column i.

    Args:
        logits: [M, M] scores.
        topk: the k values; a k above M counts every row as correct.
    """
    if logits.dim() != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"logits: expected a square [M, M] tensor, got shape {tuple(logits.shape)}")
    m = logits.shape[0]
    with torch.no_grad():
        ranked = logits.topk(min(max(topk), m), dim=1).indices  # [M, kmax]
        hits = ranked == torch.arange(m, device=logits.device).unsqueeze(1)  # [M, kmax]
        return [hits[:, :k].any(dim=1).float().mean().item() for k in topk]


def pool_blocks(feature: Tensor, mode: str = "original") -> Tensor:
    """Pool each block's map to one L2-normalised vector, for the cross-view terms.

    Args:
        feature: maps [B, N, D, s, s].
        mode: "original" (CoCon's), "avg" or "max"; see :func:`utils.embedding.pool_maps`.

    Returns:
        [B, N, D] unit vectors over D.
    """
    return l2_normalize(pool_maps(feature, mode), dim=-1)  # [B, N, D]


def _flatten_blocks(u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Check two views' block vectors match and flatten both to [B*N, D]."""
    if u.dim() != 3 or u.shape != v.shape:
        raise ValueError(
            f"u and v must both be [B, N, D] with the same shape, got {tuple(u.shape)} and {tuple(v.shape)}"
        )
    return u.reshape(-1, u.shape[-1]), v.reshape(-1, v.shape[-1])


def sync_loss(u: Tensor, v: Tensor) -> Tensor:
    """Class-balanced cross-view alignment of the same block in two views.

    S = u_flat v_flatᵀ over all B*N blocks; loss = ½ mean over positives (the diagonal) of (1 − S)
    + ½ mean over negatives of max(0, S).

    Args:
        u: unit vectors of one view [B, N, D].
        v: unit vectors of the other view [B, N, D].
    """
    uf, vf = _flatten_blocks(u, v)
    m = uf.shape[0]
    if m < 2:
        raise ValueError("sync_loss needs at least 2 blocks (B*N >= 2) so that negatives exist, got 1")
    s = uf @ vf.T  # [M, M]
    diag = s.diagonal()  # [M]
    pos = (1 - diag).mean()
    # Sum of all relu(S) minus the diagonal's, so no [M, M] boolean mask is built.
    neg = (F.relu(s).sum() - F.relu(diag).sum()) / (m * m - m)
    return 0.5 * pos + 0.5 * neg


def cooperative_loss(u: Tensor, v: Tensor) -> Tensor:
    """Mean L1 gap between the two views' own cosine-similarity matrices over all B*N blocks.

    Args:
        u: unit vectors of one view [B, N, D].
        v: unit vectors of the other view [B, N, D].
    """
    uf, vf = _flatten_blocks(u, v)
    return (uf @ uf.T - vf @ vf.T).abs().mean()


@dataclass
class CoConLossConfig:
    """Weights and settings of the total CoCon loss.

    Attributes:
        temperature: divisor of the CPC scores, from :func:`cpc_temperature` (T² by default, as the
            original); 1.0 keeps raw dot products.
        msync_wt: weight of each view pair's sync loss (`--msync_wt`).
        dot_wt: weight of each view pair's cooperative loss (`--dot_wt`).
        pool: how block maps are pooled for the cross-view terms (``utils.embedding.POOL_MODES``).
    """

    temperature: float = 0.07**2
    msync_wt: float = 10.0
    dot_wt: float = 10.0
    pool: str = "original"


def cocon_terms(
    outputs: dict[str, tuple[Tensor, Tensor]], cfg: CoConLossConfig
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Every weighted term of the CoCon loss, kept separate (for per-term gradient diagnostics).

    Pairs are the unordered pairs of the dict's view order (itertools.combinations); one view
    gives plain DPC. Views may differ in s but must share B, N and D.

    Args:
        outputs: view name -> (pred [B, P, D, s, s], feature [B, N, D, s, s]).
        cfg: loss weights and settings.

    Returns:
        (terms, stats): terms maps `cpc/<view>`, `sync/<a>-<b>` (× msync_wt) and `coop/<a>-<b>`
        (× dot_wt) to scalar tensors with gradient; stats holds detached, unweighted scalars
        `cpc/<view>`, `cpc_top1/<view>`, `cpc_top3/<view>`, `sync/<a>-<b>`, `coop/<a>-<b>`.
    """
    if not outputs:
        raise ValueError("outputs: expected at least one view, got an empty dict")
    stats: dict[str, Tensor] = {}
    terms: dict[str, Tensor] = {}
    pooled: dict[str, Tensor] = {}
    for view, (pred, feature) in outputs.items():
        n_pred = pred.shape[1]
        if feature.dim() != 5 or n_pred > feature.shape[1]:
            raise ValueError(
                f"view {view!r}: feature must be [B, N, D, s, s] with N >= P={n_pred}, got {tuple(feature.shape)}"
            )
        loss, logits = cpc_loss(pred, feature[:, -n_pred:], cfg.temperature)
        top1, top3 = cpc_accuracy(logits, (1, 3))
        terms[f"cpc/{view}"] = loss
        stats[f"cpc/{view}"] = loss.detach()
        stats[f"cpc_top1/{view}"] = torch.tensor(top1)
        stats[f"cpc_top3/{view}"] = torch.tensor(top3)
        if len(outputs) > 1:
            pooled[view] = pool_blocks(feature, cfg.pool)  # [B, N, D]
    for a, b in itertools.combinations(outputs, 2):
        sync = sync_loss(pooled[a], pooled[b])
        coop = cooperative_loss(pooled[a], pooled[b])
        terms[f"sync/{a}-{b}"] = cfg.msync_wt * sync
        terms[f"coop/{a}-{b}"] = cfg.dot_wt * coop
        stats[f"sync/{a}-{b}"] = sync.detach()
        stats[f"coop/{a}-{b}"] = coop.detach()
    return terms, stats


def cocon_loss(outputs: dict[str, tuple[Tensor, Tensor]], cfg: CoConLossConfig) -> tuple[Tensor, dict[str, Tensor]]:
    """Total CoCon loss: Σ views CPC + Σ view pairs (msync_wt·sync + dot_wt·coop); see :func:`cocon_terms`.

    Returns:
        (total loss, stats) where stats holds detached scalars `cpc/<view>`, `cpc_top1/<view>`,
        `cpc_top3/<view>`, `sync/<a>-<b>`, `coop/<a>-<b>` and `total`.
    """
    terms, stats = cocon_terms(outputs, cfg)
    return total_loss(terms, stats), stats


def total_loss(terms: dict[str, Tensor], stats: dict[str, Tensor]) -> Tensor:
    """The sum of :func:`cocon_terms`' terms; also stored, detached, as ``stats["total"]``."""
    total = torch.stack(list(terms.values())).sum()
    stats["total"] = total.detach()
    return total
