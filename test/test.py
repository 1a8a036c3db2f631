"""Fine-tune a pretrained CoCon/DPC encoder for action recognition, test it on whole videos, fuse
views, and evaluate frozen encoders by retrieval, a linear probe and qualitative figures.

    cd test && python test.py --net resnet18 --dataset ucf101 --modality imgs --batch_size 8 \\
        --img_dim 128 --pretrain ../runs/<exp>/model/mode_imgs_best.pth.tar --epochs 100
    python test/test.py --dataset ucf101 --modality imgs --test runs/<ft exp>/model/mode_imgs_best.pth.tar
    python test/test.py --dataset ucf101 --ensemble 1 --prob_imgs A/probs_imgs.npz --prob_flow B/probs_flow.npz
    python test/test.py --dataset ucf101 --modality imgs --pretrain <ckpt> --retrieval --linear_probe --qualitative
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

import model_lc
from utils.layout import REPO_ROOT, resolve_csv_root, resolve_hflip
from train.model_3d import DPCRNN
from utils import evaluation as ev
from utils import run
from utils.checkpoint import (
    CheckpointError,
    clean_state_dict,
    has_running_stats,
    load_checkpoint,
    load_pretrained,
    state_dict_of,
)
from utils.cli import run_cli
from utils.cli_options import HelpFormatter, add_gpu_flag, canonical_dataset, select_gpus
from utils.distributed import seed_everything
from utils.errors import check_finite
from utils.files import append_jsonl
from utils.metrics import AverageMeter, topk_accuracy
from utils.video_data import (
    MultiViewClipDataset,
    VideoEntry,
    VideoGroupDataset,
    fill_frame_caches,
    holdout_split,
    load_split,
    split_csv_path,
)
from utils.views import VIEWS, view_backbone

if TYPE_CHECKING:
    from tensorboardX import SummaryWriter

log = logging.getLogger("cocon.test")

EPILOG = """\
modes:
  --ensemble 1          fuses probability files given with --prob_<view> (and does nothing else).
  --test CKPT           tests a fine-tuned classifier checkpoint on the test split.
  --retrieval / --linear_probe / --qualitative
                        evaluate the frozen --pretrain encoder (combine freely, also with --test;
                        train and test features are computed once and cached).
  otherwise             fine-tunes (needs --pretrain PATH|random), then tests the best checkpoint.

outputs:
  fine-tune: <save_dir>/<exp name>/model/  mode_<view>_epoch<N>.pth.tar (newest --keep_last), mode_<view>_best.pth.tar
                                   img/    TensorBoard logs (train/, val/)
                                   args.json (args_resume<N>.json for a resumed run)
             then the test of the best checkpoint as below, in <exp>/eval/mode_<view>_best_<dataset>_split<NN>/
  test:      <out_dir>/test_results.json, probs_<view>.npz, test_confusion.png, test_per_class.{md,csv}
  ensemble:  <out_dir>/ensemble_results.json, probs_<views>.npz, ensemble_confusion.png, ensemble_per_class.{md,csv}
  encoder:   <out_dir>/features_<hash>.npz (cache), retrieval.{md,json}, linear_probe.json, tsne.png,
             nearest_neighbours.png
  --out_dir defaults to <exp>/eval/<checkpoint name>_<dataset>_split<NN>/ next to the checkpoint
  (<exp>/ is the folder holding model/); for --ensemble, to ensemble_<views>/ beside the folder of
  the first file, views taken in the order imgs, flow, farne, kphm, seg whatever the flag order.
  A probs_<view>.npz holds probs float32 [V,K], labels int64 [V], videos str [V] (frame folders),
  class_names str [K] and view str; read it with np.load(path, allow_pickle=False).
