"""Files: the one atomic writer, the cleaning of what killed writers leave, and readers whose errors name the file.

Every output of the project goes through :func:`atomic_write`: the bytes are written to a hidden
sibling ``.<name>.tmp-<pid>-<random>``, flushed to disk, and renamed over the target, so a reader,
or a run killed at any instant, sees the old file or the new one and never half of one. A killed
writer leaves its temporary file behind; :func:`clean_stale_tmp` removes those whose process is gone.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from utils.errors import DataError, first_line

TMP_TAG = ".tmp-"
_TMP_PID = re.compile(r"^\..+" + re.escape(TMP_TAG) + r"(\d+)")
_LEGACY_TMP = re.compile(r"^\..+\.tmp$")  # mkstemp names of earlier versions: no writer pid
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def temp_sibling(path: Path, pid: int | None = None) -> Path:
    """The temporary sibling ``.<name>.tmp-<pid>`` under which ``path`` is built (folders use it as is)."""
    return path.with_name(f".{path.name}{TMP_TAG}{os.getpid() if pid is None else pid}")


def _write(file: BinaryIO, data: bytes | memoryview, path: Path) -> None:
    # The one raw write of the project, named so that tests/fault_inject.py can fail or kill it mid-file
    # (``path`` is the file being replaced).
    file.write(data)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # folders cannot be opened on some platforms; the rename is then as durable as it gets
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _new_file_mode() -> int:
    """The mode ``open()`` gives a new file under the process's umask (mkstemp's own is 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_NEW_FILE_MODE = _new_file_mode()


def atomic_write(path: str | Path, data: bytes | memoryview | str) -> Path:
    """Write ``data`` to ``path`` so that ``path`` is always either the old file or the complete new one.

    Args:
        path: the destination; its folder is created if needed.
        data: the whole content (``str`` is written as UTF-8).

    Raises:
        OSError: naming ``path`` (e.g. ``ENOSPC`` when the disk is full); the temporary file is removed
            and an existing ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP_TAG}{os.getpid()}-", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):  # readable by others as a plainly written file would be (umask permitting)
            os.fchmod(fd, _NEW_FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            _write(f, payload, path)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno is not None and err.filename is None:
            raise OSError(err.errno, os.strerror(err.errno), str(path)) from err
        raise
    _fsync_dir(path.parent)
    return path


def atomic_copy(source: str | Path, target: str | Path) -> Path:
    """Copy ``source`` over ``target`` atomically (see :func:`atomic_write`)."""
    return atomic_write(target, Path(source).read_bytes())


def write_json(path: str | Path, obj: object) -> Path:
    """Write ``obj`` as indented JSON with sorted keys, atomically."""
    return atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` (or an error it was raised from) is a full disk or an exhausted quota."""
    while err is not None:
        if isinstance(err, OSError) and err.errno in _DISK_FULL:
            return True
        err = err.__cause__ or err.__context__
    return False


def pid_alive(pid: int) -> bool:
    """Whether a process with id ``pid`` is running on this machine (a zombie, which no one reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):  # no /proc (macOS), or the process just ended
        return True
    return state != "Z"


def clean_stale_tmp(folder: str | Path) -> list[Path]:
    """Remove the hidden temporary files and folders that killed writers left in ``folder``.

    A temporary entry whose writer (the pid in its name) is still alive, and is not this process, is
    kept: another run may be writing it.

    Returns:
        the removed paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        match = _TMP_PID.match(entry.name)
        if match is None and not _LEGACY_TMP.match(entry.name):
            continue
        if match is not None and int(match.group(1)) != os.getpid() and pid_alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def read_npz(
    path: str | Path, keys: Sequence[str], what: str, advice: str, all_arrays: bool = False
) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of an ``.npz`` file (or, with ``all_arrays``, every array it holds), loaded without pickles.

    Args:
        path: the file.
        keys: the arrays it must hold.
        what: what the file is, for messages (``"heatmap"``, ``"probability file"``).
        advice: what to do when it cannot be used (e.g. which script rewrites it).
        all_arrays: return every array of the file, not only ``keys``.

    Raises:
        FileNotFoundError: the file does not exist.
        DataError: naming the file, when it is empty, truncated, corrupt, or lacks a key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist; {advice}")
    if path.stat().st_size == 0:
        raise DataError(f"{what} {path} is empty (0 bytes), left by an interrupted or failed write; {advice}")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in keys if k not in data.files]
            if missing:
                raise DataError(f"{what} {path} lacks {missing} (it holds {sorted(data.files)}); {advice}")
            return {k: data[k] for k in (data.files if all_arrays else keys)}
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(
            f"{what} {path} cannot be read ({type(err).__name__}: {first_line(err)}): it is truncated or corrupt; {advice}"
        ) from err


def append_jsonl(record: dict, path: str | Path) -> None:
    """Append one JSON line with a single ``write`` and fsync it: a kill leaves whole lines only."""
    data = (json.dumps(record) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        while written < len(data):
            written += os.write(fd, data[written:])
        os.fsync(fd)
    except OSError as err:
        if err.errno is not None and err.filename is None:
            raise OSError(err.errno, os.strerror(err.errno), str(path)) from err
        raise
    finally:
        os.close(fd)
