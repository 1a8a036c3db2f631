"""Pictures of input clips for TensorBoard: every view turned into RGB frames in 0-1."""
from __future__ import annotations

import torch
from torchvision.utils import make_grid

from utils.views import VIEWS


def view_to_rgb(frames: torch.Tensor, view: str) -> torch.Tensor:
    """Frames of one view as displayable RGB.

    RGB shows as it is; flow (128 = no motion) puts x in red and y in green; keypoint heatmaps show
    the max over joints and masks their value, both in gray.

    Args:
        frames: uint8 ``[T, C, H, W]`` as the loaders return them.
        view: the view's name.

    Returns:
        float ``[T, 3, H, W]`` in 0-1.
    """
    frames = frames.detach().cpu().float() / 255
    if view == "imgs":
        return frames
    if VIEWS[view].is_flow:
        xy = frames[:, :2]
        return torch.cat([xy, torch.zeros_like(xy[:, :1])], dim=1)
    gray = frames.amax(dim=1, keepdim=True)  # heatmaps: max over joints; masks: one channel
    return gray.expand(-1, 3, -1, -1)


def clip_grid(clip: torch.Tensor, view: str) -> torch.Tensor:
    """One sample's clip ``[N, C, SL, H, W]`` as an image ``[3, H', W']``: a row of SL frames per block."""
    n, c, sl, h, w = clip.shape
    frames = clip.transpose(1, 2).reshape(n * sl, c, h, w)
    return make_grid(view_to_rgb(frames, view), nrow=sl, padding=2, pad_value=1.0)
