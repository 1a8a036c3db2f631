"""A pretraining run's folder and progress: the experiment's name, its opening, and the save and resume of
every view's checkpoint (through :mod:`utils.run`, the run layer fine-tuning shares).

A resumed run carries its settings: ``--resume <exp>`` (or its ``model/`` folder or a checkpoint) takes every
flag from the run's newest args file (:func:`resume_flags`), except those that describe the machine
(``--num_workers``, ``--gpu``, ``--cache_frames``). A flag given on the command line that contradicts the
recorded one is refused, except those a continued run may change (:data:`RESUME_FREE`, and
:data:`RESUME_OVERRIDES`, which are logged and take effect: the optimiser gets the new ``--lr``/``--wd``).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

from train.pretrain_flags import get_args_parser
from utils import run
from utils.checkpoint import CheckpointError
from utils.cli_options import given_flags
from utils.distributed import is_main_process
from utils.errors import UsageError
from utils.views import VIEWS

log = logging.getLogger("cocon.pretrain")

# Flags a continued run may change, as given: how long it runs, what it logs and keeps, where the data is.
RESUME_FREE = frozenset({"epochs", "print_freq", "vis_log_freq", "grad_diag_freq", "ft_freq", "debug", "keep_last",
                         "csv_root"})
# Flags a continued run may change with a logged override that takes effect from its first epoch.
RESUME_OVERRIDES = frozenset({"lr", "wd", "batch_size", "grad_accum", "amp"})
# Flags that name the experiment folder: a resumed run continues in its own, so these keep the recorded values.
RESUME_FOLDER = frozenset({"save_dir", "prefix", "notes"})
# Never taken from the record: --resume and --start-epoch; the initialisations a resumed run replaces by its
# checkpoints; and the flags that describe the machine rather than the run (its CPUs, GPUs and memory).
_NOT_RECORDED = frozenset({"resume", "start_epoch", "num_workers", "gpu", "cache_frames"}
                          | {f"{view}_restore_ckpt" for view in VIEWS})


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


@contextlib.contextmanager
def open_experiment(exp_dir: Path, args: argparse.Namespace, resumed_epoch: int | None) -> Iterator[run.EventLog]:
    """Rank 0: lock the folder, create it, remove what killed runs left, record the flags (``args.json``, or
    ``args_resume<epoch>.json`` on resume, keeping the original) and open the TensorBoard event log; on exit,
    close the log and release the folder."""
    run.open_experiment(exp_dir, args, resumed_epoch)
    try:
        with run.EventLog(exp_dir / "img") as events:
            yield events
    finally:
        run.release_experiment(exp_dir)


def _option(parser: argparse.ArgumentParser, dest: str) -> str:
    """The flag of ``dest`` as typed (``start_epoch`` -> ``--start-epoch``)."""
    for action in parser._actions:
        if action.dest == dest:
            return action.option_strings[0]
    return f"--{dest}"


def resume_flags(args: argparse.Namespace) -> None:
    """Give a ``--resume`` run the flags of the run it continues (in place); nothing without ``--resume``.

    Every flag the command line does not name takes the value of the run's newest args file; a flag named with
    another value is refused, unless it is one a continued run may change (logged when it overrides). Flags
    parsed by a parser without :func:`utils.cli_options.track_given_flags` count as named when they differ
    from their default.

    Raises:
        UsageError: a flag contradicting the recorded run (naming both values), or other ``--modalities``.
    """
    found = run.resumed_run_args(args.resume)
    if found is None:
        return
    recorded, source, exp_dir = found
    parser = get_args_parser()
    defaults = vars(parser.parse_args([]))
    given = run.jsonable_args(args)
    typed = given_flags(args)
    if typed is None:
        typed = {dest for dest, value in defaults.items() if getattr(args, dest) != value}
    taken, changed, overridden = [], [], []
    for dest, value in recorded.items():
        if dest not in defaults or dest in _NOT_RECORDED or given[dest] == value:
            continue
        flag = _option(parser, dest)
        if dest in RESUME_FOLDER or dest not in typed:
            if dest in typed:
                log.warning("%s %s is ignored: the resumed run continues in its own folder %s", flag, given[dest], exp_dir)
            setattr(args, dest, value)
            taken.append(f"{flag} {value}")
        elif dest == "modalities":
            raise UsageError(
                f"--modalities {args.modalities}: the run in {exp_dir} trained {value} ({source.name}); a resumed "
                "run continues all of its views (leave --modalities out), a run of other views needs another --prefix"
            )
        elif dest in RESUME_OVERRIDES:
            overridden.append(f"{flag} {given[dest]} (the run had {value})")
        elif dest in RESUME_FREE:
            changed.append(f"{flag} {given[dest]} (the run had {value})")
        else:
            raise UsageError(
                f"{flag} {given[dest]} contradicts the resumed run's {flag} {value} ({source}): leave it out to continue "
                "that run, or start a new run under another --prefix"
            )
    if taken:
        log.info("--resume: the run's flags from %s: %s", source, " ".join(taken))
    if changed:
        log.info("--resume: this run changes %s", ", ".join(changed))
    if overridden:
        log.warning("--resume: overriding %s; recorded in the new args_resume file", ", ".join(overridden))


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
    state, best_records = TrainState(), {}
    for view, path in paths.items():
        checkpoint = run.load_resume(path, view, args.net, device)
        if state.best_acc and (checkpoint["epoch"], checkpoint["iteration"]) != (state.epoch, state.iteration):
            raise CheckpointError(
                f"--resume: {path} is from epoch {checkpoint['epoch']}, the other views' from epoch {state.epoch} "
                "(each view's best copy follows its own best epoch): resume from a mode_<view>_epoch<N> checkpoint"
            )
        run.restore_state(checkpoint, path, models[view], optimizers[view], schedulers[view],
                          "--net, --modalities and model flags")
        apply_optimiser_overrides(optimizers[view], checkpoint.get("args", {}), args)
        if scaler is not None and "scaler" in checkpoint:
            scaler.load_state_dict(checkpoint["scaler"])
        state.epoch, state.iteration, state.steps = checkpoint["epoch"], checkpoint["iteration"], checkpoint.get("steps", 0)
        state.best_acc[view] = float(checkpoint["best_acc"])
        state.best_epoch[view] = checkpoint.get("best_epoch")
        best_records[view] = checkpoint
    model_dir = next(iter(paths.values())).parent
    start = args.start_epoch if args.start_epoch is not None else state.epoch
    if start < args.epochs:
        run.refuse_older_resume(Path(args.resume), model_dir, paths, state.epoch)
    if is_main_process():
        run.lock_experiment(model_dir.parent)  # before the best copies are repaired: no other run writes here
        for view, checkpoint in best_records.items():
            run.ensure_best(model_dir, view, checkpoint)
    log.info("resumed %s from %s (epoch %d done)", "_".join(paths), model_dir, state.epoch)
    return state


def apply_optimiser_overrides(optimizer: torch.optim.Optimizer, recorded: dict, args: argparse.Namespace) -> None:
    """Give a resumed optimiser this run's ``--lr`` and ``--wd`` where they differ from the checkpoint's run.

    Each group keeps its ratio to the head group's learning rate (a restored backbone's ``--tune_bb``
    multiplier); a new ``--lr`` also undoes the plateau scheduler's reductions, as it names the rate to use.

    Args:
        optimizer: the optimiser, its state loaded from the checkpoint.
        recorded: the flags stored in that checkpoint.
        args: this run's flags.
    """
    if "lr" in recorded and float(recorded["lr"]) != args.lr:
        head = next((g["lr"] for g in optimizer.param_groups if g.get("name") == "head"), optimizer.param_groups[-1]["lr"])
        for group in optimizer.param_groups:
            group["lr"] = args.lr * group["lr"] / head
    if "wd" in recorded and float(recorded["wd"]) != args.wd:
        for group in optimizer.param_groups:
            group["weight_decay"] = args.wd
