"""The run layer shared by pretraining and fine-tuning: experiment folders, args files, TensorBoard events,
and the checkpoint protocol.

An experiment folder ``<exp>/`` holds ``args.json`` (the flags of its first run; a resumed run writes
``args_resume<epoch>.json`` beside it), ``model/`` with the checkpoints and ``img/`` for TensorBoard
(:class:`EventLog`). One run writes a folder at a time: ``<exp>/run.lock`` holds the writer's pid and host
(:func:`lock_experiment`), so a second trainer on the same folder refuses to start.

Checkpoints (``model/mode_<view>_epoch<N>.pth.tar`` and ``model/mode_<view>_best.pth.tar``) all hold
the same fields — ``epoch, mode, net, state_dict, best_acc, best_epoch, optimizer, scheduler,
iteration, args`` and a script's extras — and are written after every epoch in three steps:

1. every view's epoch file;
2. then the best copies of the views whose validation accuracy improved (a copy of that epoch file);
3. then each view's epoch files are pruned to the newest ``keep_last``.

Each file is written atomically (:func:`utils.files.atomic_write`). Whatever instant a run is killed
at, an epoch that every view has is on disk (nothing is pruned before step 1 is done for all views),
and each view's best weights are either in its best file or in the epoch file step 2 was copying
(an epoch file is pruned only by a later epoch's step 3): :func:`ensure_best` puts them back at resume.
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tensorboardX import summary
from tensorboardX.proto.event_pb2 import Event
from tensorboardX.proto.summary_pb2 import Summary
from tensorboardX.record_writer import RecordWriter
from torch import nn

from utils.checkpoint import CheckpointError, atomic_save, load_all_weights, load_checkpoint, prune_epochs, state_dict_of
from utils.cli_options import GIVEN_ATTR
from utils.distributed import unwrap
from utils.errors import DataError, UsageError
from utils.files import atomic_copy, clean_stale_tmp, pid_alive, write_json
from utils.views import view_backbone

log = logging.getLogger("cocon.run")

_CHECKPOINT_NAME = re.compile(r"mode_([a-z]+)_(epoch(\d+)|best)\.pth\.tar")
LOCK_NAME = "run.lock"
_held_locks: dict[Path, int] = {}  # resolved experiment folder -> the open, flock-ed descriptor of its lock file


# ---------------------------------------------------------------- experiment folders


def jsonable_args(args: argparse.Namespace) -> dict:
    """The flags as JSON values (paths and other objects as strings), as stored in checkpoints and args files."""
    return {k: v if isinstance(v, (bool, int, float, str, type(None))) else str(v) for k, v in vars(args).items()
            if k != GIVEN_ATTR}


def open_experiment(exp_dir: str | Path, args: argparse.Namespace, resumed_epoch: int | None) -> Path:
    """Lock the experiment folder, create ``<exp>/model/``, remove the temporary files killed runs left there,
    and record the flags.

    The lock (:func:`lock_experiment`) is held until :func:`release_experiment` or the end of the process.

    Args:
        exp_dir: the experiment folder.
        args: the flags, written to ``args.json`` (a new run) or ``args_resume<epoch>.json`` (a resumed one,
            keeping the original).
        resumed_epoch: the epoch a resumed run continues from, ``None`` for a new run.

    Returns:
        the ``model/`` folder.

    Raises:
        UsageError: another live run writes the folder, or (a new run) the folder holds checkpoints.
    """
    exp_dir = Path(exp_dir)
    model_dir = exp_dir / "model"
    lock_experiment(exp_dir)  # first: a second run is told the folder is in use, not that it holds checkpoints
    if resumed_epoch is None:
        try:
            refuse_earlier_checkpoints(model_dir)
        except UsageError:
            release_experiment(exp_dir)
            raise
    model_dir.mkdir(parents=True, exist_ok=True)
    for folder in (exp_dir, model_dir):
        for path in clean_stale_tmp(folder):
            log.info("removed %s, left by a killed run", path)
    name = "args.json" if resumed_epoch is None else f"args_resume{resumed_epoch}.json"
    write_json(exp_dir / name, jsonable_args(args))
    log.info("experiment folder %s", exp_dir)
    return model_dir


def _lock_holder(path: Path) -> dict:
    """The ``{"pid", "host", "started"}`` a lock file records (``{}`` for an empty or unreadable one)."""
    try:
        holder = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe_holder(holder: dict) -> str:
    return f"process {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"


def lock_experiment(exp_dir: str | Path) -> Path:
    """Make this process the one writer of ``exp_dir``: ``<exp>/run.lock`` holds its pid, host and start time.

    The file is also ``flock``-ed, so the kernel frees it when the process dies, however it dies. A lock
    left by a killed run (its process gone) is taken over with a warning. Taking a lock this process
    already holds does nothing.

    Args:
        exp_dir: the experiment folder (created if needed).

    Returns:
        the lock file.

    Raises:
        UsageError: a live run (of this host, or a lock ``flock`` reports held) writes the folder; naming it.
    """
    exp_dir = Path(exp_dir)
    exp_dir.mkdir(parents=True, exist_ok=True)
    key, path = exp_dir.resolve(), exp_dir / LOCK_NAME
    if key in _held_locks:
        return path
    host = socket.gethostname()
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _locked_error(exp_dir, path, _lock_holder(path)) from None
        try:
            same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:  # its holder released (removed) it between our open and flock
            same_file = False
        if same_file:
            break
        os.close(fd)
    previous = _lock_holder(path)
    if previous.get("pid") not in (None, os.getpid()):
        if previous.get("host") == host and pid_alive(int(previous["pid"])):  # a filesystem whose flock is a no-op
            os.close(fd)
            raise _locked_error(exp_dir, path, previous)
        log.warning("%s: taking over the lock of %s, which is no longer running (a killed run)", path,
                    _describe_holder(previous))
    record = {"pid": os.getpid(), "host": host, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    os.fsync(fd)
    _held_locks[key] = fd
    return path


def _locked_error(exp_dir: Path, path: Path, holder: dict) -> UsageError:
    return UsageError(
        f"experiment folder {exp_dir} is being written by another run ({_describe_holder(holder)}; see {path}): "
        "wait for it to end, or start this run with another --save_dir or --prefix"
    )


def release_experiment(exp_dir: str | Path) -> None:
    """Remove this process's lock of ``exp_dir`` (nothing if it holds none)."""
    fd = _held_locks.pop(Path(exp_dir).resolve(), None)
    if fd is None:
        return
    try:
        (Path(exp_dir) / LOCK_NAME).unlink(missing_ok=True)  # while still flock-ed: no one takes a lock being removed
    finally:
        os.close(fd)