"""


def get_args_parser() -> argparse.ArgumentParser:
    """The flags of every mode (fine-tune, test, ensemble, frozen-encoder evaluation), grouped."""
    parser = argparse.ArgumentParser(description=__doc__, epilog=EPILOG, formatter_class=HelpFormatter)
    model = parser.add_argument_group("model")
    model.add_argument("--net", default="resnet18", help="backbone of the imgs view (other views use at most resnet18)")
    model.add_argument("--modality", default="imgs", choices=sorted(VIEWS), help="the view to fine-tune or evaluate")
    model.add_argument("--img_dim", type=int, default=128, help="RGB input side; other views use their own size")
    model.add_argument("--seq_len", type=int, default=5, help="frames per block")
    model.add_argument("--num_seq", type=int, default=8, help="blocks per clip (and per test group)")
    model.add_argument("--ds", type=int, default=3, help="frame stride")
    model.add_argument("--dropout", type=float, default=0.5, help="dropout before the linear layer")
    model.add_argument("--l2_norm", action=argparse.BooleanOptionalAction, default=True,
                       help="L2-normalise block features before the GRU, as pretraining did")

    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="ucf101", type=canonical_dataset,
                      help="dataset name; its lists are in <csv_root> (the original code's hmdb and kinetics mean "
                      "hmdb51 and kinetics400)")
    data.add_argument("--csv_root", type=Path, default=None,
                      help="folder of classInd.txt and the split csv files (default: process_data/data/<dataset>)")
    data.add_argument("--split", type=int, default=1, choices=(1, 2, 3), help="split number of the train/test lists")
    data.add_argument("--val_fraction", type=float, default=0.1,
                      help="share of each class of the train split held out for validation")
    data.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None,
                      help="horizontal-flip augmentation (default: off for synthetic, whose classes are mirror pairs)")
    data.add_argument("--num_workers", type=int, default=4, help="data loading processes")
    data.add_argument("--cache_frames", action=argparse.BooleanOptionalAction, default=False,
                      help="decode every frame once into memory before fine-tuning (small datasets): later epochs never read the disk; the memory needed is logged and checked first (one copy shared by the workers, one per process under torchrun)")

    optim = parser.add_argument_group("fine-tuning")
    optim.add_argument("--pretrain", default=None, help="encoder checkpoint to start from, or 'random'")
    optim.add_argument("--train_what", default="all", choices=model_lc.TRAIN_WHAT,
                       help="all: everything at --lr; ft: backbone at --lr/10; last: head only (frozen encoder)")
    optim.add_argument("--batch_size", type=int, default=8, help="clips per step (and test groups per forward)")
    optim.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    optim.add_argument("--wd", type=float, default=1e-3, help="Adam weight decay")
    optim.add_argument("--epochs", type=int, default=100, help="epochs to train")
    optim.add_argument("--schedule", default=None,
                       help="comma-separated epochs where the lr is multiplied by 0.1 "
                       "(default 50,70,90; 60,120,180 when --img_dim >= 224)")
    optim.add_argument("--resume", type=Path, default=None,
                       help="fine-tuning run to continue: its model/ folder (newest epoch) or one of its checkpoints")
    optim.add_argument("--keep_last", type=int, default=1, help="epoch checkpoints kept (besides the best one)")
    optim.add_argument("--seed", type=int, default=0, help="seed of initialisation, augmentation and the val split")
    add_gpu_flag(optim)

    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument("--test", type=Path, default=None, help="test this fine-tuned classifier checkpoint")
    evaluation.add_argument("--ensemble", type=int, default=0, choices=(0, 1), help="1: fuse the --prob_<view> files")
    for name in VIEWS:
        evaluation.add_argument(f"--prob_{name}", type=Path, default=None, help=f"probability file of the {name} view")
    evaluation.add_argument("--ensemble_weights", default=None,
                            help="view=weight list, e.g. imgs=2,flow=2,seg=1,kphm=1 (those are the defaults)")
    evaluation.add_argument("--retrieval", action=argparse.BooleanOptionalAction, default=False,
                            help="recall@k of test videos against train videos with the frozen --pretrain encoder")
    evaluation.add_argument("--recall_k", default="1,5,10,20,50", help="comma-separated k of recall@k")
    evaluation.add_argument("--linear_probe", action=argparse.BooleanOptionalAction, default=False,
                            help="logistic regression on frozen --pretrain features; test top-1")
    evaluation.add_argument("--qualitative", action=argparse.BooleanOptionalAction, default=False,
                            help="t-SNE and nearest-neighbour PNGs of the frozen --pretrain encoder")
    evaluation.add_argument("--nn_queries", type=int, default=8, help="query rows of the nearest-neighbour image")
    evaluation.add_argument("--nn_k", type=int, default=5, help="retrieved videos per row")
    evaluation.add_argument("--cache", action=argparse.BooleanOptionalAction, default=True,
                            help="reuse cached encoder features (keyed by checkpoint path, mtime and settings)")

    output = parser.add_argument_group("output")
    output.add_argument("--save_dir", type=Path, default=REPO_ROOT / "runs", help="root of fine-tuning experiments")
    output.add_argument("--prefix", default="", help="prefix of the experiment folder name")
    output.add_argument("--out_dir", type=Path, default=None, help="evaluation output folder (see below)")
    output.add_argument("--print_freq", type=int, default=10, help="iterations between TensorBoard loss points")
    output.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    return parser


# ---------------------------------------------------------------- settings


def csv_root(args: argparse.Namespace) -> Path:
    """Folder of ``classInd.txt`` and the split lists: ``--csv_root``, else ``process_data/data/<dataset>``.

    Args:
        args: the parsed flags (``csv_root``, ``dataset``).
    """
    return resolve_csv_root(args.csv_root, args.dataset)


def view_size(args: argparse.Namespace) -> int:
    """Input side of ``--modality`` when RGB is fed at ``--img_dim`` (other views cap their size).

    Args:
        args: the parsed flags (``modality``, ``img_dim``).
    """
    return VIEWS[args.modality].size(args.img_dim)


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


def default_out_dir(checkpoint: str | Path, args: argparse.Namespace) -> Path:
    """``<exp>/eval/<checkpoint name>_<dataset>_split<NN>/``, where ``<exp>`` holds the checkpoint's ``model/``."""
    path = Path(checkpoint).resolve()
    exp = path.parent.parent if path.parent.name == "model" else path.parent
    return exp / "eval" / f"{path.name.removesuffix('.pth.tar')}_{args.dataset}_split{args.split:02d}"


