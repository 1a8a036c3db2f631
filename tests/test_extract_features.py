"""Keypoint heatmaps and person masks: the rendering helpers and extract_features.py's three backends."""
import pickle
import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from process_data.extract_features import get_args_parser, main
from process_data.feature_backends import MediapipeBackend, MediapipeMissing
from process_data.keypoints import BLAZEPOSE_TO_COCO, coco_from_blazepose, render_heatmaps, resize_mask
from process_data.make_synthetic import render_video
from utils.keypoints import COCO_KEYPOINTS, COCO_SKELETON
from utils.layout import FRAMES, HEATMAPS, SEGMASKS
from utils.views import view_dir


def test_coco_constants():
    assert len(COCO_KEYPOINTS) == 17 and COCO_KEYPOINTS[9] == "left_wrist"
    assert all(0 <= a < 17 and 0 <= b < 17 for a, b in COCO_SKELETON) and len(COCO_SKELETON) == 19


def test_render_heatmaps_hand_case():
    kp = np.zeros((2, 17, 3), np.float32)
    kp[0, 0] = (0.5, 0.5, 1)  # centre of pixel (32, 32) of a 65 x 65 map
    kp[0, 1] = (0.5, 0.5, 0)  # invisible
    kp[1, 0] = (10.5 / 65, 20.5 / 65, 1)  # a second person's nose at pixel (x=10, y=20)
    hm = render_heatmaps(kp, 65, 65, sigma=2.0)
    assert hm.dtype == np.uint8 and hm.shape == (17, 65, 65)
    assert hm[0, 32, 32] == 255 and hm[0, 20, 10] == 255
    assert hm[0, 32, 33] == round(255 * np.exp(-1 / 8))
    assert hm[0, 0, 64] == 0 and hm[0, 64, 0] == 0
    assert not hm[1:].any()
    assert not render_heatmaps(np.zeros((0, 17, 3)), 8, 12, 2.0).any()
    with pytest.raises(ValueError, match="shape"):
        render_heatmaps(np.zeros((1, 16, 3)), 8, 8, 2.0)


def test_resize_mask():
    mask = np.zeros((8, 8), np.uint8)
    mask[:, :4] = 1
    small = resize_mask(mask, 4, 4)
    assert small.dtype == np.uint8 and small.shape == (4, 4)
    assert (small[:, :2] == 255).all() and (small[:, 2:] == 0).all()
    assert resize_mask(mask, 1, 1)[0, 0] == 128  # half the pixels are person
    assert resize_mask(mask.astype(bool), 16, 16).shape == (16, 16)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        resize_mask(mask * 255, 4, 4)


def _write_frames(video_dir, frames, size=None):
    video_dir.mkdir(parents=True)
    for i, frame in enumerate(frames, start=1):
        if size is not None:
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)
        cv2.imwrite(str(video_dir / FRAMES.name(i)), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))


@pytest.fixture()
def synthetic(tmp_path):
    """`ds/frame/<class>/<video>/` with 7 frames at 96 px and `ds/annotations/<class>/<video>.npz` at 64 px."""
    truth = {}
    for c, action in enumerate(("wave_left_arm", "squat")):
        for v in range(2):
            name = f"{action}/{action}_v{v:03d}"
            frames, kp, masks = render_video(action, np.random.default_rng([c, v]), 7, 64)
            _write_frames(tmp_path / "ds/frame" / name, frames, size=(96, 96))
            (tmp_path / "ds/annotations" / action).mkdir(parents=True, exist_ok=True)
            np.savez_compressed(tmp_path / "ds/annotations" / f"{name}.npz", keypoints=kp, masks=masks)
            truth[name] = (kp, masks)
    return tmp_path / "ds", truth


def _run(*argv):
    return main(get_args_parser().parse_args([str(a) for a in argv]))


def _annotation_run(ds, *extra):
    return _run("--frame_root", ds / "frame", "--backend", "annotations", "--annotations", ds / "annotations",
                "--stride", 2, "--dim", 32, *extra)


