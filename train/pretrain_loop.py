"""The pretraining epoch: one training pass (gradient accumulation, DDP's no_sync, per-iteration logs and
diagnostics) and one validation pass (losses over every validation clip once, and the probe's clip features).

Both run every view's encoder through :func:`forward_views`, whose outputs are gathered over processes
(with gradient) so that the contrastive negatives span the global batch.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torch.utils.data import DataLoader
from tqdm import tqdm

from train.diagnostics import cpc_parts, similarity_agreement, term_gradient_norms
from train.losses import CoConLossConfig, cocon_loss, cocon_terms, pool_blocks, total_loss
from train.pretrain_flags import DEBUG_BATCHES
from train.pretrain_run import TrainState
from utils.distributed import DistInfo, all_gather_with_grad, feed, first_occurrences, is_main_process, unwrap
from utils.embedding import clip_embedding
from utils.errors import check_finite
from utils.metrics import AverageMeter
from utils.run import EventLog
from utils.visualize import clip_grid

log = logging.getLogger("cocon.pretrain")
NON_FINITE_ADVICE = ("stopping; the checkpoints of the last finished epoch are kept: lower --lr and --resume from "
                     "them, or check the --<view>_restore_ckpt checkpoints")


@dataclass
class RunContext:
    """Everything built once before the first epoch and used by every epoch."""

    models: dict[str, nn.Module]  # wrapped in DataParallel/DDP where used
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, ReduceLROnPlateau]
    scaler: torch.amp.GradScaler | None  # fp16 only
    train_loader: DataLoader
    val_loader: DataLoader
    loss_cfg: CoConLossConfig
    info: DistInfo
    amp_dtype: torch.dtype | None
    num_classes: int
    exp_dir: Path
    writer: EventLog | None = None  # rank 0 only


def forward_views(
    models: dict[str, nn.Module], batch: dict, device: torch.device, amp_dtype: torch.dtype | None = None
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Run every view's encoder; outputs gathered over processes (global batch), in float32.

    Args:
        models: view -> encoder, as :func:`utils.distributed.wrap_model` made it (or bare).
        batch: view -> the loader's uint8 blocks ``[B, N, C, SL, H, W]``.
        device: this process's device.
        amp_dtype: autocast dtype of bare models (wrapped ones carry theirs).

    Returns:
        view -> (pred ``[B, P, D, s, s]``, feature ``[B, N, D, s, s]``), B the global batch.
    """
    outputs = {}
    for view, model in models.items():
        pred, feature = feed(model, batch[view], view, device, amp_dtype)  # uint8 made float on each replica
        outputs[view] = (all_gather_with_grad(pred.float()), all_gather_with_grad(feature.float()))
    return outputs


def check_loss(loss: torch.Tensor, stats: dict[str, torch.Tensor], epoch: int, batch: int, iteration: int) -> None:
    """Stop on a non-finite loss, naming the non-finite terms (``cpc/<view>``, ``sync/<a>-<b>``, …).

    Raises:
        NonFiniteError: ``loss`` is NaN or infinite.
    """
    terms = {key: value for key, value in stats.items() if key != "total"}
    check_finite(loss, f"pretraining loss at epoch {epoch}, batch {batch} (iteration {iteration})", NON_FINITE_ADVICE,
                 parts=terms)


def no_sync(models: dict[str, nn.Module], skip_sync: bool) -> contextlib.ExitStack:
    """DDP's ``no_sync`` on every view while accumulating gradients (no gradient all-reduce)."""
    stack = contextlib.ExitStack()
    if skip_sync:
        for model in models.values():
            if isinstance(model, DistributedDataParallel):
                stack.enter_context(model.no_sync())
    return stack


def cross_view_similarities(outputs: dict[str, tuple[torch.Tensor, torch.Tensor]], pool: str) -> dict[str, torch.Tensor]:
    """Cosine similarities of pooled blocks between each view pair: positives (same block) and negatives."""
    pooled = {view: pool_blocks(feature.detach(), pool).flatten(0, 1) for view, (_, feature) in outputs.items()}
    sims = {}
    for a, b in itertools.combinations(pooled, 2):
        s = pooled[a] @ pooled[b].T  # [B·N, B·N]
        off = ~torch.eye(len(s), dtype=torch.bool, device=s.device)
        sims[f"{a}-{b}/positive"], sims[f"{a}-{b}/negative"] = s.diagonal(), s[off]
    return sims


