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
epochs uses the validation pass's clip embeddings (``utils/embedding.py``, the ones retrieval reports): a
ridge classifier fit on a seeded half of them and scored on the other half, k-means against the labels,
and the mutual information between the views' k-means clusterings.

The pieces: ``train/pretrain_flags.py`` (flags and their checks), ``train/pretrain_run.py`` (experiment folder,
save and resume), ``train/pretrain_loop.py`` (the training and validation passes), ``train/probe.py``.
"""
# ruff: noqa: E402 (the flags are parsed before torch is imported)
from __future__ import annotations

import argparse
import contextlib
import logging
import time

from train.pretrain_flags import check_args, get_args_parser

if __name__ == "__main__":  # --help and a bad flag answer at once, not after torch's import (minutes under load)
    get_args_parser().parse_args()

import torch
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, SequentialSampler

from train.dataset_3d import build_pretrain_datasets
from train.losses import CoConLossConfig, cpc_temperature
from train.model_3d import DPCRNN
from train.pretrain_loop import RunContext, evaluate, train_one_epoch
from train.pretrain_run import TrainState, experiment_dir, open_experiment, resume_flags, resume_training, save_checkpoints
from train.probe import probe
from utils import run
from utils.checkpoint import CheckpointError, load_pretrained
from utils.cli import run_cli
from utils.cli_options import default_num_workers, select_gpus
from utils.distributed import (
    DistInfo,
    cleanup,
    init_distributed,
    is_main_process,
    local_world_size,
    mean_over_processes,
    process_seed,
    seed_everything,
    wrap_model,
)
from utils.files import append_jsonl
from utils.layout import resolve_csv_root, resolve_hflip
from utils.precision import amp_dtype_for, describe_amp, grad_scaler, to_channels_last
from utils.video_data import fill_frame_caches
from utils.views import VIEWS, view_backbone

log = logging.getLogger("cocon.pretrain")


# ---------------------------------------------------------------- models and optimisers


def build_models(views: list[str], args: argparse.Namespace) -> dict[str, DPCRNN]:
    """One DPC-RNN per view at its own size; non-RGB views use at most resnet18."""
    return {
        view: DPCRNN(
            view_backbone(view, args.net), VIEWS[view].channels, VIEWS[view].size(args.img_dim),
            args.seq_len, args.num_seq, args.pred_step, args.l2_norm, gru_relu=args.gru_relu,
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


# ---------------------------------------------------------------- data


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


# ---------------------------------------------------------------- main


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
    resume_flags(args)  # a --resume run takes the flags of the run it continues
    n_gpu = torch.cuda.device_count() if info.device.type == "cuda" and not info.distributed else 1
    if args.num_workers is None:
        args.num_workers = default_num_workers(n_gpu if info.device.type == "cuda" else 0, local_world_size())
    views = check_args(args)
    amp_dtype = amp_dtype_for(args.amp, info.device)
    seed_everything(args.seed)
    models = build_models(views, args)  # raises on an --img_dim / --pred_step the network cannot take

    hflip = resolve_hflip(args.hflip, args.dataset)
    csv_root = resolve_csv_root(args.csv_root, args.dataset)
    train_ds, val_ds, class_names = build_pretrain_datasets(
        csv_root, args.split, views, args.img_dim, args.num_seq, args.seq_len, args.ds, hflip, args.sampling, args.val_fraction, args.seed,
        args.colour_jitter, clips_per_step=args.batch_size * n_gpu * info.world_size,
    )
    log.info("hflip %s; batch %d per GPU × %d GPU(s) × %d process(es) = %d clips per step (× grad_accum %d); %s",
             hflip, args.batch_size, n_gpu, info.world_size, args.batch_size * n_gpu * info.world_size, args.grad_accum,
             describe_amp(amp_dtype))
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
        models={view: wrap_model(model, view, info, n_gpu, amp_dtype) for view, model in models.items()},
        optimizers=optimizers, schedulers=schedulers, scaler=scaler, train_loader=train_loader, val_loader=val_loader,
        loss_cfg=CoConLossConfig(temperature=cpc_temperature(args.temp, args.l2_norm, args.temp_division),
                                 msync_wt=args.msync_wt, dot_wt=args.dot_wt, pool=args.pool),
        info=info, amp_dtype=amp_dtype, num_classes=len(class_names), exp_dir=exp_dir,
    )
    history = []
    with contextlib.ExitStack() as stack:
        if is_main_process():
            ctx.writer = stack.enter_context(open_experiment(exp_dir, args, resumed_epoch))
        for epoch in range(start_epoch, args.epochs):
            history.append(run_epoch(ctx, epoch, state, args))
    return {"exp_dir": exp_dir, "history": history}


def run_epoch(ctx: RunContext, epoch: int, state: TrainState, args: argparse.Namespace) -> dict:
    """Train, validate, step the schedulers, probe, save and log one epoch; return its stats.

    ``record["best"]`` lists the views whose validation CPC top-1 improved (their best copies were rewritten).
    """
    started = time.time()
    set_epoch(ctx.train_loader, epoch, args.seed)
    seed_everything(process_seed(args.seed + epoch))  # dropout masks differ between processes
    train_stats = train_one_epoch(ctx, epoch, state, args)
    do_probe = args.ft_freq > 0 and (epoch + 1) % args.ft_freq == 0
    val_stats, features, labels = evaluate(ctx.models, ctx.val_loader, ctx.loss_cfg, ctx.info.device, args.debug, do_probe, ctx.amp_dtype)
    plateau_loss = mean_over_processes(val_stats["total"])  # every process's scheduler decides alike
    for scheduler in ctx.schedulers.values():
        scheduler.step(plateau_loss)
    improved = [view for view in ctx.models if val_stats[f"cpc_top1/{view}"] > state.best_acc[view]]
    for view in improved:
        state.best_acc[view] = val_stats[f"cpc_top1/{view}"]
        state.best_epoch[view] = epoch + 1
    state.epoch = epoch + 1
    record = {"epoch": epoch + 1, "iteration": state.iteration, "steps": state.steps, "train": train_stats, "val": val_stats,
              "lr": {f"{v}/{g['name']}": g["lr"] for v, o in ctx.optimizers.items() for g in o.param_groups}, "best": improved}
    if is_main_process():
        record["probe"] = probe(features, labels, ctx.num_classes, args.seed) if do_probe else {}
        save_checkpoints(ctx.exp_dir / "model", ctx.models, ctx.optimizers, ctx.schedulers, ctx.scaler, state, improved, args)
        record["seconds"] = round(time.time() - started, 2)
        for group in ("val", "probe", "lr"):
            for key, value in record[group].items():
                ctx.writer.add_scalar(f"{group}/{key}", value, epoch + 1)
        for key, value in train_stats.items():
            ctx.writer.add_scalar(f"train_epoch/{key}", value, epoch + 1)
        ctx.writer.flush()
        append_jsonl(record, ctx.exp_dir / "log.jsonl")
        log.info("epoch %d: train loss %.4f, val loss %.4f, val CPC top-1 %.3f%s %s", epoch + 1, train_stats["total"], val_stats["total"],
                 val_stats["cpc_top1"], f" (best: {', '.join(improved)})" if improved else "",
                 " ".join(f"{k} {v:.3f}" for k, v in record["probe"].items()))
    return record


if __name__ == "__main__":
    run_cli(main, get_args_parser())
