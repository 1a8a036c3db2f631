"""The backends of extract_features.py: what computes the keypoint heatmaps and person masks of a video.

- :class:`TorchvisionBackend`: Keypoint R-CNN and Mask R-CNN (ResNet-50 FPN, COCO), every person.
- :class:`MediapipeBackend`: MediaPipe Pose (BlazePose full and its segmentation), one person per frame.
- :class:`AnnotationBackend`: make_synthetic.py's ground-truth joints and masks.

Each yields, per sampled frame, heatmaps uint8 ``[17, h, w]`` and a mask uint8 ``[h, w]`` in the stored
encoding of :mod:`utils.layout`.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np

from process_data.keypoints import coco_from_blazepose, render_heatmaps, resize_mask
from utils.errors import UserError
from utils.keypoints import COCO_KEYPOINTS
from utils.layout import FRAMES

if TYPE_CHECKING:  # torch takes seconds to import; the annotations backend never needs it
    import torch
    from torchvision.models import WeightsEnum

PERSON_LABEL = 1  # COCO category id of "person" in torchvision's detection models


def read_rgb_frame(video_dir: Path, index: int, frame_hw: tuple[int, int]) -> np.ndarray:
    """Frame `index` of a video as RGB uint8 `[H, W, 3]`.

    Args:
        video_dir: the video's frame folder.
        index: 1-based frame index.
        frame_hw: the size every frame of the video must have (its first frame's).
    Raises:
        ValueError: the frame cannot be read or has another size.
    """
    path = video_dir / FRAMES.name(index)
    img = cv2.imread(str(path))
    if img is None:
        raise ValueError(f"cannot read frame {path}")
    if img.shape[:2] != tuple(frame_hw):
        raise ValueError(f"frame {path} is {img.shape[0]}x{img.shape[1]}, the video's first frame "
                         f"{frame_hw[0]}x{frame_hw[1]}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class Backend(Protocol):
    """Computes the heatmaps and masks of the sampled frames of one video."""

    def __call__(self, video_dir: Path, indices: list[int], frame_hw: tuple[int, int],
                 out_hw: tuple[int, int]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield (frame index, heatmaps uint8 [17, h, w], mask uint8 [h, w]) for each index."""


class AnnotationBackend:
    """Renders heatmaps and masks from make_synthetic's ground truth `<annotations>/<class>/<video>.npz`.

    Args:
        annotations: root of the annotation files.
        sigma: Gaussian standard deviation in output pixels.
    """

    def __init__(self, annotations: Path, sigma: float):
        self.annotations = Path(annotations)
        self.sigma = sigma

    def __call__(self, video_dir: Path, indices: list[int], frame_hw: tuple[int, int],
                 out_hw: tuple[int, int]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        path = self.annotations / video_dir.parent.name / f"{video_dir.name}.npz"
        if not path.is_file():
            raise FileNotFoundError(f"annotation {path} does not exist (expected <annotations>/<class>/<video>.npz)")
        with np.load(path) as ann:
            keypoints, masks = ann["keypoints"], ann["masks"]  # [T, 17, 3], [T, H, W]
        if max(indices) > len(keypoints):
            raise ValueError(f"{video_dir} has frame {max(indices)} but {path} annotates only {len(keypoints)} frames")
        ann_ratio, frame_ratio = masks.shape[2] / masks.shape[1], frame_hw[1] / frame_hw[0]
        if abs(ann_ratio / frame_ratio - 1) > 0.02:
            raise ValueError(f"{path} masks are {masks.shape[1]}x{masks.shape[2]} but the frames of {video_dir} "
                             f"are {frame_hw[0]}x{frame_hw[1]}; the aspect ratios differ")
        for i in indices:
            hm = render_heatmaps(keypoints[i - 1][None], *out_hw, self.sigma)
            yield i, hm, resize_mask(masks[i - 1], *out_hw)


class TorchvisionBackend:
    """Keypoint R-CNN heatmaps and Mask R-CNN person masks, computed on the frames in batches.

    Args:
        kp_model: torchvision keypointrcnn_resnet50_fpn, in eval mode on `device`.
        seg_model: torchvision maskrcnn_resnet50_fpn, in eval mode on `device`.
        device: torch device string.
        batch_size: frames per forward pass.
        score_thresh: minimum person score.
        sigma: Gaussian standard deviation in output pixels.
    """

    def __init__(self, kp_model: torch.nn.Module, seg_model: torch.nn.Module, device: str, batch_size: int,
                 score_thresh: float, sigma: float):
        self.kp_model, self.seg_model = kp_model, seg_model
        self.device, self.batch_size = device, batch_size
        self.score_thresh, self.sigma = score_thresh, sigma

    def __call__(self, video_dir: Path, indices: list[int], frame_hw: tuple[int, int],
                 out_hw: tuple[int, int]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        import torch  # imported here: seconds to load, and the annotations backend never needs it

        for model in (self.kp_model, self.seg_model):
            # Run at the frames' own resolution instead of upscaling small frames to 800 px.
            model.transform.min_size, model.transform.max_size = (min(frame_hw),), max(frame_hw)
        for start in range(0, len(indices), self.batch_size):
            batch_ids = indices[start:start + self.batch_size]
            images = [read_rgb_frame(video_dir, i, frame_hw) for i in batch_ids]
            with torch.inference_mode():
                batch = [torch.from_numpy(img).to(self.device).permute(2, 0, 1).float().div_(255) for img in images]
                kp_out, seg_out = self.kp_model(batch), self.seg_model(batch)
            for i, kp, seg in zip(batch_ids, kp_out, seg_out):
                yield i, self._heatmaps(kp, frame_hw, out_hw), self._mask(seg, out_hw)

    def _people(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """Boolean mask [P] of the confident person detections of one image."""
        return (out["labels"] == PERSON_LABEL) & (out["scores"] >= self.score_thresh)

    def _heatmaps(self, out: dict[str, torch.Tensor], frame_hw: tuple[int, int],
                  out_hw: tuple[int, int]) -> np.ndarray:
        kps = out["keypoints"][self._people(out)].float().cpu().numpy()  # [P, 17, 3] in frame pixels
        kps[..., 0] /= frame_hw[1]
        kps[..., 1] /= frame_hw[0]
        return render_heatmaps(kps, *out_hw, self.sigma)

    def _mask(self, out: dict[str, torch.Tensor], out_hw: tuple[int, int]) -> np.ndarray:
        probs = out["masks"][self._people(out), 0]  # [P, H, W] probabilities
        if len(probs) == 0:
            return np.zeros(out_hw, np.uint8)
        return resize_mask(probs.max(dim=0).values.float().cpu().numpy(), *out_hw)


MEDIAPIPE_VERSION = "0.10.21"  # the last release whose wheel ships the pose models and the `solutions` API
MEDIAPIPE_INSTALL = "pip install --no-deps -r requirements-mediapipe.txt"


class MediapipeMissing(UserError, ImportError):
    """mediapipe is not installed, or is a release without the pose solution and its models."""


def mediapipe_pose_module() -> ModuleType:
    """`mediapipe.solutions.pose`, MediaPipe's legacy Pose solution, or an error saying how to install it.

    Raises:
        MediapipeMissing: mediapipe is missing, or a release without `mediapipe.solutions.pose`.
    """
    os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ INFO/WARNING lines, one set per model
    try:
        import mediapipe
    except ImportError as exc:
        raise MediapipeMissing(f"--backend mediapipe needs mediapipe=={MEDIAPIPE_VERSION} ({exc}); install it "
                               f"with {MEDIAPIPE_INSTALL}") from exc
    pose = getattr(getattr(mediapipe, "solutions", None), "pose", None)
    if pose is None:
        version = getattr(mediapipe, "__version__", "?")
        raise MediapipeMissing(f"mediapipe {version} has no solutions.pose (later releases dropped it and ship no "
                               f"models); install mediapipe=={MEDIAPIPE_VERSION} with {MEDIAPIPE_INSTALL}")
    return pose


@contextlib.contextmanager
def native_stderr_muted() -> Iterator[None]:
    """Send what native code writes to file descriptor 2 to the null device for the block (Python's errors still raise)."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


class MediapipeBackend:
    """MediaPipe Pose (BlazePose full, whose models ship inside the mediapipe wheel): no download, CPU only.

    One person per frame (the most prominent): its 33 landmarks mapped to the 17 COCO joints
    (:data:`process_data.keypoints.BLAZEPOSE_TO_COCO`) and rendered like the other backends' heatmaps,
    and the pose model's own segmentation mask as the person mask. A frame with no detection, or whose
    person fails the visibility gate (:func:`process_data.keypoints.coco_from_blazepose`), gets empty
    heatmaps and an empty mask. A fresh model runs each video in tracking mode (sampled frames in
    order), so no state crosses videos and every worker process builds its own models.

    Args:
        min_confidence: MediaPipe's minimum detection and tracking confidence; below it nobody is found.
        min_visibility: visibility a joint needs to be drawn.
        min_joints: visible COCO joints a person needs; a person with fewer gets empty views.
        sigma: Gaussian standard deviation in output pixels.
    """

    def __init__(self, min_confidence: float, min_visibility: float, min_joints: int, sigma: float):
        self.min_confidence, self.sigma = min_confidence, sigma
        self.min_visibility, self.min_joints = min_visibility, min_joints

    def __call__(self, video_dir: Path, indices: list[int], frame_hw: tuple[int, int],
                 out_hw: tuple[int, int]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        pose_module = mediapipe_pose_module()
        with pose_module.Pose(static_image_mode=False, model_complexity=1, enable_segmentation=True,
                              min_detection_confidence=self.min_confidence,
                              min_tracking_confidence=self.min_confidence) as pose:
            for n, i in enumerate(indices):
                frame = read_rgb_frame(video_dir, i, frame_hw)
                # A model's first frame loads its graph, and TFLite and absl print their set-up lines (4 a video)
                # to the terminal, across the progress bar; no environment variable or log level silences them.
                with native_stderr_muted() if n == 0 else contextlib.nullcontext():
                    result = pose.process(frame)
                yield i, *self.views(result.pose_landmarks, result.segmentation_mask, out_hw)

    def views(self, pose_landmarks, segmentation_mask: np.ndarray | None,
              out_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Heatmaps `[17, h, w]` and mask `[h, w]` (uint8) of one frame's MediaPipe result.

        Args:
            pose_landmarks: `result.pose_landmarks` (a NormalizedLandmarkList of 33), or None.
            segmentation_mask: `result.segmentation_mask`, float `[H, W]` in [0, 1], or None.
            out_hw: output height and width.
        """
        h, w = out_hw
        empty = np.zeros((len(COCO_KEYPOINTS), h, w), np.uint8), np.zeros((h, w), np.uint8)
        if pose_landmarks is None:
            return empty
        landmarks = np.array([(p.x, p.y, p.z, p.visibility) for p in pose_landmarks.landmark], np.float32)
        keypoints = coco_from_blazepose(landmarks, self.min_visibility, self.min_joints)
        if len(keypoints) == 0:
            return empty
        heatmaps = render_heatmaps(keypoints, h, w, self.sigma)
        if segmentation_mask is None:
            return heatmaps, empty[1]
        return heatmaps, resize_mask(np.clip(segmentation_mask, 0, 1), h, w)


def _state_dict(path: Path | None, weights: WeightsEnum, flag: str) -> dict[str, torch.Tensor]:
    import torch

    if path is not None:
        return torch.load(path, map_location="cpu", weights_only=True)
    try:
        return weights.get_state_dict(progress=True)
    except (OSError, RuntimeError) as exc:
        raise RuntimeError(f"cannot load torchvision's pretrained weights {weights} ({exc}); download "
                           f"{weights.url} on a machine with internet and pass the file with {flag} PATH") from exc


def build_detectors(kp_weights: Path | None, seg_weights: Path | None, device: str, score_thresh: float,
                    max_people: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """torchvision's keypoint R-CNN and Mask R-CNN (ResNet-50 FPN) in eval mode on `device`.

    Args:
        kp_weights: state-dict file of keypointrcnn_resnet50_fpn; None = torchvision's pretrained COCO weights.
        seg_weights: state-dict file of maskrcnn_resnet50_fpn; None = torchvision's pretrained COCO weights.
        device: torch device string.
        score_thresh: detections below this score are dropped inside the models.
        max_people: most detections kept per frame (the keypoint and mask heads run on each).
    Raises:
        FileNotFoundError / RuntimeError / ValueError: a weights file is missing, cannot be fetched,
            or does not fit the model.
    """
    from torchvision.models.detection import (
        KeypointRCNN_ResNet50_FPN_Weights,
        MaskRCNN_ResNet50_FPN_Weights,
        keypointrcnn_resnet50_fpn,
        maskrcnn_resnet50_fpn,
    )

    for path, flag in ((kp_weights, "--kp_weights"), (seg_weights, "--seg_weights")):
        if path is not None and not Path(path).is_file():  # fail before the slow model builds
            raise FileNotFoundError(f"{flag} {path} does not exist")
    models = []
    for build, weights, path, flag in (
        (keypointrcnn_resnet50_fpn, KeypointRCNN_ResNet50_FPN_Weights.DEFAULT, kp_weights, "--kp_weights"),
        (maskrcnn_resnet50_fpn, MaskRCNN_ResNet50_FPN_Weights.DEFAULT, seg_weights, "--seg_weights"),
    ):
        model = build(weights=None, weights_backbone=None, box_score_thresh=score_thresh,
                      box_detections_per_img=max_people)
        state = _state_dict(path, weights, flag)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ValueError(f"{flag} {path} is not a state dict of torchvision's {build.__name__}: {exc}") from exc
        models.append(model.to(device).eval())
    return tuple(models)
