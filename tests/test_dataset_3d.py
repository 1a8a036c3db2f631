"""The pretraining datasets on a tiny frame tree whose content encodes frame index and position."""
import numpy as np
import pytest
import torch
from tiny_dataset import LEVEL, as_model_input, make_tiny_dataset

from train import dataset_3d
from train.dataset_3d import build_pretrain_datasets, view_sizes
from utils.layout import resolve_csv_root, resolve_hflip
from utils.video_index import load_split

torch.set_num_threads(1)

VIEWS = ["imgs", "flow", "kphm", "seg"]
N, SL, DS = 4, 3, 2


def _build(csv_root, hflip=False, sampling="dynamic", views=VIEWS, img_dim=64):
    return build_pretrain_datasets(csv_root, 1, views, img_dim, N, SL, DS, hflip, sampling, 0.25, seed=3)


def _frame_index(level: torch.Tensor) -> np.ndarray:
    """Frame indices from per-frame uniform levels in 0-1 (``LEVEL * i / 255``), shape [N, SL]."""
    return np.round(level.numpy() * 255 / LEVEL).astype(int)


def test_item_is_documented_dict_with_view_sizes(tiny_csv_root):
    train_ds, val_ds, classes = _build(tiny_csv_root, img_dim=96)
    assert classes == ["jump", "wave"]
    item = train_ds[0]
    assert set(item) == {"imgs", "flow", "kphm", "seg", "label", "index"}
    assert item["index"] == 0 and item["label"] in (0, 1)
    sizes = {"imgs": 96, "flow": 96, "kphm": 64, "seg": 64}
    assert view_sizes(VIEWS, 96) == sizes and view_sizes(["flow"], 224) == {"flow": 128}
    channels = {"imgs": 3, "flow": 2, "kphm": 17, "seg": 1}
    for view in VIEWS:
        assert item[view].shape == (N, channels[view], SL, sizes[view], sizes[view])
        assert item[view].dtype == torch.uint8
        assert as_model_input(item)[view].dtype == torch.float32


def test_validation_is_held_out_of_the_train_split(tiny_csv_root):
    train_ds, val_ds, _ = _build(tiny_csv_root)
    train_entries, _ = load_split(tiny_csv_root, "train")
    test_entries, _ = load_split(tiny_csv_root, "test")
    train_dirs = {e.frame_dir for e in train_ds.entries}
    val_dirs = {e.frame_dir for e in val_ds.entries}
    assert not train_dirs & val_dirs
    assert train_dirs | val_dirs == {e.frame_dir for e in train_entries}
    assert not val_dirs & {e.frame_dir for e in test_entries}
    assert sorted(e.label for e in val_ds.entries) == [0, 1]  # stratified: one per class
    assert not val_ds.train and train_ds.train


@pytest.mark.parametrize("index", [0, 1, 2])
def test_views_share_frames_and_crop(tiny_csv_root, index):
    train_ds, _, _ = _build(tiny_csv_root, hflip=False)
    item = as_model_input(train_ds[index])
    flow_frames = _frame_index(item["flow"][:, 1].mean(dim=(-2, -1)) + 0.5)  # flow y = frame level, [N, SL]
    # Contiguous blocks at one stride; flow lacks the last RGB frame (24), filled from frame 23.
    start, stride = flow_frames[0, 0], flow_frames[0, 1] - flow_frames[0, 0]
    assert 1 <= stride <= DS
    assert np.array_equal(flow_frames.reshape(-1), np.minimum(start + stride * np.arange(N * SL), 23))
    # Heatmaps exist on odd frames only: each frame is filled from a neighbour at most 1 away.
    kphm_frames = _frame_index(item["kphm"][:, 1].mean(dim=(-2, -1)))
    assert np.abs(kphm_frames - flow_frames).max() <= 1 and (kphm_frames % 2 == 1).all()
    # The same crop box: the horizontal ramp averages the same in every view (RGB is jittered, so
    # compare flow x, heatmap channel 0 and the mask, stored at two resolutions).
    flow_x = item["flow"][:, 0].mean() + 0.5
    for other in (item["kphm"][:, 0].mean(), item["seg"].mean()):
        assert abs(float(flow_x - other)) < 0.03