def _single(batch: list[dict]) -> dict:
    return batch[0]


def group_loader(entries: list[VideoEntry], args: argparse.Namespace) -> DataLoader:
    """Whole videos, one per step; each item holds all its groups ``[G, N, C, SL, S, S]``."""
    dataset = VideoGroupDataset(entries, [args.modality], {args.modality: view_size(args)},
                                args.num_seq, args.seq_len, args.ds)
    return DataLoader(dataset, batch_size=1, shuffle=False, num_workers=args.num_workers, collate_fn=_single)


def build_classifier(args: argparse.Namespace, num_classes: int, track_running_stats: bool) -> model_lc.LinearClassifier:
    """A randomly initialised classifier of ``--modality`` with the model flags.

    Args:
        args: the parsed flags (``net``, ``modality``, ``img_dim``, ``seq_len``, ``num_seq``, ``dropout``, ``l2_norm``).
        num_classes: K, the classes of ``classInd.txt``.
        track_running_stats: BatchNorm running statistics in the backbone (see :func:`pretrain_running_stats`).
    """
    return model_lc.LinearClassifier(
        backbone=view_backbone(args.modality, args.net), in_channels=VIEWS[args.modality].channels,
        img_dim=view_size(args), seq_len=args.seq_len, num_seq=args.num_seq, num_classes=num_classes,
        dropout=args.dropout, l2_norm=args.l2_norm, track_running_stats=track_running_stats,
    )


def pretrain_running_stats(args: argparse.Namespace) -> bool:
    """Keep BatchNorm running statistics unless the --pretrain checkpoint has none (DPC's and the
    original CoCon's normalise with batch statistics; their frozen backbones need that in eval mode)."""
    return args.pretrain in (None, "random") or has_running_stats(args.pretrain)


# ---------------------------------------------------------------- fine-tuning


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, epoch: int,
                    args: argparse.Namespace, writer: SummaryWriter, iteration: int) -> tuple[dict, int]:
    """One epoch of cross-entropy training; returns mean loss/top-1 and the updated iteration count.

    Args:
        model: the classifier (frozen parts are set by ``--train_what`` and ``epoch``).
        loader: augmented clips ``{view: [B, N, C, SL, H, W], "label": [B]}``.
        optimizer: built on :func:`model_lc.parameter_groups`.
        epoch: 0-based epoch (the backbone is frozen in epoch 0).
        args: the parsed flags (``modality``, ``train_what``, ``device``, ``print_freq``).
        writer: TensorBoard writer of the iteration losses.
        iteration: optimiser steps taken before this epoch.
    """
    model.train()
    model_lc.set_trainable(model, args.train_what, epoch)
    loader.dataset.set_epoch(epoch)
    loss_meter, acc_meter = AverageMeter(), AverageMeter()
    for batch in tqdm(loader, desc=f"epoch {epoch}", leave=False):
        x, y = batch[args.modality].to(args.device), batch["label"].to(args.device)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        check_finite(loss, f"fine-tuning loss at epoch {epoch}, iteration {iteration}",
                     "stopping; the last epoch's checkpoint is kept: lower --lr, or check the --pretrain checkpoint")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_meter.update(loss.item(), len(y))
        acc_meter.update(topk_accuracy(logits.detach(), y, (1,))[0], len(y))
        iteration += 1
        if iteration % args.print_freq == 0:
            writer.add_scalar("iter/loss", loss.item(), iteration)
    return {"loss": loss_meter.avg, "top1": acc_meter.avg}, iteration


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, args: argparse.Namespace) -> dict:
    """Loss, top-1 and top-5 on the middle clip of each validation video."""
    model.eval()
    loss_meter, top1, top5 = AverageMeter(), AverageMeter(), AverageMeter()
    for batch in loader:
        x, y = batch[args.modality].to(args.device), batch["label"].to(args.device)
        logits = model(x)
        acc1, acc5 = topk_accuracy(logits, y, (1, 5))
        loss_meter.update(F.cross_entropy(logits, y).item(), len(y))
        top1.update(acc1, len(y))
        top5.update(acc5, len(y))
    return {"loss": loss_meter.avg, "top1": top1.avg, "top5": top5.avg}


