"""Rendering one synthetic video: the figure drawn over a cluttered scene, with its nuisances.

Everything an RGB encoder could latch on to is drawn here, independent of the class: body size and
place, clothing colours, a textured background with random shapes, a ball, a slow camera pan and a
brightness drift. The look (figure size and place, background, clothes, the ball's size, colour and
place) comes from one random stream, the per-clip nuisances from another, so that videos can share a
scene (see ``process_data/make_synthetic.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from process_data.synthetic_poses import HEAD_R, Motion, pose_trajectory

_SHIFT = 4  # cv2 drawing with 4 fractional bits, so slow motion moves smoothly
# Defaults: a period of 16-32 frames and a figure 0.55-0.72 of the frame tall, so that between the
# blocks of a clip (8 frames apart at 4 frames of stride 2) the pose visibly changes at a 64-px input:
# the joints of the blocks' mean poses move about 1.9 px there (0.5 px with the earlier 10-24 frames,
# 0.4-0.65 of the frame, at 32 px), and a block spans a quarter to half a period, not most of one.
PERIOD = (16.0, 32.0)
BODY_SIZE = (0.55, 0.72)


def _random_colour(rng: np.random.Generator, sat=(0.0, 1.0), val=(0.0, 1.0)) -> tuple[int, int, int]:
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]], np.uint8)
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def _make_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A static cluttered background [size, size, 3]: gradient + smooth noise texture + random shapes."""
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    along = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
    along = (along - along.min()) / max(np.ptp(along), 1e-6)
    c0, c1 = (np.array(_random_colour(rng), np.float32) for _ in range(2))
    gradient = c0 + along[..., None] * (c1 - c0)
    cells = int(rng.integers(3, 9))
    # Low-contrast texture around mid-grey: clutter that changes with the video, not a camouflage
    # that hides the figure's limbs once a frame is shrunk to the encoders' 32-64 px.
    texture = 128 + rng.uniform(-1, 1, (cells, cells, 3)).astype(np.float32) * 255 * rng.uniform(0.1, 0.35)
    texture = cv2.resize(texture, (size, size), interpolation=cv2.INTER_CUBIC)
    grain = rng.normal(0, rng.uniform(0, 12), (size, size, 1)).astype(np.float32)
    mix = rng.uniform(0.2, 0.8)
    img = np.clip(mix * gradient + (1 - mix) * texture + grain, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(2, 7))):
        _random_shape(rng, img)
    return img


