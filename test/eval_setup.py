"""What the evaluation scripts of test/ set up alike once their flags are parsed (the flags are in
eval_flags.py, without torch): the settings derived from them, the checks of their lists, the whole-video
loader and the report of class probabilities.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from utils.checkpoint import has_running_stats
from utils.classification_report import write_classification_report
from utils.cli_options import default_num_workers, select_gpus
from utils.distributed import DistInfo, init_distributed, is_main_process, local_world_size
from utils.errors import check_finite
from utils.eval_files import VideoProbabilities, save_probabilities
from utils.files import write_json
from utils.layout import resolve_csv_root
from utils.precision import amp_dtype_for, describe_amp
from utils.split_checks import classes_without_videos, leaked_test_videos, repeated_videos
from utils.video_data import VideoGroupDataset
from utils.video_index import VideoEntry
from utils.views import VIEWS

log = logging.getLogger("cocon.test")

def start(args: argparse.Namespace) -> DistInfo:
    """Pick the GPUs (before CUDA starts), join torchrun's process group if launched by it, resolve the
    defaults that depend on the hardware (``--device``, ``--num_workers``), and log to the console (rank 0).
    Call :func:`utils.distributed.cleanup` when done."""
    select_gpus(getattr(args, "gpu", None))
    info = init_distributed()
    if getattr(args, "device", "") is None:
        args.device = str(info.device)
    if getattr(args, "num_workers", 0) is None:
        args.num_workers = default_num_workers(data_parallel_gpus(args, info), local_world_size())
    logging.basicConfig(level=logging.INFO if is_main_process() else logging.WARNING, format="%(asctime)s %(message)s")
    return info


def data_parallel_gpus(args: argparse.Namespace, info: DistInfo) -> int:
    """GPUs this process drives: every visible one with DataParallel in a single process on CUDA, else 1 (0 on a CPU)."""
    device = torch.device(args.device)
    if device.type != "cuda":
        return 0
    return 1 if info.distributed else torch.cuda.device_count()


def precision(args: argparse.Namespace) -> torch.dtype | None:
    """The autocast dtype of ``--amp`` on ``--device`` (``None``: float32), logged."""
    amp_dtype = amp_dtype_for(args.amp, torch.device(args.device))
    log.info("precision: %s", describe_amp(amp_dtype))
    return amp_dtype


# ---------------------------------------------------------------- settings


def csv_root(args: argparse.Namespace) -> Path:
    """Folder of ``classInd.txt`` and the split lists: ``--csv_root``, else ``process_data/data/<dataset>``.

    Args:
        args: the parsed flags (``csv_root``, ``dataset``).
    """
    return resolve_csv_root(args.csv_root, args.dataset)


def check_lists(train: list[VideoEntry], test: list[VideoEntry], class_names: list[str], role: str, what: str) -> None:
    """Warn loudly about repeated rows, test videos in the train list and classes with no ``role`` video
    (:mod:`utils.split_checks`); rank 0 only (the lists are the same on every rank)."""
    if not is_main_process():
        return
    repeated_videos(train, f"{what}: the train list")
    repeated_videos(test, f"{what}: the test list")
    leaked_test_videos(train, test, what)
    classes_without_videos(train, class_names, role, what)


def view_size(args: argparse.Namespace) -> int:
    """Input side of ``--modality`` when RGB is fed at ``--img_dim`` (other views cap their size).

    Args:
        args: the parsed flags (``modality``, ``img_dim``).
    """
    return VIEWS[args.modality].size(args.img_dim)


def default_out_dir(checkpoint: str | Path, args: argparse.Namespace) -> Path:
    """``<exp>/eval/<checkpoint name>_<dataset>_split<NN>/``, where ``<exp>`` holds the checkpoint's ``model/``."""
    path = Path(checkpoint).resolve()
    exp = path.parent.parent if path.parent.name == "model" else path.parent
    return exp / "eval" / f"{path.name.removesuffix('.pth.tar')}_{args.dataset}_split{args.split:02d}"


def pretrain_running_stats(args: argparse.Namespace) -> bool:
    """Keep BatchNorm running statistics unless the --pretrain checkpoint has none (DPC's and the
    original CoCon's normalise with batch statistics; their frozen backbones need that in eval mode)."""
    return args.pretrain in (None, "random") or has_running_stats(args.pretrain)


def check_weights_finite(model: nn.Module, source: str) -> None:
    """Stop before a model with NaN or infinite weights trains or scores anything.

    Args:
        model: the loaded model.
        source: where its weights came from, for the message (e.g. ``"--test <path>"``).
    """
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            check_finite(tensor, f"{source}: weight {name}", "it was saved by a diverged run; use an earlier checkpoint")


# ---------------------------------------------------------------- whole videos and their report


def _single(batch: list[dict]) -> dict:
    return batch[0]


def group_loader(entries: list[VideoEntry], args: argparse.Namespace) -> DataLoader:
    """Whole videos, one per step; each item holds all its groups ``[G, N, C, SL, S, S]``."""
    dataset = VideoGroupDataset(entries, [args.modality], {args.modality: view_size(args)},
                                args.num_seq, args.seq_len, args.ds)
    return DataLoader(dataset, batch_size=1, shuffle=False, num_workers=args.num_workers, collate_fn=_single)


def report(result: VideoProbabilities, out_dir: Path, stem: str, extra: dict) -> dict:
    """Save probabilities, metrics, figure and tables of one (or a fused) view; print a results line."""
    out_dir = Path(out_dir)
    probs_path = save_probabilities(out_dir / f"probs_{result.view}.npz", result)
    stats, files = write_classification_report(out_dir, stem, result.probs, result.labels,
                                               list(result.class_names), f"{stem} {result.view}")
    stats.update(extra, view=result.view, probs=str(probs_path), **{k: str(v) for k, v in files.items()})
    write_json(out_dir / f"{stem}_results.json", stats)
    print(f"{stem} {result.view}: top-1 {100 * stats['top1']:.2f}% top-5 {100 * stats['top5']:.2f}% "
          f"mean-class {100 * stats['mean_class_accuracy']:.2f}% on {stats['num_videos']} videos -> {out_dir}")
    return stats
