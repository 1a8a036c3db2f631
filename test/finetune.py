"""Fine-tune a pretrained CoCon/DPC encoder for action recognition, keep the best checkpoint by validation
top-1 (the last epoch's where no validation video is left) and test it on whole videos; or, with --test, only
test a fine-tuned checkpoint.

    python test/finetune.py --net resnet18 --dataset ucf101 --modality imgs --batch_size 8 --img_dim 128 \\
        --pretrain runs/<exp>/model/mode_imgs_best.pth.tar --epochs 100
    python test/finetune.py --dataset ucf101 --modality imgs --test runs/<ft exp>/model/mode_imgs_best.pth.tar

outputs: <save_dir>/<exp name>/model/ mode_<view>_epoch<N>.pth.tar (newest --keep_last), mode_<view>_best.pth.tar;
img/ TensorBoard logs (train/, val/); args.json (args_resume<N>.json for a resumed run); then the test of the best
checkpoint in <exp>/eval/mode_<view>_best_<dataset>_split<NN>/ (test_results.json, probs_<view>.npz,
test_confusion.png, test_per_class.{md,csv}).
"""
# ruff: noqa: E402 (the flags are parsed before torch is imported)
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:  # siblings import alike however this file is loaded
    sys.path.append(str(Path(__file__).resolve().parent))
from eval_flags import finetune_parser


def get_args_parser() -> argparse.ArgumentParser:
    """Every flag of fine-tuning and testing, grouped."""
    return finetune_parser(__doc__)


if __name__ == "__main__":  # --help and a bad flag answer before torch is imported
    get_args_parser().parse_args()

import contextlib
import dataclasses
import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from action_classifier import parameter_groups, set_trainable
from checkpoint_settings import adopt_checkpoint_settings
from classifier_test import build_classifier, test_checkpoint, test_classifier
from eval_setup import (
    check_lists,
    check_weights_finite,
    csv_root,
    data_parallel_gpus,
    default_out_dir,
    log,
    precision,
    pretrain_running_stats,
    start,
    view_size,
)
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from utils import run
from utils.checkpoint import CheckpointError, load_pretrained
from utils.cli import run_cli
from utils.cli_options import check_optimiser_flags, given_flags
from utils.distributed import (
    DistInfo,
    barrier,
    cleanup,
    feed,
    gather_objects,
    is_distributed,
    is_main_process,
    mean_over_processes,
    process_seed,
    seed_everything,
    unwrap,
    wrap_model,
)
from utils.errors import UsageError, check_finite
from utils.files import append_jsonl
from utils.layout import resolve_hflip
from utils.metrics import AverageMeter, topk_accuracy
from utils.precision import grad_scaler, to_channels_last
from utils.split_checks import small_validation
from utils.video_data import MultiViewClipDataset, fill_frame_caches
from utils.video_index import VideoEntry, holdout_split, load_split
from utils.views import view_backbone

# ---------------------------------------------------------------- settings


def lr_milestones(args: argparse.Namespace) -> list[int]:
    """Epochs of the ×0.1 steps: ``--schedule``, else DPC's 50/70/90 (60/120/180 from 224 px)."""
    if args.schedule is None:
        return [60, 120, 180] if args.img_dim >= 224 else [50, 70, 90]
    try:
        return sorted(int(e) for e in args.schedule.split(",") if e.strip())
    except ValueError as err:
        raise ValueError(f"--schedule: expected comma-separated epochs, got {args.schedule!r}") from err


def use_hflip(args: argparse.Namespace) -> bool:
    """``--hflip``, else the trainer's rule (off for datasets whose classes are mirror pairs)."""
    return resolve_hflip(args.hflip, args.dataset)


