"""CoCon pretraining: one DPC-RNN encoder per view, trained with CPC and the cross-view sync and
cooperative losses (see train/losses.py). The same script runs on one CPU, on several GPUs and under torchrun.

    cd train && python model_trainer.py --net resnet18 --dataset hmdb51 --modalities imgs_flow_seg_kphm \
        --batch_size 16 --img_dim 128 --epochs 100
    python train/model_trainer.py --dataset synthetic --net resnet10 --img_dim 64 --modalities imgs_flow_seg_kphm
    torchrun --nproc_per_node 4 train/model_trainer.py --dataset ucf101 --modalities imgs_flow

``--batch_size`` is per GPU: several visible GPUs without torchrun run DataParallel on a loader batch
of batch_size × GPUs; under torchrun every process loads batch_size clips and the encoders' outputs
are all-gathered (with gradient) so the contrastive negatives span the global batch. Under torchrun
the validation set is padded by ``DistributedSampler`` (it repeats its first clips); the validation
pass gathers each clip's dataset index with the outputs and drops the repeats before the losses, so
its means and probe features count every validation clip once.

Each view has its own model, Adam optimiser and ReduceLROnPlateau, so each view's checkpoint
``<exp>/model/mode_<view>_epoch<N>.pth.tar`` is self-contained; ``mode_<view>_best.pth.tar`` is
rewritten whenever that view's validation CPC top-1 improves (its ``best_acc``). The validation clips
are held out of the train split. ``--resume`` continues in the resumed experiment's folder, keeping its
``args.json`` and writing the new flags to ``args_resume<epoch>.json``. The probe every ``--ft_freq``
epochs uses the validation pass's pooled features: a ridge classifier fit on a seeded half of them and
scored on the other half, k-means against the labels, and the mutual information between the views'
k-means clusterings.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tensorboardX import SummaryWriter
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, SequentialSampler
from tqdm import tqdm

from train.dataset_3d import SAMPLING_MODES, build_pretrain_datasets
from utils.layout import REPO_ROOT, resolve_csv_root, resolve_hflip
from train.diagnostics import similarity_agreement, term_gradient_norms
from train.losses import TEMP_DIVISIONS, CoConLossConfig, cocon_loss, cocon_terms, cpc_temperature, pool_blocks, total_loss
from train.model_3d import DPCRNN
from utils import run
from utils.checkpoint import CheckpointError, load_pretrained
from utils.cli import run_cli
from utils.cli_options import HelpFormatter, add_gpu_flag, canonical_dataset, select_gpus
from utils.distributed import (
    DistInfo,
    all_gather_with_grad,
    cleanup,
    first_occurrences,
    init_distributed,
    is_main_process,
    seed_everything,
    unwrap,
)
from utils.files import append_jsonl
from utils.metrics import AverageMeter
from utils.precision import amp_dtype_for, autocast, describe_amp, grad_scaler, to_channels_last
from utils.video_data import fill_frame_caches
from utils.views import VIEWS, parse_views, view_backbone
from utils.visualize import clip_grid

DEBUG_BATCHES = 3  # batches per epoch (train and validation) under --debug
log = logging.getLogger("cocon.pretrain")


def get_args_parser() -> argparse.ArgumentParser:
    """Every flag of CoCon pretraining, grouped."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="ucf101", type=canonical_dataset,
                      help="dataset name: names the experiment and the default --csv_root (the original code's hmdb and "
                      "kinetics mean hmdb51 and kinetics400)")
    data.add_argument("--csv_root", default=None, help="folder of train_split0N.csv and classInd.txt (default: <repo>/process_data/data/<dataset>)")
    data.add_argument("--split", type=int, default=1, choices=(1, 2, 3), help="which train list to read")
    data.add_argument("--modalities", default="imgs", help="views joined by '_', e.g. imgs_flow_seg_kphm")
    data.add_argument("--img_dim", type=int, default=128, help="RGB side in pixels; other views use their own size")
    data.add_argument("--seq_len", type=int, default=5, help="frames per block (SL)")
    data.add_argument("--num_seq", type=int, default=8, help="blocks per clip (N)")
    data.add_argument("--ds", type=int, default=3, help="frame stride of a clip")
    data.add_argument("--sampling", default="dynamic", choices=SAMPLING_MODES, help="random clip start (dynamic) or the middle clip (center)")
    data.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None, help="random horizontal flips (default: on, off for synthetic whose classes are mirror pairs)")
    data.add_argument("--val_fraction", type=float, default=0.1, help="share of each class's training videos held out for validation")
    data.add_argument("--num_workers", type=int, default=4, help="data loading processes")
    data.add_argument("--cache_frames", action=argparse.BooleanOptionalAction, default=False,
                      help="decode every frame once into memory before training (small datasets): later epochs never read the disk; the memory needed is logged and checked first (one copy shared by the workers, one per process under torchrun)")

    model = parser.add_argument_group("model")
    model.add_argument("--net", default="resnet18", help="RGB backbone (other views use at most resnet18)")
    model.add_argument("--pred_step", type=int, default=3, help="future blocks predicted (P)")
    model.add_argument("--l2_norm", action=argparse.BooleanOptionalAction, default=True, help="L2-normalise features and predictions")

    loss = parser.add_argument_group("loss")
    loss.add_argument("--temp", type=float, default=0.07, help="temperature T of the CPC scores (see --temp_division)")
    loss.add_argument("--temp_division", default="twice", choices=TEMP_DIVISIONS,
                      help="with --l2_norm, 'twice' divides predicted and true maps each by T (scores <p, z>/T^2, the "
                           "original's), 'once' divides the score by T (a common variant); without --l2_norm scores are raw")
    loss.add_argument("--msync_wt", type=float, default=10.0, help="weight of each view pair's sync loss")
    loss.add_argument("--dot_wt", type=float, default=10.0, help="weight of each view pair's cooperative loss")
    loss.add_argument("--pool", default="avg", choices=("avg", "max"), help="pooling of block maps for the cross-view losses")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--batch_size", type=int, default=16, help="clips per GPU (per process under torchrun)")
    optim.add_argument("--epochs", type=int, default=100, help="last epoch (exclusive) to train")
    optim.add_argument("--start-epoch", dest="start_epoch", type=int, default=None, help="0-based first epoch to run (default: 0, or the resumed one)")
    optim.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    optim.add_argument("--wd", type=float, default=1e-5, help="Adam weight decay")
    optim.add_argument("--tune_bb", type=float, default=1.0, help="lr multiplier of a restored non-RGB backbone")
    optim.add_argument("--tune_imgs_bb", type=float, default=1.0, help="lr multiplier of a restored RGB backbone")
    optim.add_argument("--grad_accum", type=int, default=1, help="micro-batches per optimiser step")
    optim.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                       help="mixed precision with channels-last 3-D convolutions: bf16 on a CPU with native bf16 (AVX512-BF16/AMX; "
                            "float32 with a warning otherwise); on CUDA bf16 where supported, else fp16 with a grad scaler, always "
                            "fp16 with a grad scaler under DataParallel, whose replicas autocast to fp16")
    optim.add_argument("--seed", type=int, default=0, help="seed of initialisation, data order and augmentation")
    add_gpu_flag(optim)

    ckpt = parser.add_argument_group("checkpoints")
    for view in VIEWS:
        ckpt.add_argument(f"--{view}_restore_ckpt", default=None, help=f"initialise the {view} encoder from this DPC/CoCon checkpoint")
    ckpt.add_argument("--resume", default=None, help="an experiment's model/ folder or one of its view checkpoints; "
                      "training continues in that experiment's folder (exclusive with --<view>_restore_ckpt)")
    ckpt.add_argument("--save_dir", default=str(REPO_ROOT / "runs"), help="parent folder of experiment folders")
    ckpt.add_argument("--prefix", default="cocon", help="first part of the experiment folder name")
    ckpt.add_argument("--notes", default="", help="suffix of the experiment folder name")
    ckpt.add_argument("--keep_last", type=int, default=3, help="epoch checkpoints kept per view")

    logs = parser.add_argument_group("logging")
    logs.add_argument("--print_freq", type=int, default=10, help="iterations between log lines and training scalars")
    logs.add_argument("--vis_log_freq", type=int, default=100, help="iterations between input grids and similarity histograms")
    logs.add_argument("--grad_diag_freq", type=int, default=20,
                      help="iterations between measurements of each loss term's gradient norm in the RGB backbone (0: never)")
    logs.add_argument("--ft_freq", type=int, default=10, help="epochs between ridge/k-means probes (0: never)")
    logs.add_argument("--debug", action=argparse.BooleanOptionalAction, default=False, help=f"{DEBUG_BATCHES} batches per epoch (smoke runs)")
    return parser


