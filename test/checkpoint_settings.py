"""The settings an evaluation takes from the checkpoint it evaluates.

A checkpoint records the flags of the run that saved it (its ``args``; a pretraining checkpoint also sits in an
experiment folder with ``args.json``). ``--pretrain`` and ``--test`` give an evaluation those settings: a flag
the command line leaves out takes the checkpoint's value, a flag given with another value is refused (the model
would be read at a size or in a shape it was not trained for), except the clip flags an evaluation may change
(:data:`CLIP_SETTINGS`), which are logged and used.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from utils import run
from utils.checkpoint import CheckpointError, load_checkpoint
from utils.cli_options import given_flags
from utils.views import VIEWS, view_backbone

log = logging.getLogger("cocon.test")

# What the model is: another value on the command line would evaluate another model than the one trained.
MODEL_SETTINGS = ("modality", "net", "img_dim", "seq_len", "l2_norm", "gru_input")
# Which clips are read: an evaluation may change them (logged).
CLIP_SETTINGS = ("num_seq", "ds")
# The checkpoint flags that only one kind of checkpoint records and uses.
_ONLY = {"l2_norm": "--pretrain", "gru_input": "--test"}


def recorded_settings(path: Path) -> dict:
    """The model and clip settings ``path`` records: its ``args`` (else its experiment's args file) and its view.

    Args:
        path: a pretraining or fine-tuning checkpoint.
    """
    checkpoint = load_checkpoint(path, map_location="cpu")
    saved = checkpoint.get("args") or {}
    if not isinstance(saved, dict) or not saved:
        found = run.recorded_args(path.resolve().parent.parent) if path.resolve().parent.name == "model" else None
        saved = found[0] if found else {}
    settings = {key: saved[key] for key in (*MODEL_SETTINGS, *CLIP_SETTINGS) if key in saved}
    if checkpoint.get("mode") is not None:
        settings["modality"] = checkpoint["mode"]
    return settings


def _meaning(dest: str, value: object, modality: str) -> object:
    """What a value of ``dest`` builds for ``modality`` (other views cap --net and --img_dim)."""
    if dest == "net":
        return view_backbone(modality, str(value))
    if dest == "img_dim":
        return VIEWS[modality].size(int(value)) if modality in VIEWS else value
    return value


def adopt_checkpoint_settings(args: argparse.Namespace) -> None:
    """Give ``args`` (in place) the settings of its ``--test`` and ``--pretrain`` checkpoints (see module doc).

    A namespace from a parser without :func:`utils.cli_options.track_given_flags` counts every flag as given.

    Raises:
        CheckpointError: a given flag contradicts a model setting the checkpoint records (naming the flag,
            both values and the checkpoint), or the two checkpoints contradict each other.
    """
    typed = given_flags(args)
    given = set(vars(args)) if typed is None else set(typed)
    sources: dict[str, str] = {}  # dest -> the checkpoint whose value args holds
    for flag in ("--test", "--pretrain"):
        path = getattr(args, flag[2:], None)
        if path in (None, "random"):
            continue
        path = Path(path)
        if not path.is_file():  # a missing checkpoint is reported where it is loaded
            continue
        settings = recorded_settings(path)
        if not settings:
            log.info("%s %s records no settings: the command line's flags are used", flag, path)
            continue
        modality = settings.get("modality", args.modality)
        for dest in (*MODEL_SETTINGS, *CLIP_SETTINGS):
            if dest not in settings or not hasattr(args, dest) or _ONLY.get(dest, flag) != flag:
                continue
            value, saved = getattr(args, dest), settings[dest]
            if _meaning(dest, value, modality) == _meaning(dest, saved, modality):
                continue
            if dest in CLIP_SETTINGS and dest in given:
                log.warning("--%s %s: %s %s was trained with --%s %s; this evaluation reads clips of --%s %s",
                            dest, value, flag, path, dest, saved, dest, value)
            elif dest in given or dest in sources:
                origin = sources.get(dest, "the command line")
                raise CheckpointError(f"--{dest} {value} (from {origin}) contradicts {flag} {path}, which was trained "
                                      f"with --{dest} {saved}: leave --{dest} out to use the checkpoint's value")
            else:
                setattr(args, dest, saved)
                sources[dest] = f"{flag} {path}"
                log.info("--%s %s taken from %s %s", dest, saved, flag, path)