def exp_name(args: argparse.Namespace) -> str:
    """Experiment folder name encoding the fine-tuning settings."""
    if args.pretrain in (None, "random"):
        pretrain = "random"
    else:
        path = Path(args.pretrain).resolve()
        pretrain = f"{path.name.removesuffix('.pth.tar')}-{hashlib.sha1(str(path).encode()).hexdigest()[:6]}"
    parts = [
        f"ft_{args.dataset}-{args.split}", args.modality, view_backbone(args.modality, args.net), f"{view_size(args)}px",
        f"sl{args.seq_len}", f"ns{args.num_seq}", f"ds{args.ds}", f"bs{args.batch_size}", f"lr{args.lr:g}",
        f"wd{args.wd:g}", f"dp{args.dropout:g}", f"train-{args.train_what}", f"pre-{pretrain}",
    ]
    name = "_".join(parts)
    return f"{args.prefix}_{name}" if args.prefix else name


def clip_loaders(args: argparse.Namespace, train: list[VideoEntry], val: list[VideoEntry]) -> tuple[DataLoader, DataLoader]:
    """Augmented random clips of the training videos; the middle clip of each validation video.

    Under torchrun each process loads its share (``DistributedSampler``); :func:`evaluate` gathers the
    validation clips back and counts the ones the sampler repeats to pad its shares once.
    """
    size = {args.modality: view_size(args)}
    clip = dict(num_seq=args.num_seq, seq_len=args.seq_len, ds=args.ds)
    train_set = MultiViewClipDataset(train, [args.modality], size, **clip, train=True, hflip=use_hflip(args), seed=args.seed,
                                     colour_jitter=args.colour_jitter)
    val_set = MultiViewClipDataset(val, [args.modality], size, **clip, train=False)
    if args.cache_frames:
        fill_frame_caches([train_set, val_set], args.num_workers)
    generator = torch.Generator().manual_seed(args.seed)
    if is_distributed():
        train_order = dict(sampler=DistributedSampler(train_set, shuffle=True, seed=args.seed, drop_last=True))
        val_order = dict(sampler=DistributedSampler(val_set, shuffle=False))
        share = len(train_order["sampler"])
    else:
        train_order, val_order, share = dict(shuffle=True), {}, len(train_set)
    pin = torch.device(args.device).type == "cuda"
    # drop_last keeps BatchNorm1d from a batch of one; a set smaller than a batch is used whole.
    train_loader = DataLoader(train_set, batch_size=args.batch_size, num_workers=args.num_workers, drop_last=share >= args.batch_size,
                              generator=generator, pin_memory=pin, **train_order)
    return train_loader, DataLoader(val_set, batch_size=args.batch_size, num_workers=args.num_workers, pin_memory=pin, **val_order)


# ---------------------------------------------------------------- resume and save

# Flags a continued fine-tuning run may change: how long it runs, what it logs and keeps, where data and reports are.
RESUME_FREE = frozenset({"epochs", "print_freq", "keep_last", "csv_root", "out_dir", "amp"})
# Never taken from the run's args file: what describes the machine, and what names the run to continue.
_NOT_RECORDED = frozenset({"resume", "test", "num_workers", "gpu", "device", "cache_frames", "save_dir", "prefix"})


def resume_run_flags(args: argparse.Namespace) -> None:
    """Give a ``--resume`` run the flags of the fine-tuning run it continues (in place), from its newest args file.

    A flag the command line leaves out takes the recorded value; one given with another value is refused
    unless it is in :data:`RESUME_FREE` (then logged). A namespace from an untracked parser counts every flag
    as given.

    Raises:
        UsageError: a flag contradicting the recorded run, naming both values and the args file.
    """
    found = run.resumed_run_args(args.resume)
    if found is None:
        return
    recorded, source, _ = found
    typed = given_flags(args)
    given = set(vars(args)) if typed is None else typed
    types = {action.dest: action.type for action in get_args_parser()._actions}
    current = run.jsonable_args(args)
    for dest, value in recorded.items():
        if dest not in types or dest in _NOT_RECORDED or current.get(dest) == value:
            continue
        if dest not in given:
            setattr(args, dest, Path(value) if types[dest] is Path and value is not None else value)
            log.info("--resume: --%s %s from %s", dest, value, source)
        elif dest in RESUME_FREE:
            log.info("--resume: --%s %s (the run had %s)", dest, current[dest], value)
        else:
            raise UsageError(f"--{dest} {current[dest]} contradicts the resumed run's --{dest} {value} ({source}): "
                             "leave it out to continue that run, or fine-tune anew under another --prefix")