def check_args(args: argparse.Namespace) -> list[str]:
    """Reject bad flags before anything is built; return the views."""
    views = parse_views(args.modalities)
    positive = ("batch_size", "epochs", "grad_accum", "keep_last", "print_freq", "vis_log_freq", "seq_len", "num_seq", "ds")
    for name in positive:
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if not 0 < args.val_fraction < 1:
        raise ValueError(f"--val_fraction must be in (0, 1), got {args.val_fraction}")
    if args.num_workers < 0 or args.ft_freq < 0 or args.grad_diag_freq < 0:
        raise ValueError("--num_workers, --ft_freq and --grad_diag_freq must be >= 0")
    for view in VIEWS:
        if getattr(args, f"{view}_restore_ckpt") and view not in views:
            raise ValueError(f"--{view}_restore_ckpt is set but {view} is not in --modalities {args.modalities}")
        if getattr(args, f"{view}_restore_ckpt") and args.resume:
            raise ValueError(f"--resume and --{view}_restore_ckpt are exclusive: a resumed run restores every view from its own checkpoint")
    return views


def experiment_dir(args: argparse.Namespace) -> Path:
    """``<save_dir>/<prefix>_<dataset>-<img_dim>_<net>_<modalities>_bs…_seq…_len…_ds…_pred…_lr…_sync…_dot…_temp…_split…_seed…[_notes]``."""
    name = (
        f"{args.prefix}_{args.dataset}-{args.img_dim}_{args.net}_{args.modalities}_bs{args.batch_size}"
        f"_seq{args.num_seq}_len{args.seq_len}_ds{args.ds}_pred{args.pred_step}_lr{args.lr:g}"
        f"_sync{args.msync_wt:g}_dot{args.dot_wt:g}_temp{args.temp:g}_split{args.split}_seed{args.seed}"
    )
    return Path(args.save_dir) / (f"{name}_{args.notes}" if args.notes else name)