@atexit.register
def _release_all() -> None:
    for exp_dir in list(_held_locks):
        release_experiment(exp_dir)


def refuse_earlier_checkpoints(model_dir: Path) -> None:
    """A new run must not overwrite the checkpoints of an earlier run in the same experiment folder.

    Raises:
        UsageError: ``model_dir`` holds checkpoints; naming the folder and how to continue or start afresh.
    """
    earlier = sorted(p.name for p in model_dir.glob("mode_*.pth.tar")) if model_dir.is_dir() else []
    if earlier:
        raise UsageError(
            f"{model_dir} already holds {len(earlier)} checkpoint(s) of an earlier run ({earlier[0]}, ...): continue "
            f"that run with --resume {model_dir}, or start a new one with another --save_dir or --prefix"
        )


def _histogram_bins() -> list[float]:
    """TensorBoard's default histogram edges (SummaryWriter's ``bins="tensorflow"``): 0 and ±1e-12 × 1.1^k up to 1e20."""
    edges = [1e-12]
    while edges[-1] * 1.1 < 1e20:
        edges.append(edges[-1] * 1.1)
    return [-e for e in reversed(edges)] + [0.0] + edges


_HISTOGRAM_BINS = _histogram_bins()


class EventLog:
    """A run's TensorBoard events (scalars, images, histograms), written by the calling thread.

    tensorboardX's ``SummaryWriter`` writes from a background thread, where a full disk only kills the
    thread: the events are lost with a traceback the run never sees, and the run blocks for good once
    the writer's queue is full. Here a failed write raises in the caller an ``OSError`` naming the event
    file, which :mod:`utils.cli` reports in one line, as it does a failed checkpoint save.

    The file is ``<folder>/events.out.tfevents.<seconds>.<host>`` (SummaryWriter's name), flushed to disk
    after the first event, then every ``flush_secs`` and by :meth:`flush` and :meth:`close`. As a context
    manager it closes on exit; leaving on an exception, a failed last flush does not replace that exception.
    """

    def __init__(self, folder: str | Path, flush_secs: float = 120.0) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}"
        self._records: RecordWriter | None = RecordWriter(str(self.path))
        self._flush_secs, self._next_flush = flush_secs, 0.0
        self._write(Event(wall_time=time.time(), file_version="brain.Event:2"))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self._add(summary.scalar(tag, value), step)

    def add_image(self, tag: str, image: torch.Tensor, step: int) -> None:
        """``image``: ``[3, H, W]``, values in [0, 1]."""
        self._add(summary.image(tag, image, dataformats="CHW"), step)

    def add_histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        self._add(summary.histogram(tag, values, _HISTOGRAM_BINS), step)

    def flush(self) -> None:
        """Write the buffered events to disk (fsync)."""
        self._guard(self._records.flush)
        self._next_flush = time.monotonic() + self._flush_secs

    def close(self) -> None:
        """Flush and close the file (a second call does nothing)."""
        if self._records is None:
            return
        try:
            self.flush()
        finally:
            records, self._records = self._records, None
            with contextlib.suppress(OSError):  # after a failed flush: the error raised is the flush's
                records.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.close()
            return
        # The run's own error is the one to report; a flush failing too (a full disk) loses only recent events.
        with contextlib.suppress(OSError):
            self.close()

    def _add(self, proto: Summary, step: int) -> None:
        self._write(Event(wall_time=time.time(), step=int(step), summary=proto))
        if time.monotonic() >= self._next_flush:
            self.flush()

    def _write(self, event: Event) -> None:
        self._guard(self._records.write, event.SerializeToString())

    def _guard(self, write: Callable[..., None], *data: bytes) -> None:
        try:
            write(*data)
        except OSError as err:
            if err.errno is not None and err.filename is None:  # a buffered write does not name its file
                raise OSError(err.errno, os.strerror(err.errno), str(self.path)) from err
            raise


