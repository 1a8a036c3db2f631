"""Run one of the project's scripts with a fault injected; tests/test_faults.py drives it.

    COCON_FAULT=kill_write:mode_flow_epoch2.pth.tar python tests/fault_inject.py train/model_trainer.py ...

``COCON_FAULT`` is ``<kind>:<argument>``:

- ``kill_write:<file name>``: SIGKILL this process after half of ``<file name>`` is written (its hidden
  temporary file is left half-written, the file itself untouched), as a crash or ``kill -9`` would;
- ``full_write:<file name>``: that write fails with ``ENOSPC`` after half of the bytes, as on a full disk;
- ``kill_step:<n>``: SIGKILL just before the n-th optimiser step of the run (mid-epoch).

The script runs as ``__main__`` in this process, so what it leaves on disk is exactly what the real CLI
would leave.
"""
from __future__ import annotations

import errno
import os
import runpy
import signal
import sys
from pathlib import Path

ENV = "COCON_FAULT"


def _kill() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _break_write(name: str, kill: bool) -> None:
    from utils import files

    real = files._write

    def write(file, data, path: Path) -> None:
        if path.name != name:
            return real(file, data, path)
        real(file, data[: len(data) // 2], path)
        file.flush()
        if kill:
            _kill()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    files._write = write


def _kill_at_step(n: int) -> None:
    import torch

    real = torch.optim.Adam.step
    calls = [0]

    def step(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            _kill()
        return real(self, *args, **kwargs)

    torch.optim.Adam.step = step


def install(fault: str) -> None:
    """Patch this process for ``fault`` (see the module docstring)."""
    kind, _, argument = fault.partition(":")
    if kind in ("kill_write", "full_write"):
        _break_write(argument, kill=kind == "kill_write")
    elif kind == "kill_step":
        _kill_at_step(int(argument))
    else:
        raise SystemExit(f"{ENV}={fault!r}: expected kill_write:<name>, full_write:<name> or kill_step:<n>")


def main() -> None:
    script = Path(sys.argv[1]).resolve()
    if os.environ.get(ENV):
        install(os.environ[ENV])
    sys.argv = [str(script), *sys.argv[2:]]
    sys.path.insert(0, str(script.parent))  # as `python <script>` does
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