# ---------------------------------------------------------------- models and optimisers


def build_models(views: list[str], args: argparse.Namespace) -> dict[str, DPCRNN]:
    """One DPC-RNN per view at its own size; non-RGB views use at most resnet18."""
    return {
        view: DPCRNN(
            view_backbone(view, args.net), VIEWS[view].channels, VIEWS[view].size(args.img_dim),
            args.seq_len, args.num_seq, args.pred_step, args.l2_norm,
        )
        for view in views
    }


def restore_encoder(model: nn.Module, view: str, path: str) -> None:
    """Initialise ``model`` from a DPC/CoCon checkpoint of ``view`` (``--<view>_restore_ckpt``).

    Raises:
        CheckpointError: naming the flag, when the file is unreadable, of another view or channel
            count, or leaves any backbone parameter unfilled (another ``--net``).
    """
    try:
        report = load_pretrained(model, path, view)
    except CheckpointError as err:
        raise CheckpointError(f"--{view}_restore_ckpt {path} cannot initialise the {view} encoder: {err}") from err
    log.info("restored %s encoder from %s: %s", view, path, report.summary())


def restore_encoders(models: dict[str, DPCRNN], args: argparse.Namespace) -> set[str]:
    """Apply every ``--<view>_restore_ckpt``; return the restored views."""
    restored = set()
    for view, model in models.items():
        path = getattr(args, f"{view}_restore_ckpt")
        if path:
            restore_encoder(model, view, path)
            restored.add(view)
    return restored


