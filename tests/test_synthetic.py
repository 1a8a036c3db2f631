"""The synthetic stick-figure dataset: files, formats, determinism, and that classes differ in motion."""
import re

import cv2
import numpy as np
import pytest

from process_data.make_synthetic import ACTIONS, get_args_parser, main, render_video

TINY = ["--classes", "3", "--videos_per_class", "3", "--frames", "16", "--size", "64"]


def _make(root, *extra):
    main(get_args_parser().parse_args(["--out", str(root), *TINY, *extra]))


def _decode(path):
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(25)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return np.stack(frames)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    _make(root, "--workers", "2")
    return root


def test_videos_decode_with_the_right_frames(dataset):
    for action in ACTIONS[:3]:
        for v in range(3):
            frames = _decode(dataset / "videos" / action / f"{action}_v{v:03d}.avi")
            assert frames.shape == (16, 64, 64, 3)
    # The file holds what render_video draws for the same random stream, up to JPEG loss.
    rgb, _, _ = render_video(ACTIONS[1], np.random.default_rng([0, 1, 2]), 16, 64)
    decoded = _decode(dataset / "videos" / ACTIONS[1] / f"{ACTIONS[1]}_v002.avi")[..., ::-1]
    assert np.abs(decoded.astype(int) - rgb).mean() < 12


def test_split_files_follow_ucf101(dataset):
    splits = dataset / "splits"
    assert (splits / "classInd.txt").read_text().splitlines() == [
        "1 wave_left_arm", "2 wave_right_arm", "3 both_arms_up_down"]
    train = (splits / "trainlist01.txt").read_text().splitlines()
    test = (splits / "testlist01.txt").read_text().splitlines()
    train_names = []
    for line in train:
        m = re.fullmatch(r"(\w+)/(\w+)_v(\d{3})\.avi (\d+)", line)
        assert m and m[1] == m[2] and ACTIONS[int(m[4]) - 1] == m[1], line
        train_names.append(line.split()[0])
    for line in test:
        assert re.fullmatch(r"(\w+)/\1_v\d{3}\.avi", line), line
    assert not set(train_names) & set(test)
    expected = {f"{a}/{a}_v{v:03d}.avi" for a in ACTIONS[:3] for v in range(3)}
    assert set(train_names) | set(test) == expected
    for action in ACTIONS[:3]:  # stratified: round(0.3 * 3) = 1 test video per class
        assert sum(t.startswith(action + "/") for t in test) == 1


def test_annotations_shapes_and_ranges(dataset):
    for action in ACTIONS[:3]:
        with np.load(dataset / "annotations" / action / f"{action}_v000.npz") as ann:
            kp, masks = ann["keypoints"], ann["masks"]
        assert kp.dtype == np.float32 and kp.shape == (16, 17, 3)
        assert set(np.unique(kp[..., 2])) <= {0.0, 1.0} and kp[..., 2].mean() > 0.9
        visible = kp[..., 2] == 1
        assert np.all((kp[..., :2][visible] >= 0) & (kp[..., :2][visible] < 1))
        assert masks.dtype == np.uint8 and masks.shape == (16, 64, 64)
        assert set(np.unique(masks)) <= {0, 1}
        assert np.all(masks.reshape(16, -1).sum(1) > 20)  # the figure is in every frame
        # Visible joints fall on (or next to) person pixels.
        t, j = np.nonzero(visible)
        x = np.clip((kp[t, j, 0] * 64).astype(int), 0, 63)
        y = np.clip((kp[t, j, 1] * 64).astype(int), 0, 63)
        dilated = np.stack([cv2.dilate(m, np.ones((5, 5), np.uint8)) for m in masks])
        assert dilated[t, y, x].mean() > 0.9


def test_same_seed_same_dataset_whatever_the_workers(dataset, tmp_path):
    _make(tmp_path / "again", "--workers", "1")
    for action in ACTIONS[:3]:
        for v in range(3):
            name = f"{action}/{action}_v{v:03d}"
            assert (tmp_path / "again/annotations" / f"{name}.npz").read_bytes() == \
                (dataset / "annotations" / f"{name}.npz").read_bytes()
            assert np.array_equal(_decode(tmp_path / "again/videos" / f"{name}.avi"),
                                  _decode(dataset / "videos" / f"{name}.avi"))
    for split in ("trainlist01.txt", "testlist01.txt"):
        assert (tmp_path / "again/splits" / split).read_text() == (dataset / "splits" / split).read_text()
    other = render_video(ACTIONS[0], np.random.default_rng([1, 0, 0]), 16, 64)[1]
    with np.load(dataset / "annotations" / ACTIONS[0] / f"{ACTIONS[0]}_v000.npz") as ann:
        assert not np.allclose(other, ann["keypoints"])


def _relative_motion(kp, joint):
    """Per-joint movement relative to the shoulders, which removes camera shake and walking."""
    shoulders = kp[:, [5, 6], :2].mean(1)
    return np.linalg.norm((kp[:, joint, :2] - shoulders).std(0))