# ---------------------------------------------------------------- writing checkpoints


@dataclass
class Progress:
    """Progress of a one-view run (fine-tuning), saved in every checkpoint and restored by ``--resume``."""

    epoch: int = 0  # epochs finished
    iteration: int = 0  # optimiser steps
    best_acc: float = -1.0  # best validation accuracy
    best_epoch: int | None = None  # the epoch the best copy holds


def checkpoint_path(model_dir: str | Path, view: str, tag: str) -> Path:
    """``<model_dir>/mode_<view>_<tag>.pth.tar``; ``tag`` is ``epoch<N>`` or ``best``."""
    return Path(model_dir) / f"mode_{view}_{tag}.pth.tar"


def make_checkpoint(
    view: str,
    net: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: object,
    *,
    epoch: int,
    iteration: int,
    best_acc: float,
    best_epoch: int | None,
    args: argparse.Namespace,
    **extra: object,
) -> dict:
    """One view's checkpoint, with the fields every checkpoint of the project has.

    Args:
        view: the view (``mode``).
        net: ``--net``; the checkpoint records the view's own backbone (:func:`utils.views.view_backbone`).
        model: the view's model (wrappers are removed).
        optimizer, scheduler: their state is saved.
        epoch: epochs finished.
        iteration: training batches seen.
        best_acc: the best validation accuracy so far.
        best_epoch: the epoch that reached it (its epoch file is what the best copy holds), ``None`` before any.
        args: the flags.
        extra: script-specific fields (``steps``, ``scaler``, ``class_names``, …).
    """
    return {
        "epoch": epoch, "mode": view, "net": view_backbone(view, net), "state_dict": unwrap(model).state_dict(),
        "best_acc": best_acc, "best_epoch": best_epoch, "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "iteration": iteration, "args": jsonable_args(args), **extra,
    }


