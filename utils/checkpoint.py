"""Checkpoints: atomic saves, pruning, and safe loading of ours, DPC's and the original CoCon's.

A checkpoint is untrusted input: it is loaded with ``weights_only=True`` (no arbitrary pickle code),
and a missing, truncated or foreign file raises :class:`CheckpointError` — never a silent run with
random weights. :func:`load_pretrained` is the strict loader of an encoder for one view: it also
refuses another view, another channel count and a backbone it cannot fill completely.
"""
from __future__ import annotations

import io
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from utils.distributed import unwrap
from utils.errors import UserError, check_finite, first_line
from utils.files import atomic_write
from utils.views import VIEWS

_DUPLICATE_GRU = re.compile(r"(^|\.)ConvGRUCell_(\d+)\.")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint file that cannot be used: missing, unreadable, of another run, or holding no weights."""


def atomic_save(obj: object, path: str | Path) -> None:
    """``torch.save`` ``obj`` to ``path`` through :func:`utils.files.atomic_write`.

    The checkpoint is serialised in memory first: torch's own file writer reports a full disk as an
    opaque "enforce fail", while a plain write raises ``OSError(ENOSPC)`` naming the file.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, buffer.getbuffer())


def prune_epochs(folder: str | Path, prefix: str, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` files named ``<prefix><epoch>.pth.tar``; return the deleted."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.pth\.tar$")
    found = sorted(
        ((int(m.group(1)), p) for p in Path(folder).glob(f"{prefix}*.pth.tar") if (m := pattern.match(p.name))),
        key=lambda item: item[0],
    )
    stale = [p for _, p in found[: max(0, len(found) - keep)]]
    for p in stale:
        p.unlink()
    return stale


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint dict safely (``weights_only``).

    Raises:
        CheckpointError: the file is missing, truncated/corrupt, or not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): it was not written completely; "
                              "use another epoch's checkpoint")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as err:
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(err).__name__}: {first_line(err)[:200]}); "
            "it may be truncated, corrupt, or not a PyTorch checkpoint"
        ) from err
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict")
    return obj


def state_dict_of(checkpoint: dict, path: str | Path = "checkpoint") -> dict[str, torch.Tensor]:
    """The weights inside a checkpoint dict (its ``state_dict``, or the dict itself if it is one)."""
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{path} holds no state_dict of tensors (keys: {sorted(checkpoint)[:8]})")
    return state


def clean_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Normalise foreign key names to ours.

    - strips DataParallel/DDP ``module.`` prefixes;
    - the original ConvGRU registered each cell twice (``cell_list.0.*`` and ``ConvGRUCell_00.*``):
      the duplicate is renamed to ``cell_list.N.*`` when that key is absent and dropped otherwise.
    """
    cleaned: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        while key.startswith("module."):
            key = key[len("module."):]
        cleaned[key] = value
    for key in [k for k in cleaned if _DUPLICATE_GRU.search(k)]:
        value = cleaned.pop(key)
        canonical = _DUPLICATE_GRU.sub(lambda m: f"{m.group(1)}cell_list.{int(m.group(2))}.", key, count=1)
        cleaned.setdefault(canonical, value)
    return cleaned


def original_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our weights in the original DPC/CoCon layout: a DataParallel ``module.`` prefix, and each
    ConvGRU cell under both ``cell_list.N.*`` and ``ConvGRUCell_0N.*``, so the original code's
    ``model.load_state_dict(checkpoint['state_dict'])`` accepts them. :func:`clean_state_dict` undoes it."""
    original: dict[str, torch.Tensor] = {}
    for key, value in clean_state_dict(state).items():
        original[f"module.{key}"] = value
        match = re.search(r"(^|\.)cell_list\.(\d+)\.", key)
        if match:
            duplicate = key.replace(match.group(0), f"{match.group(1)}ConvGRUCell_{int(match.group(2)):02d}.", 1)
            original[f"module.{duplicate}"] = value
    return original


@dataclass
class LoadReport:
    """What :func:`load_weights` did: keys loaded, the model's keys left untouched, the file's keys
    the model has no place for, and keys whose shapes differ."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    def summary(self) -> str:
        def head(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (" …" if len(keys) > 5 else "")

        lines = [f"loaded {len(self.loaded)} tensors"]
        if self.missing:
            lines.append(f"not in checkpoint ({len(self.missing)}, left as initialised): {head(self.missing)}")
        if self.unexpected:
            lines.append(f"unused from checkpoint ({len(self.unexpected)}): {head(self.unexpected)}")
        if self.mismatched:
            lines.append(f"shape mismatch ({len(self.mismatched)}, left as initialised): {head(self.mismatched)}")
        return "; ".join(lines)


def match_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[LoadReport, dict[str, torch.Tensor]]:
    """How ``state`` fits ``model``, without loading anything: the report and the tensors that fit.

    Args:
        model: the network (wrapped or not).
        state: a state dict in our, DPC's or the original CoCon's naming.
    """
    own = unwrap(model).state_dict()
    report = LoadReport()
    usable = {}
    for key, value in clean_state_dict(state).items():
        if key not in own:
            report.unexpected.append(key)
        elif own[key].shape != value.shape:
            report.mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(own[key].shape)}")
        else:
            usable[key] = value
    report.loaded = sorted(usable)
    report.missing = sorted(k for k in own if k not in usable)
    return report, usable


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path = "checkpoint") -> LoadReport:
    """Copy every tensor of ``state`` whose name and shape match into ``model``.

    Args:
        model: the network (unwrap DataParallel/DDP first, or pass the wrapper: prefixes are handled).
        state: a state dict in our, DPC's or the original CoCon's naming.
        source: the file name, for messages.

    Raises:
        CheckpointError: when not a single tensor matches (wrong view, network or file).
    """
    report, usable = match_weights(model, state)
    if not usable:
        raise CheckpointError(
            f"no tensor of {source} matches the model (e.g. file key {next(iter(clean_state_dict(state)), '-')!r}, "
            f"model key {next(iter(unwrap(model).state_dict()), '-')!r}): is it a checkpoint of another view or network?"
        )
    unwrap(model).load_state_dict(usable, strict=False)
    return report


def load_all_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path, advice: str) -> None:
    """Load ``state`` into ``model`` only if every tensor fits both ways (a resumed run's own checkpoint).

    Args:
        model: the network (wrapped or not).
        state: the checkpoint's state dict.
        source: the file, for messages.
        advice: what to do when it does not fit (e.g. which flags must match).

    Raises:
        CheckpointError: a key missing on either side or a shape that differs; nothing is loaded then.
    """
    report, usable = match_weights(model, state)
    if report.missing or report.unexpected or report.mismatched:
        raise CheckpointError(f"{source} does not fit the model ({report.summary()}); {advice}")
    unwrap(model).load_state_dict(usable, strict=True)


_ENCODER = ("backbone.", "agg.")  # what a classifier or a frozen evaluation takes from a pretraining checkpoint
_BN_STATS = ("running_mean", "running_var", "num_batches_tracked")  # DPC's encoders have none; ours do


def _first_conv(state: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    return state.get("backbone.conv1.weight")


def load_pretrained(model: nn.Module, path: str | Path, view: str) -> LoadReport:
    """Load a CoCon/DPC encoder checkpoint of ``view`` into a model with a ``backbone`` (and ``agg``).

    Args:
        model: a classifier or encoder whose backbone lives under ``backbone.``.
        path: the checkpoint (``mode_<view>_*.pth.tar`` of the trainer, or DPC's).
        view: the view the model is built for (``--modality``).

    Raises:
        CheckpointError: the file is unreadable, was trained on another view (its ``mode``), feeds
            another channel count to its first conv, or its encoder (backbone and GRU) is not exactly
            the model's (another ``--net``): nothing is loaded then, so a run never silently continues
            from random or partly loaded weights.
        NonFiniteError: an encoder weight is NaN or infinite.
    """
    checkpoint = load_checkpoint(path)
    state = clean_state_dict(state_dict_of(checkpoint, path))
    mode = checkpoint.get("mode")
    if mode is not None and mode != view:
        raise CheckpointError(f"{path} is a checkpoint of the {mode!r} view, but --modality is {view!r}")
    conv = _first_conv(state)
    if conv is None:
        raise CheckpointError(f"{path} has no 'backbone.conv1.weight': not a DPC/CoCon encoder checkpoint")
    channels = VIEWS[view].channels
    if conv.shape[1] != channels:
        raise CheckpointError(
            f"{path}: its first conv takes {conv.shape[1]} channels (weight {tuple(conv.shape)}), "
            f"but view {view!r} has {channels}; is it a checkpoint of another view?"
        )
    report, _ = match_weights(model, state)
    params = {name for name, _ in model.named_parameters() if name.startswith(_ENCODER)}
    not_loaded = sorted(params - set(report.loaded))
    if not_loaded:
        part = "backbone" if not_loaded[0].startswith("backbone.") else "GRU"
        raise CheckpointError(
            f"{path}: {len(not_loaded)} {part} parameters do not fit the model (e.g. {not_loaded[:3]}; "
            f"{report.summary()}); was it trained with another --net?"
        )
    foreign = [k for k in report.unexpected + report.mismatched if k.startswith(_ENCODER) and not k.endswith(_BN_STATS)]
    if foreign:
        raise CheckpointError(
            f"{path}: {len(foreign)} encoder tensors have no place in the model (e.g. {foreign[:3]}), so it is "
            "another architecture; was it trained with another --net? Nothing was loaded"
        )
    for key in report.loaded:
        if key.startswith(_ENCODER):
            check_finite(state[key], f"{path}: encoder weight {key}",
                         "it was saved by a diverged run; use an earlier epoch's checkpoint")
    load_weights(model, state, path)
    return report


def has_running_stats(path: str | Path) -> bool:
    """Whether a checkpoint's backbone holds BatchNorm running statistics (DPC's and the original
    CoCon's do not: they normalise with batch statistics even in eval mode)."""
    state = state_dict_of(load_checkpoint(path), path)
    return any(k.endswith("running_mean") for k in clean_state_dict(state) if k.startswith("backbone."))
