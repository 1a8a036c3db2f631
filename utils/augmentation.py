"""Clip augmentations: geometry drawn once per sample, photometrics once per frame or per clip.

Stored frames arrive as uint8 ``[T, H, W, C]`` (channels last, as decoded) and leave
:func:`crop_resize` as float ``[T, C, S, S]``; every function serves any channel count — RGB,
2-channel flow, 17-channel keypoint heatmaps and 1-channel masks.

Geometry (crop box and flip) is drawn once per *sample* as a :class:`ClipGeometry` in
fractions of the frame, so every view of the sample — stored at its own resolution — sees
the same region of the scene. Photometric changes (colour jitter, grayscale) are RGB-only and,
as in the original DPC and CoCon code, drawn afresh for every frame (``colour_jitter="frame"``);
``"clip"`` draws once per clip. One draw per clip lets a clip be told from the others in a batch
by its colours alone, which CPC's "which clip" half then learns instead of the content.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from utils.cli_options import COLOUR_JITTER_MODES
from utils.layout import FLOW_ZERO, negate_encoded_flow
from utils.views import VIEWS, View

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
    scale: tuple[float, float] = (0.5, 1.0),
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


def _resize_frame(frame: np.ndarray, size: int, interpolation: int) -> np.ndarray:
    """Resize one uint8 ``[h, w, C]`` frame to ``[size, size, C]`` (OpenCV takes at most 4 channels at once)."""
    if frame.shape[2] <= 4:
        return cv2.resize(frame, (size, size), interpolation=interpolation).reshape(size, size, frame.shape[2])
    chunks = [frame[:, :, c : c + 4] for c in range(0, frame.shape[2], 4)]
    return np.concatenate([_resize_frame(chunk, size, interpolation) for chunk in chunks], axis=2)


def crop_box(height: int, width: int, geometry: ClipGeometry) -> tuple[int, int, int, int]:
    """Pixel box ``(top, bottom, left, right)`` of ``geometry`` in a ``height × width`` frame, at least 1 px."""
    top = min(int(round(geometry.top * height)), height - 1)
    left = min(int(round(geometry.left * width)), width - 1)
    bottom = max(top + 1, min(height, int(round((geometry.top + geometry.height) * height))))
    right = max(left + 1, min(width, int(round((geometry.left + geometry.width) * width))))
    return top, bottom, left, right


def crop_resize_frame(frame: np.ndarray, geometry: ClipGeometry, size: int) -> np.ndarray:
    """Crop ``geometry``'s box from one uint8 frame and resize it to ``size × size``, staying uint8.

    Area averaging (anti-aliased, 5× slower) is used when shrinking by 2× or more; bilinear, which
    aliases little at milder factors, otherwise.

    Args:
        frame: uint8 ``[H, W, C]`` or ``[H, W]``, any channel count.
        geometry: the box, in fractions of the frame.
        size: output side in pixels.

    Returns:
        uint8 ``[size, size, C]`` (``[size, size, 1]`` for a 2-D frame).
    """
    frame = frame if frame.ndim == 3 else frame[:, :, None]
    top, bottom, left, right = crop_box(frame.shape[0], frame.shape[1], geometry)
    crop = frame[top:bottom, left:right]
    if crop.shape[:2] == (size, size):
        return crop
    interpolation = cv2.INTER_AREA if min(bottom - top, right - left) >= 2 * size else cv2.INTER_LINEAR
    return _resize_frame(crop, size, interpolation)


def crop_resize_uint8(frames: Sequence[np.ndarray] | np.ndarray, geometry: ClipGeometry, size: int) -> np.ndarray:
    """:func:`crop_resize_frame` on every frame; uint8 ``[T, size, size, C]``.

    Args:
        frames: uint8 ``[T, H, W, C]``, or a sequence of ``[H, W, C]`` frames of one size (decoded
            frames need not be stacked at full resolution first).
        geometry: the box, in fractions of the frame.
        size: output side in pixels.
    """
    return np.stack([crop_resize_frame(frame, geometry, size) for frame in frames])


def crop_resize(frames: torch.Tensor | np.ndarray, geometry: ClipGeometry, size: int) -> torch.Tensor:
    """Crop ``geometry``'s box from every stored frame and resize it to ``size × size``.

    Frames stay uint8 and channels-last, as decoded, until they are small: OpenCV resizes
    the crop and only the result is converted to a float channels-first tensor (see
    :func:`crop_resize_frame` for the interpolation).

    Args:
        frames: uint8 ``[T, H, W, C]``, any channel count.
        geometry: the box, in fractions of the frame.
        size: output side in pixels.

    Returns:
        float32 ``[T, C, size, size]`` in 0–255.
    """
    frames = frames.numpy() if isinstance(frames, torch.Tensor) else frames
    if frames.dtype != np.uint8 or frames.ndim != 4:
        raise ValueError(f"expected uint8 frames [T, H, W, C], got {frames.dtype} {frames.shape}")
    resized = crop_resize_uint8(frames, geometry, size)
    return torch.from_numpy(resized).permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)


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


_LUMA = np.array([0.299, 0.587, 0.114])
_GRAY = np.outer(np.ones(3), _LUMA)  # RGB -> gray in all three channels
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)
_JITTERS = ("brightness", "contrast", "saturation", "hue")


def _hue_rotations(shifts: np.ndarray) -> np.ndarray:
    """``[N, 3, 3]`` RGB matrices rotating the hue by ``shifts`` ``[N]`` turns (rotations of the IQ chroma plane)."""
    cos, sin = np.cos(2 * np.pi * shifts), np.sin(2 * np.pi * shifts)
    rotation = np.zeros((len(shifts), 3, 3))
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2], rotation[:, 2, 1], rotation[:, 2, 2] = cos, -sin, sin, cos
    return _YIQ_TO_RGB @ rotation @ _RGB_TO_YIQ


def apply_colour_transform(clip: torch.Tensor, matrix: np.ndarray, offset: np.ndarray) -> torch.Tensor:
    """``matrix @ rgb + offset`` at every pixel of a float ``[T, 3, H, W]`` clip, clamped to 0–1."""
    m, b = torch.as_tensor(matrix, dtype=clip.dtype), torch.as_tensor(offset, dtype=clip.dtype)
    out = torch.einsum("ij,tjhw->tihw", m, clip) + b.view(1, 3, 1, 1)
    return out.clamp_(0, 1)


def random_colour_transforms(
    rng: np.random.Generator,
    mean_rgb: np.ndarray | torch.Tensor,
    brightness: float = 0.5,
    contrast: float = 0.5,
    saturation: float = 0.5,
    hue: float = 0.25,
    gray_prob: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Independent colour-jitter draws (factors and random order, as torchvision's ColorJitter), each
    followed by a random grayscale, as affine maps ``rgb -> matrix @ rgb + offset``: one per row of ``mean_rgb``.

    Brightness, contrast, saturation, hue and grayscale are all affine in RGB, so composing them
    into one 3×3 matrix lets an image or a clip be transformed in one pass (torchvision's float HSV
    round trip per step costs ~15× more on a clip). Hue rotates the chroma plane of YIQ rather
    than HSV's hexcone, and only the final result is clamped. The draws and the composition are
    vectorised over the maps, so a draw per frame costs about as much as one per clip.

    Args:
        rng: the sample's random generator.
        mean_rgb: ``[N, 3]`` mean colour (0–1) of each image the maps are for: the pivot of its contrast change.
        brightness, contrast, saturation: factors are drawn from ``[1 - x, 1 + x]``.
        hue: the shift is drawn from ``[-hue, hue]`` turns (at most 0.5).
        gray_prob: probability that an image ends up gray.

    Returns:
        ``matrices`` ``[N, 3, 3]`` and ``offsets`` ``[N, 3]`` (float64), for :func:`apply_colour_transform`.
    """
    mean = np.asarray(mean_rgb, dtype=np.float64).reshape(-1, 3)
    n = len(mean)
    factor = {
        "brightness": rng.uniform(max(0.0, 1 - brightness), 1 + brightness, n),
        "contrast": rng.uniform(max(0.0, 1 - contrast), 1 + contrast, n),
        "saturation": rng.uniform(max(0.0, 1 - saturation), 1 + saturation, n),
        "hue": rng.uniform(-hue, hue, n),
    }
    order = rng.permuted(np.tile(np.arange(4), (n, 1)), axis=1)  # each map's own order of the four jitters
    eye = np.broadcast_to(np.eye(3), (n, 3, 3))
    steps = np.stack([  # [4, N, 3, 3] in _JITTERS order
        factor["brightness"][:, None, None] * eye,
        factor["contrast"][:, None, None] * eye,
        factor["saturation"][:, None, None] * eye + (1 - factor["saturation"])[:, None, None] * _GRAY,
        _hue_rotations(factor["hue"]),
    ])
    rows = np.arange(n)
    matrix, offset = np.array(eye), np.zeros((n, 3))
    for position in range(4):
        jitter = order[:, position]
        step = steps[jitter, rows]
        # Contrast blends with each image's mean gray level as it is at this point of its chain.
        gray_level = ((matrix @ mean[:, :, None])[..., 0] + offset) @ _LUMA
        shift = np.where(jitter == _JITTERS.index("contrast"), (1 - factor["contrast"]) * gray_level, 0.0)
        matrix, offset = step @ matrix, (step @ offset[:, :, None])[..., 0] + shift[:, None]
    gray = rng.random(n) < gray_prob
    matrix[gray], offset[gray] = _GRAY @ matrix[gray], offset[gray] @ _GRAY.T
    return matrix, offset