def save_epoch(
    model_dir: str | Path, epoch: int, checkpoints: Mapping[str, dict], improved: Iterable[str], keep_last: int
) -> None:
    """Write one epoch's checkpoints by the protocol: all epoch files, then best copies, then pruning.

    Args:
        model_dir: the experiment's ``model/`` folder.
        epoch: epochs finished (names the files).
        checkpoints: view -> its checkpoint of that epoch (:func:`make_checkpoint`).
        improved: the views whose best copy this epoch replaces.
        keep_last: epoch files kept per view.
    """
    for view, checkpoint in checkpoints.items():
        atomic_save(checkpoint, checkpoint_path(model_dir, view, f"epoch{epoch}"))
    for view in improved:
        atomic_copy(checkpoint_path(model_dir, view, f"epoch{epoch}"), checkpoint_path(model_dir, view, "best"))
    for view in checkpoints:
        prune_epochs(model_dir, f"mode_{view}_epoch", keep_last)


# ---------------------------------------------------------------- resuming


def find_resume(path: str | Path, views: list[str]) -> dict[str, Path]:
    """Each view's checkpoint to resume from.

    Args:
        path: an experiment folder or its ``model/`` folder (the newest epoch every view has is taken), or one
            view's checkpoint file (every view then resumes from the same tag: ``epoch<N>`` or ``best``).
        views: the run's views; they must be the views the folder holds checkpoints of.

    Raises:
        FileNotFoundError: the path, or a view's checkpoint, does not exist.
        UsageError: a file that is not a ``mode_<view>_….pth.tar`` checkpoint, or a folder of other views.
    """
    path = Path(path)
    if path.is_file():
        match = _CHECKPOINT_NAME.fullmatch(path.name)
        if match is None:
            raise UsageError(f"--resume {path}: expected a mode_<view>_epoch<N>.pth.tar file or a model/ folder")
        folder, tag = path.parent, match.group(2)
    elif path.is_dir():
        folder = model_folder(path)
        epochs = [_epochs(folder, view) for view in views]
        common = set.intersection(*epochs)
        if not common and not folder_views(folder) - set(views):
            raise FileNotFoundError(
                f"--resume {folder}: no epoch has a checkpoint for every view of {views}; pass a model/ folder of a run "
                "of these views (--modalities/--modality)"
            )
        tag = f"epoch{max(common)}" if common else ""
    else:
        raise FileNotFoundError(f"--resume {path} does not exist; pass an experiment's model/ folder or one of its checkpoints")
    held = folder_views(folder)
    if held and held != set(views):
        raise UsageError(
            f"--resume {path}: that run trained the views {'_'.join(sorted(held))}, not {'_'.join(views)}; a resumed run "
            "continues all of its views (leave --modalities out), a run of other views needs its own folder (another --prefix)"
        )
    paths = {view: checkpoint_path(folder, view, tag) for view in views}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"--resume {path}: missing {', '.join(missing)}; resume from an epoch every view has")
    return paths


def model_folder(path: str | Path) -> Path:
    """The ``model/`` folder ``--resume`` names: ``path`` itself, or ``path/model`` for an experiment folder."""
    path = Path(path)
    if path.name != "model" and (path / "model").is_dir() and not any(path.glob("mode_*.pth.tar")):
        return path / "model"
    return path


def folder_views(model_dir: Path) -> set[str]:
    """The views of which ``model_dir`` holds checkpoints (epoch or best files)."""
    return {m.group(1) for m in (_CHECKPOINT_NAME.fullmatch(p.name) for p in Path(model_dir).glob("mode_*.pth.tar")) if m}


def newest_epoch(model_dir: Path, views: Iterable[str]) -> int:
    """The newest epoch of which ``model_dir`` holds every view's checkpoint (0 when none)."""
    epochs = [_epochs(Path(model_dir), view) for view in views]
    return max(set.intersection(*epochs), default=0) if epochs else 0