def build_optimizer(model: nn.Module, lr: float, wd: float, backbone_mult: float) -> torch.optim.Adam:
    """Adam with two groups: the backbone at ``lr × backbone_mult``, GRU and predictor at ``lr``."""
    named = list(model.named_parameters())
    backbone = [p for n, p in named if n.startswith("backbone.")]
    head = [p for n, p in named if not n.startswith("backbone.")]
    groups = [{"params": backbone, "lr": lr * backbone_mult, "name": "backbone"}, {"params": head, "lr": lr, "name": "head"}]
    # foreach: one multi-tensor update instead of a Python loop over parameters (half the time on CPU).
    return torch.optim.Adam(groups, lr=lr, weight_decay=wd, foreach=True)


def wrap_model(model: nn.Module, info: DistInfo, n_gpu: int) -> nn.Module:
    """Move to the device; DDP under torchrun, DataParallel over several GPUs otherwise."""
    model = model.to(info.device)
    if info.distributed:
        return DistributedDataParallel(model, device_ids=[info.local_rank] if info.device.type == "cuda" else None)
    return nn.DataParallel(model) if n_gpu > 1 else model


def build_optimizers(
    models: dict[str, DPCRNN], restored: set[str], args: argparse.Namespace, device: torch.device
) -> tuple[dict[str, torch.optim.Adam], dict[str, ReduceLROnPlateau]]:
    """Each view's Adam (a restored backbone at ``--tune_bb``/``--tune_imgs_bb`` × lr) and ReduceLROnPlateau."""
    optimizers, schedulers = {}, {}
    for view, model in models.items():
        mult = (args.tune_imgs_bb if view == "imgs" else args.tune_bb) if view in restored else 1.0
        optimizers[view] = build_optimizer(model.to(device), args.lr, args.wd, mult)
        schedulers[view] = ReduceLROnPlateau(optimizers[view], mode="min", patience=10, min_lr=1e-5)
    return optimizers, schedulers


# ---------------------------------------------------------------- what an epoch needs


@dataclass
class TrainState:
    """Progress of a run, saved in every checkpoint and restored by ``--resume``."""

    epoch: int = 0  # epochs finished
    iteration: int = 0  # training batches seen
    steps: int = 0  # optimiser steps
    best_acc: dict[str, float] = field(default_factory=dict)  # view -> best validation CPC top-1
    best_epoch: dict[str, int | None] = field(default_factory=dict)  # view -> the epoch its best copy holds


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
    writer: SummaryWriter | None = None  # rank 0 only


# ---------------------------------------------------------------- one step