def random_colour_transform(rng: np.random.Generator, mean_rgb: np.ndarray | torch.Tensor, *args: float, **kwargs: float
                            ) -> tuple[np.ndarray, np.ndarray]:
    """One draw of :func:`random_colour_transforms` for an image or clip of mean colour ``mean_rgb`` ``[3]``:
    ``matrix`` ``[3, 3]`` and ``offset`` ``[3]``."""
    matrices, offsets = random_colour_transforms(rng, mean_rgb, *args, **kwargs)
    return matrices[0], offsets[0]


def hflip_uint8(clip: np.ndarray, view: View) -> np.ndarray:
    """Mirror uint8 ``[T, H, W, C]`` frames left-right, sign- and channel-correct for ``view``.

    The x displacement of flow is negated in its stored coding (:func:`utils.layout.negate_encoded_flow`).
    """
    t, h, w, c = clip.shape
    # One OpenCV flip of the frames stacked as a tall image is ~50x numpy's reversed-stride copy.
    flipped = cv2.flip(np.ascontiguousarray(clip).reshape(t * h, w, c), 1).reshape(t, h, w, c)
    if view.flip_channels is not None:
        flipped = flipped[..., list(view.flip_channels)]
    if view.is_flow:
        negate_encoded_flow(flipped[..., 0])
    return flipped