# ---------------------------------------------------------------- epochs


def accumulation_group(i: int, n_batches: int, grad_accum: int) -> tuple[int, bool]:
    """Size of batch ``i``'s gradient-accumulation group, and whether the optimisers step after it.

    Groups are ``grad_accum`` consecutive batches; the epoch's last group may be shorter, and its
    loss is divided by its own size so its step weighs every batch like a full group's does.
    """
    start = i - i % grad_accum
    size = min(grad_accum, n_batches - start)
    return size, i + 1 == start + size


def diagnose(ctx: RunContext, outputs: dict[str, tuple[torch.Tensor, torch.Tensor]], terms: dict[str, torch.Tensor],
             iteration: int, grad_diag_freq: int) -> dict[str, torch.Tensor]:
    """Per batch, the views' similarity agreement; every ``--grad_diag_freq`` batches, the gradient norm of each
    loss kind in the RGB backbone (one extra backward pass per kind; on every process, as DDP's collectives need)."""
    found = {key: torch.tensor(value) for key, value in similarity_agreement(outputs, ctx.loss_cfg.pool).items()}
    if "imgs" in ctx.models and grad_diag_freq and iteration % grad_diag_freq == 0:
        norms = unscaled_gradient_norms(terms, "imgs", unwrap(ctx.models["imgs"]).backbone, ctx.scaler)
        found.update({key: torch.tensor(value) for key, value in norms.items()})
    return found


def unscaled_gradient_norms(terms: dict[str, torch.Tensor], view: str, backbone: nn.Module,
                            scaler: torch.amp.GradScaler | None) -> dict[str, float]:
    """:func:`~train.diagnostics.term_gradient_norms` of the true gradient: under fp16 the terms are scaled by the
    GradScaler's factor first (fp16 gradients of the bare loss underflow to zero, as the training step's would)
    and the norms divided by it."""
    scale = float(scaler.get_scale()) if scaler is not None else 1.0
    norms = term_gradient_norms({key: term * scale for key, term in terms.items()}, view, backbone)
    return {key: value / scale for key, value in norms.items()}


def train_one_epoch(ctx: RunContext, epoch: int, state: TrainState, args: argparse.Namespace) -> dict[str, float]:
    """One pass over the training clips; the optimisers step every ``--grad_accum`` batches and at the end.

    ``state.iteration`` counts batches over the whole run; ``state.steps`` optimiser steps.
    Returns the epoch's mean of every loss term and accuracy.
    """
    for model in ctx.models.values():
        model.train()
    loader, scaler = ctx.train_loader, ctx.scaler
    n_batches = min(len(loader), DEBUG_BATCHES) if args.debug else len(loader)
    meters: dict[str, AverageMeter] = defaultdict(AverageMeter)
    progress = tqdm(itertools.islice(loader, n_batches), total=n_batches, desc=f"train {epoch}", disable=not is_main_process())
    for opt in ctx.optimizers.values():
        opt.zero_grad(set_to_none=True)
    for i, batch in enumerate(progress):
        group_size, step_now = accumulation_group(i, n_batches, args.grad_accum)
        with no_sync(ctx.models, skip_sync=not step_now):
            outputs = forward_views(ctx.models, batch, ctx.info.device, ctx.amp_dtype)
            terms, stats = cocon_terms(outputs, ctx.loss_cfg)
            loss = total_loss(terms, stats)
            check_loss(loss, stats, epoch, i, state.iteration)
            stats.update(diagnose(ctx, outputs, terms, state.iteration, args.grad_diag_freq))
            scaled = loss / group_size
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        if step_now:
            for opt in ctx.optimizers.values():
                if scaler is not None:
                    scaler.step(opt)
                else:
                    opt.step()
                opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.update()
            state.steps += 1
        state.iteration += 1
        batch_clips = outputs[next(iter(outputs))][1].shape[0]
        for key, value in stats.items():
            meters[key].update(value.item(), batch_clips)
        if is_main_process():
            per_view = {k.split("/")[1]: f"{m.avg:.3f}" for k, m in meters.items() if k.startswith("cpc/")}
            progress.set_postfix(loss=f"{meters['total'].avg:.3f}", **per_view)
            _log_iteration(ctx.writer, batch, outputs, stats, meters, state.iteration, epoch, i, n_batches, args, ctx.loss_cfg.pool)
    return {key: m.avg for key, m in meters.items()}


