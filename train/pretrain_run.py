"""A pretraining run's folder and progress: the experiment's name, its opening, and the save and resume of
every view's checkpoint (through :mod:`utils.run`, the run layer fine-tuning shares)."""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

from utils import run
from utils.checkpoint import CheckpointError
from utils.distributed import is_main_process

log = logging.getLogger("cocon.pretrain")


@dataclass
class TrainState:
    """Progress of a run, saved in every checkpoint and restored by ``--resume``."""

    epoch: int = 0  # epochs finished
    iteration: int = 0  # training batches seen
    steps: int = 0  # optimiser steps
    best_acc: dict[str, float] = field(default_factory=dict)  # view -> best validation CPC top-1
    best_epoch: dict[str, int | None] = field(default_factory=dict)  # view -> the epoch its best copy holds


def experiment_dir(args: argparse.Namespace) -> Path:
    """``<save_dir>/<prefix>_<dataset>-<img_dim>_<net>_<modalities>_bs…_seq…_len…_ds…_pred…_lr…_sync…_dot…_temp…_split…_seed…[_notes]``."""
    name = (
        f"{args.prefix}_{args.dataset}-{args.img_dim}_{args.net}_{args.modalities}_bs{args.batch_size}"
        f"_seq{args.num_seq}_len{args.seq_len}_ds{args.ds}_pred{args.pred_step}_lr{args.lr:g}"
        f"_sync{args.msync_wt:g}_dot{args.dot_wt:g}_temp{args.temp:g}_split{args.split}_seed{args.seed}"
    )
    return Path(args.save_dir) / (f"{name}_{args.notes}" if args.notes else name)


def open_experiment(exp_dir: Path, args: argparse.Namespace, resumed_epoch: int | None) -> run.EventLog:
    """Rank 0: create the folders, remove what killed runs left, record the flags (``args.json``, or
    ``args_resume<epoch>.json`` on resume, keeping the original) and open the TensorBoard event log."""
    run.open_experiment(exp_dir, args, resumed_epoch)
    return run.EventLog(exp_dir / "img")


def save_checkpoints(
    model_dir: Path,
    models: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    schedulers: dict[str, ReduceLROnPlateau],
    scaler: torch.amp.GradScaler | None,
    state: TrainState,
    improved: list[str],
    args: argparse.Namespace,
) -> None:
    """Every view's ``mode_<view>_epoch<N>.pth.tar`` (N = ``state.epoch``), then the best copies of the views
    in ``improved``, then pruning to ``--keep_last`` (the protocol of :mod:`utils.run`).

    Args:
        model_dir: the experiment's ``model/`` folder.
        models, optimizers, schedulers: each view's (models wrapped or not).
        scaler: the fp16 grad scaler, or ``None``.
        state: the run's progress; each view's checkpoint stores that view's ``best_acc`` and ``best_epoch``.
        improved: views whose validation CPC top-1 is a new best this epoch.
        args: the flags, stored in each checkpoint.
    """
    extra = {"steps": state.steps}
    if scaler is not None:
        extra["scaler"] = scaler.state_dict()
    checkpoints = {
        view: run.make_checkpoint(
            view, args.net, model, optimizers[view], schedulers[view], epoch=state.epoch, iteration=state.iteration,
            best_acc=state.best_acc[view], best_epoch=state.best_epoch.get(view), args=args, **extra,
        )
        for view, model in models.items()
    }
    run.save_epoch(model_dir, state.epoch, checkpoints, improved, args.keep_last)


def resume_training(
    paths: dict[str, Path],
    models: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    schedulers: dict[str, ReduceLROnPlateau],
    scaler: torch.amp.GradScaler | None,
    args: argparse.Namespace,
    device: torch.device,
) -> TrainState:
    """Restore every view's weights, optimiser, scheduler (and grad scaler); return the run's progress.

    Rank 0 also makes each view's best copy hold the best epoch its checkpoint records (see
    :func:`utils.run.ensure_best`).

    Raises:
        CheckpointError: a checkpoint of another view or ``--net``, one that does not fit its model or
            optimiser, or views saved at different epochs.
    """
    state = TrainState()
    for view, path in paths.items():
        checkpoint = run.load_resume(path, view, args.net, device)
        if state.best_acc and (checkpoint["epoch"], checkpoint["iteration"]) != (state.epoch, state.iteration):
            raise CheckpointError(
                f"--resume: {path} is from epoch {checkpoint['epoch']}, the other views' from epoch {state.epoch} "
                "(each view's best copy follows its own best epoch): resume from a mode_<view>_epoch<N> checkpoint"
            )
        run.restore_state(checkpoint, path, models[view], optimizers[view], schedulers[view],
                          "--net, --modalities and model flags")
        if scaler is not None and "scaler" in checkpoint:
            scaler.load_state_dict(checkpoint["scaler"])
        state.epoch, state.iteration, state.steps = checkpoint["epoch"], checkpoint["iteration"], checkpoint.get("steps", 0)
        state.best_acc[view] = float(checkpoint["best_acc"])
        state.best_epoch[view] = checkpoint.get("best_epoch")
        if is_main_process():
            run.ensure_best(path.parent, view, checkpoint)
    log.info("resumed %s from %s (epoch %d done)", "_".join(paths), next(iter(paths.values())).parent, state.epoch)
    return state