def _random_shape(rng: np.random.Generator, img: np.ndarray) -> None:
    size = img.shape[0]
    colour = _random_colour(rng)
    p = rng.uniform(0, size, 2).astype(int)
    extent = int(rng.uniform(0.05, 0.25) * size) + 1
    kind = rng.integers(4)
    if kind == 0:
        q = p + rng.integers(-extent, extent + 1, 2)
        cv2.rectangle(img, tuple(int(v) for v in p), tuple(int(v) for v in q), colour, -1)
    elif kind == 1:
        cv2.circle(img, tuple(int(v) for v in p), extent // 2 + 1, colour, -1)
    elif kind == 2:
        q = p + rng.integers(-2 * extent, 2 * extent + 1, 2)
        thick = int(rng.integers(1, max(2, size // 32) + 1))
        cv2.line(img, tuple(int(v) for v in p), tuple(int(v) for v in q), colour, thick)
    else:
        pts = (p + rng.integers(-extent, extent + 1, (int(rng.integers(3, 6)), 2))).astype(np.int32)
        cv2.fillPoly(img, [pts], colour)


@dataclass
class _Style:
    skin: tuple
    shirt: tuple
    sleeve: tuple
    trousers: tuple
    outline: tuple
    thickness: int


def _sample_style(rng: np.random.Generator, background: np.ndarray, scale: float) -> _Style:
    skin = _random_colour(rng, sat=(0.2, 0.7), val=(0.3, 1.0))
    shirt = _random_colour(rng, sat=(0.4, 1.0), val=(0.4, 1.0))
    trousers = _random_colour(rng, sat=(0.3, 1.0), val=(0.3, 1.0))
    sleeve = shirt if rng.random() < 0.5 else skin
    bright = background.mean() > 110  # outline contrasts with the background, whatever the class
    outline = tuple(int(v) for v in (rng.integers(0, 40, 3) if bright else rng.integers(215, 256, 3)))
    return _Style(skin, shirt, sleeve, trousers, outline, max(2, int(round(0.11 * scale))))


# Lines of the figure, back to front: (joint a, joint b, garment); the torso and head go in between.
_LEGS = ((11, 13, "trousers"), (13, 15, "trousers"), (12, 14, "trousers"), (14, 16, "trousers"))
_ARMS = ((5, 7, "shirt"), (7, 9, "sleeve"), (6, 8, "shirt"), (8, 10, "sleeve"))


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.rint(points * (1 << _SHIFT)).astype(np.int32)


def _figure_parts(joints: np.ndarray, style: _Style) -> list[list[tuple]]:
    """Per frame, the drawing primitives back to front: (kind, fixed-point points, colour, size in pixels)."""
    head = (joints[:, 3] + joints[:, 4]) / 2
    head_r = np.linalg.norm(joints[:, 3] - joints[:, 4], axis=-1) / 1.8
    neck = (joints[:, 5] + joints[:, 6]) / 2
    points = _fixed(np.concatenate([joints, head[:, None], neck[:, None]], axis=1)).tolist()  # [T, 19, 2]
    torso = np.ascontiguousarray(_fixed(joints[:, [5, 6, 12, 11]]))  # cv2 needs contiguous points
    th = style.thickness
    parts = []
    for i, p in enumerate(points):
        p = [tuple(q) for q in p]
        frame = [("line", (p[a], p[b]), getattr(style, garment), th) for a, b, garment in _LEGS]
        frame.append(("poly", torso[i], style.shirt, 0))
        frame.append(("line", (p[18], p[17]), style.skin, th))
        frame += [("line", (p[a], p[b]), getattr(style, garment), th) for a, b, garment in _ARMS]
        frame.append(("circle", (p[17],), style.skin, head_r[i]))
        parts.append(frame)
    return parts


def _draw(img: np.ndarray, kind: str, pts, colour, size: float, grow: int) -> None:
    """Draw one primitive; `grow` pixels wider for the outline and the mask."""
    if kind == "line":
        cv2.line(img, pts[0], pts[1], colour, int(size) + grow, cv2.LINE_AA, _SHIFT)
    elif kind == "poly":
        cv2.fillConvexPoly(img, pts, colour, cv2.LINE_AA, _SHIFT)
        if grow:
            cv2.polylines(img, [pts], True, colour, grow, cv2.LINE_AA, _SHIFT)
    else:
        radius = int(round((size + grow / 2) * (1 << _SHIFT)))
        cv2.circle(img, pts[0], radius, colour, -1, cv2.LINE_AA, _SHIFT)


def _ball_track(rng: np.random.Generator, look: np.random.Generator, frames: int, size: int,
                max_speed: float = 0.04) -> tuple[np.ndarray, float]:
    """Centres [T, 2] of a ball bouncing off the canvas walls, and its radius.

    Args:
        rng: the video's stream: the ball's velocity.
        look: the stream of the video's look: the ball's size and starting place, so that a still ball
            is part of the scene rather than a mark that tells one clip of the scene from another.
        frames: T.
        size: canvas side in pixels.
        max_speed: top speed in canvas sides per frame (the speed is drawn in [max_speed / 4, max_speed]);
            0 leaves the ball still.
    """
    radius = look.uniform(0.04, 0.09) * size
    lo, hi = radius, size - radius
    pos = look.uniform(lo, hi, 2)
    speed = rng.uniform(max_speed / 4, max_speed) * size
    angle = rng.uniform(0, 2 * np.pi)
    vel = speed * np.array([np.cos(angle), np.sin(angle)])
    track = np.empty((frames, 2))
    for i in range(frames):
        track[i] = pos
        pos = pos + vel
        for axis in range(2):
            if not lo <= pos[axis] <= hi:
                vel[axis] = -vel[axis]
                pos[axis] = np.clip(pos[axis], lo, hi)
    return track, radius


# Periods in frames (2-6 s at 25 fps): a pan of at most `margin` pixels then moves the frame by at
# most 2 pi margin / 48 px per frame and axis (about 0.5 px at 128 px), typically 0.1-0.2 px.
_PAN_PERIODS = (48.0, 144.0)
_GAIN_PERIODS = (100.0, 250.0)


def _camera_pan(rng: np.random.Generator, frames: int, margin: int) -> np.ndarray:
    """Sub-pixel camera offsets [T, 2] (x, y) within [-margin, margin]: per axis, two slow sinusoids."""
    total = rng.uniform(0.3, 1.0) * margin
    weights = rng.uniform(0.2, 1.0, (2, 2))  # [axis, component]
    amplitude = total * weights / weights.sum(axis=1, keepdims=True)
    period = rng.uniform(*_PAN_PERIODS, (2, 2))
    phase = rng.uniform(0, 2 * np.pi, (2, 2))
    t = np.arange(frames, dtype=np.float64)[:, None, None]
    return (amplitude * np.sin(2 * np.pi * t / period + phase)).sum(axis=-1)  # [T, 2]


def _brightness_gain(rng: np.random.Generator, frames: int) -> np.ndarray:
    """Per-frame gain [T]: a slow sinusoid plus a linear drift, so the light never flickers."""
    t = np.arange(frames, dtype=np.float64)
    wave = rng.uniform(0, 0.2) * np.sin(2 * np.pi * t / rng.uniform(*_GAIN_PERIODS) + rng.uniform(0, 2 * np.pi))
    drift = rng.uniform(-0.004, 0.004) * (t - (frames - 1) / 2)
    return np.clip(1 + wave + drift, 0.5, 1.5)


def _view(canvas: np.ndarray, origin: np.ndarray, size: int) -> np.ndarray:
    """The `size` x `size` window of `canvas` whose top-left corner lies at sub-pixel `origin` (x, y)."""
    shift = np.array([[1, 0, origin[0]], [0, 1, origin[1]]], np.float64)
    return cv2.warpAffine(canvas, shift, (size, size), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)


def _place(joints: np.ndarray, rng: np.random.Generator, size: int,
           body_size: tuple[float, float]) -> tuple[float, np.ndarray]:
    """Random body scale (pixels per body unit, drawn in ``body_size`` × size) and hip offset keeping the
    figure inside the frame (up to 0.72 every action's largest extent, about 1.35 B, fits, so the body
    size never depends on the class)."""
    pad = HEAD_R + 0.05
    lo, hi = joints.reshape(-1, 2).min(0) - pad, joints.reshape(-1, 2).max(0) + pad
    scale = rng.uniform(*body_size) * size
    slack_lo, slack_hi = -lo * scale, size - hi * scale
    return scale, rng.uniform(slack_lo, np.maximum(slack_lo, slack_hi))


def render_video(action: str, rng: np.random.Generator, frames: int, size: int,
                 scene_rng: np.random.Generator | None = None, ball_speed: float = 0.04, drift: float = 1.0,
                 period: tuple[float, float] = PERIOD, body_size: tuple[float, float] = BODY_SIZE,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one synthetic video in memory.

    Args:
        action: one of ACTIONS.
        rng: the video's random stream (every nuisance not taken from `scene_rng` is drawn from it).
        frames: number of frames T.
        size: frame height and width in pixels.
        scene_rng: a fresh stream of the video's scene: the figure's size and place in the frame, the
            background, clothing colours and the ball's size, starting place, colour and depth are drawn
            from it, so videos given equal streams share their look.
            None: the look is drawn from `rng` (every video its own scene).
        ball_speed: the ball's top speed in frame sides per frame; 0 leaves it still.
        drift: scale of the camera pan and of the lighting drift (1: up to 3 % of the frame and 20 % of
            the brightness; 0: a fixed camera and a steady light). Both change slowly and independently of
            the class, so they tell one moment of a clip from the next without the figure.
        period: range of the motion's period in frames, drawn per video.
        body_size: range of the body scale (pixels per body unit, the figure about 1 unit tall) as a
            fraction of the frame side, drawn per scene.
    Returns:
        frames `[T, H, W, 3]` uint8 RGB, keypoints `[T, 17, 3]` float32 (x, y normalised,
        visibility 0/1), masks `[T, H, W]` uint8 (1 = person).
    """
    if frames < 1 or size < 16:
        raise ValueError(f"need frames >= 1 and size >= 16, got frames={frames}, size={size}")
    motion = Motion(period=rng.uniform(*period), phase=rng.uniform(0, 2 * np.pi),
                    amp=rng.uniform(0.8, 1.2), travel=rng.uniform(0.1, 0.25))
    body = pose_trajectory(action, frames, motion)
    margin = max(1, int(round(0.03 * size)))
    canvas = size + 2 * margin
    look = rng if scene_rng is None else scene_rng
    scale, offset = _place(body, look, size, body_size)  # a scene keeps its camera: the figure's size and spot
    joints = body * scale + offset + margin  # canvas pixels [T, 17, 2]
    background = _make_background(look, canvas)
    style = _sample_style(look, background, scale)
    ball, ball_r = _ball_track(rng, look, frames, canvas, ball_speed)
    ball_colour, ball_in_front = _random_colour(look, sat=(0.5, 1.0), val=(0.5, 1.0)), look.random() < 0.5
    origin = margin + drift * _camera_pan(rng, frames, margin)  # canvas position of each frame's top-left [T, 2]
    gain = 1 + drift * (_brightness_gain(rng, frames) - 1)

    # The figure and the ball are drawn straight into frame coordinates, with sub-pixel precision.
    joints = joints - origin[:, None, :]  # frame pixels [T, 17, 2]
    ball_centres = [(tuple(c),) for c in _fixed(ball - origin).tolist()]
    video = np.empty((frames, size, size, 3), np.uint8)
    masks = np.empty((frames, size, size), np.uint8)
    for i, figure in enumerate(_figure_parts(joints, style)):
        img, mask = _view(background, origin[i], size), np.zeros((size, size), np.uint8)
        ball_part = ("circle", ball_centres[i], ball_colour, ball_r)
        if not ball_in_front:
            _draw(img, *ball_part, grow=0)
        for kind, pts, colour, part_size in figure:
            _draw(img, kind, pts, style.outline, part_size, grow=2)
            _draw(img, kind, pts, colour, part_size, grow=0)
            _draw(mask, kind, pts, 255, part_size, grow=2)
        if ball_in_front:
            _draw(img, *ball_part, grow=0)
            _draw(mask, "circle", ball_centres[i], 0, ball_r, grow=0)
        video[i] = cv2.convertScaleAbs(img, alpha=float(gain[i]))
        masks[i] = mask >= 128

    xy = (joints + 0.5) / size  # cv2 pixel centres are integers
    visible = np.all((xy >= 0) & (xy < 1), axis=-1, keepdims=True)
    keypoints = np.concatenate([xy, visible], axis=-1).astype(np.float32)
    return video, keypoints, masks