def test_annotations_backend_writes_every_sampled_frame(synthetic):
    ds, truth = synthetic
    stats = _annotation_run(ds, "--workers", 2)
    assert stats == {"done": 4, "skipped": 0, "failed": 0}
    assert (ds / "heatmaps/failed.txt").read_text() == ""
    for name, (kp, masks) in truth.items():
        heat = sorted(p.name for p in (ds / "heatmaps" / name).iterdir())
        seg = sorted(p.name for p in (ds / "segmasks" / name).iterdir())
        assert heat == [HEATMAPS.name(i) for i in (1, 3, 5, 7)]
        assert seg == [SEGMASKS.name(i) for i in (1, 3, 5, 7)]
        for i in (1, 3, 5, 7):
            with np.load(ds / "heatmaps" / name / HEATMAPS.name(i)) as f:
                hm = f[HEATMAPS.key]
            with np.load(ds / "segmasks" / name / SEGMASKS.name(i)) as f:
                seg_i = f[SEGMASKS.key]
            assert hm.dtype == np.uint8 and hm.shape == (17, 32, 32)
            assert seg_i.dtype == np.uint8 and seg_i.shape == (32, 32)
            # Frame i is annotation row i - 1: the nose heatmap peaks at that frame's nose.
            y, x = np.unravel_index(hm[0].argmax(), hm[0].shape)
            assert abs(x + 0.5 - kp[i - 1, 0, 0] * 32) <= 1 and abs(y + 0.5 - kp[i - 1, 0, 1] * 32) <= 1
            assert np.array_equal(seg_i, resize_mask(masks[i - 1], 32, 32))
    assert not list(ds.glob("*/*/.*"))  # no temporary folders left


def test_rerun_skips_finished_videos(synthetic):
    ds, _ = synthetic
    _annotation_run(ds)
    some = ds / "heatmaps/squat/squat_v001" / HEATMAPS.name(3)
    before = some.stat().st_mtime_ns
    assert _annotation_run(ds) == {"done": 0, "skipped": 4, "failed": 0}
    assert some.stat().st_mtime_ns == before


def test_empty_folder_and_missing_annotation_are_reported(synthetic):
    ds, _ = synthetic
    (ds / "frame/squat/squat_v009").mkdir()
    (ds / "annotations/squat/squat_v001.npz").unlink()
    stats = _annotation_run(ds)
    assert stats == {"done": 3, "skipped": 0, "failed": 2}
    failed = dict(line.split("\t") for line in (ds / "heatmaps/failed.txt").read_text().splitlines())
    assert set(failed) == {"squat/squat_v009", "squat/squat_v001"}
    assert "no frames" in failed["squat/squat_v009"]
    assert "squat_v001.npz" in failed["squat/squat_v001"]
    for name in failed:
        assert not (ds / "heatmaps" / name).exists() and not (ds / "segmasks" / name).exists()
    assert not list((ds / "heatmaps/squat").glob(".*"))


def test_kinetics_layout_writes_where_the_loader_looks(tmp_path):
    ann_root = tmp_path / "annotations"
    frame_root = tmp_path / "kinetics400/frame/train"
    frames, kp, masks = render_video("squat", np.random.default_rng(0), 3, 64)
    _write_frames(frame_root / "squat/vid0", frames)
    (ann_root / "squat").mkdir(parents=True)
    np.savez_compressed(ann_root / "squat/vid0.npz", keypoints=kp, masks=masks)
    stats = _run("--frame_root", frame_root, "--backend", "annotations", "--annotations", ann_root, "--stride", 1,
                 "--dim", 16)
    assert stats == {"done": 1, "skipped": 0, "failed": 0}
    video = frame_root / "squat/vid0"
    heat, seg = view_dir(video, "kphm"), view_dir(video, "seg")
    assert heat == tmp_path / "kinetics400/heatmaps/train/squat/vid0"
    assert sorted(p.name for p in heat.iterdir()) == [HEATMAPS.name(i) for i in (1, 2, 3)]
    assert sorted(p.name for p in seg.iterdir()) == [SEGMASKS.name(i) for i in (1, 2, 3)]
    assert (tmp_path / "kinetics400/heatmaps/train/failed.txt").read_text() == ""
    assert not (tmp_path / "kinetics400/frame/heatmaps").exists()