def load_resume_checkpoint(args: argparse.Namespace) -> tuple[Path, dict]:
    """The fine-tuning checkpoint ``--resume`` names (a file, or a ``model/`` folder: its newest epoch).

    Raises:
        CheckpointError: not a fine-tuning checkpoint of ``--modality`` (a pretraining one is named as
            such), or one of another ``--net`` or ``--train_what``.
    """
    path = run.find_resume(args.resume, [args.modality])[args.modality]
    checkpoint = run.load_resume(path, args.modality, args.net, args.device)
    if checkpoint["epoch"] < args.epochs:
        run.refuse_older_resume(Path(args.resume), path.parent, [args.modality], int(checkpoint["epoch"]))
    if "class_names" not in checkpoint:
        raise CheckpointError(
            f"--resume {path} is a pretraining checkpoint (it has no classifier head): fine-tune from it with "
            f"--pretrain {path}; --resume continues a fine-tuning run from its <exp>/model/ folder"
        )
    saved = (checkpoint.get("args") or {}).get("train_what", args.train_what)
    if saved != args.train_what:
        raise CheckpointError(f"--resume {path} was fine-tuned with --train_what {saved!r}, but --train_what is "
                              f"{args.train_what!r}: pass the --train_what of the run you resume")
    return path, checkpoint


def resume_finetuning(path: Path, checkpoint: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                      scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler | None) -> run.Progress:
    """Restore model, optimiser, scheduler (and grad scaler), and the best copy (see :func:`utils.run.ensure_best`).

    Args:
        path, checkpoint: from :func:`load_resume_checkpoint`.
        model, optimizer, scheduler, scaler: built from this run's flags.
    """
    run.restore_state(checkpoint, path, model, optimizer, scheduler, "--net, --train_what and model flags")
    if scaler is not None and "scaler" in checkpoint:
        scaler.load_state_dict(checkpoint["scaler"])
    check_weights_finite(model, f"--resume {path}")
    run.ensure_best(path.parent, checkpoint["mode"], checkpoint)
    return run.Progress(checkpoint["epoch"], checkpoint["iteration"], float(checkpoint["best_acc"]),
                        checkpoint.get("best_epoch"))


def save_finetuning(model_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, state: run.Progress, args: argparse.Namespace,
                    class_names: list[str], track: bool, scaler: torch.amp.GradScaler | None) -> None:
    """The epoch file, then the best copy when this epoch is the best, then pruning (:mod:`utils.run`).

    Args:
        model_dir: the experiment's ``model/`` folder.
        model, optimizer, scheduler: saved.
        state: the run's progress after the epoch.
        args: the flags (``--keep_last``, and stored in the checkpoint).
        class_names: the classes, checked when the checkpoint is tested.
        track: whether the backbone keeps BatchNorm running statistics.
        scaler: the fp16 grad scaler, saved with the rest; ``None`` otherwise.
    """
    extra = {"scaler": scaler.state_dict()} if scaler is not None else {}
    checkpoint = run.make_checkpoint(
        args.modality, args.net, model, optimizer, scheduler, epoch=state.epoch, iteration=state.iteration,
        best_acc=state.best_acc, best_epoch=state.best_epoch, args=args, class_names=list(class_names),
        track_running_stats=track, **extra,
    )
    improved = [args.modality] if state.best_epoch == state.epoch else []
    run.save_epoch(model_dir, state.epoch, {args.modality: checkpoint}, improved, args.keep_last)


def settle_settings(args: argparse.Namespace, fine_tuning: bool) -> None:
    """Take the settings the run records: a resumed fine-tuning run's args file, else the checkpoints' (in place)."""
    if fine_tuning and args.resume is not None:
        resume_run_flags(args)
    else:
        adopt_checkpoint_settings(args)


# ---------------------------------------------------------------- one epoch


@dataclass
class Precision:
    """``--amp``: the autocast dtype (``None``: float32) and, for fp16, the gradient scaler."""

    dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None


