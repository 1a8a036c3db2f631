"""One path for single-process and torchrun/DDP training (as DINO's ``init_distributed_mode``).

Under ``torchrun`` the environment holds ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; the process
group is joined with NCCL on CUDA and Gloo on CPU. Without them the run is a single process and
every helper here is the identity, so the training loop has no ``if distributed`` branches.
"""
from __future__ import annotations

import os
import random
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    distributed: bool


def _env_int(name: str) -> int:
    value = os.environ[name]
    if not value.isdigit():
        raise ValueError(f"environment variable {name}={value!r} must be a non-negative integer (set by torchrun)")
    return int(value)


def init_distributed() -> DistInfo:
    """Join the torchrun process group if launched by torchrun, else describe a single process.

    CUDA processes use ``cuda:<LOCAL_RANK>`` and NCCL; CPU processes use Gloo. A single process
    uses ``cuda:0`` when a GPU is visible (DataParallel over the others is the caller's choice).
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
        return DistInfo(0, 1, 0, device, False)
    rank, world_size = _env_int("RANK"), _env_int("WORLD_SIZE")
    local_rank = _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else 0
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} GPU(s) are visible; "
                "use torchrun --nproc_per_node <= the GPU count"
            )
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistInfo(rank, world_size, local_rank, device, True)


def is_distributed() -> bool:
    """True inside an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the one process that logs and saves."""
    return not is_distributed() or dist.get_rank() == 0


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every process on dim 0, keeping the gradient to every slice.

    Each process computes the same loss on the gathered tensor; the backward sums its gradient
    over processes into the local slice, and DDP's averaging then gives the gradient of that one
    global loss. Identity in a single process. ``x`` must have the same shape on every process.
    """
    if not is_distributed() or dist.get_world_size() == 1:
        return x
    with warnings.catch_warnings():
        # Deprecated in favour of a private API whose backward (reduce-scatter) Gloo lacks.
        warnings.simplefilter("ignore", FutureWarning)
        gathered = dist_fn.all_gather(x)
    return torch.cat(gathered, dim=0)


def first_occurrences(indices: torch.Tensor, seen: set[int]) -> torch.Tensor:
    """Mask of the samples not seen before, by dataset index; adds them to ``seen``.

    ``DistributedSampler`` pads a dataset to a multiple of the world size by repeating its first
    samples, so a gathered validation pass meets those clips twice: keep the first of each.

    Args:
        indices: int ``[B]`` dataset indices of a (gathered) batch.
        seen: indices met in earlier batches of the pass; updated in place.

    Returns:
        bool ``[B]`` on the device of ``indices``.
    """
    keep = []
    for index in indices.tolist():
        keep.append(index not in seen)
        seen.add(index)
    return torch.tensor(keep, dtype=torch.bool, device=indices.device)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DataParallel/DDP wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, (nn.DataParallel, DistributedDataParallel)) else model


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def cleanup() -> None:
    """Leave the process group (no-op in a single process)."""
    if is_distributed():
        dist.destroy_process_group()
