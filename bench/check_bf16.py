"""How far bf16 autocast moves the weight gradient of the backbone's 3-D convolutions on this CPU.

    python bench/check_bf16.py                 # 3x3x3 convolutions, 1-8 time steps, plain and guarded
    python bench/check_bf16.py --trials 10 --channels 256

For each number of input time steps T, a 3x3x3 convolution (padding 1, temporal stride 1 and 2) is run
``--trials`` times on the same random input under CPU bf16 autocast, and its weight gradient compared with
float32's: the worst relative error (max |g_bf16 - g_fp32| / max |g_fp32|) and how many trials held inf or
NaN. ``torch.nn.Conv3d`` is oneDNN's bf16 kernel; ``utils.precision.Conv3d`` is what the backbone uses, which
runs in float32 where that kernel is wrong. bf16 rounding alone gives errors of about 0.01; an error near
or above 1 is a wrong gradient. Emulated bf16 (a CPU without AVX512-BF16/AMX) runs too, slowly.
"""
from __future__ import annotations

import argparse

import torch
from torch import nn

from utils.cli_options import HelpFormatter
from utils.precision import Conv3d, describe_cpu


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--trials", type=int, default=5, help="bf16 runs per shape")
    parser.add_argument("--channels", type=int, default=64, help="input and output channels")
    parser.add_argument("--side", type=int, default=4, help="height and width of the input")
    parser.add_argument("--batch", type=int, default=16, help="clips per input")
    parser.add_argument("--times", type=int, nargs="+", default=[1, 2, 3, 4, 5, 8], help="input time steps")
    return parser


def gradient_error(conv: nn.Conv3d, x: torch.Tensor, trials: int) -> tuple[float, int]:
    """Worst relative error of the bf16 weight gradient against float32's, and the trials with inf/NaN."""
    (reference,) = torch.autograd.grad(conv(x).square().sum(), [conv.weight])
    worst, non_finite = 0.0, 0
    for _ in range(trials):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = conv(x)
        (grad,) = torch.autograd.grad(out.float().square().sum(), [conv.weight])
        non_finite += int(not torch.isfinite(grad).all())
        error = (grad - reference).abs().nan_to_num(float("inf")).max() / reference.abs().max()
        worst = max(worst, float(error))
    return worst, non_finite


def main(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    print(f"{describe_cpu()}; torch {torch.__version__}; {args.trials} trials each")
    print("| T | stride | nn.Conv3d: worst error, trials with inf/NaN | utils.precision.Conv3d |")
    print("|---:|---:|---|---|")
    c = args.channels
    for t in args.times:
        for stride in (1, 2):
            x = torch.randn(args.batch, c, t, args.side, args.side)
            cells = []
            for kind in (nn.Conv3d, Conv3d):
                torch.manual_seed(1)
                conv = kind(c, c, 3, stride=stride, padding=1, bias=False)
                error, bad = gradient_error(conv, x, args.trials)
                cells.append(f"{error:.3g}, {bad}/{args.trials}")
            print(f"| {t} | {stride} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