def load_resume_checkpoint(args: argparse.Namespace) -> tuple[Path, dict]:
    """The fine-tuning checkpoint ``--resume`` names (a file, or a ``model/`` folder: its newest epoch).

    Raises:
        CheckpointError: not a fine-tuning checkpoint of ``--modality`` (a pretraining one is named as
            such), or one of another ``--net`` or ``--train_what``.
    """
    path = run.find_resume(args.resume, [args.modality])[args.modality]
    checkpoint = run.load_resume(path, args.modality, args.net, args.device)
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


def resume_finetuning(path: Path, checkpoint: dict, model: nn.Module, optimizer: torch.optim.Optimizer,
                      scheduler: torch.optim.lr_scheduler.LRScheduler) -> run.Progress:
    """Restore model, optimiser and scheduler, and the best copy (see :func:`utils.run.ensure_best`).

    Args:
        path, checkpoint: from :func:`load_resume_checkpoint`.
        model, optimizer, scheduler: built from this run's flags.
    """
    run.restore_state(checkpoint, path, model, optimizer, scheduler, "--net, --train_what and model flags")
    check_weights_finite(model, f"--resume {path}")
    run.ensure_best(path.parent, checkpoint["mode"], checkpoint)
    return run.Progress(checkpoint["epoch"], checkpoint["iteration"], float(checkpoint["best_acc"]),
                         checkpoint.get("best_epoch"))


def check_weights_finite(model: nn.Module, source: str) -> None:
    """Stop before a model with NaN or infinite weights trains or scores anything.

    Args:
        model: the loaded model.
        source: where its weights came from, for the message (e.g. ``"--test <path>"``).
    """
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            check_finite(tensor, f"{source}: weight {name}", "it was saved by a diverged run; use an earlier checkpoint")


def clip_loaders(args: argparse.Namespace, train: list[VideoEntry], val: list[VideoEntry]) -> tuple[DataLoader, DataLoader]:
    """Augmented random clips of the training videos; the middle clip of each validation video."""
    size = {args.modality: view_size(args)}
    clip = dict(num_seq=args.num_seq, seq_len=args.seq_len, ds=args.ds)
    train_set = MultiViewClipDataset(train, [args.modality], size, **clip, train=True, hflip=use_hflip(args), seed=args.seed)
    val_set = MultiViewClipDataset(val, [args.modality], size, **clip, train=False)
    if args.cache_frames:
        fill_frame_caches([train_set, val_set], args.num_workers)
    # drop_last keeps BatchNorm1d from a batch of one; a set smaller than a batch is used whole.
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, num_workers=args.num_workers,
                              drop_last=len(train_set) >= args.batch_size,
                              generator=torch.Generator().manual_seed(args.seed))
    return train_loader, DataLoader(val_set, batch_size=args.batch_size, num_workers=args.num_workers)


def seed_epoch(loader: DataLoader, seed: int, epoch: int) -> None:
    """Make an epoch's clip order, dropout and augmentation a function of (seed, epoch), so a resumed
    run repeats exactly what an uninterrupted one does."""
    seed_everything(seed + epoch)
    loader.generator.manual_seed(seed + epoch)