def clip_mean_rgb(clip: np.ndarray, bgr: bool = False) -> np.ndarray:
    """``[3]`` mean colour (RGB order, 0–1) of uint8 ``[T, H, W, 3]`` frames."""
    t, h, w, _ = clip.shape
    mean = np.array(cv2.mean(clip.reshape(t * h, w, 3))[:3]) / 255
    return mean[::-1].copy() if bgr else mean


def frame_mean_rgb(clip: np.ndarray, bgr: bool = False) -> np.ndarray:
    """``[T, 3]`` mean colour (RGB order, 0–1) of each of uint8 ``[T, H, W, 3]`` frames."""
    # One cv2.mean per frame is ~50x numpy's mean over an axis of uint8 (a float64 copy first).
    means = np.array([cv2.mean(frame)[:3] for frame in clip]) / 255
    return means[:, ::-1].copy() if bgr else means


def _affine_uint8(matrix: np.ndarray, offset: np.ndarray, bgr: bool) -> np.ndarray:
    """The ``3 × 4`` OpenCV map of ``rgb -> matrix @ rgb + offset`` on 0–255 pixels (BGR in with ``bgr``)."""
    m = np.asarray(matrix, dtype=np.float64)
    if bgr:
        m = m[:, ::-1]
    return np.concatenate([m, 255 * np.asarray(offset, dtype=np.float64)[:, None]], axis=1)