def test_out_root_overrides_and_a_root_without_frame_needs_it(synthetic, tmp_path):
    ds, _ = synthetic
    (ds / "frame").rename(ds / "rgb")
    with pytest.raises(ValueError, match="--frame_root .*rgb has no 'frame' folder.*--out_root"):
        _run("--frame_root", ds / "rgb", "--backend", "annotations", "--annotations", ds / "annotations")
    stats = _run("--frame_root", ds / "rgb", "--backend", "annotations", "--annotations", ds / "annotations",
                 "--out_root", tmp_path / "views")
    assert stats == {"done": 4, "skipped": 0, "failed": 0}
    assert (tmp_path / "views/heatmaps/squat/squat_v000" / HEATMAPS.name(1)).is_file()
    assert (tmp_path / "views/segmasks/squat/squat_v000" / SEGMASKS.name(1)).is_file()
    assert (tmp_path / "views/heatmaps/failed.txt").is_file()
    with pytest.raises(ValueError, match="where outputs would be written"):
        _run("--frame_root", tmp_path / "views/heatmaps", "--backend", "annotations",
             "--annotations", ds / "annotations", "--out_root", tmp_path / "views")


@pytest.fixture(scope="module")
def untrained_weights(tmp_path_factory):
    from torchvision.models.detection import keypointrcnn_resnet50_fpn, maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("weights")
    paths = []
    for build, name in ((keypointrcnn_resnet50_fpn, "kp.pth"), (maskrcnn_resnet50_fpn, "seg.pth")):
        state = build(weights=None, weights_backbone=None).state_dict()
        # Bias the classifier towards "person" so the untrained detectors find people and every path runs.
        state["roi_heads.box_predictor.cls_score.bias"][1] += 10
        torch.save(state, folder / name)
        paths.append(folder / name)
    return paths


@pytest.mark.slow
def test_torchvision_backend_with_untrained_weights(tmp_path, untrained_weights):
    torch.set_num_threads(2)
    torch.manual_seed(0)
    frames, _, _ = render_video("clap", np.random.default_rng(0), 3, 64)
    _write_frames(tmp_path / "frame/clap/clap_v000", frames, size=(85, 64))  # 64 x 85, as UCF's 4:3
    kp_path, seg_path = untrained_weights
    stats = _run("--frame_root", tmp_path / "frame", "--kp_weights", kp_path, "--seg_weights", seg_path,
                 "--stride", 1, "--dim", 32, "--batch_size", 2, "--max_people", 1)
    assert stats == {"done": 1, "skipped": 0, "failed": 0}
    for i in (1, 2, 3):
        with np.load(tmp_path / "heatmaps/clap/clap_v000" / HEATMAPS.name(i)) as f:
            assert f[HEATMAPS.key].dtype == np.uint8 and f[HEATMAPS.key].shape == (17, 32, 42)
            assert (f[HEATMAPS.key].reshape(17, -1).max(1) > 200).all()  # every joint of a detected person drawn
        with np.load(tmp_path / "segmasks/clap/clap_v000" / SEGMASKS.name(i)) as f:
            assert f[SEGMASKS.key].dtype == np.uint8 and f[SEGMASKS.key].shape == (32, 42) and f[SEGMASKS.key].any()


