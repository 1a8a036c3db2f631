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
import os
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger("cocon.precision")


NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpuinfo_field(cpuinfo: Path, name: str) -> str:
    """The first ``name : value`` of ``cpuinfo`` ("" where it is missing or unreadable, e.g. not on Linux)."""
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return ""
    return next((line.split(":", 1)[-1].strip() for line in lines if line.split(":", 1)[0].strip() == name), "")


def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU computes bf16 natively: AVX512-BF16 or AMX among its flags in ``cpuinfo``.

    (oneDNN's own check is also true on plain AVX-512, where it emulates bf16 more slowly than float32;
    without a readable ``cpuinfo``, e.g. not on Linux, the answer is no.)
    """
    flags = set(_cpuinfo_field(cpuinfo, "flags").split())
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def describe_cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU kind a measurement was made on, e.g. ``AMD EPYC, AVX512-BF16 (kernels: AVX512)``.

    The vector extensions are the CPU's widest (AVX2, AVX512, AVX512-BF16, AMX); the kernels are those
    PyTorch runs, which ``ONEDNN_MAX_CPU_ISA`` / ``ATEN_CPU_CAPABILITY`` can lower, and which make the
    same run's numbers differ between CPU kinds.
    """
    flags = set(_cpuinfo_field(cpuinfo, "flags").split())
    widest = next((name for name, flag in (("AMX", "amx_bf16"), ("AVX512-BF16", "avx512_bf16"), ("AVX512", "avx512f"),
                                           ("AVX2", "avx2")) if flag in flags), "no AVX2")
    model = _cpuinfo_field(cpuinfo, "model name") or "unknown CPU"
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    kernels = torch.backends.cpu.get_cpu_capability() + (f", ONEDNN_MAX_CPU_ISA={isa}" if isa else "")
    return f"{model}, {widest} (kernels: {kernels})"


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


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` that computes in float32 where oneDNN's bf16 weight gradient is wrong.

    With this repo's torch (2.14.1), on CPUs whose oneDNN kernels use AVX-512 (with or without native
    bf16), the bf16 backward-weights of a 3-D convolution with a temporal kernel > 1 and temporal
    stride 1 over an input of exactly 2 time steps is garbage: against float32 its relative error is
    0.9 or more, and in about half the calls it holds inf or NaN (``bench/check_bf16.py``
    measures it). The forward and the input gradient are right, and so is every other time length.
    In the backbone that is layer4 at the default 5-frame blocks, and Adam turns one non-finite
    gradient into NaN weights. Such a convolution leaves autocast and runs in float32 (layer4 is about
    a ninth of the backbone's multiply-adds); all others, and CUDA, keep bf16.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._bf16_weight_grad_is_wrong(x):
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float())
        return super().forward(x)

    def _bf16_weight_grad_is_wrong(self, x: torch.Tensor) -> bool:
        return (x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
                and torch.get_autocast_dtype("cpu") == torch.bfloat16
                and self.kernel_size[0] > 1 and self.stride[0] == 1 and x.shape[2] == 2)
