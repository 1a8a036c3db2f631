"""The flags of CoCon pretraining (``train/model_trainer.py``), grouped, and the checks run before anything is built."""
from __future__ import annotations

import argparse

from utils.cli_options import (
    POOL_MODES,
    TEMP_DIVISIONS,
    HelpFormatter,
    add_colour_jitter_flag,
    add_gpu_flag,
    canonical_dataset,
    check_optimiser_flags,
    track_given_flags,
)
from utils.layout import REPO_ROOT
from utils.views import VIEWS, parse_views

SAMPLING_MODES = ("dynamic", "center")  # random clip start, or the middle clip
DEBUG_BATCHES = 3  # batches per epoch (train and validation) under --debug
DESCRIPTION = ("CoCon pretraining: one DPC-RNN encoder per view, trained with CPC and the cross-view sync and\n"
               "cooperative losses (see train/losses.py). The same script runs on one CPU, on several GPUs and under torchrun.")


def get_args_parser() -> argparse.ArgumentParser:
    """Every flag of CoCon pretraining, grouped."""
    parser = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=HelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="ucf101", type=canonical_dataset,
                      help="dataset name: names the experiment and the default --csv_root (the original code's hmdb and "
                      "kinetics mean hmdb51 and kinetics400)")
    data.add_argument("--csv_root", default=None,
                      help="folder of train_split0N.csv and classInd.txt (default: <repo>/process_data/data/<dataset>)")
    data.add_argument("--split", type=int, default=1, choices=(1, 2, 3), help="which train list to read")
    data.add_argument("--modalities", default="imgs", help="views joined by '_', e.g. imgs_flow_seg_kphm")
    data.add_argument("--img_dim", type=int, default=128, help="RGB side in pixels; other views use their own size")
    data.add_argument("--seq_len", type=int, default=5, help="frames per block (SL)")
    data.add_argument("--num_seq", type=int, default=8, help="blocks per clip (N)")
    data.add_argument("--ds", type=int, default=3, help="frame stride of a clip")
    data.add_argument("--sampling", default="dynamic", choices=SAMPLING_MODES,
                      help="random clip start (dynamic) or the middle clip (center)")
    data.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None,
                      help="random horizontal flips (default: on, off for synthetic whose classes are mirror pairs)")
    data.add_argument("--val_fraction", type=float, default=0.1, help="share of each class's training videos held out for validation")
    add_colour_jitter_flag(data)
    data.add_argument("--num_workers", type=int, default=None,
                      help="data loading processes (default: 4 per GPU this process drives, at most its share of the CPUs)")
    data.add_argument("--cache_frames", action=argparse.BooleanOptionalAction, default=False,
                      help="decode every frame once into memory before training (small datasets): later epochs never read "
                           "the disk; the memory needed is logged and checked first (one copy shared by the workers, one per "
                           "process under torchrun)")

    model = parser.add_argument_group("model")
    model.add_argument("--net", default="resnet18", help="RGB backbone (other views use at most resnet18)")
    model.add_argument("--pred_step", type=int, default=3, help="future blocks predicted (P)")
    model.add_argument("--l2_norm", action=argparse.BooleanOptionalAction, default=True, help="L2-normalise features and predictions")
    model.add_argument("--gru_relu", action=argparse.BooleanOptionalAction, default=False,
                       help="DPC's variant: a ReLU on the maps the predictor's GRU reads (CoCon feeds them as they are)")

    loss = parser.add_argument_group("loss")
    loss.add_argument("--temp", type=float, default=0.07, help="temperature T of the CPC scores (see --temp_division)")
    loss.add_argument("--temp_division", default="twice", choices=TEMP_DIVISIONS,
                      help="with --l2_norm, 'twice' divides predicted and true maps each by T (scores <p, z>/T^2, the "
                           "original's), 'once' divides the score by T (a common variant); without --l2_norm scores are raw")
    loss.add_argument("--msync_wt", type=float, default=10.0, help="weight of each view pair's sync loss")
    loss.add_argument("--dot_wt", type=float, default=10.0, help="weight of each view pair's cooperative loss")
    loss.add_argument("--pool", default="original", choices=POOL_MODES,
                      help="pooling of block maps for the cross-view losses: 'original' is CoCon's stack for the map size "
                           "(average at 64 px, 2x2 max-pools then average at 128 and 224 px; see README), 'avg' and 'max' "
                           "pool the whole map")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--batch_size", type=int, default=16, help="clips per GPU (per process under torchrun)")
    optim.add_argument("--epochs", type=int, default=100, help="last epoch (exclusive) to train")
    optim.add_argument("--start-epoch", dest="start_epoch", type=int, default=None,
                       help="0-based first epoch to run (default: 0, or the resumed one)")
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
    logs.add_argument("--debug", action=argparse.BooleanOptionalAction, default=False,
                      help=f"{DEBUG_BATCHES} batches per epoch (smoke runs)")
    return track_given_flags(parser)  # --resume tells a typed flag from a default


def check_args(args: argparse.Namespace) -> list[str]:
    """Reject bad flags before anything is built; return the views."""
    views = parse_views(args.modalities)
    positive = ("batch_size", "epochs", "grad_accum", "keep_last", "print_freq", "vis_log_freq", "seq_len", "num_seq", "ds")
    for name in positive:
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if not 0 < args.val_fraction < 1:
        raise ValueError(f"--val_fraction must be in (0, 1), got {args.val_fraction}")
    check_optimiser_flags(args)
    for name in ("num_workers", "ft_freq", "grad_diag_freq"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name} must be >= 0, got {getattr(args, name)}")
    for view in VIEWS:
        if getattr(args, f"{view}_restore_ckpt") and view not in views:
            raise ValueError(f"--{view}_restore_ckpt is set but {view} is not in --modalities {args.modalities}")
        if getattr(args, f"{view}_restore_ckpt") and args.resume:
            raise ValueError(f"--resume and --{view}_restore_ckpt are exclusive: a resumed run restores every view from its own checkpoint")
    return views