def _log_iteration(
    writer: EventLog | None,
    batch: dict[str, torch.Tensor],
    outputs: dict[str, tuple[torch.Tensor, torch.Tensor]],
    stats: dict[str, torch.Tensor],
    meters: dict[str, AverageMeter],
    iteration: int,
    epoch: int,
    i: int,
    n_batches: int,
    args: argparse.Namespace,
    pool: str,
) -> None:
    """Rank 0: log line and scalars every ``--print_freq``, inputs and similarity histograms every ``--vis_log_freq``."""
    if iteration % args.print_freq == 0:
        log.info("epoch %d [%d/%d] loss %.4f (avg %.4f) %s", epoch, i + 1, n_batches, stats["total"].item(), meters["total"].avg,
                 " ".join(f"{k} {m.avg:.3f}" for k, m in meters.items() if k.startswith("cpc")))
        if writer is not None:
            for key, value in stats.items():
                writer.add_scalar(f"train/{key}", value.item(), iteration)
    if writer is not None and (iteration % args.vis_log_freq == 0 or iteration == 1):
        for view in outputs:
            writer.add_image(f"input/{view}", clip_grid(batch[view][0], view), iteration)
        for name, sims in cross_view_similarities(outputs, pool).items():
            writer.add_histogram(f"cos_sim/{name}", sims.cpu().numpy(), iteration)


@torch.no_grad()
def evaluate(
    models: dict[str, nn.Module],
    loader: DataLoader,
    loss_cfg: CoConLossConfig,
    device: torch.device,
    debug: bool = False,
    collect: bool = False,
    amp_dtype: torch.dtype | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray], np.ndarray]:
    """Validation losses and CPC accuracy (``cpc_top1`` is the mean over views).

    Each batch is gathered over processes with its clips' dataset ``index``; clips met before in the
    pass (the repeats ``DistributedSampler`` pads with) are dropped before the losses, so every
    validation clip counts once. With ``collect``, also each view's clip embeddings
    (:func:`utils.embedding.clip_embedding`, ``[V, D]`` for V validation clips) and their labels.

    Args:
        models: view -> encoder (wrapped or not).
        loader: validation batches (dicts with the views, ``label`` and ``index``).
        loss_cfg: the CoCon loss settings.
        device: this process's device.
        debug: stop after ``DEBUG_BATCHES`` batches.
        collect: also return the features and labels (for the probe).
        amp_dtype: autocast dtype, or ``None``.
    """
    for model in models.values():
        model.eval()
    n_batches = min(len(loader), DEBUG_BATCHES) if debug else len(loader)
    meters: dict[str, AverageMeter] = defaultdict(AverageMeter)
    features: dict[str, list[torch.Tensor]] = defaultdict(list)
    labels: list[torch.Tensor] = []
    seen: set[int] = set()
    for batch in tqdm(itertools.islice(loader, n_batches), total=n_batches, desc="val", disable=not is_main_process()):
        outputs = forward_views(models, batch, device, amp_dtype)
        keep = first_occurrences(all_gather_with_grad(batch["index"].to(device)), seen)  # [B] global batch
        if not keep.any():
            continue
        outputs = {view: (pred[keep], feature[keep]) for view, (pred, feature) in outputs.items()}
        _, stats = cocon_loss(outputs, loss_cfg)
        diagnostics = {**similarity_agreement(outputs, loss_cfg.pool), **cpc_parts(outputs, loss_cfg.temperature)}
        stats.update({key: torch.tensor(value) for key, value in diagnostics.items()})
        for key, value in stats.items():
            meters[key].update(value.item(), int(keep.sum()))
        if collect:
            for view, (_, feature) in outputs.items():
                features[view].append(clip_embedding(feature, loss_cfg.pool).cpu())  # [B, D]
            labels.append(all_gather_with_grad(batch["label"].to(device))[keep].cpu())
    result = {key: m.avg for key, m in meters.items()}
    result["cpc_top1"] = float(np.mean([v for k, v in result.items() if k.startswith("cpc_top1/")]))
    feats = {view: torch.cat(f).numpy() for view, f in features.items()}
    return result, feats, (torch.cat(labels).numpy() if labels else np.zeros(0, dtype=np.int64))

