"""One path for single-process, DataParallel and torchrun/DDP runs (as DINO's ``init_distributed_mode``).

Under ``torchrun`` the environment holds ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; the process
group is joined with NCCL on CUDA and Gloo on CPU. Without them the run is a single process and
every helper here is the identity, so the training loop has no ``if distributed`` branches.

:func:`wrap_model` puts every model behind :class:`ReplicaInput`, so that under DataParallel each
replica converts its own share of the loader's uint8 batch to float, autocasts and restores
channels-last on its own GPU (nothing float is built on GPU 0 for the others).
"""
from __future__ import annotations

import os
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from utils.augmentation import normalise_input
from utils.precision import autocast, restore_channels_last, uses_channels_last
from utils.views import VIEWS

T = TypeVar("T")

# NCCL's default is 10 minutes; rank 0's epoch-end work (the probe, at most PROBE_MAX_CLIPS clips, and the
# checkpoint writes) is bounded well below this, while the other ranks wait in their next collective.
PROCESS_GROUP_TIMEOUT = timedelta(minutes=30)


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
        tune_device(device)
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
    tune_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size, timeout=PROCESS_GROUP_TIMEOUT)
    return DistInfo(rank, world_size, local_rank, device, True)


def tune_device(device: torch.device) -> None:
    """cuDNN autotuning on CUDA: the clip shapes repeat every step, so the fastest kernels are found once."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def local_world_size() -> int:
    """Processes on this node: torchrun's ``LOCAL_WORLD_SIZE``, 1 in a single process."""
    value = os.environ.get("LOCAL_WORLD_SIZE", "1")
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"environment variable LOCAL_WORLD_SIZE={value!r} must be a positive integer (set by torchrun)")
    return int(value)


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


def rank() -> int:
    """This process's rank (0 in a single process)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Processes in the run (1 in a single process)."""
    return dist.get_world_size() if is_distributed() else 1


def mean_over_processes(value: float) -> float:
    """The mean of ``value`` over every process (each gets the same float); ``value`` itself in a single process."""
    if not is_distributed():
        return value
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    total = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return float(total.item()) / dist.get_world_size()


def barrier() -> None:
    """Wait for every process (nothing in a single process)."""
    if is_distributed():
        dist.barrier()


def gather_objects(obj: T) -> list[T]:
    """Every process's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not is_distributed():
        return [obj]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def shard(n: int) -> list[int]:
    """This process's share of ``n`` items (every world-size-th, from its rank): all of them in a single process."""
    return list(range(rank(), n, world_size()))


def once_on_main(fn: Callable[..., T], *args, **kwargs) -> T:
    """Run ``fn`` on rank 0 only and hand its result (or the exception it raised) to every process.

    For start-up checks that read the whole dataset (e.g. every view folder of every video): one scan
    instead of one per process, and every process stops with the same error.
    """
    if not is_distributed():
        return fn(*args, **kwargs)
    box: list = [None]
    if dist.get_rank() == 0:
        try:
            box[0] = (True, fn(*args, **kwargs))
        except Exception as err:  # re-raised on every process below
            box[0] = (False, err)
    dist.broadcast_object_list(box, src=0)
    ok, value = box[0]
    if not ok:
        raise value
    return value


def process_seed(seed: int) -> int:
    """``seed`` on rank 0 (so one process and rank 0 draw alike), a seed of its own on every other rank.

    Dropout masks and other draws of the training step then differ between processes, as they would
    across the clips of one process's batch.
    """
    r = rank()
    return seed if r == 0 else int(np.random.SeedSequence([seed, r]).generate_state(1)[0])


class ReplicaInput(nn.Module):
    """What every (DataParallel) replica runs: uint8 blocks of ``view`` to float on the replica's device,
    autocast in ``amp_dtype``, channels-last weights restored, then the model.

    DataParallel scatters the uint8 batch (a quarter of the float bytes) and each replica builds only its
    own float share. Its weight copies come in the default layout, so a channels-last model has them
    converted back here (a differentiable copy: gradients still reach the parameters).

    Args:
        model: the encoder or classifier; takes float blocks ``[B, N, C, SL, H, W]``.
        view: the view whose normalisation the blocks get.
        amp_dtype: autocast dtype, or ``None`` for float32.
    """

    def __init__(self, model: nn.Module, view: str, amp_dtype: torch.dtype | None = None):
        super().__init__()
        self.model, self.view, self.amp_dtype = model, view, amp_dtype
        self.channels_last = uses_channels_last(model)

    def model_device(self) -> torch.device:
        """Where the model's weights are (a replica's weights are plain tensors, not parameters)."""
        return next(m.weight.device for m in self.model.modules() if isinstance(getattr(m, "weight", None), torch.Tensor))

    def forward(self, blocks: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """The model's output on uint8 ``blocks`` ``[B, N, C, SL, H, W]`` (in ``amp_dtype`` under autocast)."""
        if self.channels_last and getattr(self, "_is_replica", False):
            restore_channels_last(self.model)
        device = self.model_device()
        x = normalise_input(blocks.to(device, non_blocking=True), VIEWS[self.view])
        with autocast(device, self.amp_dtype):
            return self.model(x)


def wrap_model(model: nn.Module, view: str, info: DistInfo, n_gpu: int, amp_dtype: torch.dtype | None = None,
               find_unused_parameters: bool = False) -> nn.Module:
    """Move ``model`` to the device behind a :class:`ReplicaInput`; DDP under torchrun, DataParallel over
    ``n_gpu`` > 1 GPUs otherwise. Call after :func:`~utils.precision.to_channels_last`.

    Args:
        model: the model; :func:`unwrap` gives it back.
        view: the view of its input blocks.
        info: this process's place.
        n_gpu: GPUs this process drives.
        amp_dtype: autocast dtype, or ``None``.
        find_unused_parameters: DDP's flag, for models whose trainable set changes between epochs.
    """
    wrapped = ReplicaInput(model.to(info.device), view, amp_dtype)
    if info.distributed:
        ids = [info.local_rank] if info.device.type == "cuda" else None
        return DistributedDataParallel(wrapped, device_ids=ids, find_unused_parameters=find_unused_parameters)
    return nn.DataParallel(wrapped) if n_gpu > 1 else wrapped


def feed(model: nn.Module, blocks: torch.Tensor, view: str, device: torch.device,
         amp_dtype: torch.dtype | None = None) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Run ``model`` on a loader's uint8 ``blocks``: through its :class:`ReplicaInput` when :func:`wrap_model`
    made it, else through a temporary one (a bare model, as tests and benches build)."""
    inner = model.module if isinstance(model, (nn.DataParallel, DistributedDataParallel)) else model
    if isinstance(inner, ReplicaInput):
        return model(blocks)
    return ReplicaInput(model, view, amp_dtype)(blocks.to(device))


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DataParallel/DDP and :class:`ReplicaInput` wrappers (the model itself otherwise)."""
    if isinstance(model, (nn.DataParallel, DistributedDataParallel)):
        model = model.module
    return model.model if isinstance(model, ReplicaInput) else model


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def cleanup() -> None:
    """Leave the process group (no-op in a single process)."""
    if is_distributed():
        dist.destroy_process_group()
