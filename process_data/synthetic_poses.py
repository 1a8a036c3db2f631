"""The synthetic dataset's actions: joint trajectories of a stick figure, in body units.

Each action is a function of time and of per-video motion nuisances (:class:`Motion`); the class
is carried by the motion alone. Angles are absolute (0 points down, positive turns towards the image's
right), coordinates are in units of the body scale B with y down and the origin at the initial hip
centre. The right-hand classes of the mirror pairs are the left-hand poses mirrored.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from utils.keypoints import FLIP_PERMUTATION

ACTIONS = (
    "wave_left_arm", "wave_right_arm", "both_arms_up_down", "squat", "kick_left", "kick_right",
    "walk_left", "walk_right", "jump", "clap",
)

# Body proportions in units of the body scale B (hip centre to head top is about 0.5 B).
_TORSO, _NECK, HEAD_R = 0.30, 0.12, 0.075
_SHOULDER_W, _HIP_W = 0.10, 0.06
_UPPER_ARM, _FOREARM, _THIGH, _SHIN = 0.15, 0.14, 0.22, 0.22


@dataclass
class Motion:
    """Per-video motion nuisances: period (frames), phase (radians), amplitude scale, walking distance (B units)."""
    period: float
    phase: float
    amp: float
    travel: float


def _direction(phi: np.ndarray) -> np.ndarray:
    return np.stack([np.sin(phi), np.cos(phi)], axis=-1)  # [T, 2]


def _assemble(root, lean, arm_l, arm_r, leg_l, leg_r) -> np.ndarray:
    """Joint positions [T, 17, 2] from the root [T, 2], torso lean [T] and (upper, lower) limb angles."""
    up = np.stack([np.sin(lean), -np.cos(lean)], axis=-1)
    across = np.stack([np.cos(lean), np.sin(lean)], axis=-1)  # towards the person's left
    shoulder_c = root + _TORSO * up
    head = shoulder_c + _NECK * up
    shoulder_l, shoulder_r = shoulder_c + _SHOULDER_W * across, shoulder_c - _SHOULDER_W * across
    hip_l, hip_r = root + _HIP_W * across, root - _HIP_W * across
    elbow_l = shoulder_l + _UPPER_ARM * _direction(arm_l[0])
    elbow_r = shoulder_r + _UPPER_ARM * _direction(arm_r[0])
    knee_l = hip_l + _THIGH * _direction(leg_l[0])
    knee_r = hip_r + _THIGH * _direction(leg_r[0])
    r = HEAD_R
    joints = [
        head - 0.2 * r * up,  # nose
        head + 0.35 * r * across + 0.15 * r * up, head - 0.35 * r * across + 0.15 * r * up,  # eyes
        head + 0.9 * r * across, head - 0.9 * r * across,  # ears
        shoulder_l, shoulder_r, elbow_l, elbow_r,
        elbow_l + _FOREARM * _direction(arm_l[1]), elbow_r + _FOREARM * _direction(arm_r[1]),
        hip_l, hip_r, knee_l, knee_r,
        knee_l + _SHIN * _direction(leg_l[1]), knee_r + _SHIN * _direction(leg_r[1]),
    ]
    return np.stack(joints, axis=1)


def _side(theta_upper, theta_lower, side: int):
    """Angles measured outwards from the body for one side (+1 = person's left) -> absolute angles."""
    return side * np.asarray(theta_upper), side * np.asarray(theta_lower)


def _idle_arm(c, side):
    sway = 0.15 + 0.05 * np.sin(c)
    return _side(sway, sway + 0.1, side)


def _idle_leg(c, side):
    stance = np.full_like(c, 0.05)
    return _side(stance, stance, side)


def _leg_ik(hip_y, side):
    """Thigh and shin angles that keep the ankle on the floor below a hip lowered by hip_y."""
    ankle = np.array([side * (_HIP_W + 0.03), _THIGH + _SHIN])
    vx = ankle[0] - side * _HIP_W
    vy = ankle[1] - hip_y
    alpha = np.arctan2(vx, vy)
    beta = np.arccos(np.clip(np.hypot(vx, vy) / (_THIGH + _SHIN), -1, 1))  # knees bend outwards
    return alpha + side * beta, alpha - side * beta


def _pose_wave_left_arm(t, m):
    c = 2 * np.pi * t / m.period + m.phase
    arm_l = _side(2.3 + 0.1 * np.sin(c), np.pi + 0.6 * m.amp * np.sin(c), +1)
    root = np.zeros((len(t), 2))
    return _assemble(root, 0.03 * np.sin(c), arm_l, _idle_arm(c, -1), _idle_leg(c, +1), _idle_leg(c, -1))


def _pose_both_arms_up_down(t, m):
    c = 2 * np.pi * t / m.period + m.phase
    raise_ = 0.2 + 2.4 * m.amp * (1 - np.cos(c)) / 2
    root = np.zeros((len(t), 2))
    arms = [_side(raise_, raise_ + 0.1, s) for s in (+1, -1)]
    return _assemble(root, np.zeros(len(t)), *arms, _idle_leg(c, +1), _idle_leg(c, -1))


def _pose_squat(t, m):
    c = 2 * np.pi * t / m.period + m.phase
    depth = (1 - np.cos(c)) / 2
    hip_y = 0.15 * m.amp * depth
    root = np.stack([np.zeros(len(t)), hip_y], axis=-1)
    arms = [_side(0.2 + 1.2 * depth, 0.3 + 1.3 * depth, s) for s in (+1, -1)]
    return _assemble(root, np.zeros(len(t)), *arms, _leg_ik(hip_y, +1), _leg_ik(hip_y, -1))


def _pose_kick_left(t, m):
    c = 2 * np.pi * t / m.period + m.phase
    kick = np.maximum(0, np.sin(c)) ** 2
    leg_l = _side(0.05 + 1.2 * m.amp * kick, 0.05 + 0.9 * m.amp * kick, +1)
    arms = [_side(0.3 + 0.6 * kick, 0.4 + 0.6 * kick, s) for s in (+1, -1)]
    root = np.zeros((len(t), 2))
    return _assemble(root, -0.15 * kick, *arms, leg_l, _idle_leg(c, -1))


def _pose_walk_left(t, m):
    c = 2 * np.pi * t / m.period + m.phase
    heading = -1.0  # towards the image's left
    swing = 0.45 * m.amp * np.sin(c)
    thigh_l, thigh_r = heading * swing, -heading * swing
    # The swinging leg's shin trails behind the knee.
    leg_l = (thigh_l, thigh_l - heading * 0.6 * np.maximum(0, np.cos(c)))
    leg_r = (thigh_r, thigh_r - heading * 0.6 * np.maximum(0, -np.cos(c)))
    arm_l = (-0.7 * thigh_l + 0.15, -0.7 * thigh_l + 0.15 + heading * 0.3)
    arm_r = (-0.7 * thigh_r - 0.15, -0.7 * thigh_r - 0.15 + heading * 0.3)
    x = heading * m.travel * t / max(t[-1], 1)
    root = np.stack([x, -0.015 * np.abs(np.cos(c))], axis=-1)
    return _assemble(root, np.zeros(len(t)), arm_l, arm_r, leg_l, leg_r)


def _pose_jump(t, m):
    c = np.pi * t / m.period + m.phase
    air = np.abs(np.sin(c))  # one hop per period, landing at the zeros
    root = np.stack([np.zeros(len(t)), -0.1 * m.amp * air], axis=-1)
    arms = [_side(0.3 + 2.2 * air, 0.4 + 2.2 * air, s) for s in (+1, -1)]
    legs = [_side(0.05 + 0.35 * air, 0.05 - 0.25 * air, s) for s in (+1, -1)]
    return _assemble(root, np.zeros(len(t)), *arms, *legs)


def _pose_clap(t, m):
    c = 2 * np.pi * t / m.period + m.phase
    together = (1 - np.cos(c)) / 2  # 1 = hands meet in front of the chest
    arms = [_side(0.5 - 0.75 * together, 2.6 + 1.0 * together, s) for s in (+1, -1)]
    root = np.zeros((len(t), 2))
    return _assemble(root, 0.02 * np.sin(c), *arms, _idle_leg(c, +1), _idle_leg(c, -1))


def _mirror(joints: np.ndarray) -> np.ndarray:
    mirrored = joints[:, list(FLIP_PERMUTATION)].copy()
    mirrored[..., 0] *= -1
    return mirrored


_POSES = {
    "wave_left_arm": _pose_wave_left_arm,
    "wave_right_arm": lambda t, m: _mirror(_pose_wave_left_arm(t, m)),
    "both_arms_up_down": _pose_both_arms_up_down,
    "squat": _pose_squat,
    "kick_left": _pose_kick_left,
    "kick_right": lambda t, m: _mirror(_pose_kick_left(t, m)),
    "walk_left": _pose_walk_left,
    "walk_right": lambda t, m: _mirror(_pose_walk_left(t, m)),
    "jump": _pose_jump,
    "clap": _pose_clap,
}


def pose_trajectory(action: str, frames: int, motion: Motion) -> np.ndarray:
    """Joint positions of `action` in body units (y down, origin at the initial hip centre).

    Args:
        action: one of ACTIONS.
        frames: number of frames T.
        motion: period, phase, amplitude and walking distance.
    Returns:
        `[T, 17, 2]` float64.
    """
    if action not in _POSES:
        raise ValueError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
    return _POSES[action](np.arange(frames, dtype=np.float64), motion)