def finetune(args: argparse.Namespace) -> dict:
    """Fine-tune, keep the best checkpoint by validation top-1, then test it on the test split."""
    from tensorboardX import SummaryWriter

    root = csv_root(args)
    train_all, class_names = load_split(root, "train", args.split)
    test_entries, _ = load_split(root, "test", args.split)
    train_entries, val_entries = holdout_split(train_all, args.val_fraction, args.seed)
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
    optimizer = torch.optim.Adam(model_lc.parameter_groups(model, args.train_what, args.lr), weight_decay=args.wd)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, lr_milestones(args), gamma=0.1)
    if resumed is not None:
        state = resume_finetuning(*resumed, model, optimizer, scheduler)
        exp = run.experiment_of({args.modality: resumed[0]})
    else:
        state, exp = run.Progress(), Path(args.save_dir) / exp_name(args)
    model_dir = run.open_experiment(exp, args, state.epoch if resumed else None)
    train_loader, val_loader = clip_loaders(args, train_entries, val_entries)
    log.info("fine-tuning %s on %d train / %d val videos (%d classes, hflip %s) into %s", args.modality,
             len(train_entries), len(val_entries), len(class_names), "on" if use_hflip(args) else "off", exp)
    writers = {part: SummaryWriter(str(exp / "img" / part)) for part in ("train", "val")}
    try:
        for epoch in range(state.epoch, args.epochs):
            record = finetune_epoch(model, (train_loader, val_loader), optimizer, scheduler, epoch, state, args, writers)
            save_finetuning(model_dir, model, optimizer, scheduler, state, args, class_names, track)
            append_jsonl(record, exp / "log.jsonl")
    finally:
        for writer in writers.values():
            writer.close()
    best = run.checkpoint_path(model_dir, args.modality, "best")
    results = test_classifier(best, args, test_entries, class_names, args.out_dir or default_out_dir(best, args))
    return {"exp": str(exp), "best_val_top1": state.best_acc, "test": results}


def finetune_epoch(model: nn.Module, loaders: tuple[DataLoader, DataLoader], optimizer: torch.optim.Optimizer,
                   scheduler: torch.optim.lr_scheduler.LRScheduler, epoch: int, state: run.Progress,
                   args: argparse.Namespace, writers: dict[str, SummaryWriter]) -> dict:
    """Train and validate one epoch, step the schedule, and advance ``state`` (epoch, iteration, best);
    return the epoch's record for ``log.jsonl`` (its train and val loss and top-1).

    Args:
        model: the classifier.
        loaders: the training and validation loaders.
        optimizer, scheduler: the classifier's.
        epoch: the 0-based epoch to run.
        state: the run's progress, updated in place.
        args: the parsed flags.
        writers: the ``train`` and ``val`` TensorBoard writers.
    """
    train_loader, val_loader = loaders
    seed_epoch(train_loader, args.seed, epoch)
    train_stats, state.iteration = train_one_epoch(model, train_loader, optimizer, epoch, args, writers["train"],
                                                   state.iteration)
    val_stats = evaluate(model, val_loader, args)
    check_finite(val_stats["loss"], f"validation loss after epoch {epoch + 1}",
                 "the weights diverged; the previous epoch's checkpoint is kept: lower --lr and --resume from it")
    for part, stats in (("train", train_stats), ("val", val_stats)):
        for key, value in stats.items():
            writers[part].add_scalar(f"epoch/{key}", value, epoch)
    writers["train"].add_scalar("epoch/lr", optimizer.param_groups[-1]["lr"], epoch)
    scheduler.step()
    improved = val_stats["top1"] > state.best_acc
    if improved:
        state.best_acc, state.best_epoch = val_stats["top1"], epoch + 1
    state.epoch = epoch + 1
    log.info("epoch %d/%d: train loss %.3f top-1 %.1f%% | val loss %.3f top-1 %.1f%%%s", epoch + 1, args.epochs,
             train_stats["loss"], 100 * train_stats["top1"], val_stats["loss"], 100 * val_stats["top1"],
             " (best)" if improved else "")
    return {"epoch": epoch + 1, "train": train_stats, "val": val_stats, "best": bool(improved)}


def save_finetuning(model_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, state: run.Progress, args: argparse.Namespace,
                    class_names: list[str], track: bool) -> None:
    """The epoch file, then the best copy when this epoch is the best, then pruning (:mod:`utils.run`).

    Args:
        model_dir: the experiment's ``model/`` folder.
        model, optimizer, scheduler: saved.
        state: the run's progress after the epoch.
        args: the flags (``--keep_last``, and stored in the checkpoint).
        class_names: the classes, checked when the checkpoint is tested.
        track: whether the backbone keeps BatchNorm running statistics.
    """
    checkpoint = run.make_checkpoint(
        args.modality, args.net, model, optimizer, scheduler, epoch=state.epoch, iteration=state.iteration,
        best_acc=state.best_acc, best_epoch=state.best_epoch, args=args, class_names=list(class_names),
        track_running_stats=track,
    )
    improved = [args.modality] if state.best_epoch == state.epoch else []
    run.save_epoch(model_dir, state.epoch, {args.modality: checkpoint}, improved, args.keep_last)


# ---------------------------------------------------------------- testing