def forward_views(
    models: dict[str, nn.Module], batch: dict, device: torch.device, amp_dtype: torch.dtype | None = None
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Run every view's encoder; outputs gathered over processes (global batch), in float32.

    Returns:
        view -> (pred ``[B, P, D, s, s]``, feature ``[B, N, D, s, s]``), B the global batch.
    """
    outputs = {}
    for view, model in models.items():
        with autocast(device, amp_dtype):
            pred, feature = model(batch[view].to(device, non_blocking=True))
        outputs[view] = (all_gather_with_grad(pred.float()), all_gather_with_grad(feature.float()))
    return outputs


def check_finite(loss: torch.Tensor, stats: dict[str, torch.Tensor], where: str) -> None:
    """Stop on a non-finite loss, naming the term(s) (``cpc/<view>``, ``sync/<a>-<b>``, …)."""
    if torch.isfinite(loss):
        return
    bad = [f"{k} = {v.item()}" for k, v in stats.items() if k != "total" and not torch.isfinite(v)]
    raise FloatingPointError(
        f"non-finite loss at {where}: {', '.join(bad) or f'total = {loss.item()}'}; stopping "
        "(the checkpoints of the last finished epoch are kept)"
    )


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
        norms = term_gradient_norms(terms, "imgs", unwrap(ctx.models["imgs"]).backbone)
        found.update({key: torch.tensor(value) for key, value in norms.items()})
    return found


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
            check_finite(loss, stats, f"epoch {epoch}, batch {i}")
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
            progress.set_postfix(loss=f"{meters['total'].avg:.3f}", **{k.split("/")[1]: f"{m.avg:.3f}" for k, m in meters.items() if k.startswith("cpc/")})
            _log_iteration(ctx.writer, batch, outputs, stats, meters, state.iteration, epoch, i, n_batches, args, ctx.loss_cfg.pool)
    return {key: m.avg for key, m in meters.items()}


def _log_iteration(
    writer: SummaryWriter | None,
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
    validation clip counts once. With ``collect``, also each view's clip features (blocks and
    positions pooled, L2-normalised, ``[V, D]`` for V validation clips) and their labels.

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
        stats.update({key: torch.tensor(value) for key, value in similarity_agreement(outputs, loss_cfg.pool).items()})
        for key, value in stats.items():
            meters[key].update(value.item(), int(keep.sum()))
        if collect:
            for view, (_, feature) in outputs.items():
                clip = nn.functional.normalize(pool_blocks(feature, loss_cfg.pool).mean(dim=1), dim=1)  # [B, D]
                features[view].append(clip.cpu())
            labels.append(all_gather_with_grad(batch["label"].to(device))[keep].cpu())
    result = {key: m.avg for key, m in meters.items()}
    result["cpc_top1"] = float(np.mean([v for k, v in result.items() if k.startswith("cpc_top1/")]))
    feats = {view: torch.cat(f).numpy() for view, f in features.items()}
    return result, feats, (torch.cat(labels).numpy() if labels else np.zeros(0, dtype=np.int64))


def probe(features: dict[str, np.ndarray], labels: np.ndarray, num_classes: int, seed: int) -> dict[str, float]:
    """Quick quality check of frozen features: ridge accuracy, k-means vs labels, k-means agreement of views.

    The ridge classifier is fit on a seeded, class-stratified half of the clips and scored on the other half.
    """
    from sklearn.cluster import KMeans
    from sklearn.linear_model import RidgeClassifier
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, v_measure_score

    rng = np.random.default_rng(seed)
    halves = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    fit = np.concatenate([h[0::2] for h in halves] or [np.zeros(0, np.int64)]).astype(np.int64)
    held = np.concatenate([h[1::2] for h in halves] or [np.zeros(0, np.int64)]).astype(np.int64)
    stats, clusters = {}, {}
    for view, x in features.items():
        if len(np.unique(labels[fit])) >= 2 and len(held):
            stats[f"ridge_acc/{view}"] = float(RidgeClassifier().fit(x[fit], labels[fit]).score(x[held], labels[held]))
        k = max(1, min(num_classes, len(labels)))
        clusters[view] = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(x)
        stats[f"kmeans_ari/{view}"] = float(adjusted_rand_score(labels, clusters[view]))
        stats[f"kmeans_vmeasure/{view}"] = float(v_measure_score(labels, clusters[view]))
    for a, b in itertools.combinations(clusters, 2):
        stats[f"kmeans_nmi/{a}-{b}"] = float(normalized_mutual_info_score(clusters[a], clusters[b]))
    return stats


# ---------------------------------------------------------------- checkpoints


def save_checkpoints(
    model_dir: Path, ctx: RunContext, epoch: int, state: TrainState, improved: list[str], args: argparse.Namespace
) -> None:
    """Every view's ``mode_<view>_epoch<epoch>.pth.tar``, then the best copies of the views in ``improved``,
    then pruning to ``--keep_last`` (the protocol of :mod:`utils.run`).

    Args:
        model_dir: the experiment's ``model/`` folder.
        ctx: the run (models, optimisers, schedulers, scaler).
        epoch: epochs finished.
        state: the run's progress; each view's checkpoint stores that view's ``best_acc`` and ``best_epoch``.
        improved: views whose validation CPC top-1 is a new best this epoch.
        args: the flags, stored in each checkpoint.
    """
    extra = {"steps": state.steps}
    if ctx.scaler is not None:
        extra["scaler"] = ctx.scaler.state_dict()
    checkpoints = {
        view: run.make_checkpoint(
            view, args.net, model, ctx.optimizers[view], ctx.schedulers[view], epoch=epoch, iteration=state.iteration,
            best_acc=state.best_acc[view], best_epoch=state.best_epoch.get(view), args=args, **extra,
        )
        for view, model in ctx.models.items()
    }
    run.save_epoch(model_dir, epoch, checkpoints, improved, args.keep_last)


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


# ---------------------------------------------------------------- main


def build_loaders(
    train_ds: Dataset, val_ds: Dataset, batch_size: int, n_gpu: int, args: argparse.Namespace, info: DistInfo
) -> tuple[DataLoader, DataLoader]:
    """Training loader (shuffled by a generator reseeded each epoch, or a DistributedSampler) and validation loader.

    Args:
        train_ds, val_ds: the datasets.
        batch_size: ``--batch_size`` (per GPU).
        n_gpu: GPUs this process drives with DataParallel (1 otherwise); a loader batch is batch_size × n_gpu.
        args: ``--seed`` and ``--num_workers``.
        info: this process's rank, world size and device.

    Raises:
        ValueError: the loader batch exceeds this process's share of the training videos.
    """
    if info.distributed:
        train_sampler = DistributedSampler(train_ds, shuffle=True, seed=args.seed, drop_last=True)
        val_sampler = DistributedSampler(val_ds, shuffle=False)
    else:
        train_sampler = RandomSampler(train_ds, generator=torch.Generator())
        val_sampler = SequentialSampler(val_ds)
    batch = batch_size * n_gpu
    common = dict(batch_size=batch, num_workers=args.num_workers, pin_memory=info.device.type == "cuda")
    train_loader = DataLoader(train_ds, sampler=train_sampler, drop_last=True, **common)
    val_loader = DataLoader(val_ds, sampler=val_sampler, drop_last=False, **common)
    if len(train_loader) == 0:
        share = f" (of {len(train_ds)} over {info.world_size} processes)" if info.distributed else ""
        raise ValueError(
            f"--batch_size {batch_size} × {n_gpu} GPU(s) = {batch} clips per loader batch exceeds the "
            f"{len(train_sampler)} training videos of this process{share}"
        )
    return train_loader, val_loader


def set_epoch(loader: DataLoader, epoch: int, seed: int) -> None:
    """Make the epoch's data order and augmentation a function of (seed, epoch)."""
    loader.dataset.set_epoch(epoch)
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    else:
        loader.sampler.generator.manual_seed(seed + epoch)


def open_experiment(exp_dir: Path, args: argparse.Namespace, resumed_epoch: int | None) -> SummaryWriter:
    """Rank 0: create the folders, remove what killed runs left, record the flags (``args.json``, or
    ``args_resume<epoch>.json`` on resume, keeping the original) and open the TensorBoard writer."""
    run.open_experiment(exp_dir, args, resumed_epoch)
    return SummaryWriter(logdir=str(exp_dir / "img"))


def main(args: argparse.Namespace) -> dict:
    """Pretrain; return ``{"exp_dir", "history"}`` (history: one stats dict per epoch run)."""
    select_gpus(getattr(args, "gpu", None))  # before CUDA starts
    info = init_distributed()
    try:
        return _run(args, info)
    finally:
        cleanup()


def _run(args: argparse.Namespace, info: DistInfo) -> dict:
    logging.basicConfig(level=logging.INFO if is_main_process() else logging.WARNING, format="%(asctime)s %(message)s")
    views = check_args(args)
    n_gpu = torch.cuda.device_count() if info.device.type == "cuda" and not info.distributed else 1
    amp_dtype = amp_dtype_for(args.amp, info.device, data_parallel=n_gpu > 1)
    seed_everything(args.seed)
    models = build_models(views, args)  # raises on an --img_dim / --pred_step the network cannot take

    hflip = resolve_hflip(args.hflip, args.dataset)
    csv_root = resolve_csv_root(args.csv_root, args.dataset)
    train_ds, val_ds, class_names = build_pretrain_datasets(
        csv_root, args.split, views, args.img_dim, args.num_seq, args.seq_len, args.ds, hflip, args.sampling, args.val_fraction, args.seed
    )
    log.info("hflip %s; batch %d per GPU × %d GPU(s) × %d process(es) = %d clips per step (× grad_accum %d); %s",
             hflip, args.batch_size, n_gpu, info.world_size, args.batch_size * n_gpu * info.world_size, args.grad_accum,
             describe_amp(amp_dtype, n_gpu > 1))
    if args.cache_frames:
        fill_frame_caches([train_ds, val_ds], args.num_workers)
    train_loader, val_loader = build_loaders(train_ds, val_ds, args.batch_size, n_gpu, args, info)

    restored = restore_encoders(models, args)
    optimizers, schedulers = build_optimizers(models, restored, args, info.device)
    scaler = grad_scaler(amp_dtype, info.device)
    if amp_dtype is not None:
        for model in models.values():
            to_channels_last(model)
    state, exp_dir, resumed_epoch = TrainState(best_acc=dict.fromkeys(views, float("-inf"))), experiment_dir(args), None
    if args.resume:
        paths = run.find_resume(args.resume, views)
        exp_dir = run.experiment_of(paths)
        state = resume_training(paths, models, optimizers, schedulers, scaler, args, info.device)
        resumed_epoch = state.epoch
    start_epoch = args.start_epoch if args.start_epoch is not None else state.epoch
    ctx = RunContext(
        models={view: wrap_model(model, info, n_gpu) for view, model in models.items()},
        optimizers=optimizers, schedulers=schedulers, scaler=scaler, train_loader=train_loader, val_loader=val_loader,
        loss_cfg=CoConLossConfig(temperature=cpc_temperature(args.temp, args.l2_norm, args.temp_division), msync_wt=args.msync_wt, dot_wt=args.dot_wt, pool=args.pool),
        info=info, amp_dtype=amp_dtype, num_classes=len(class_names), exp_dir=exp_dir,
    )
    if is_main_process():
        ctx.writer = open_experiment(exp_dir, args, resumed_epoch)
    history = []
    try:
        for epoch in range(start_epoch, args.epochs):
            history.append(run_epoch(ctx, epoch, state, args))
    finally:
        if ctx.writer is not None:
            ctx.writer.close()
    return {"exp_dir": exp_dir, "history": history}


def run_epoch(ctx: RunContext, epoch: int, state: TrainState, args: argparse.Namespace) -> dict:
    """Train, validate, step the schedulers, probe, save and log one epoch; return its stats.

    ``record["best"]`` lists the views whose validation CPC top-1 improved (their best copies were rewritten).
    """
    started = time.time()
    set_epoch(ctx.train_loader, epoch, args.seed)
    seed_everything(args.seed + epoch)
    train_stats = train_one_epoch(ctx, epoch, state, args)
    do_probe = args.ft_freq > 0 and (epoch + 1) % args.ft_freq == 0
    val_stats, features, labels = evaluate(ctx.models, ctx.val_loader, ctx.loss_cfg, ctx.info.device, args.debug, do_probe, ctx.amp_dtype)
    for scheduler in ctx.schedulers.values():
        scheduler.step(val_stats["total"])
    improved = [view for view in ctx.models if val_stats[f"cpc_top1/{view}"] > state.best_acc[view]]
    for view in improved:
        state.best_acc[view] = val_stats[f"cpc_top1/{view}"]
        state.best_epoch[view] = epoch + 1
    state.epoch = epoch + 1
    record = {"epoch": epoch + 1, "iteration": state.iteration, "steps": state.steps, "train": train_stats, "val": val_stats,
              "lr": {f"{v}/{g['name']}": g["lr"] for v, o in ctx.optimizers.items() for g in o.param_groups}, "best": improved}
    if is_main_process():
        record["probe"] = probe(features, labels, ctx.num_classes, args.seed) if do_probe else {}
        save_checkpoints(ctx.exp_dir / "model", ctx, epoch + 1, state, improved, args)
        record["seconds"] = round(time.time() - started, 2)
        for group in ("val", "probe", "lr"):
            for key, value in record[group].items():
                ctx.writer.add_scalar(f"{group}/{key}", value, epoch + 1)
        for key, value in train_stats.items():
            ctx.writer.add_scalar(f"train_epoch/{key}", value, epoch + 1)
        append_jsonl(record, ctx.exp_dir / "log.jsonl")
        log.info("epoch %d: train loss %.4f, val loss %.4f, val CPC top-1 %.3f%s %s", epoch + 1, train_stats["total"], val_stats["total"],
                 val_stats["cpc_top1"], f" (best: {', '.join(improved)})" if improved else "",
                 " ".join(f"{k} {v:.3f}" for k, v in record["probe"].items()))
    return record


if __name__ == "__main__":
    run_cli(main, get_args_parser())
