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
    assert hips_l[-1] - hips_l[0] < -0.1 and hips_r[-1] - hips_r[0] > 0.1


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
