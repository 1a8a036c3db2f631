"""Rendering of the `kphm` and `seg` views: COCO joint heatmaps, person masks, BlazePose to COCO joints.

Keypoints are stored normalised: x and y in [0, 1] of the frame width and height, so they do not
depend on the resolution the frames were resized to. Pixel `i` covers [i, i + 1) / size, so its
centre is at (i + 0.5) / size (torchvision's keypoint R-CNN uses the same convention).
"""
import cv2
import numpy as np

from utils.keypoints import COCO_KEYPOINTS

# The BlazePose landmark (MediaPipe Pose, 33 landmarks) of each COCO joint, in COCO_KEYPOINTS order:
# nose 0, eyes 2 and 5 (BlazePose's eye centres), ears 7 and 8, shoulders 11-12, elbows 13-14,
# wrists 15-16, hips 23-24, knees 25-26, ankles 27-28.
BLAZEPOSE_TO_COCO = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)


def coco_from_blazepose(landmarks: np.ndarray, min_visibility: float, min_joints: int) -> np.ndarray:
    """The COCO keypoints of one BlazePose person, or none when the person is too uncertain.

    A joint is visible when its BlazePose visibility reaches `min_visibility`; invisible joints leave no
    mark on the heatmaps. The person is kept when at least `min_joints` of its 17 COCO joints are visible
    (a head-and-shoulders close-up has 7, a whole body up to 17).

    Args:
        landmarks: `[33, 4]` BlazePose landmarks (x, y normalised to [0, 1], z, visibility in [0, 1]).
        min_visibility: visibility a joint needs, in [0, 1].
        min_joints: visible joints a person needs.
    Returns:
        `[1, 17, 3]` (x, y, visible 0/1) for a kept person, `[0, 17, 3]` otherwise.
    """
    landmarks = np.asarray(landmarks, dtype=np.float32)
    if landmarks.shape != (33, 4):
        raise ValueError(f"BlazePose landmarks must have shape [33, 4], got {landmarks.shape}")
    joints = landmarks[list(BLAZEPOSE_TO_COCO)]
    visible = (joints[:, 3] >= min_visibility).astype(np.float32)
    if visible.sum() < min_joints:
        return np.zeros((0, len(COCO_KEYPOINTS), 3), np.float32)
    return np.stack([joints[:, 0], joints[:, 1], visible], axis=1)[None]


def render_heatmaps(keypoints: np.ndarray, height: int, width: int, sigma: float) -> np.ndarray:
    """Render one Gaussian per visible joint, the maximum over people, as uint8 (255 = 1.0).

    Args:
        keypoints: `[P, 17, 3]` (x, y normalised to [0, 1], visibility); P may be 0. A joint with
            visibility <= 0 leaves no mark.
        height: output height in pixels.
        width: output width in pixels.
        sigma: standard deviation of the Gaussians, in output pixels.
    Returns:
        `[17, height, width]` uint8.
    """
    keypoints = np.asarray(keypoints, dtype=np.float32)
    if keypoints.ndim != 3 or keypoints.shape[1:] != (len(COCO_KEYPOINTS), 3):
        raise ValueError(f"keypoints must have shape [P, 17, 3], got {keypoints.shape}")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    if keypoints.shape[0] == 0:
        return np.zeros((len(COCO_KEYPOINTS), height, width), np.uint8)
    px = keypoints[..., 0:1] * width  # [P, 17, 1] in pixel units
    py = keypoints[..., 1:2] * height
    gx = np.exp(-((np.arange(width, dtype=np.float32) + 0.5) - px) ** 2 / (2 * sigma**2))  # [P, 17, W]
    gy = np.exp(-((np.arange(height, dtype=np.float32) + 0.5) - py) ** 2 / (2 * sigma**2))  # [P, 17, H]
    gy = gy * (keypoints[..., 2:3] > 0)
    maps = np.einsum("pkh,pkw->pkhw", gy, gx).max(axis=0)  # [17, H, W]
    return np.rint(maps * 255).astype(np.uint8)


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a person mask or probability map to `height` x `width`, as uint8 (255 = person).

    Shrinking averages pixels (soft edges), enlarging interpolates linearly.

    Args:
        mask: `[H, W]` with values in [0, 1] (bool, 0/1 integers or probabilities).
        height: output height in pixels.
        width: output width in pixels.
    Returns:
        `[height, width]` uint8.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must have shape [H, W], got {mask.shape}")
    mask = mask.astype(np.float32)
    if mask.size and (mask.min() < 0 or mask.max() > 1):
        raise ValueError(f"mask values must lie in [0, 1], got [{mask.min()}, {mask.max()}]")
    shrinking = height * width < mask.shape[0] * mask.shape[1]
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    resized = cv2.resize(mask, (width, height), interpolation=interp)
    return np.rint(np.clip(resized, 0, 1) * 255).astype(np.uint8)