def apply_colour_transform_uint8(
    clip: np.ndarray, matrix: np.ndarray, offset: np.ndarray, bgr: bool = False
) -> np.ndarray:
    """:func:`apply_colour_transform` on uint8 ``[T, H, W, 3]`` frames; returns RGB uint8.

    OpenCV applies the 3×4 map per pixel and saturates to 0–255, which is the float pipeline's
    clamp to 0–1; the rounding to whole levels is below the JPEG's own error.

    Args:
        clip: uint8 frames, RGB or (``bgr``) BGR as OpenCV decodes them.
        matrix, offset: the map of :func:`random_colour_transform` (on 0–1 RGB).
        bgr: the input channels are BGR; the output is RGB either way.
    """
    t, h, w, _ = clip.shape
    return cv2.transform(np.ascontiguousarray(clip).reshape(t * h, w, 3), _affine_uint8(matrix, offset, bgr)).reshape(t, h, w, 3)


def jitter_colours_uint8(clip: np.ndarray, rng: np.random.Generator, colour_jitter: str = "frame", bgr: bool = False) -> np.ndarray:
    """Random colour jitter and grayscale of uint8 ``[T, H, W, 3]`` frames, RGB out.

    Args:
        clip: the frames.
        rng: the sample's generator.
        colour_jitter: ``"frame"``: a draw per frame (the original's); ``"clip"``: one for all.
        bgr: the input channels are BGR.
    """
    if colour_jitter not in COLOUR_JITTER_MODES:
        raise ValueError(f"--colour_jitter must be one of {COLOUR_JITTER_MODES}, got {colour_jitter!r}")
    if colour_jitter == "clip":
        return apply_colour_transform_uint8(clip, *random_colour_transform(rng, clip_mean_rgb(clip, bgr)), bgr=bgr)
    clip = np.ascontiguousarray(clip)
    matrices, offsets = random_colour_transforms(rng, frame_mean_rgb(clip, bgr))
    out = np.empty_like(clip)
    for frame, matrix, offset, dst in zip(clip, matrices, offsets, out):
        cv2.transform(frame, _affine_uint8(matrix, offset, bgr), dst=dst)
    return out


def augment_uint8(
    clip: np.ndarray, view: View, flip: bool, rng: np.random.Generator | None = None, bgr: bool = False,
    colour_jitter: str = "frame",
) -> np.ndarray:
    """Flip and RGB photometrics on small uint8 ``[T, S, S, C]`` frames; RGB views come out RGB.

    Args:
        clip: cropped and resized frames (:func:`crop_resize_uint8`).
        view: the view (see :func:`transform_view`).
        flip: mirror left-right.
        rng: the sample's generator for photometric draws; ``None`` for evaluation.
        bgr: an RGB view's channels are BGR, as OpenCV decodes them.
        colour_jitter: photometric draws per ``"frame"`` or per ``"clip"`` (:func:`jitter_colours_uint8`).
    """
    if flip:
        clip = hflip_uint8(clip, view)
    if not view.is_rgb:
        return clip
    if rng is not None:
        return jitter_colours_uint8(clip, rng, colour_jitter, bgr)
    if bgr:
        t, h, w, _ = clip.shape
        return cv2.cvtColor(np.ascontiguousarray(clip).reshape(t * h, w, 3), cv2.COLOR_BGR2RGB).reshape(t, h, w, 3)
    return clip


