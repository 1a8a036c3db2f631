"""Mixed precision and memory format, one policy for pretraining, fine-tuning and feature extraction.

``--amp`` picks the autocast dtype for the device the run uses:

- CPU: bfloat16 where the CPU has native bf16 arithmetic (AVX512-BF16 or AMX, which oneDNN uses),
  else float32 with a warning (emulated bf16 is slower than float32);
- one CUDA device, or DDP: bfloat16 where the GPU supports it, else float16 with a GradScaler;
- DataParallel (several GPUs, one process): float16 with a GradScaler, because DataParallel's
  replica threads re-enter autocast with the device's default dtype whatever the caller asked for.

Autocast runs the convolutions and matrix products in the low precision; the callers cast encoder
outputs back to float32 before the losses, so losses, similarity matrices and softmaxes are float32,
and BatchNorm keeps float32 statistics (autocast leaves batch_norm in float32).

``channels_last_3d`` stores activations as [N, T, H, W, C]; oneDNN's and cuDNN's fast 3-D
convolutions want it. :func:`to_channels_last` converts a model's weights, and the encoders convert
their input to whatever layout their first convolution's weight has (:func:`match_layout`).
"""
from __future__ import annotations

import contextlib
import logging

import torch
from torch import nn

log = logging.getLogger("cocon.precision")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (oneDNN's own check: AVX512-BF16 or AMX)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def amp_dtype_for(amp: bool, device: torch.device, data_parallel: bool = False) -> torch.dtype | None:
    """The autocast dtype of ``--amp`` on ``device``; ``None`` means float32.

    Args:
        amp: the ``--amp`` flag.
        device: the device this process computes on.
        data_parallel: the models run under ``nn.DataParallel`` (forces fp16, see the module doc).
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
    if data_parallel:
        return torch.float16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def describe_amp(amp_dtype: torch.dtype | None, data_parallel: bool = False) -> str:
    """The startup log's words for the precision in use."""
    if amp_dtype is None:
        return "float32"
    name = {torch.float16: "fp16 with a GradScaler", torch.bfloat16: "bf16"}[amp_dtype]
    return f"mixed precision {name}" + (" (DataParallel replicas autocast to fp16)" if data_parallel else "")


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


def match_layout(x: torch.Tensor, conv: nn.Conv3d) -> torch.Tensor:
    """``x`` [B, C, T, H, W] in the memory format of ``conv``'s weight (channels-last or contiguous)."""
    if conv.weight.is_contiguous(memory_format=torch.channels_last_3d) and not conv.weight.is_contiguous():
        return x.contiguous(memory_format=torch.channels_last_3d)
    return x