def test_mirror_pairs_move_the_other_limb():
    def rng():  # the same nuisances for both classes of a pair
        return np.random.default_rng(7)

    _, wave_l, _ = render_video("wave_left_arm", rng(), 32, 64)
    _, wave_r, _ = render_video("wave_right_arm", rng(), 32, 64)
    assert _relative_motion(wave_l, 9) > 3 * _relative_motion(wave_l, 10)  # left wrist waves
    assert _relative_motion(wave_r, 10) > 3 * _relative_motion(wave_r, 9)
    _, kick_l, _ = render_video("kick_left", rng(), 32, 64)
    _, kick_r, _ = render_video("kick_right", rng(), 32, 64)
    assert _relative_motion(kick_l, 15) > 3 * _relative_motion(kick_l, 16)  # left ankle kicks
    assert _relative_motion(kick_r, 16) > 3 * _relative_motion(kick_r, 15)
    _, walk_l, _ = render_video("walk_left", rng(), 32, 64)
    _, walk_r, _ = render_video("walk_right", rng(), 32, 64)
    hips_l, hips_r = walk_l[:, [11, 12], 0].mean(1), walk_r[:, [11, 12], 0].mean(1)
    assert hips_l[-1] - hips_l[0] < -0.03 and hips_r[-1] - hips_r[0] > 0.03  # at least 0.1 body over the clip


def test_camera_and_light_drift_slowly_while_the_limb_moves_fast():
    # A per-frame camera jitter or light flicker would drown the figure's motion in the optical flow.
    window = cv2.createHanningWindow((128, 128), cv2.CV_32F)
    camera_speed, camera_range, wrist_speed = [], [], []
    for seed in range(4):
        frames, kp, _ = render_video("wave_left_arm", np.random.default_rng([0, 0, seed]), 48, 128)
        gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float32) for f in frames]
        # Phase correlation locks on to the background, which fills most of the frame.
        shifts = [cv2.phaseCorrelate(a, b, window)[0] for a, b in zip(gray[:-1], gray[1:])]
        camera_speed.append(np.median(np.linalg.norm(shifts, axis=1)))
        hips = kp[:, [11, 12], :2].mean(1) * 128  # the waving figure's hips stand still: they follow the camera
        camera_range.append(np.linalg.norm(np.ptp(hips, axis=0)))
        wrist_speed.append(np.linalg.norm(np.diff(kp[:, 9, :2] * 128, axis=0), axis=1).mean())
        brightness = frames.reshape(len(frames), -1).mean(1)
        assert np.abs(np.diff(brightness) / brightness[:-1]).max() < 0.02, seed
    assert max(camera_speed) < 0.5, camera_speed
    assert np.mean(camera_range) > 1, camera_range  # the camera still moves: a nuisance, only a slow one
    assert np.mean(wrist_speed) > 1, wrist_speed
    assert all(w > 3 * c for w, c in zip(wrist_speed, camera_speed)), (wrist_speed, camera_speed)


def test_appearance_does_not_depend_on_the_class():
    # Same random stream, two classes: every pixel away from both figures is identical.
    frames_a, _, masks_a = render_video("wave_left_arm", np.random.default_rng(3), 8, 64)
    frames_b, _, masks_b = render_video("squat", np.random.default_rng(3), 8, 64)
    kernel = np.ones((5, 5), np.uint8)
    person = np.stack([cv2.dilate(a | b, kernel) for a, b in zip(masks_a, masks_b)]).astype(bool)
    assert (~person).mean() > 0.5
    assert np.array_equal(frames_a[~person], frames_b[~person])
    assert not np.array_equal(masks_a, masks_b)


def test_too_many_classes_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="--classes"):
        _make(tmp_path, "--classes", "11")


def test_annotations_name_the_scene(dataset, tmp_path):
    with np.load(dataset / "annotations" / ACTIONS[0] / f"{ACTIONS[0]}_v000.npz") as ann:
        assert int(ann["scene"]) == -1  # no --scenes: a look of its own
    _make(tmp_path / "scenes", "--scenes", "2", "--classes", "1", "--workers", "1")
    scenes = set()
    for v in range(3):
        with np.load(tmp_path / "scenes/annotations" / ACTIONS[0] / f"{ACTIONS[0]}_v{v:03d}.npz") as ann:
            scenes.add(int(ann["scene"]))
    assert scenes <= {0, 1}


def test_the_pose_changes_between_blocks_at_a_64_px_input():
    # What CPC's "which moment" needs: the mean pose of a block (4 frames, stride 2) differs from the next
    # block's by pixels, not a fraction of one, at the encoders' 64 px.
    moved = []
    for seed in range(6):
        _, kp, _ = render_video("wave_left_arm", np.random.default_rng([0, 0, seed]), 48, 128)
        blocks = kp[8:48:2, 9, :2].reshape(5, 4, 2).mean(axis=1) * 64  # the waving wrist, 5 blocks
        moved.append(np.linalg.norm(np.diff(blocks, axis=0), axis=1).mean())
    assert np.median(moved) > 3, moved


def test_figure_size_and_period_are_flags(tmp_path):
    small = render_video("squat", np.random.default_rng(5), 8, 64, body_size=(0.3, 0.3))[2]
    large = render_video("squat", np.random.default_rng(5), 8, 64, body_size=(0.7, 0.7))[2]
    assert large.sum() > 3 * small.sum()  # area grows with the square of the scale
    with pytest.raises(ValueError, match="--period"):
        _make(tmp_path, "--period", "20", "10")
    with pytest.raises(ValueError, match="--body_size"):
        _make(tmp_path, "--body_size", "0", "0.5")
