"""Mixed precision and memory format, one policy for pretraining, fine-tuning and feature extraction.

``--amp`` picks the autocast dtype for the device the run uses:

- CPU: bfloat16 where the CPU has native bf16 arithmetic (AVX512-BF16 or AMX, which oneDNN uses),
  else float32 with a warning (emulated bf16 is slower than float32);
- CUDA (one GPU, DataParallel or DDP): bfloat16 where the GPU computes it natively (compute capability
  8.0 and later: cuDNN has no bf16 convolutions below it, and torch's default check counts emulation),
  else float16 with a GradScaler. DataParallel's replica threads re-enter autocast with the device's
  default dtype, so the models run behind :class:`utils.distributed.ReplicaInput`, which enters autocast
  with this dtype inside each replica.

Autocast runs the convolutions and matrix products in the low precision; the callers cast encoder
outputs back to float32 before the losses, so losses, similarity matrices and softmaxes are float32,
and BatchNorm keeps float32 statistics (autocast leaves batch_norm in float32).

``channels_last_3d`` stores activations as [N, T, H, W, C]; oneDNN's and cuDNN's fast 3-D
convolutions want it. :func:`to_channels_last` converts a model's weights, and the encoders convert
their input to whatever layout their first convolution's weight has (:func:`match_layout`).
DataParallel's weight copies come in the default layout; :func:`restore_channels_last` converts them
back inside each replica.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger("cocon.precision")


NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU computes bf16 natively: AVX512-BF16 or AMX among its flags in ``cpuinfo``.

    (oneDNN's own check is also true on plain AVX-512, where it emulates bf16 more slowly than float32;
    without a readable ``cpuinfo``, e.g. not on Linux, the answer is no.)
    """
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    flags = {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[-1].split()}
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def cuda_has_bf16() -> bool:
    """Whether the current GPU computes bf16 natively (not counting torch's emulation on older GPUs)."""
    return torch.cuda.is_bf16_supported(including_emulation=False)


def amp_dtype_for(amp: bool, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``--amp`` on ``device``; ``None`` means float32.

    Args:
        amp: the ``--amp`` flag.
        device: the device this process computes on.
    """
    if not amp:
        return None
    if device.type == "cpu":
        if cpu_has_bf16():
            return torch.bfloat16
        log.warning("--amp: this CPU has no native bf16 (AVX512-BF16/AMX); training in float32")
        return None
    if device.type != "cuda":
        raise ValueError(f"--amp supports CPU and CUDA devices, this process runs on {device}")
    return torch.bfloat16 if cuda_has_bf16() else torch.float16


def describe_amp(amp_dtype: torch.dtype | None) -> str:
    """The startup log's words for the precision in use."""
    if amp_dtype is None:
        return "float32"
    return "mixed precision " + {torch.float16: "fp16 with a GradScaler", torch.bfloat16: "bf16"}[amp_dtype]


def autocast(device: torch.device, amp_dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``amp_dtype``, or a no-op context for float32."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype)


def grad_scaler(amp_dtype: torch.dtype | None, device: torch.device) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16 (its small exponent range underflows gradients); none for bf16 or float32."""
    return torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None


def to_channels_last(model: nn.Module) -> nn.Module:
    """Store the model's 5-D (3-D convolution) weights as ``channels_last_3d``; returns the model."""
    for module in model.modules():
        if isinstance(module, nn.Conv3d):
            module.to(memory_format=torch.channels_last_3d)
    return model


def uses_channels_last(model: nn.Module) -> bool:
    """Whether :func:`to_channels_last` converted ``model`` (its first 3-D convolution's weight is channels-last)."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv3d)), None)
    return conv is not None and _is_channels_last(conv.weight)


def restore_channels_last(replica: nn.Module) -> None:
    """Give a DataParallel replica's 3-D convolution weights the channels-last layout again.

    torch's ``replicate`` sets a replica's weights as plain tensor attributes, broadcast from GPU 0 in the
    default layout; the channels-last copy set here is differentiable, so the gradient still flows back to
    the original parameters.
    """
    for module in replica.modules():
        if isinstance(module, nn.Conv3d) and not _is_channels_last(module.weight):
            module.weight = module.weight.contiguous(memory_format=torch.channels_last_3d)


def _is_channels_last(weight: torch.Tensor) -> bool:
    return weight.is_contiguous(memory_format=torch.channels_last_3d) and not weight.is_contiguous()


def match_layout(x: torch.Tensor, conv: nn.Conv3d) -> torch.Tensor:
    """``x`` [B, C, T, H, W] in the memory format of ``conv``'s weight (channels-last or contiguous)."""
    if _is_channels_last(conv.weight):
        return x.contiguous(memory_format=torch.channels_last_3d)
    return x
