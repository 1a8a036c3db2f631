"""Clip augmentations: one random draw per clip, applied to every frame of it.

A clip is a tensor ``[T, C, H, W]`` (uint8 or float) of any channel count, so the same
functions serve RGB, 2-channel flow, 17-channel keypoint heatmaps and 1-channel masks.

Geometry (crop box and flip) is drawn once per *sample* as a :class:`ClipGeometry` in
fractions of the frame, so every view of the sample — stored at its own resolution — sees
the same region of the scene. Photometric changes (colour jitter, grayscale) are RGB-only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from utils.views import View

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ClipGeometry:
    """A crop box in fractions of the frame (top, left, height, width) and a horizontal flip."""

    top: float
    left: float
    height: float
    width: float
    flip: bool = False


def center_square(aspect: float) -> ClipGeometry:
    """The largest centred square of a frame whose width/height is ``aspect``."""
    if aspect >= 1:
        width = 1 / aspect
        return ClipGeometry(0.0, (1 - width) / 2, 1.0, width)
    height = aspect
    return ClipGeometry((1 - height) / 2, 0.0, height, 1.0)


def random_sized_crop(
    rng: np.random.Generator,
    aspect: float,
    scale: tuple[float, float] = (0.3, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_prob: float = 0.5,
) -> ClipGeometry:
    """Draw a crop covering ``scale`` of the frame's area with width/height in ``ratio``.

    Args:
        rng: the sample's random generator.
        aspect: width / height of the frame.
        scale: range of the crop's area as a fraction of the frame's area.
        ratio: range of the crop's width/height (drawn log-uniformly), in pixels.
        flip_prob: probability of a horizontal flip.
    """
    for _ in range(10):
        area = rng.uniform(*scale)
        crop_ratio = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        # In fractions: (w·W)/(h·H) = crop_ratio and w·h = area.
        width = math.sqrt(area * crop_ratio / aspect)
        height = math.sqrt(area * aspect / crop_ratio)
        if width <= 1 and height <= 1:
            break
    else:
        square = center_square(aspect)
        width, height = square.width, square.height
    top = rng.uniform(0, 1 - height)
    left = rng.uniform(0, 1 - width)
    return ClipGeometry(top, left, height, width, flip=bool(rng.random() < flip_prob))


def crop_resize(clip: torch.Tensor, geometry: ClipGeometry, size: int) -> torch.Tensor:
    """Crop ``geometry``'s box from every frame and resize it to ``size × size``.

    Args:
        clip: ``[T, C, H, W]``, any dtype and channel count.
        geometry: the box, in fractions of the frame.
        size: output side in pixels.

    Returns:
        float32 ``[T, C, size, size]`` in the input's value range.
    """
    _, _, h, w = clip.shape
    top = min(int(round(geometry.top * h)), h - 1)
    left = min(int(round(geometry.left * w)), w - 1)
    bottom = max(top + 1, min(h, int(round((geometry.top + geometry.height) * h))))
    right = max(left + 1, min(w, int(round((geometry.left + geometry.width) * w))))
    crop = clip[:, :, top:bottom, left:right].float()
    if crop.shape[-2:] == (size, size):
        return crop.contiguous()
    return F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def hflip(clip: torch.Tensor, is_flow: bool = False, channels: Sequence[int] | None = None) -> torch.Tensor:
    """Mirror every frame left-right.

    Args:
        clip: ``[T, C, H, W]``.
        is_flow: the clip is zero-centred flow (x, y): negate x, since motion to the right
            becomes motion to the left.
        channels: channel order of the mirrored clip (keypoint heatmaps: a left wrist becomes
            a right wrist).
    """
    flipped = clip.flip(-1)
    if channels is not None:
        flipped = flipped[:, list(channels)]
    if is_flow:
        flipped[:, 0] = -flipped[:, 0]
    return flipped


def random_grayscale(clip: torch.Tensor, rng: np.random.Generator, p: float = 0.5) -> torch.Tensor:
    """With probability ``p`` turn the whole RGB clip ``[T, 3, H, W]`` (float, 0–1) gray."""
    if rng.random() >= p:
        return clip
    return TF.rgb_to_grayscale(clip, num_output_channels=3)


def color_jitter(
    clip: torch.Tensor,
    rng: np.random.Generator,
    brightness: float = 0.5,
    contrast: float = 0.5,
    saturation: float = 0.5,
    hue: float = 0.25,
) -> torch.Tensor:
    """One colour-jitter draw (factors and random order, as torchvision's) for all frames.

    Args:
        clip: float RGB ``[T, 3, H, W]`` in 0–1.
        rng: the sample's random generator.
        brightness, contrast, saturation: factors are drawn from ``[1 - x, 1 + x]``.
        hue: the shift is drawn from ``[-hue, hue]`` (at most 0.5).
    """
    adjustments = [
        (TF.adjust_brightness, rng.uniform(max(0.0, 1 - brightness), 1 + brightness)),
        (TF.adjust_contrast, rng.uniform(max(0.0, 1 - contrast), 1 + contrast)),
        (TF.adjust_saturation, rng.uniform(max(0.0, 1 - saturation), 1 + saturation)),
        (TF.adjust_hue, rng.uniform(-hue, hue)),
    ]
    for k in rng.permutation(len(adjustments)):
        fn, factor = adjustments[k]
        clip = fn(clip, float(factor))
    return clip.clamp_(0, 1)


def normalize(clip: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Per-channel ``(x - mean) / std`` of a ``[T, C, H, W]`` clip."""
    mean_t = torch.tensor(mean, dtype=clip.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=clip.dtype).view(1, -1, 1, 1)
    return (clip - mean_t) / std_t


def transform_view(
    clip: torch.Tensor,
    view: View,
    geometry: ClipGeometry,
    size: int,
    rng: np.random.Generator | None = None,
) -> torch.Tensor:
    """The whole per-view pipeline: crop/resize, to float, flip, RGB photometrics, normalise.

    Args:
        clip: uint8 ``[T, C, H, W]`` as stored on disk (flow: 128 = no motion).
        view: the view (flow maps to about [-0.5, 0.5]; RGB gets colour augmentation and
            ImageNet normalisation; the flip is sign- and channel-correct for every view).
        geometry: the sample's crop box and flip, shared by all its views.
        size: output side in pixels.
        rng: the sample's generator for photometric draws; ``None`` for evaluation.

    Returns:
        float32 ``[T, C, size, size]``.
    """
    x = crop_resize(clip, geometry, size).div_(255)
    if view.is_flow:
        x.sub_(0.5)
    if geometry.flip:
        x = hflip(x, is_flow=view.is_flow, channels=view.flip_channels)
    if view.is_rgb:
        if rng is not None:
            x = random_grayscale(color_jitter(x, rng), rng)
        x = normalize(x, IMAGENET_MEAN, IMAGENET_STD)
    return x