def _float_affine(view: View, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(scale, shift)`` with ``float = uint8 · scale - shift`` for ``view``."""
    if view.is_rgb:
        std, mean = torch.tensor(IMAGENET_STD), torch.tensor(IMAGENET_MEAN)
        return 1 / (255 * std), mean / std
    shift = FLOW_ZERO / 255 if view.is_flow else 0.0
    return torch.full((channels,), 1 / 255), torch.full((channels,), shift)


def to_blocks_uint8(clip: np.ndarray, seq_len: int | None = None) -> torch.Tensor:
    """uint8 ``[T, S, S, C]`` frames channels-first, as the loaders hand them over.

    Args:
        clip: the frames.
        seq_len: cut the frames into blocks of ``seq_len``.

    Returns:
        uint8 ``[T/SL, C, SL, S, S]`` with ``seq_len``, else ``[T, C, S, S]``.
    """
    t, h, w, c = clip.shape
    if seq_len is None:
        return torch.from_numpy(np.ascontiguousarray(clip.transpose(0, 3, 1, 2)))
    return torch.from_numpy(np.ascontiguousarray(clip.reshape(t // seq_len, seq_len, h, w, c).transpose(0, 4, 1, 2, 3)))


def normalise_input(x: torch.Tensor, view: View, channel_dim: int = -4) -> torch.Tensor:
    """The one conversion of the pipeline: uint8 pixels to the float the encoder takes.

    RGB: ImageNet-normalised; flow: about [-0.5, 0.5] (128 = no motion); other views: 0–1. Loaders
    hand over uint8, a quarter of float32's bytes through the workers' shared memory and to a GPU;
    the conversion runs on ``x``'s device (see :func:`model_input`).

    Args:
        x: uint8 pixels, RGB order for RGB views.
        view: the view.
        channel_dim: the dimension of the channels (``-4`` in blocks ``[..., C, SL, S, S]``).

    Raises:
        TypeError: ``x`` is not uint8.
    """
    if x.dtype != torch.uint8:
        raise TypeError(f"expected uint8 {view.name} pixels as the loaders return them, got {x.dtype}")
    scale, shift = _float_affine(view, x.shape[channel_dim])
    shape = [1] * x.dim()
    shape[channel_dim] = -1
    # One multiply-add, rounded once: bit for bit the float32 of the earlier OpenCV conversion (cv2.addWeighted),
    # so runs repeat the published figures; a multiply then a subtract differs in the last bit for most pixels.
    return torch.addcmul(-shift.to(x.device).view(shape), x.float(), scale.to(x.device).view(shape))


def model_input(x: torch.Tensor, view: str, device: torch.device | str) -> torch.Tensor:
    """A loader's uint8 blocks ``[..., C, SL, S, S]`` of ``view`` moved to ``device``, then made float there."""
    return normalise_input(x.to(device, non_blocking=True), VIEWS[view])


def transform_view(
    clip: torch.Tensor | np.ndarray,
    view: View,
    geometry: ClipGeometry,
    size: int,
    rng: np.random.Generator | None = None,
    colour_jitter: str = "frame",
) -> torch.Tensor:
    """The whole per-view pipeline: crop/resize, flip, RGB photometrics (all uint8), then to float.

    Args:
        clip: uint8 ``[T, H, W, C]`` as stored on disk, RGB order (flow: 128 = no motion).
        view: the view (flow maps to about [-0.5, 0.5]; RGB gets colour augmentation and
            ImageNet normalisation; the flip is sign- and channel-correct for every view).
        geometry: the sample's crop box and flip, shared by all its views.
        size: output side in pixels.
        rng: the sample's generator for photometric draws; ``None`` for evaluation.
        colour_jitter: photometric draws per ``"frame"`` or per ``"clip"``.

    Returns:
        float32 ``[T, C, size, size]``.
    """
    frames = clip.numpy() if isinstance(clip, torch.Tensor) else clip
    if frames.dtype != np.uint8 or frames.ndim != 4:
        raise ValueError(f"expected uint8 frames [T, H, W, C], got {frames.dtype} {frames.shape}")
    small = crop_resize_uint8(frames, geometry, size)
    augmented = augment_uint8(small, view, geometry.flip, rng, colour_jitter=colour_jitter)
    return normalise_input(to_blocks_uint8(augmented), view, channel_dim=-3)  # [T, C, size, size]