# Flags that shape the classifier or its test clips; a fine-tuned checkpoint records them in "args".
_CLASSIFIER_FLAGS = ("net", "img_dim", "seq_len", "num_seq", "ds", "l2_norm")


def _effective(flag: str, value: object, args: argparse.Namespace) -> object:
    """What a flag value means for ``--modality`` (views other than imgs cap --net and --img_dim)."""
    if flag == "net":
        return view_backbone(args.modality, str(value))
    if flag == "img_dim":
        return VIEWS[args.modality].size(int(value))
    return value


def check_classifier_settings(checkpoint: dict, path: Path, args: argparse.Namespace, class_names: list[str]) -> None:
    """Refuse a fine-tuned checkpoint whose recorded flags or classes differ from this run's.

    Args:
        checkpoint: the loaded checkpoint; its ``args`` and ``class_names`` are checked where present.
        path: the checkpoint file, for messages.
        args: the parsed flags.
        class_names: the classes of this run's ``classInd.txt``.

    Raises:
        CheckpointError: naming the flag (or ``classInd.txt``) and both values.
    """
    saved = checkpoint.get("args") or {}
    for flag in _CLASSIFIER_FLAGS:
        if flag in saved and _effective(flag, saved[flag], args) != _effective(flag, getattr(args, flag), args):
            raise CheckpointError(f"--test {path} was fine-tuned with --{flag} {saved[flag]!r}, "
                                  f"but --{flag} is {getattr(args, flag)!r}")
    names = checkpoint.get("class_names")
    if names is not None and list(names) != list(class_names):
        shorter = min(len(names), len(class_names))
        diff = next((i for i, (a, b) in enumerate(zip(names, class_names)) if a != b), shorter)
        raise CheckpointError(
            f"--test {path} was fine-tuned on {len(names)} classes, but {csv_root(args) / 'classInd.txt'} lists "
            f"{len(class_names)}; they first differ at class {diff + 1}: "
            f"{(list(names) + ['<none>'])[diff]!r} vs {(list(class_names) + ['<none>'])[diff]!r}"
        )


def load_classifier(path: Path, args: argparse.Namespace, class_names: list[str]) -> nn.Module:
    """A fine-tuned classifier of ``--modality`` from ``path``, every key required.

    Args:
        path: the ``--test`` checkpoint.
        args: the parsed flags; the checkpoint's recorded model flags must match them.
        class_names: the classes of ``classInd.txt``; the checkpoint's must match them.

    Raises:
        CheckpointError: another view, other model flags or classes, or weights that do not fit.
        NonFiniteError: a weight is NaN or infinite.
    """
    checkpoint = load_checkpoint(path, map_location="cpu")
    if checkpoint.get("mode") not in (None, args.modality):
        raise CheckpointError(f"--test {path} is a classifier of the {checkpoint['mode']!r} view, "
                              f"but --modality is {args.modality!r}")
    check_classifier_settings(checkpoint, path, args, class_names)
    num_classes = len(class_names)
    model = build_classifier(args, num_classes, bool(checkpoint.get("track_running_stats", True)))
    try:
        model.load_state_dict(clean_state_dict(state_dict_of(checkpoint, path)))
    except RuntimeError as err:
        raise CheckpointError(
            f"--test {path} does not fit a {num_classes}-class {args.modality} classifier with --net {args.net} "
            f"(a pretraining checkpoint goes to --pretrain): {' '.join(str(err).split())[:600]}"
        ) from err
    check_weights_finite(model, f"--test {path}")
    return model.to(args.device).eval()


def test_classifier(checkpoint: Path, args: argparse.Namespace, entries: list[VideoEntry],
                    class_names: list[str], out_dir: Path) -> dict:
    """Whole-video test of a classifier checkpoint; writes the report files into ``out_dir``."""
    model = load_classifier(checkpoint, args, class_names)
    probs, labels, indices = ev.predict_videos(model, group_loader(entries, args), args.modality,
                                               args.batch_size, args.device, progress=True)
    videos = np.array([str(entries[i].frame_dir) for i in indices])
    result = ev.VideoProbabilities(probs, labels, videos, np.array(class_names), args.modality)
    return report(result, out_dir, "test", {"checkpoint": str(checkpoint), "split": args.split})


