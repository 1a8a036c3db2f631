"""The flags of the evaluation scripts of test/, without torch: each flag is defined once, so test/test.py offers
every script's flags under the same names, and every script parses its command line (``--help`` included)
before it imports torch.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from utils.cli_options import (
    HelpFormatter,
    add_colour_jitter_flag,
    add_gpu_flag,
    canonical_dataset,
    track_given_flags,
)
from utils.layout import REPO_ROOT
from utils.views import VIEWS

TRAIN_WHAT = ("all", "ft", "last")  # what fine-tuning trains (see action_classifier.parameter_groups)
GRU_INPUTS = ("maps", "relu_l2")  # what the classifier's GRU reads (see action_classifier.ActionClassifier)

# Help sections in this order; a script shows those it fills.
GROUPS = ("model", "data", "fine-tuning", "evaluation", "output", "hardware")
Groups = dict[str, argparse._ArgumentGroup]


def new_parser(description: str, epilog: str | None = None) -> tuple[argparse.ArgumentParser, Groups]:
    """An evaluation script's parser and its help sections (:data:`GROUPS`)."""
    parser = argparse.ArgumentParser(description=description, epilog=epilog, formatter_class=HelpFormatter)
    return parser, {title: parser.add_argument_group(title) for title in GROUPS}


def add_encoder_flags(groups: Groups) -> None:
    """The flags of every script that builds an encoder of one view and reads the split lists."""
    model = groups["model"]
    model.add_argument("--net", default="resnet18", help="backbone of the imgs view (other views use at most resnet18)")
    model.add_argument("--modality", default="imgs", choices=sorted(VIEWS), help="the view to fine-tune or evaluate")
    model.add_argument("--img_dim", type=int, default=128, help="RGB input side; other views use their own size")
    model.add_argument("--seq_len", type=int, default=5, help="frames per block")
    model.add_argument("--num_seq", type=int, default=8, help="blocks per clip (and per test group)")
    model.add_argument("--ds", type=int, default=3, help="frame stride")
    model.add_argument("--pretrain", default=None, help="encoder checkpoint to start from, or 'random'")

    data = groups["data"]
    data.add_argument("--dataset", default="ucf101", type=canonical_dataset,
                      help="dataset name; its lists are in <csv_root> (the original code's hmdb and kinetics mean "
                      "hmdb51 and kinetics400)")
    data.add_argument("--csv_root", type=Path, default=None,
                      help="folder of classInd.txt and the split csv files (default: process_data/data/<dataset>)")
    data.add_argument("--split", type=int, default=1, choices=(1, 2, 3), help="split number of the train/test lists")
    data.add_argument("--num_workers", type=int, default=None,
                      help="data loading processes (default: 4 per GPU this process drives, at most its share of the CPUs)")
    data.add_argument("--batch_size", type=int, default=8,
                      help="clips per step (and test groups per forward); per process under torchrun")
    data.add_argument("--seed", type=int, default=0, help="seed of initialisation, augmentation and the val split")

    hardware = groups["hardware"]
    # No CUDA call here: --gpu must set CUDA_VISIBLE_DEVICES before anything initialises CUDA.
    hardware.add_argument("--device", default=None,
                          help="torch device (default: cuda:<LOCAL_RANK> under torchrun, cuda where a GPU is visible, else cpu)")
    add_gpu_flag(hardware)
    hardware.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                          help="mixed precision with channels-last 3-D convolutions: bf16 on a CPU with native bf16 "
                          "(AVX512-BF16/AMX; float32 with a warning otherwise), on CUDA bf16 where supported, else "
                          "fp16 with a grad scaler; losses and probabilities stay float32")


def add_out_dir_flag(groups: Groups) -> None:
    """``--out_dir``, the folder of every evaluation's files."""
    groups["output"].add_argument("--out_dir", type=Path, default=None,
                                  help="evaluation output folder (default: see above)")