def refuse_older_resume(path: Path, model_dir: Path, views: Iterable[str], epoch: int) -> None:
    """A run resumed from an older epoch than its folder holds would replace the later epochs: refuse it.

    A kill while an epoch was being saved leaves that epoch for only some views; the resumed run writes it
    again, so only epoch ``epoch + 1`` may exist for some views and not others.

    Args:
        path: what ``--resume`` named (for the message).
        model_dir: the ``model/`` folder the run writes.
        views: the run's views.
        epoch: the epoch the resumed checkpoint holds.

    Raises:
        UsageError: ``model_dir`` holds a later epoch; saying to resume from the folder or start a new run.
    """
    views = list(views)
    latest = max(newest_epoch(model_dir, views), *(max(_epochs(Path(model_dir), v), default=0) - 1 for v in views))
    if latest > epoch:
        newest = max(max(_epochs(Path(model_dir), v), default=0) for v in views)
        raise UsageError(
            f"--resume {path} holds epoch {epoch}, but {model_dir} holds later epochs of that run (up to {newest}): "
            f"continuing from it would replace them and mix two runs in one folder. Resume the run from its folder "
            f"(--resume {model_dir.parent}), or start a new run from these weights under another --prefix"
        )


def resumed_run_args(resume: str | Path | None) -> tuple[dict, Path, Path] | None:
    """The recorded flags of the run ``--resume`` continues (a checkpoint, a ``model/`` or an experiment folder).

    Returns:
        ``(flags, their args file, the experiment folder)``; ``None`` without ``--resume``, for a path that does
        not exist (:func:`find_resume` reports it) or, with a warning, for a run that left no args file.
    """
    if not resume or not Path(resume).exists():
        return None
    model_dir = model_folder(Path(resume) if Path(resume).is_dir() else Path(resume).parent)
    found = recorded_args(model_dir.parent)
    if found is None:
        log.warning("--resume %s: %s has no args file; the run continues with this command line's flags",
                    resume, model_dir.parent)
        return None
    return found[0], found[1], model_dir.parent


def recorded_args(exp_dir: Path) -> tuple[dict, Path] | None:
    """The flags of the newest run of an experiment: its newest ``args_resume<N>.json``, else ``args.json``.

    Returns:
        the flags and their file, or ``None`` when the folder has no args file.

    Raises:
        DataError: the newest args file is not a JSON object.
    """
    files = {0: exp_dir / "args.json"} if (exp_dir / "args.json").is_file() else {}
    for candidate in exp_dir.glob("args_resume*.json"):
        number = candidate.stem[len("args_resume"):]
        if number.isdigit():
            files[int(number)] = candidate
    if not files:
        return None
    newest = files[max(files)]
    try:
        flags = json.loads(newest.read_text())
    except ValueError as err:
        raise DataError(f"{newest} is not valid JSON ({err}): restore it, or resume with every flag of the run") from err
    if not isinstance(flags, dict):
        raise DataError(f"{newest} holds no flags (expected a JSON object): restore it, or resume with every flag of the run")
    return flags, newest


def _epochs(folder: Path, view: str) -> set[int]:
    found = set()
    for candidate in folder.glob(f"mode_{view}_epoch*.pth.tar"):
        match = _CHECKPOINT_NAME.fullmatch(candidate.name)
        if match is not None and match.group(3) is not None:
            found.add(int(match.group(3)))
    return found


def experiment_of(paths: Mapping[str, Path]) -> Path:
    """The experiment folder holding resumed checkpoints (``<exp>/model/`` -> ``<exp>``).

    Raises:
        UsageError: the checkpoints are not in an experiment's ``model/`` folder.
    """
    folder = next(iter(paths.values())).resolve().parent
    if folder.name != "model":
        raise UsageError(f"--resume {folder}: expected the checkpoints in an experiment's model/ folder (<exp>/model/mode_<view>_…)")
    return folder.parent


