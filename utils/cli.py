"""The entry point of every command-line script: a user error is one line on stderr, a bug a traceback.

    if __name__ == "__main__":
        run_cli(main, get_args_parser())

User errors print ``error: <what, with which file or flag, and what to do>`` and exit with status 1,
or 2 for a bad flag (as argparse does for the flags it checks itself). They are:

- :class:`utils.errors.UserError` and its kinds (``CheckpointError``, ``DataError``, ``NonFiniteError``;
  ``UsageError`` is a bad flag);
- a missing file or folder, a permission denied, a full disk or quota (``OSError``);
- ``ValueError`` and ``FloatingPointError`` raised by this project's own code — its convention for a
  bad flag value or input; a message that starts with the flag (``--lr …``) is a usage error;
- running out of GPU memory;
- Ctrl-C (status 130) and SIGTERM (status 143), which stop the run the same way;
- a data-loading worker killed by a signal (most often the out-of-memory killer).

An error raised inside a DataLoader worker reaches the main process wrapped in torch's "Caught … in DataLoader
worker process N" text; it is unwrapped first, so it ends in the same one line as without workers.

Anything else, and any of these raised inside a library, is a bug: its traceback is shown as usual.
``COCON_DEBUG=1`` shows the traceback of user errors too. Nothing here imports torch.
"""
from __future__ import annotations

import argparse
import errno
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from utils.errors import UsageError, UserError
from utils.files import is_disk_full

DEBUG_ENV = "COCON_DEBUG"
_REPO = Path(__file__).resolve().parents[1]
_FILE_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError, PermissionError)
_SYSTEM_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EMFILE, errno.ENAMETOOLONG}


def debug_enabled() -> bool:
    """Whether ``COCON_DEBUG`` asks for tracebacks of user errors."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _is_cuda_oom(err: BaseException) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(err, torch.cuda.OutOfMemoryError)


def _one_line(text: str) -> str:
    return " ".join(text.split())


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a job scheduler's stop), raised where the main thread is, as Ctrl-C is."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


_WORKER_WRAP = re.compile(r"Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback \(most recent call last\):\n")
_WORKER_KILLED = re.compile(r"DataLoader worker \(pids?\(?s?\)? ?(?P<pid>[\d, ]+)\) "
                            r"(?:is killed by signal: (?P<signal>[^.]+)|exited unexpectedly)")
_FILE_LINE = re.compile(r'  File "(?P<path>[^"]+)", line \d+')
_OS_ERROR = re.compile(r"\[Errno (?P<errno>\d+)\] (?P<strerror>.*?)(?:: '(?P<filename>.*)')?$", re.S)


def _in_project(path: Path) -> bool:
    path = path.resolve()
    return _REPO in path.parents and not any(part in ("site-packages", "dist-packages", ".venv") for part in path.parts)


def _raised_by_project(err: BaseException) -> bool:
    """Whether the innermost frame of ``err``'s traceback is this repository's code (not a library's)."""
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return _in_project(Path(tb.tb_frame.f_code.co_filename))


def unwrap_worker_error(err: BaseException) -> tuple[BaseException, bool] | None:
    """The error a DataLoader worker raised, rebuilt from torch's wrapped text, and whether this repository's
    code raised it; ``None`` when ``err`` is not a worker's."""
    text = str(err)
    if _WORKER_WRAP.match(text) is None:
        return None
    lines = text.splitlines()
    frames = [i for i, line in enumerate(lines) if _FILE_LINE.match(line)]
    if not frames:
        return None
    first = next((i for i in range(frames[-1] + 1, len(lines)) if lines[i] and not lines[i].startswith(" ")), len(lines))
    message = re.sub(rf"^(?:[\w.]+\.)?{re.escape(type(err).__name__)}:? ?", "", "\n".join(lines[first:]), count=1)
    os_error = _OS_ERROR.match(message) if isinstance(err, OSError) else None
    if os_error is not None:
        original: BaseException = type(err)(int(os_error["errno"]), os_error["strerror"], os_error["filename"])
    else:
        original = type(err)(message)
    return original, _in_project(Path(_FILE_LINE.match(lines[frames[-1]])["path"]))


def _worker_killed(err: BaseException) -> str | None:
    """The one-line message of a loader worker killed by a signal (the out-of-memory killer's, most often)."""
    match = _WORKER_KILLED.search(str(err)) if isinstance(err, RuntimeError) else None
    if match is None:
        return None
    how = f"was killed by signal {match['signal'].strip()}" if match["signal"] else "exited unexpectedly"
    return (f"a data-loading worker (pid {match['pid'].strip()}) {how}, most likely by the out-of-memory killer: the "
            "machine ran out of memory; lower --num_workers (or --batch_size, or leave out --cache_frames) and run "
            "again; a training run continues from its last saved epoch with --resume")


def describe(err: BaseException) -> tuple[str, int] | None:
    """The one-line message and exit status of a user error, or ``None`` for a bug.

    Args:
        err: the exception that ended ``main``.
    """
    unwrapped = unwrap_worker_error(err)
    if unwrapped is not None:
        return _describe(*unwrapped)
    killed = _worker_killed(err)
    if killed is not None:
        return killed, 1
    return _describe(err, _raised_by_project(err))


def _describe(err: BaseException, from_project: bool) -> tuple[str, int] | None:
    """:func:`describe` of an error raised where ``from_project`` says."""
    if isinstance(err, KeyboardInterrupt):
        how, status = ("terminated (SIGTERM)", 143) if isinstance(err, Terminated) else ("interrupted", 130)
        return f"{how}; finished files are complete, and a training run continues with --resume", status
    if is_disk_full(err):
        where = getattr(err, "filename", None) or "its output"
        return (f"no space left on the device while writing {where}; free space there (or write elsewhere) and "
                "run again: the files finished before are complete"), 1
    if _is_cuda_oom(err):
        return f"out of GPU memory ({_one_line(str(err))[:200]}); lower --batch_size or --img_dim", 1
    if isinstance(err, UserError):
        return _one_line(str(err)), 2 if isinstance(err, UsageError) else 1
    if isinstance(err, _FILE_ERRORS) or (isinstance(err, OSError) and err.errno in _SYSTEM_ERRNOS):
        if err.errno is not None and err.filename:  # the OS's own error: "[Errno 2] No such file…: 'x'"
            return f"{(err.strerror or '').lower()}: {err.filename}; check the path and run again", 1
        return _one_line(str(err)), 1
    if isinstance(err, (ValueError, FloatingPointError)) and from_project:
        message = _one_line(str(err))
        return message, 2 if message.startswith("--") else 1
    return None


def run_cli(main: Callable[[argparse.Namespace], object], parser: argparse.ArgumentParser,
            argv: list[str] | None = None) -> None:
    """Parse the flags and run ``main``; a user error ends the process with one line on stderr.

    Args:
        main: the script's ``main(args)``; its return value is ignored.
        parser: the script's argument parser (it exits with status 2 on a flag it rejects).
        argv: the arguments (default: ``sys.argv[1:]``).
    """
    args = parser.parse_args(argv)
    catch_term = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    if catch_term:
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        main(args)
    except (Exception, KeyboardInterrupt) as err:
        verdict = describe(err)
        if verdict is None or debug_enabled():
            raise
        message, status = verdict
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(status)
    finally:
        if catch_term:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