def report(result: ev.VideoProbabilities, out_dir: Path, stem: str, extra: dict) -> dict:
    """Save probabilities, metrics, figure and tables of one (or a fused) view; print a results line."""
    out_dir = Path(out_dir)
    probs_path = ev.save_probabilities(out_dir / f"probs_{result.view}.npz", result)
    stats, files = ev.write_classification_report(out_dir, stem, result.probs, result.labels,
                                                  list(result.class_names), f"{stem} {result.view}")
    stats.update(extra, view=result.view, probs=str(probs_path), **{k: str(v) for k, v in files.items()})
    ev.write_json(out_dir / f"{stem}_results.json", stats)
    print(f"{stem} {result.view}: top-1 {100 * stats['top1']:.2f}% top-5 {100 * stats['top5']:.2f}% "
          f"mean-class {100 * stats['mean_class_accuracy']:.2f}% on {stats['num_videos']} videos -> {out_dir}")
    return stats


def run_ensemble(args: argparse.Namespace) -> dict:
    """Fuse the given ``--prob_<view>`` files with the view weights.

    Views are taken in the canonical order of :data:`utils.views.VIEWS` (imgs, flow, farne, kphm, seg),
    whatever the order of the flags: the fused view name (``imgs+flow``), the video order of the
    result and the default output folder (beside the first of them) follow it.
    """
    paths = {v: getattr(args, f"prob_{v}") for v in VIEWS if getattr(args, f"prob_{v}") is not None}
    if len(paths) < 2:
        raise ValueError(f"--ensemble 1 needs two or more of {[f'--prob_{v}' for v in VIEWS]}, got {len(paths)}")
    files = {v: ev.load_probabilities(p) for v, p in paths.items()}
    for view, content in files.items():
        if content.view != view:
            raise ValueError(f"--prob_{view} {paths[view]} holds probabilities of the {content.view!r} view")
    weights = ev.parse_ensemble_weights(args.ensemble_weights)
    fused = ev.ensemble_probabilities(files, weights)
    first = Path(next(iter(paths.values()))).resolve()
    out_dir = args.out_dir or first.parent.parent / f"ensemble_{fused.view}"
    singles = {v: ev.classification_metrics(f.probs, f.labels, len(f.class_names))[0]["top1"] for v, f in files.items()}
    extra = {"inputs": {v: str(p) for v, p in paths.items()}, "weights": {v: weights[v] for v in paths},
             "single_view_top1": singles}
    return report(fused, out_dir, "ensemble", extra)


# ---------------------------------------------------------------- frozen encoder evaluation


def build_encoder(args: argparse.Namespace) -> DPCRNN:
    """The pretrained encoder of ``--pretrain`` (or a seeded random one), frozen, in eval mode."""
    torch.manual_seed(args.seed)
    encoder = DPCRNN(view_backbone(args.modality, args.net), VIEWS[args.modality].channels, view_size(args),
                     args.seq_len, args.num_seq, pred_step=min(3, args.num_seq - 1), l2_norm=args.l2_norm,
                     track_running_stats=pretrain_running_stats(args))
    if args.pretrain != "random":
        log.info("pretrain %s: %s", args.pretrain, load_pretrained(encoder, args.pretrain, args.modality).summary())
    encoder.requires_grad_(False)
    return encoder.to(args.device).eval()


def encoder_features(args: argparse.Namespace, train: list[VideoEntry], test: list[VideoEntry], out_dir: Path) -> dict:
    """Train (gallery) and test (query) video features of the frozen encoder, cached in ``out_dir``."""
    root = csv_root(args)
    lists = [split_csv_path(root, part, args.split) for part in ("train", "test")]
    settings = {
        "view": args.modality, "net": view_backbone(args.modality, args.net), "size": view_size(args),
        "seq_len": args.seq_len, "num_seq": args.num_seq, "ds": args.ds, "l2_norm": args.l2_norm,
        "seed": args.seed, **{p.name: f"{p.resolve()}@{p.stat().st_mtime_ns}" for p in lists},
    }
    key = ev.feature_cache_key(args.pretrain, settings)
    path = ev.feature_cache_path(out_dir, key)
    cached = ev.load_features(path, key) if args.cache else None
    if cached is not None:
        log.info("features loaded from cache %s", path)
        return {**cached, "cache": "hit"}
    encoder = build_encoder(args)
    arrays = {}
    for part, entries in (("train", train), ("test", test)):
        start = time.time()
        feats, labels = ev.extract_video_features(encoder.encode, group_loader(entries, args), args.modality,
                                                  args.batch_size, args.device, progress=True)
        arrays[f"{part}_features"], arrays[f"{part}_labels"] = feats, labels
        log.info("%s: %d video features %s in %.1fs", part, len(entries), feats.shape, time.time() - start)
    ev.save_features(path, key, arrays)
    return {**arrays, "cache": "miss"}