def add_finetune_flags(groups: Groups) -> None:
    """The flags of fine-tuning and of ``--test``."""
    groups["model"].add_argument("--dropout", type=float, default=0.5, help="dropout before the linear layer")
    groups["model"].add_argument("--gru_input", default="maps", choices=GRU_INPUTS,
                                 help="what the classifier's GRU reads: the backbone's time-pooled maps as they are "
                                      "(maps, the original's) or their ReLU, L2-normalised (relu_l2, a variant)")
    data = groups["data"]
    data.add_argument("--val_fraction", type=float, default=0.1,
                      help="share of each class of the train split held out for validation")
    data.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None,
                      help="horizontal-flip augmentation (default: off for synthetic, whose classes are mirror pairs)")
    add_colour_jitter_flag(data)
    data.add_argument("--cache_frames", action=argparse.BooleanOptionalAction, default=False,
                      help="decode every frame once into memory before fine-tuning (small datasets): later epochs never read "
                           "the disk; the memory needed is logged and checked first (one copy shared by the workers, one per "
                           "process under torchrun)")
    optim = groups["fine-tuning"]
    optim.add_argument("--train_what", default="all", choices=TRAIN_WHAT,
                       help="all: everything at --lr; ft: backbone at --lr/10; last: head only (frozen encoder)")
    optim.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    optim.add_argument("--wd", type=float, default=1e-3, help="Adam weight decay")
    optim.add_argument("--epochs", type=int, default=100, help="epochs to train")
    optim.add_argument("--schedule", default=None,
                       help="comma-separated epochs where the lr is multiplied by 0.1 "
                       "(default 50,70,90; 60,120,180 when --img_dim >= 224)")
    optim.add_argument("--resume", type=Path, default=None,
                       help="fine-tuning run to continue: its model/ folder (newest epoch) or one of its checkpoints")
    optim.add_argument("--keep_last", type=int, default=1, help="epoch checkpoints kept (besides the best one)")
    groups["evaluation"].add_argument("--test", type=Path, default=None,
                                      help="test this fine-tuned classifier checkpoint")
    output = groups["output"]
    output.add_argument("--save_dir", type=Path, default=REPO_ROOT / "runs", help="root of fine-tuning experiments")
    output.add_argument("--prefix", default="", help="prefix of the experiment folder name")
    output.add_argument("--print_freq", type=int, default=10, help="iterations between TensorBoard loss points")


def add_ensemble_flags(groups: Groups) -> None:
    """The probability files and their weights."""
    evaluation = groups["evaluation"]
    for name in VIEWS:
        evaluation.add_argument(f"--prob_{name}", type=Path, default=None, help=f"probability file of the {name} view")
    evaluation.add_argument("--ensemble_weights", default=None,
                            help="view=weight list, e.g. imgs=2,flow=2,seg=1,kphm=1 (those are the defaults)")


def add_frozen_flags(groups: Groups) -> None:
    """The frozen-encoder protocols and their settings."""
    groups["model"].add_argument("--l2_norm", action=argparse.BooleanOptionalAction, default=True,
                                 help="the encoder L2-normalises its block maps, as pretraining with --l2_norm did")
    evaluation = groups["evaluation"]
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
                            help="reuse cached encoder features (keyed by checkpoint path, mtime and settings, the split lists and the "
                            "dates and sizes of the videos' first frame files)")


def finetune_parser(description: str) -> argparse.ArgumentParser:
    """Every flag of fine-tuning and testing (test/finetune.py), grouped."""
    parser, groups = new_parser(description)
    add_encoder_flags(groups)
    add_finetune_flags(groups)
    add_out_dir_flag(groups)
    return track_given_flags(parser)  # a flag left out takes the checkpoint's or the resumed run's value


def frozen_parser(description: str) -> argparse.ArgumentParser:
    """Every flag of the frozen-encoder evaluation (test/eval_frozen.py), grouped."""
    parser, groups = new_parser(description)
    add_encoder_flags(groups)
    add_frozen_flags(groups)
    add_out_dir_flag(groups)
    return track_given_flags(parser)  # a flag left out takes the --pretrain checkpoint's value


def ensemble_parser(description: str) -> argparse.ArgumentParser:
    """Every flag of the view ensemble (test/ensemble.py), grouped."""
    parser, groups = new_parser(description)
    add_ensemble_flags(groups)
    add_out_dir_flag(groups)
    return parser


def test_parser(description: str, epilog: str) -> argparse.ArgumentParser:
    """The flags of every mode of test/test.py (fine-tune, test, ensemble, frozen-encoder evaluation), grouped."""
    parser, groups = new_parser(description, epilog)
    add_encoder_flags(groups)
    add_finetune_flags(groups)
    groups["evaluation"].add_argument("--ensemble", type=int, default=0, choices=(0, 1),
                                      help="1: fuse the --prob_<view> files")
    add_ensemble_flags(groups)
    add_frozen_flags(groups)
    add_out_dir_flag(groups)
    return track_given_flags(parser)  # a flag left out takes the checkpoint's or the resumed run's value