def forward_loss(model: nn.Module, blocks: torch.Tensor, y: torch.Tensor, view: str, device: torch.device | str,
                 amp_dtype: torch.dtype | None = None, reduction: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of one batch and its logits, both float32 whatever the autocast dtype (the classifier's
    last layer runs outside autocast).

    Args:
        model: the classifier, wrapped by :func:`utils.distributed.wrap_model` or bare.
        blocks: the loader's uint8 blocks ``[B, N, C, SL, H, W]`` (made float on the model's device).
        y: classes ``[B]``.
        view: the view of ``blocks`` (``--modality``).
        device: where the model runs.
        amp_dtype: autocast dtype of ``--amp``, or ``None`` for float32 (a wrapped model has its own).
        reduction: of the cross-entropy (``"none"``: per clip).
    """
    device = torch.device(device)
    logits = feed(model, blocks, view, device, amp_dtype).float()  # [B, K]
    return F.cross_entropy(logits, y.to(device), reduction=reduction), logits


def _step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, epoch: int,
                    args: argparse.Namespace, writer: run.EventLog, iteration: int, amp: Precision) -> tuple[dict, int]:
    """One epoch of cross-entropy training; returns mean loss/top-1 and the updated iteration count.

    Args:
        model: the classifier (frozen parts are set by ``--train_what`` and ``epoch``).
        loader: augmented clips ``{view: [B, N, C, SL, H, W], "label": [B]}``.
        optimizer: built on :func:`action_classifier.parameter_groups`.
        epoch: 0-based epoch (the backbone is frozen in epoch 0).
        args: the parsed flags (``modality``, ``train_what``, ``device``, ``print_freq``).
        writer: TensorBoard writer of the iteration losses (``None`` on ranks other than 0).
        iteration: optimiser steps taken before this epoch.
        amp: the ``--amp`` precision.

    Returns:
        the epoch's loss and top-1, averaged over processes.
    """
    model.train()
    set_trainable(unwrap(model), args.train_what, epoch)
    loader.dataset.set_epoch(epoch)
    loss_meter, acc_meter = AverageMeter(), AverageMeter()
    for batch in tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=not is_main_process()):
        y = batch["label"].to(args.device)
        loss, logits = forward_loss(model, batch[args.modality], y, args.modality, args.device, amp.dtype)
        check_finite(loss, f"fine-tuning loss at epoch {epoch}, iteration {iteration}",
                     "stopping; the last epoch's checkpoint is kept: lower --lr, or check the --pretrain checkpoint")
        _step(loss, optimizer, amp.scaler)
        loss_meter.update(loss.item(), len(y))
        acc_meter.update(topk_accuracy(logits.detach(), y, (1,))[0], len(y))
        iteration += 1
        if writer is not None and iteration % args.print_freq == 0:
            writer.add_scalar("iter/loss", loss.item(), iteration)
    return {"loss": mean_over_processes(loss_meter.avg), "top1": mean_over_processes(acc_meter.avg)}, iteration


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, args: argparse.Namespace, amp_dtype: torch.dtype | None = None) -> dict:
    """Loss, top-1 and top-5 on the middle clip of each validation video; under torchrun every process
    gets the same figures, over every clip once."""
    model.eval()
    rows: list[np.ndarray] = []  # per clip: dataset index, loss, top-1 hit, top-5 hit
    for batch in loader:
        y = batch["label"].to(args.device)
        loss, logits = forward_loss(model, batch[args.modality], y, args.modality, args.device, amp_dtype, "none")
        hits = logits.topk(min(5, logits.shape[1]), dim=1).indices.eq(y[:, None])  # [B, k]
        rows.append(torch.stack([batch["index"].double(), loss.double().cpu(), hits[:, 0].double().cpu(),
                                 hits.any(dim=1).double().cpu()], dim=1).numpy())
    table = np.concatenate([r for part in gather_objects(rows) for r in part] or [np.zeros((0, 4))])
    _, first = np.unique(table[:, 0], return_index=True)  # DistributedSampler's padding repeats clips
    loss, top1, top5 = table[first, 1:].mean(axis=0) if len(first) else (float("nan"),) * 3
    return {"loss": float(loss), "top1": float(top1), "top5": float(top5)}


def seed_epoch(loader: DataLoader, seed: int, epoch: int) -> None:
    """Make an epoch's clip order, dropout and augmentation a function of (seed, epoch), so a resumed
    run repeats exactly what an uninterrupted one does; under torchrun each process draws its own dropout
    masks (:func:`utils.distributed.process_seed`)."""
    seed_everything(process_seed(seed + epoch))
    loader.generator.manual_seed(seed + epoch)
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)


def finetune_epoch(model: nn.Module, loaders: tuple[DataLoader, DataLoader], optimizer: torch.optim.Optimizer,
                   scheduler: torch.optim.lr_scheduler.LRScheduler, epoch: int, state: run.Progress,
                   args: argparse.Namespace, writers: dict[str, run.EventLog], amp: Precision) -> dict:
    """Train and validate one epoch, step the schedule, and advance ``state`` (epoch, iteration, best);
    return the epoch's record for ``log.jsonl`` (its train and val loss and top-1).

    Args:
        model: the classifier.
        loaders: the training and validation loaders.
        optimizer, scheduler: the classifier's.
        epoch: the 0-based epoch to run.
        state: the run's progress, updated in place.
        args: the parsed flags.
        writers: the ``train`` and ``val`` TensorBoard writers (``None`` on ranks other than 0).
        amp: the ``--amp`` precision.
    """
    train_loader, val_loader = loaders
    seed_epoch(train_loader, args.seed, epoch)
    train_stats, state.iteration = train_one_epoch(model, train_loader, optimizer, epoch, args, writers["train"],
                                                   state.iteration, amp)
    validated = len(val_loader.dataset) > 0
    val_stats = evaluate(model, val_loader, args, amp.dtype) if validated else None
    if val_stats is not None:
        check_finite(val_stats["loss"], f"validation loss after epoch {epoch + 1}",
                     "the weights diverged; the previous epoch's checkpoint is kept: lower --lr and --resume from it")
    if writers["train"] is not None:
        for part, stats in (("train", train_stats), ("val", val_stats or {})):
            for key, value in stats.items():
                writers[part].add_scalar(f"epoch/{key}", value, epoch)
        writers["train"].add_scalar("epoch/lr", optimizer.param_groups[-1]["lr"], epoch)
    scheduler.step()
    # Without validation videos nothing ranks the epochs: the last one is the best.
    improved = val_stats is None or val_stats["top1"] > state.best_acc
    if improved:
        state.best_acc, state.best_epoch = (val_stats or {"top1": state.best_acc})["top1"], epoch + 1
    state.epoch = epoch + 1
    val_text = (f"val loss {val_stats['loss']:.3f} top-1 {100 * val_stats['top1']:.1f}%{' (best)' if improved else ''}"
                if val_stats is not None else "no validation videos")
    log.info("epoch %d/%d: train loss %.3f top-1 %.1f%% | %s", epoch + 1, args.epochs, train_stats["loss"],
             100 * train_stats["top1"], val_text)
    return {"epoch": epoch + 1, "train": train_stats, "val": val_stats, "best": bool(improved)}


# ---------------------------------------------------------------- fine-tuning


def finetune(args: argparse.Namespace, amp_dtype: torch.dtype | None = None, info: DistInfo | None = None) -> dict:
    """Fine-tune, keep the best checkpoint by validation top-1 (without validation videos: the last epoch's), then
    test it on the test split.

    Under torchrun every process trains its share of each batch (DDP) and rank 0 alone writes the
    experiment folder; with several GPUs in one process the classifier runs under DataParallel.

    Args:
        args: the parsed flags.
        amp_dtype: autocast dtype of ``--amp`` (:func:`eval_setup.precision`), or ``None`` for float32.
        info: this process's place (:func:`eval_setup.start`); ``None``: a single process.
    """
    info = dataclasses.replace(info or DistInfo(0, 1, 0, torch.device(args.device), False), device=torch.device(args.device))
    check_optimiser_flags(args)
    if not 0 <= args.dropout < 1:
        raise ValueError(f"--dropout must be in [0, 1), got {args.dropout}")
    root = csv_root(args)
    train_all, class_names = load_split(root, "train", args.split)
    test_entries, _ = load_split(root, "test", args.split)
    train_entries, val_entries = holdout_split(train_all, args.val_fraction, args.seed)
    check_lists(train_all, test_entries, class_names, "training", "fine-tuning")
    if not val_entries:
        log.warning("fine-tuning: no validation video (every class has a single training video, which stays in "
                    "training): epochs are not validated and the best checkpoint is the last epoch's")
    else:
        small_validation(len(val_entries), "fine-tuning")
    if args.resume is None and args.pretrain is None:
        raise ValueError("--pretrain is required for fine-tuning: a checkpoint path, or 'random' for the baseline")
    if args.keep_last < 1:
        raise ValueError(f"--keep_last must be >= 1 (the newest epoch is what --resume continues from), got {args.keep_last}")
    resumed = load_resume_checkpoint(args) if args.resume is not None else None
    torch.manual_seed(args.seed)
    track = resumed[1].get("track_running_stats", True) if resumed else pretrain_running_stats(args)
    model = build_classifier(args, len(class_names), track).to(args.device)
    if resumed is None and args.pretrain != "random":
        log.info("pretrain %s: %s", args.pretrain, load_pretrained(model, args.pretrain, args.modality).summary())
    optimizer = torch.optim.Adam(parameter_groups(model, args.train_what, args.lr), weight_decay=args.wd)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, lr_milestones(args), gamma=0.1)
    amp = Precision(amp_dtype, grad_scaler(amp_dtype, torch.device(args.device)))
    if amp_dtype is not None:
        to_channels_last(model)
    if resumed is not None:
        state = resume_finetuning(*resumed, model, optimizer, scheduler, amp.scaler)
        exp = run.experiment_of({args.modality: resumed[0]})
    else:
        state, exp = run.Progress(), Path(args.save_dir) / exp_name(args)
    model_dir = run.open_experiment(exp, args, state.epoch if resumed else None) if is_main_process() else exp / "model"
    train_loader, val_loader = clip_loaders(args, train_entries, val_entries)
    # Unused parameters: the backbone is frozen in epoch 0 (and for good with --train_what last).
    wrapped = wrap_model(model, args.modality, info, data_parallel_gpus(args, info), amp_dtype, find_unused_parameters=True)
    log.info("fine-tuning %s on %d train / %d val videos (%d classes, hflip %s) into %s", args.modality,
             len(train_entries), len(val_entries), len(class_names), "on" if use_hflip(args) else "off", exp)
    with contextlib.ExitStack() as stack:
        writers = {part: stack.enter_context(run.EventLog(exp / "img" / part)) if is_main_process() else None
                   for part in ("train", "val")}
        for epoch in range(state.epoch, args.epochs):
            record = finetune_epoch(wrapped, (train_loader, val_loader), optimizer, scheduler, epoch, state, args,
                                    writers, amp)
            if is_main_process():
                save_finetuning(model_dir, model, optimizer, scheduler, state, args, class_names, track, amp.scaler)
                append_jsonl(record, exp / "log.jsonl")
    barrier()  # the best checkpoint is on disk before any process reads it
    best = run.checkpoint_path(model_dir, args.modality, "best")
    results = test_classifier(best, args, test_entries, class_names, args.out_dir or default_out_dir(best, args),
                              amp_dtype)
    return {"exp": str(exp), "best_val_top1": state.best_acc, "test": results}


def main(args: argparse.Namespace) -> dict:
    """``--test CKPT`` tests that checkpoint; otherwise fine-tune from ``--pretrain`` (or ``--resume``) and test."""
    info = start(args)
    try:
        settle_settings(args, fine_tuning=args.test is None)
        amp_dtype = precision(args)
        if args.test is not None:
            return {"test": test_checkpoint(args, amp_dtype)}
        return {"finetune": finetune(args, amp_dtype, info)}
    finally:
        cleanup()


if __name__ == "__main__":
    run_cli(main, get_args_parser())
