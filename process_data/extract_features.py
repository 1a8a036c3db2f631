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
listed in `failed.txt` in the heatmaps root and the run goes on. Each root's `manifest.json` records the
backend, its thresholds, `--dim`, `--stride` and `--sigma`; a rerun with other settings into the same
roots is refused rather than mixing two kinds of heatmaps (pass another --out_root).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import time
from functools import partial
from pathlib import Path

import cv2

from process_data.common import atomic_dir, check_manifest, count_frames, finish_run, list_video_dirs, parallel_map, short_side_size
from process_data.feature_backends import (
    AnnotationBackend,
    Backend,
    MediapipeBackend,
    TorchvisionBackend,
    build_detectors,
    mediapipe_pose_module,
)
from utils.cli import run_cli
from utils.cli_options import HelpFormatter
from utils.layout import FRAMES, HEATMAP_TREE, HEATMAPS, SEGMASK_TREE, SEGMASKS, sibling_folder

BACKENDS = ("torchvision", "mediapipe", "annotations")


def frame_indices(video_dir: Path) -> list[int]:
    """Sorted 1-based indices of the `image_NNNNN.jpg` frames in `video_dir`.

    Args:
        video_dir: one video's frame folder.
    """
    return sorted(i for i in (FRAMES.index(p.name) for p in Path(video_dir).glob(FRAMES.glob)) if i is not None)


def sampled_indices(indices: list[int], stride: int) -> list[int]:
    """The frame indices 1, 1 + stride, 1 + 2 stride, ... among `indices`.

    Args:
        indices: available 1-based frame indices.
        stride: sampling step in frames.
    """
    return [i for i in indices if (i - 1) % stride == 0]


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
        raise ValueError(f"{video_dir} has no frames {FRAMES.name(1)}, {FRAMES.name(1 + stride)}, ... to process")
    first = cv2.imread(str(video_dir / FRAMES.name(indices[0])))
    if first is None:
        raise ValueError(f"cannot read frame {video_dir / FRAMES.name(indices[0])}")
    frame_hw = first.shape[:2]
    out_hw = short_side_size(*frame_hw, dim)
    with contextlib.ExitStack() as stack:
        # Only the missing view is written, so an interrupted run never overwrites a finished folder.
        tmp_heat = None if heat_dir.is_dir() else stack.enter_context(atomic_dir(heat_dir))
        tmp_seg = None if seg_dir.is_dir() else stack.enter_context(atomic_dir(seg_dir))
        for i, hm, seg in backend(video_dir, indices, frame_hw, out_hw):
            if tmp_heat is not None:
                HEATMAPS.save_array(tmp_heat, i, hm)
            if tmp_seg is not None:
                SEGMASKS.save_array(tmp_seg, i, seg)
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
        roots = (Path(out_root) / HEATMAP_TREE, Path(out_root) / SEGMASK_TREE)
    else:
        try:
            roots = tuple(sibling_folder(Path(frame_root).resolve(), f) for f in (HEATMAP_TREE, SEGMASK_TREE))
        except ValueError as exc:
            raise ValueError(f"--frame_root {frame_root} has no 'frame' folder in its path (expected "
                             f"…/<dataset>/frame[/<subset>]); pass --out_root") from exc
    for root in roots:
        if root.resolve() == Path(frame_root).resolve():
            raise ValueError(f"--frame_root {frame_root} is {root}, where outputs would be written")
    return roots


def tree_settings(args: argparse.Namespace) -> tuple[dict, dict]:
    """What decides the content of the heatmap and mask files (the manifest's settings), and the backend's versions."""
    settings = {"backend": args.backend, "dim": args.dim, "stride": args.stride, "sigma": args.sigma}
    if args.backend == "mediapipe":
        settings.update(mp_confidence=args.mp_confidence, mp_visibility=args.mp_visibility, mp_min_joints=args.mp_min_joints)
    elif args.backend == "torchvision":
        settings.update(score_thresh=args.score_thresh, max_people=args.max_people)
    package = {"mediapipe": "mediapipe", "torchvision": "torchvision"}.get(args.backend)
    versions = {"opencv": cv2.__version__}
    if package is not None:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    return settings, versions


def main(args: argparse.Namespace) -> dict:
    """Write the heatmaps and masks of every video under --frame_root; return the done/skipped/failed counts."""
    _check_args(args)
    frame_root = Path(args.frame_root)
    heat_root, seg_root = output_roots(frame_root, args.out_root)
    video_dirs = list_video_dirs(frame_root)
    if not video_dirs:
        raise FileNotFoundError(f"--frame_root {frame_root} has no <class>/<video>/ folders")
    settings, versions = tree_settings(args)
    for root in (heat_root, seg_root):
        check_manifest(root, settings, "process_data/extract_features.py", versions, "pass another --out_root")
    work = partial(process_video, frame_root=frame_root, heat_root=heat_root, seg_root=seg_root,
                   backend=_make_backend(args), stride=args.stride, dim=args.dim)
    start = time.perf_counter()
    results = parallel_map(work, video_dirs, args.workers, desc=f"heatmaps+masks ({args.backend})")
    seconds = time.perf_counter() - start
    failures = [(str(v.relative_to(frame_root)), str(r)) for v, r in zip(video_dirs, results) if isinstance(r, Exception)]
    frames = sum(count_frames(heat_root / v.relative_to(frame_root), HEATMAPS.glob)
                 for v, r in zip(video_dirs, results) if r == "done")
    if frames:
        print(f"extract_features ({args.backend}): {frames} frames in {seconds:.1f} s, {frames / seconds:.1f} frames/s")
    return finish_run("extract_features", heat_root, failures, done=results.count("done"),
                      skipped=results.count("skipped"))


if __name__ == "__main__":
    run_cli(main, get_args_parser())
