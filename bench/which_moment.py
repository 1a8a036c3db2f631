"""How many CPC steps a DPC encoder needs before it tells a clip's future moments apart, on a trivial clip.

    python bench/which_moment.py                      # 200 steps, resnet10 at 64 px, evaluated every 20
    python bench/which_moment.py --steps 600 --lr 3e-3

Each clip is one square of its own colour on a plain background of its own shade, moving in a straight line
(bouncing off the borders) at 0.8-1.5 px per frame: between two consecutive 4-frame blocks it moves 3-6 px, and
its colour alone tells the clips of a batch apart. A DPC-RNN (the repo's model and CPC loss, the demo's clip
shape: 5 blocks of 4 frames, 2 predicted) is trained with Adam on fresh random clips, and every
``--eval_every`` steps :func:`train.diagnostics.heldout_cpc_parts` is measured on 64 fixed held-out clips: "which clip"
(chance 1/batch), "which moment" (the clip's other future block at the same place, chance 1/2) and "which
place". If "which clip" reaches 1 long before "which moment" leaves 1/2, CPC first settles on features that do
not change within a clip, and motion is learnt only after that — what the synthetic benchmark's DPC shows.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from train.diagnostics import heldout_cpc_parts
from train.losses import cpc_loss
from train.model_3d import DPCRNN
from utils.cli_options import HelpFormatter
from utils.precision import describe_cpu

NUM_SEQ, SEQ_LEN, PRED_STEP = 5, 4, 2
SQUARE = 12  # side in pixels


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="Adam steps")
    parser.add_argument("--eval_every", type=int, default=20, help="steps between held-out measurements")
    parser.add_argument("--batch_size", type=int, default=16, help="clips per step")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate")
    parser.add_argument("--temp", type=float, default=0.07, help="CPC temperature (scores divided once)")
    parser.add_argument("--l2_norm", action=argparse.BooleanOptionalAction, default=True,
                        help="L2-normalise features and predictions, as CoCon (--no-l2_norm: raw dot products, as DPC)")
    parser.add_argument("--net", default="resnet10", help="backbone")
    parser.add_argument("--img_dim", type=int, default=64, help="frame side in pixels (a multiple of 32)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model and of the clips")
    return parser


def moving_squares(rng: np.random.Generator, clips: int, side: int) -> torch.Tensor:
    """Model inputs [clips, NUM_SEQ, 3, SEQ_LEN, side, side], roughly zero mean and unit spread."""
    frames = NUM_SEQ * SEQ_LEN
    x = np.zeros((clips, frames, 3, side, side), np.float32)
    span = side - SQUARE
    for i in range(clips):
        x[i] += rng.uniform(0.0, 0.3)
        start = rng.uniform(0, span, 2)
        angle = rng.uniform(0, 2 * np.pi)
        velocity = rng.uniform(0.8, 1.5) * np.array([np.cos(angle), np.sin(angle)])
        colour = rng.uniform(0.3, 1.0, 3)[:, None, None]
        for t in range(frames):
            y, x0 = (np.abs(start + velocity * t) % (2 * span)).astype(int)
            y, x0 = (2 * span - y if y > span else y), (2 * span - x0 if x0 > span else x0)
            x[i, t, :, y:y + SQUARE, x0:x0 + SQUARE] = colour
    blocks = torch.from_numpy(x).view(clips, NUM_SEQ, SEQ_LEN, 3, side, side).permute(0, 1, 3, 2, 4, 5)
    return (blocks - 0.3) / 0.3


def heldout_parts(model: DPCRNN, batches: list[torch.Tensor]) -> dict[str, float]:
    """"clip", "moment" and (with a map larger than 1x1) "place" rates of the model in eval mode on ``batches``."""
    model.eval()
    rates = heldout_cpc_parts(model, "v", batches)
    model.train()
    return {part: rates[key] for part in ("clip", "moment", "place") if (key := f"cpc_{part}_top1/v") in rates}


def main(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = DPCRNN(args.net, 3, args.img_dim, SEQ_LEN, NUM_SEQ, PRED_STEP, l2_norm=args.l2_norm)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    heldout = [moving_squares(rng, args.batch_size, args.img_dim) for _ in range(-(-64 // args.batch_size))]
    print(f"{describe_cpu()}; {args.net} at {args.img_dim} px, batch {args.batch_size}, lr {args.lr}, "
          f"temperature {args.temp}, L2 norm {args.l2_norm}, seed {args.seed}")
    print("| step | train CPC loss | which clip | which moment | which place | seconds |")
    print("|---:|---:|---:|---:|---:|---:|")
    start, loss = time.perf_counter(), "–"
    for step in range(args.steps + 1):
        if step % args.eval_every == 0:
            parts = heldout_parts(model, heldout)
            place = f"{parts['place']:.3f}" if "place" in parts else "–"  # a 1x1 map has one place
            print(f"| {step} | {loss} | {parts['clip']:.3f} | {parts['moment']:.3f} | {place} "
                  f"| {time.perf_counter() - start:.0f} |", flush=True)
        if step == args.steps:
            break
        pred, z = model(moving_squares(rng, args.batch_size, args.img_dim))
        cpc, _ = cpc_loss(pred, z[:, -PRED_STEP:], args.temp)
        optimizer.zero_grad(set_to_none=True)
        cpc.backward()
        optimizer.step()
        loss = f"{cpc.item():.3f}"


if __name__ == "__main__":
    main(get_args_parser().parse_args())