def test_validation_clip_is_centred_and_rgb_matches_other_views(tiny_csv_root):
    _, val_ds, _ = _build(tiny_csv_root)
    item = as_model_input(val_ds[0])
    mean, std = torch.tensor([0.485, 0.456]), torch.tensor([0.229, 0.224])
    rgb = item["imgs"][:, :2] * std.view(1, 2, 1, 1, 1) + mean.view(1, 2, 1, 1, 1)  # red ramp, green level
    assert np.array_equal(_frame_index(rgb[:, 1].mean(dim=(-2, -1))), _frame_index(item["flow"][:, 1].mean(dim=(-2, -1)) + 0.5))
    assert abs(float(rgb[:, 0].mean() - item["seg"].mean())) < 0.03
    assert abs(float(item["seg"].mean()) - 0.5) < 0.03  # centre crop of a symmetric ramp
    assert torch.equal(as_model_input(val_ds[0])["flow"], item["flow"])  # no randomness in validation


def test_crops_differ_between_samples_and_epochs(tiny_csv_root):
    train_ds, _, _ = _build(tiny_csv_root)
    first = train_ds[0]["seg"]
    train_ds.set_epoch(1)
    assert not torch.equal(train_ds[0]["seg"], first)
    train_ds.set_epoch(0)
    assert torch.equal(train_ds[0]["seg"], first)


def test_flip_is_shared_and_negates_flow_x(tiny_csv_root):
    train_ds, _, _ = _build(tiny_csv_root, hflip=True)
    flipped = 0
    for epoch in range(3):
        train_ds.set_epoch(epoch)
        for index in range(len(train_ds)):
            item = as_model_input(train_ds[index])
            seg, flow_x = item["seg"][:, 0], item["flow"][:, 0]  # [N, SL, S, S]
            # Unflipped: flow x = ramp - 0.5; flipped: mirrored and negated, = 0.5 - mirrored ramp = 0.5 - seg.
            if torch.allclose(flow_x, seg - 0.5, atol=0.06):
                continue
            assert torch.allclose(flow_x, 0.5 - seg, atol=0.06)
            assert (seg[..., -1] < seg[..., 0]).all()  # the mask's ramp falls left to right: mirrored too
            flipped += 1
    assert 0 < flipped < 3 * len(train_ds)


def test_center_sampling_takes_middle_clip(tiny_csv_root):
    train_ds, _, _ = _build(tiny_csv_root, sampling="center")
    starts = set()
    for epoch in range(3):
        train_ds.set_epoch(epoch)
        starts.add(int(_frame_index(as_model_input(train_ds[0])["flow"][:, 1].mean(dim=(-2, -1)) + 0.5)[0, 0]))
    assert len(starts) == 1
    with pytest.raises(ValueError, match="--sampling"):
        _build(tiny_csv_root, sampling="random")


def test_builder_checks_the_views_on_disk(tmp_path):
    # The message itself is tested with check_views_on_disk (test_video_data.py).
    csv_root = make_tiny_dataset(tmp_path, videos_per_class=3, num_frames=14, views=("imgs", "flow"))
    with pytest.raises(FileNotFoundError, match=r"seg: 4 missing"):
        _build(csv_root, views=["imgs", "seg"])


def test_csv_root_and_hflip_defaults(tmp_path):
    with pytest.raises(FileNotFoundError, match="write_csv.py"):
        resolve_csv_root(None, "no_such_dataset")
    assert resolve_csv_root(tmp_path, "x") == tmp_path
    with pytest.raises(FileNotFoundError, match="classInd.txt.*write_csv.py"):
        _build(tmp_path)
    assert resolve_hflip(None, "synthetic") is False and resolve_hflip(None, "ucf101") is True
    assert resolve_hflip(True, "synthetic") is True and resolve_hflip(False, "ucf101") is False


def test_no_validation_video_is_a_clear_error(tmp_path):
    # Two videos per class: one in the test list, one in the train list, which must stay in training.
    csv_root = make_tiny_dataset(tmp_path, videos_per_class=2, num_frames=14, views=("imgs",))
    with pytest.raises(ValueError, match=r"--val_fraction 0.25 .*train_split01.csv.*single training video"):
        _build(csv_root, views=["imgs"])


def test_a_batch_larger_than_the_training_set_fails_before_the_views_are_scanned(tiny_csv_root, monkeypatch):
    def no_scan(*_args, **_kwargs):
        raise AssertionError("the views on disk were scanned before the batch size was checked")

    monkeypatch.setattr(dataset_3d, "check_views_on_disk", no_scan)
    with pytest.raises(ValueError, match=r"--batch_size: 64 clips per step exceed the \d+ training videos of "
                                         r".*train_split01.csv \(\d+ more are held out for validation\)"):
        build_pretrain_datasets(tiny_csv_root, 1, VIEWS, 64, N, SL, DS, False, "dynamic", 0.25, seed=3, clips_per_step=64)