def test_missing_weights_file_names_the_flag(tmp_path, untrained_weights):
    _write_frames(tmp_path / "frame/a/v", np.zeros((1, 64, 64, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="--seg_weights"):
        _run("--frame_root", tmp_path / "frame", "--kp_weights", untrained_weights[0],
             "--seg_weights", tmp_path / "nope.pth")


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="mediapipe 0.10.21 has no wheel for Python 3.13+")
def test_blazepose_to_coco_names_the_same_joints():
    from mediapipe.python.solutions.pose import PoseLandmark

    assert [PoseLandmark(i).name.lower() for i in BLAZEPOSE_TO_COCO] == list(COCO_KEYPOINTS)


def _blazepose(visibility: np.ndarray) -> np.ndarray:
    """[33, 4] landmarks: landmark i at the centre of pixel (x=i, y=10) of a 20 x 40 map, with the given
    COCO joints' visibility."""
    landmarks = np.zeros((33, 4), np.float32)
    landmarks[:, 0], landmarks[:, 1] = (np.arange(33) + 0.5) / 40, 10.5 / 20
    landmarks[list(BLAZEPOSE_TO_COCO), 3] = visibility
    return landmarks


def test_coco_from_blazepose_maps_and_gates():
    visibility = np.full(17, 0.9, np.float32)
    visibility[11:] = 0.1  # hips, knees and ankles out of view: a head-and-shoulders shot
    kp = coco_from_blazepose(_blazepose(visibility), min_visibility=0.5, min_joints=4)
    assert kp.shape == (1, 17, 3)
    assert np.allclose(kp[0, :, 0], (np.array(BLAZEPOSE_TO_COCO) + 0.5) / 40) and np.allclose(kp[0, :, 1], 0.525)
    assert kp[0, :, 2].tolist() == [1.0] * 11 + [0.0] * 6
    visibility[3:] = 0.1  # 3 visible joints: too uncertain to be a person
    assert coco_from_blazepose(_blazepose(visibility), 0.5, 4).shape == (0, 17, 3)
    with pytest.raises(ValueError, match=r"\[33, 4\]"):
        coco_from_blazepose(np.zeros((17, 4)), 0.5, 4)


def _landmark_list(landmarks: np.ndarray) -> SimpleNamespace:
    """Something shaped like MediaPipe's NormalizedLandmarkList."""
    return SimpleNamespace(landmark=[SimpleNamespace(x=x, y=y, z=z, visibility=v) for x, y, z, v in landmarks])


def test_mediapipe_views_of_one_result():
    backend = MediapipeBackend(min_confidence=0.8, min_visibility=0.5, min_joints=4, sigma=1.0)
    mask = np.zeros((40, 80), np.float32)
    mask[:, 40:] = 1.0001  # MediaPipe's float masks may overshoot 1 by rounding
    hm, seg = backend.views(_landmark_list(_blazepose(np.full(17, 0.9))), mask, (20, 40))
    assert hm.shape == (17, 20, 40) and seg.shape == (20, 40) and hm.dtype == seg.dtype == np.uint8
    for k, landmark in enumerate(BLAZEPOSE_TO_COCO):  # each COCO joint peaks where its BlazePose landmark is
        assert hm[k, 10, landmark] == 255
    assert (seg[:, 20:] == 255).all() and not seg[:, :20].any()
    # No detection, or a person that fails the gate: both views empty, not a false person.
    for landmarks in (None, _landmark_list(_blazepose(np.full(17, 0.2)))):
        hm, seg = backend.views(landmarks, mask, (20, 40))
        assert not hm.any() and not seg.any()
    assert pickle.loads(pickle.dumps(backend)).min_joints == 4  # workers get it by pickling; each builds its models


def test_mediapipe_missing_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # import mediapipe now raises ImportError
    _write_frames(tmp_path / "frame/a/v", np.zeros((1, 64, 64, 3), np.uint8))
    with pytest.raises(MediapipeMissing, match=r"requirements-mediapipe.txt"):
        _run("--frame_root", tmp_path / "frame", "--backend", "mediapipe")
    with pytest.raises(ValueError, match="--mp_confidence"):
        _run("--frame_root", tmp_path / "frame", "--backend", "mediapipe", "--mp_confidence", "1.5")