def parse_recall_k(spec: str) -> list[int]:
    """``"1,5,10"`` → the sorted distinct k of recall@k.

    Args:
        spec: the ``--recall_k`` value, comma-separated positive integers.

    Raises:
        ValueError: an entry is not a positive integer, or none is given.
    """
    ks = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f"--recall_k: expected comma-separated positive integers, got {part!r} in {spec!r}")
        ks.add(int(part))
    if not ks:
        raise ValueError(f"--recall_k: expected comma-separated positive integers, got {spec!r}")
    return sorted(ks)


def evaluate_encoder(args: argparse.Namespace) -> dict:
    """Retrieval, linear probe and figures of the frozen ``--pretrain`` encoder."""
    if args.pretrain is None:
        raise ValueError("--retrieval/--linear_probe/--qualitative evaluate the --pretrain encoder: pass a checkpoint")
    if args.pretrain == "random" and args.out_dir is None:
        raise ValueError("--pretrain random has no checkpoint folder to write next to: pass --out_dir")
    ks = parse_recall_k(args.recall_k) if args.retrieval else []
    out_dir = Path(args.out_dir or default_out_dir(args.pretrain, args))
    root = csv_root(args)
    train, class_names = load_split(root, "train", args.split)
    test, _ = load_split(root, "test", args.split)
    feats = encoder_features(args, train, test, out_dir)
    results: dict = {"feature_cache": feats["cache"], "out_dir": str(out_dir)}
    if args.retrieval:
        recalls = ev.retrieval_recall(feats["test_features"], feats["test_labels"],
                                      feats["train_features"], feats["train_labels"], ks)
        table = ev.recall_table(recalls, f"Retrieval, {args.dataset} split {args.split}, {args.modality}: "
                                         f"{len(test)} test queries, {len(train)} train gallery videos (recall %)")
        ev.write_text(out_dir / "retrieval.md", table)
        ev.write_json(out_dir / "retrieval.json", {"recall": {str(k): v for k, v in recalls.items()},
                                                   "queries": len(test), "gallery": len(train),
                                                   "checkpoint": str(args.pretrain)})
        print(table)
        results["retrieval"] = recalls
    if args.linear_probe:
        probe = ev.linear_probe(feats["train_features"], feats["train_labels"], feats["test_features"],
                                feats["test_labels"], seed=args.seed)
        ev.write_json(out_dir / "linear_probe.json", {**probe, "checkpoint": str(args.pretrain)})
        print(f"linear probe {args.modality}: train top-1 {100 * probe['train_top1']:.2f}% "
              f"test top-1 {100 * probe['test_top1']:.2f}%")
        results["linear_probe"] = probe
    if args.qualitative:
        results["figures"] = qualitative(args, feats, train, test, class_names, out_dir)
    return results


def qualitative(args: argparse.Namespace, feats: dict, train: list[VideoEntry], test: list[VideoEntry],
                class_names: list[str], out_dir: Path) -> dict:
    """t-SNE of the test videos and a nearest-neighbour grid of evenly spaced test queries."""
    query_feats = ev.center_normalize(feats["test_features"])
    gallery_feats = ev.center_normalize(feats["train_features"])
    tsne = ev.tsne_figure(query_feats, feats["test_labels"], class_names, out_dir / "tsne.png", seed=args.seed)
    rows = np.unique(np.linspace(0, len(test) - 1, min(args.nn_queries, len(test))).round().astype(int))
    ranked = ev.rank_gallery(query_feats[rows], gallery_feats, args.nn_k)
    grid = ev.nearest_neighbour_figure([test[i] for i in rows], [[train[j] for j in r] for r in ranked],
                                       class_names, out_dir / "nearest_neighbours.png")
    log.info("figures: %s, %s", tsne, grid)
    return {"tsne": str(tsne), "nearest_neighbours": str(grid)}


# ---------------------------------------------------------------- entry point


def main(args: argparse.Namespace) -> dict:
    """Run the mode the flags select (see the --help epilog); returns its results."""
    select_gpus(getattr(args, "gpu", None))  # before CUDA starts
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.ensemble:
        return {"ensemble": run_ensemble(args)}
    if args.test is not None or args.retrieval or args.linear_probe or args.qualitative:
        results = {}
        if args.test is not None:
            root = csv_root(args)
            entries, class_names = load_split(root, "test", args.split)
            out_dir = args.out_dir or default_out_dir(args.test, args)
            results["test"] = test_classifier(args.test, args, entries, class_names, out_dir)
        if args.retrieval or args.linear_probe or args.qualitative:
            results["encoder"] = evaluate_encoder(args)
        return results
    return {"finetune": finetune(args)}


if __name__ == "__main__":
    run_cli(main, get_args_parser())
