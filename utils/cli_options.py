"""Command-line conventions shared by every script, without torch.

- :class:`HelpFormatter`: ``--help`` keeps the description's line breaks and shows every default.
- :func:`canonical_dataset`: the original code's dataset names (``hmdb``, ``kinetics``, DPC's ``k400``)
  are accepted wherever a dataset is named and mean this repo's ``hmdb51`` and ``kinetics400``.
- :func:`check_optimiser_flags`: ``--lr`` and ``--wd`` of every training script.
- :func:`add_gpu_flag` / :func:`select_gpus`: DPC's and the original CoCon's ``--gpu 0,1`` picks the
  visible CUDA devices, so their command lines keep working.
- :func:`track_given_flags` / :func:`given_flags`: which flags a command line named, so a resumed run can tell
  ``--ds 3`` typed from the default 3.
- the choices of flags whose code needs torch (:data:`COLOUR_JITTER_MODES`, :data:`POOL_MODES`,
  :data:`TEMP_DIVISIONS`), so that parsers, and with them every ``--help``, answer before torch is imported.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys

COLOUR_JITTER_MODES = ("frame", "clip")  # utils.augmentation: RGB jitter drawn per frame or per clip
POOL_MODES = ("original", "avg", "max")  # utils.embedding.pool_maps
TEMP_DIVISIONS = ("twice", "once")  # train.losses.cpc_temperature

# The original CoCon and DPC name datasets these ways; the split lists live under the canonical name.
DATASET_ALIASES = {"hmdb": "hmdb51", "kinetics": "kinetics400", "k400": "kinetics400", "ucf": "ucf101"}


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's layout and appends ``(default: …)`` to every option that has one.

    Options whose default is ``None`` (unset: the help text says what happens) get no suffix.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if action.default is None or action.default is argparse.SUPPRESS or "%(default)" in help_text:
            return help_text
        if not action.option_strings or isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            return help_text
        return f"{help_text} (default: %(default)s)"


def canonical_dataset(name: str) -> str:
    """This repo's name of a dataset: ``hmdb`` → ``hmdb51``, ``kinetics``/``k400`` → ``kinetics400``, ``ucf`` → ``ucf101``.

    Other names (``ucf101``, ``synthetic``, a dataset of your own) are returned unchanged.

    Args:
        name: a dataset name as given on the command line.
    """
    return DATASET_ALIASES.get(name, name)


def check_optimiser_flags(args: argparse.Namespace) -> None:
    """``--lr`` > 0 and ``--wd`` >= 0 (Adam checks only its default lr, not the parameter groups' own, so a
    negative --lr would climb the loss without a word).

    Raises:
        ValueError: naming the flag and its value.
    """
    if not args.lr > 0:
        raise ValueError(f"--lr must be > 0, got {args.lr}")
    if not args.wd >= 0:
        raise ValueError(f"--wd must be >= 0, got {args.wd}")


def add_colour_jitter_flag(group: argparse._ActionsContainer) -> None:
    """``--colour_jitter``, shared by pretraining and fine-tuning."""
    group.add_argument("--colour_jitter", default="frame", choices=COLOUR_JITTER_MODES,
                       help="RGB colour jitter and grayscale drawn afresh for every frame (the original DPC/CoCon "
                            "augmentation) or once per clip (a clip's colours then tell it apart from the others in a "
                            "batch, a shortcut for CPC)")


def gpu_list(spec: str) -> str:
    """Parse ``--gpu``: comma-separated CUDA device ids (``0`` or ``0,1``), returned normalised.

    Args:
        spec: the flag's value.
    Raises:
        argparse.ArgumentTypeError: not a list of non-negative integers.
    """
    ids = [part.strip() for part in spec.split(",")]
    if not ids or not all(part.isdigit() for part in ids):
        raise argparse.ArgumentTypeError(f"expected comma-separated device ids such as 0 or 0,1, got {spec!r}")
    return ",".join(ids)


def add_gpu_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add DPC's ``--gpu 0,1`` (the visible CUDA devices; unset keeps ``CUDA_VISIBLE_DEVICES`` as it is).

    Args:
        parser: the parser or argument group to add it to.
    """
    parser.add_argument("--gpu", type=gpu_list, default=None,
                        help="CUDA devices to use, e.g. 0,1 (sets CUDA_VISIBLE_DEVICES, as DPC's and the original "
                        "CoCon's flag did; default: every visible device)")


def select_gpus(spec: str | None) -> None:
    """Make only the devices of ``--gpu`` visible to this process, before CUDA starts.

    Args:
        spec: the normalised ``--gpu`` value, or None to leave ``CUDA_VISIBLE_DEVICES`` unchanged.
    Raises:
        RuntimeError: CUDA was already initialised in this process, so the choice could not take effect.
    """
    if spec is None:
        return
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise RuntimeError(f"--gpu {spec} came after CUDA was initialised; set CUDA_VISIBLE_DEVICES={spec} instead")
    os.environ["CUDA_VISIBLE_DEVICES"] = spec


GIVEN_ATTR = "_given_flags"  # set on parsed namespaces by track_given_flags; not a flag (args files leave it out)


def track_given_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make every parse of ``parser`` record the ``dest`` of each flag named on the command line (see :func:`given_flags`).

    A second parser with every default suppressed parses the same arguments: what it returns is what was typed.

    Returns:
        ``parser`` itself.
    """
    shadow = copy.deepcopy(parser)
    for action in shadow._actions:
        action.default = argparse.SUPPRESS
    parse = parser.parse_known_args

    def parse_known_args(args: list[str] | None = None,
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = parse(args, namespace)
        typed, _ = shadow.parse_known_args(args)
        setattr(parsed, GIVEN_ATTR, frozenset(vars(typed)))
        return parsed, extras

    parser.parse_known_args = parse_known_args
    return parser


def given_flags(args: argparse.Namespace) -> frozenset[str] | None:
    """The ``dest`` of every flag the command line named, or ``None`` when ``args`` comes from an untracked parser."""
    return getattr(args, GIVEN_ATTR, None)


# Loader workers per GPU a process drives: one worker decodes about 20 clips/s at 128 px, a GPU trains
# several times that; the CPUs of the node cap it (torch warns past them, and more only contend).
WORKERS_PER_GPU = 4


def available_cpus() -> int:
    """CPUs this process may run on (its affinity, as DataLoader counts them)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_num_workers(gpus: int, processes_per_node: int = 1) -> int:
    """``--num_workers`` when unset: :data:`WORKERS_PER_GPU` per GPU this process drives (DataParallel drives
    several), at most this process's share of the CPUs (torchrun puts ``processes_per_node`` on a node), at least 1.

    Args:
        gpus: GPUs this process drives (0 on a CPU).
        processes_per_node: processes sharing this node's CPUs (torchrun's ``LOCAL_WORLD_SIZE``).
    """
    share = available_cpus() // max(1, processes_per_node)
    return max(1, min(WORKERS_PER_GPU * max(1, gpus), share))