def load_resume(path: Path, view: str, net: str, device: torch.device | str = "cpu") -> dict:
    """A checkpoint to continue a run of ``view`` with ``--net net``.

    Raises:
        CheckpointError: unreadable, of another view, or saved with another ``--net``.
    """
    checkpoint = load_checkpoint(path, map_location=device)
    if checkpoint.get("mode") != view:
        raise CheckpointError(f"--resume {path} is a checkpoint of {checkpoint.get('mode')!r}, expected {view!r}")
    saved = checkpoint.get("net")
    if saved is not None and view_backbone(view, str(saved)) != view_backbone(view, net):
        raise CheckpointError(
            f"--resume {path} was trained with a {saved} {view} encoder, but --net {net} builds a "
            f"{view_backbone(view, net)}: pass the --net of the run you resume"
        )
    for key in ("state_dict", "optimizer", "scheduler", "epoch", "iteration", "best_acc"):
        if key not in checkpoint:
            raise CheckpointError(f"--resume {path} has no {key!r}: it is not a training checkpoint of this project")
    return checkpoint


def restore_state(
    checkpoint: dict, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: object, flags: str
) -> None:
    """Load a resumed checkpoint's weights, optimiser and scheduler; every tensor must fit.

    Args:
        checkpoint, path: the checkpoint (:func:`load_resume`) and its file.
        model, optimizer, scheduler: built from this run's flags.
        flags: the flags that shape the model and optimiser, named in messages (e.g. ``"--net and --train_what"``).

    Raises:
        CheckpointError: the weights or the optimiser groups do not fit; the model is left untouched
            when its weights do not.
    """
    load_all_weights(model, state_dict_of(checkpoint, path), f"--resume {path}",
                     f"resume with the {flags} of the run that wrote it")
    try:
        optimizer.load_state_dict(checkpoint["optimizer"])
    except (ValueError, KeyError) as err:  # torch names parameter groups, not the flags that shaped them
        raise CheckpointError(
            f"--resume {path}: its optimiser state does not fit this run's ({err}); resume with the {flags} of "
            "the run that wrote it"
        ) from err
    scheduler.load_state_dict(checkpoint["scheduler"])


def ensure_best(model_dir: str | Path, view: str, checkpoint: dict) -> None:
    """Make ``mode_<view>_best.pth.tar`` hold the best epoch a resumed checkpoint records.

    A run killed while writing a best copy left the previous best file (or none); the epoch it was
    copying is still on disk (see the module docstring) and is copied again.

    Args:
        model_dir: the experiment's ``model/`` folder.
        view: the view.
        checkpoint: the checkpoint the run resumes from (its ``best_epoch`` and ``best_acc``).

    Raises:
        CheckpointError: the best file is missing and cannot be rebuilt.
    """
    best = checkpoint_path(model_dir, view, "best")
    if "best_epoch" not in checkpoint:  # written by an earlier version, which did not record it
        if not best.is_file() and checkpoint.get("best_acc", float("-inf")) > float("-inf"):
            raise CheckpointError(
                f"{best} is missing: copy the epoch checkpoint with the best validation accuracy to it, or start a new run"
            )
        return
    best_epoch = checkpoint["best_epoch"]
    if best_epoch is None:  # no epoch has improved yet
        return
    if _holds_epoch(best, best_epoch):
        return
    source = checkpoint_path(model_dir, view, f"epoch{best_epoch}")
    if source.is_file():
        atomic_copy(source, best)
        log.warning("%s did not hold the best epoch %d (a killed save): copied it again from %s", best, best_epoch, source)
    elif best.is_file():  # resuming an older epoch than the run reached: its later best stays
        log.warning("%s holds another epoch than the resumed checkpoint's best (%d), whose file is pruned; keeping it",
                    best, best_epoch)
    else:
        raise CheckpointError(f"{best} is missing and {source}, its epoch, is pruned: the best weights of {view} are lost")


def _holds_epoch(path: Path, epoch: int) -> bool:
    if not path.is_file():
        return False
    try:
        return load_checkpoint(path).get("epoch") == epoch
    except CheckpointError:  # a best copy the disk or a crash damaged: rebuilt like a missing one
        return False
