"""Compute the `kphm` and `seg` views: COCO keypoint heatmaps and person masks of frame folders.

    # any dataset, detectors on the frames, with COCO weights saved as local files
    python process_data/extract_features.py --frame_root data/ucf101/frame --device cuda \
        --kp_weights weights/keypointrcnn_resnet50_fpn_coco.pth --seg_weights weights/maskrcnn_resnet50_fpn_coco.pth
    # Kinetics: one run per frame root -> data/kinetics400/{heatmaps,segmasks}/train/<class>/<video>
    python process_data/extract_features.py --frame_root data/kinetics400/frame/train --device cuda
    # offline on CPU, with the models inside the mediapipe wheel (pip install --no-deps -r requirements-mediapipe.txt)
    python process_data/extract_features.py --frame_root data/ucf101/frame --backend mediapipe --workers 2
    # the synthetic dataset, from its ground truth
    python process_data/extract_features.py --frame_root data/synthetic/frame --backend annotations \
        --annotations data/synthetic/annotations --workers 2

Backends:
- `torchvision` (default, the faithful choice): Keypoint R-CNN and Mask R-CNN (ResNet-50 FPN, COCO),
  every person of a frame. Without --kp_weights / --seg_weights it downloads torchvision's COCO weights
  (into torch's hub cache) the first time; on a machine without internet pass the files.
- `mediapipe`: MediaPipe Pose 0.10.21 (BlazePose full + its segmentation), whose models ship inside the
  wheel, so it needs no download and runs on CPU. Its limits: one person per frame (the most prominent);
  33 BlazePose landmarks mapped to the 17 COCO joints, not the paper's detector; a frame whose person
  is uncertain (--mp_confidence, --mp_visibility, --mp_min_joints) gets empty views, not a false person.
- `annotations`: make_synthetic.py's ground-truth joints and masks.

For every `<frame_root>/<class>/<video>/image_NNNNN.jpg` folder this writes
`<heatmaps root>/<class>/<video>/heatmap_NNNNN.npz` (array `hm`, uint8 [17, h, w], 255 = 1.0)
and `<segmasks root>/<class>/<video>/segmask_NNNNN.npz` (array `seg`, uint8 [h, w], 255 = person)
for frames 1, 1 + stride, 1 + 2 stride, ..., numbered by the frame index (the loader fills the gaps
from neighbours). h, w keep the frame's aspect ratio with short side `--dim`, so normalised crops
line up with the RGB frames. A frame with nobody in it gets zeros.

The roots are where the loader looks (`utils.layout.sibling_folder`): the frame root with its last `frame`
component swapped for `heatmaps` and `segmasks` (`data/ucf101/frame` -> `data/ucf101/heatmaps`,
`data/kinetics400/frame/train` -> `data/kinetics400/heatmaps/train`). `--out_root R` overrides both
with `R/heatmaps` and `R/segmasks`.

Each video's folders are written under temporary names and renamed when complete, so a rerun
skips finished videos. Videos that fail (no frames, missing annotation, unreadable frame) are
listed in `failed.txt` in the heatmaps root and the run goes on.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import time
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Iterator, Protocol

import cv2
import numpy as np

from process_data.common import (
    FRAME_GLOB, atomic_dir, count_frames, finish_run, frame_name, list_video_dirs, parallel_map, short_side_size,
)
from process_data.keypoints import COCO_KEYPOINTS, coco_from_blazepose, render_heatmaps, resize_mask
from utils.cli import run_cli
from utils.cli_options import HelpFormatter
from utils.errors import UserError
from utils.layout import sibling_folder

if TYPE_CHECKING:  # torch takes seconds to import; the annotations backend never needs it
    import torch
    from torchvision.models import WeightsEnum

PERSON_LABEL = 1  # COCO category id of "person" in torchvision's detection models
BACKENDS = ("torchvision", "mediapipe", "annotations")


def frame_indices(video_dir: Path) -> list[int]:
    """Sorted 1-based indices of the `image_NNNNN.jpg` frames in `video_dir`.

    Args:
        video_dir: one video's frame folder.
    """
    return sorted(int(p.stem.split("_")[1]) for p in Path(video_dir).glob(FRAME_GLOB))


def sampled_indices(indices: list[int], stride: int) -> list[int]:
    """The frame indices 1, 1 + stride, 1 + 2 stride, ... among `indices`.

    Args:
        indices: available 1-based frame indices.
        stride: sampling step in frames.
    """
    return [i for i in indices if (i - 1) % stride == 0]


def read_rgb_frame(video_dir: Path, index: int, frame_hw: tuple[int, int]) -> np.ndarray:
    """Frame `index` of a video as RGB uint8 `[H, W, 3]`.

    Args:
        video_dir: the video's frame folder.
        index: 1-based frame index.
        frame_hw: the size every frame of the video must have (its first frame's).
    Raises:
        ValueError: the frame cannot be read or has another size.
    """
    path = video_dir / frame_name(index)
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
            for i in indices:
                result = pose.process(read_rgb_frame(video_dir, i, frame_hw))
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
        KeypointRCNN_ResNet50_FPN_Weights, MaskRCNN_ResNet50_FPN_Weights, keypointrcnn_resnet50_fpn,
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


def process_video(video_dir: Path, frame_root: Path, heat_root: Path, seg_root: Path, backend: Backend,
                  stride: int, dim: int) -> str:
    """Write one video's heatmap and segmask folders; return "done", or "skipped" if both exist.

    Args:
        video_dir: `<frame_root>/<class>/<video>`.
        frame_root: the frame root.
        heat_root: root of the heatmap tree (gets `<class>/<video>/`).
        seg_root: root of the segmask tree (gets `<class>/<video>/`).
        backend: produces the arrays of the sampled frames.
        stride: frame sampling step.
        dim: short side of the outputs.
    Raises:
        ValueError: the folder has no frames or a frame cannot be read; the backend's errors.
    """
    rel = video_dir.relative_to(frame_root)
    heat_dir, seg_dir = heat_root / rel, seg_root / rel
    if heat_dir.is_dir() and seg_dir.is_dir():
        return "skipped"
    indices = sampled_indices(frame_indices(video_dir), stride)
    if not indices:
        raise ValueError(f"{video_dir} has no frames image_00001.jpg, image_{1 + stride:05d}.jpg, ... to process")
    first = cv2.imread(str(video_dir / frame_name(indices[0])))
    if first is None:
        raise ValueError(f"cannot read frame {video_dir / frame_name(indices[0])}")
    frame_hw = first.shape[:2]
    out_hw = short_side_size(*frame_hw, dim)
    with contextlib.ExitStack() as stack:
        # Only the missing view is written, so an interrupted run never overwrites a finished folder.
        tmp_heat = None if heat_dir.is_dir() else stack.enter_context(atomic_dir(heat_dir))
        tmp_seg = None if seg_dir.is_dir() else stack.enter_context(atomic_dir(seg_dir))
        for i, hm, seg in backend(video_dir, indices, frame_hw, out_hw):
            if tmp_heat is not None:
                np.savez_compressed(tmp_heat / f"heatmap_{i:05d}.npz", hm=hm)
            if tmp_seg is not None:
                np.savez_compressed(tmp_seg / f"segmask_{i:05d}.npz", seg=seg)
    return "done"


def get_args_parser() -> argparse.ArgumentParser:
    """The command line of extract_features.py."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    io = parser.add_argument_group("input/output")
    io.add_argument("--frame_root", type=Path, required=True, help="folder of <class>/<video>/image_00001.jpg frames")
    io.add_argument("--out_root", type=Path, default=None,
                    help="write <out_root>/heatmaps/<class>/<video> and <out_root>/segmasks/<class>/<video> "
                    "(failed.txt in <out_root>/heatmaps). Default: where the loader looks, --frame_root with its "
                    "last 'frame' component replaced by heatmaps and segmasks (data/kinetics400/frame/train -> "
                    "data/kinetics400/heatmaps/train and data/kinetics400/segmasks/train)")
    backend = parser.add_argument_group("backend")
    backend.add_argument("--backend", choices=BACKENDS, default="torchvision",
                         help="torchvision: Keypoint R-CNN + Mask R-CNN on the frames, every person (the faithful "
                         "choice; weights downloaded once or given as files); mediapipe: MediaPipe Pose, its models "
                         "inside the wheel (offline, CPU), one person per frame, not the paper's detector; "
                         "annotations: make_synthetic's ground truth")
    backend.add_argument("--annotations", type=Path, default=None,
                         help="annotations backend: folder of <class>/<video>.npz from make_synthetic.py")
    backend.add_argument("--kp_weights", type=Path, default=None,
                         help="torchvision backend: keypointrcnn_resnet50_fpn state dict "
                         "(default: torchvision's COCO weights, downloaded on first use)")
    backend.add_argument("--seg_weights", type=Path, default=None,
                         help="torchvision backend: maskrcnn_resnet50_fpn state dict "
                         "(default: torchvision's COCO weights, downloaded on first use)")
    backend.add_argument("--device", default="cpu", help="torchvision backend: torch device, e.g. cuda:0")
    backend.add_argument("--batch_size", type=int, default=8, help="torchvision backend: frames per forward pass")
    backend.add_argument("--score_thresh", type=float, default=0.5, help="torchvision backend: minimum person score")
    backend.add_argument("--max_people", type=int, default=10,
                         help="torchvision backend: most detections kept per frame (bounds the keypoint/mask heads' cost)")
    backend.add_argument("--mp_confidence", type=float, default=0.8,
                         help="mediapipe backend: minimum detection and tracking confidence (MediaPipe's own default, "
                         "0.5, finds people in parked bicycles)")
    backend.add_argument("--mp_visibility", type=float, default=0.5,
                         help="mediapipe backend: visibility a joint needs to be drawn")
    backend.add_argument("--mp_min_joints", type=int, default=4,
                         help="mediapipe backend: a person with fewer visible COCO joints gets empty views")
    out = parser.add_argument_group("outputs")
    out.add_argument("--stride", type=int, default=2, help="process frames 1, 1+stride, 1+2*stride, ...")
    out.add_argument("--dim", type=int, default=64, help="short side of the heatmaps and masks in pixels")
    out.add_argument("--sigma", type=float, default=2.0, help="Gaussian standard deviation in output pixels")
    run = parser.add_argument_group("run")
    run.add_argument("--workers", type=int, default=1,
                     help="parallel processes over videos (annotations and mediapipe backends; torchvision batches "
                     "on --device)")
    return parser


def _check_args(args: argparse.Namespace) -> None:
    for flag in ("stride", "dim", "batch_size", "max_people", "workers", "mp_min_joints"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    if args.sigma <= 0:
        raise ValueError(f"--sigma must be positive, got {args.sigma}")
    for flag in ("mp_confidence", "mp_visibility"):
        if not 0 <= getattr(args, flag) <= 1:
            raise ValueError(f"--{flag} must lie in [0, 1], got {getattr(args, flag)}")
    if args.backend == "annotations" and args.annotations is None:
        raise ValueError("--backend annotations needs --annotations <folder of <class>/<video>.npz>")
    if args.backend == "annotations" and not Path(args.annotations).is_dir():
        raise FileNotFoundError(f"--annotations {args.annotations} is not a folder")
    if args.backend == "torchvision" and args.workers > 1:
        raise ValueError("--workers > 1 is for the annotations and mediapipe backends; the torchvision backend batches "
                         "frames on one --device (use --batch_size)")


def _make_backend(args: argparse.Namespace) -> Backend:
    if args.backend == "annotations":
        return AnnotationBackend(args.annotations, args.sigma)
    if args.backend == "mediapipe":
        mediapipe_pose_module()  # fail before the workers start if mediapipe is missing
        return MediapipeBackend(args.mp_confidence, args.mp_visibility, args.mp_min_joints, args.sigma)
    kp_model, seg_model = build_detectors(args.kp_weights, args.seg_weights, args.device, args.score_thresh,
                                          args.max_people)
    return TorchvisionBackend(kp_model, seg_model, args.device, args.batch_size, args.score_thresh, args.sigma)


def output_roots(frame_root: Path, out_root: Path | None) -> tuple[Path, Path]:
    """The heatmap and segmask roots of a run.

    Args:
        frame_root: the RGB frame root.
        out_root: `--out_root`: gives `out_root/heatmaps` and `out_root/segmasks`; None gives the siblings
            of `frame_root` that the loader reads (`…/frame/train` -> `…/heatmaps/train`).
    Raises:
        ValueError: no `--out_root` and `frame_root` has no `frame` component; a root is the frame root.
    """
    if out_root is not None:
        roots = (Path(out_root) / "heatmaps", Path(out_root) / "segmasks")
    else:
        try:
            roots = tuple(sibling_folder(Path(frame_root).resolve(), f) for f in ("heatmaps", "segmasks"))
        except ValueError as exc:
            raise ValueError(f"--frame_root {frame_root} has no 'frame' folder in its path (expected "
                             f"…/<dataset>/frame[/<subset>]); pass --out_root") from exc
    for root in roots:
        if root.resolve() == Path(frame_root).resolve():
            raise ValueError(f"--frame_root {frame_root} is {root}, where outputs would be written")
    return roots


def main(args: argparse.Namespace) -> dict:
    """Write the heatmaps and masks of every video under --frame_root; return the done/skipped/failed counts."""
    _check_args(args)
    frame_root = Path(args.frame_root)
    heat_root, seg_root = output_roots(frame_root, args.out_root)
    video_dirs = list_video_dirs(frame_root)
    if not video_dirs:
        raise FileNotFoundError(f"--frame_root {frame_root} has no <class>/<video>/ folders")
    work = partial(process_video, frame_root=frame_root, heat_root=heat_root, seg_root=seg_root,
                   backend=_make_backend(args), stride=args.stride, dim=args.dim)
    start = time.perf_counter()
    results = parallel_map(work, video_dirs, args.workers, desc=f"heatmaps+masks ({args.backend})")
    seconds = time.perf_counter() - start
    failures = [(str(v.relative_to(frame_root)), str(r)) for v, r in zip(video_dirs, results) if isinstance(r, Exception)]
    frames = sum(count_frames(heat_root / v.relative_to(frame_root), "heatmap_*.npz")
                 for v, r in zip(video_dirs, results) if r == "done")
    if frames:
        print(f"extract_features ({args.backend}): {frames} frames in {seconds:.1f} s, {frames / seconds:.1f} frames/s")
    return finish_run("extract_features", heat_root, failures, done=results.count("done"),
                      skipped=results.count("skipped"))


if __name__ == "__main__":
    run_cli(main, get_args_parser())
