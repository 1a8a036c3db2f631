"""The errors a user can fix, and the one check that numbers are finite.

A :class:`UserError` says what went wrong, with which file or flag, and what to do; the command-line
scripts print it as one line and exit (see :mod:`utils.cli`). Anything else is a bug and keeps its
traceback. Nothing here imports torch, so the preprocessing scripts can use it without loading torch.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


class UserError(Exception):
    """A problem the person running the script can fix; its message names the file or flag."""


class UsageError(UserError, ValueError):
    """A bad flag or flag combination (exit status 2, as argparse's own usage errors)."""


class DataError(UserError, ValueError):
    """A file whose content cannot be used (truncated, corrupt, of another shape); names the file."""


class NonFiniteError(UserError, FloatingPointError):
    """NaN or infinite values where numbers must be finite (weights, losses, scores, features)."""


def first_line(err: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type name when it has none."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[0].strip()[:300] if lines else type(err).__name__


def _as_array(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, of any dtype and device
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def _non_finite(array: np.ndarray) -> str | None:
    """How ``array`` is not finite (``"is nan"``, ``"has 2 non-finite (NaN/inf) of 8 values"``), or ``None``."""
    finite = np.isfinite(array)
    if finite.all():
        return None
    if array.size == 1:
        return f"is {array.item()}"
    return f"has {int(array.size - finite.sum())} non-finite (NaN/inf) of {array.size} values"


def check_finite(values: Any, what: str, advice: str, parts: Mapping[str, Any] | None = None) -> None:
    """Raise :class:`NonFiniteError` unless every value is finite.

    Args:
        values: a torch tensor, a NumPy array or a number.
        what: names the values and where they come from, e.g. ``"fine-tuning loss at epoch 3, batch 7"``.
        advice: what to do about it, e.g. ``"lower --lr or check the --pretrain checkpoint"``.
        parts: what ``values`` is made of, by name (e.g. a loss's terms); only read when ``values`` is
            not finite, to name the non-finite parts in the message (``cpc/flow = nan``).
    """
    detail = _non_finite(_as_array(values))
    if detail is None:
        return
    named = {name: _as_array(part) for name, part in (parts or {}).items()}
    bad = [f"{name} = {a.item()}" if a.size == 1 else f"{name} {_non_finite(a)}" for name, a in named.items() if _non_finite(a)]
    if bad:
        detail += f" (non-finite: {', '.join(bad)})"
    raise NonFiniteError(f"{what} {detail}; {advice}")
