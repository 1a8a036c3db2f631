import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_dataset import as_model_input, write_view_frame

from utils import clip_sampling, frame_reader
from utils.clip_sampling import clip_indices, video_group_indices
from utils.frame_reader import FrameReader, check_views_on_disk
from utils.layout import FLOW_X, FLOW_Y, FRAMES, HEATMAPS, SEGMASKS, read_class_index
from utils.video_data import MultiViewClipDataset, VideoGroupDataset
from utils.video_index import VideoEntry, holdout_split, load_split, read_split_csv, split_csv_path
from utils.views import VIEWS, parse_views, view_backbone, view_dir


def _write_video(root: Path, cls: str, name: str, n: int, h: int = 24, w: int = 32) -> Path:
    """All four views of one video; every stored frame i is uniformly 4·i (heatmaps: every other frame)."""
    frame_dir = root / "frame" / cls / name
    for i in range(1, n + 1):
        value = 4 * i
        write_view_frame(frame_dir, "imgs", i, np.full((h, w, 3), value, np.uint8))
        if i < n:
            write_view_frame(frame_dir, "flow", i, np.full((h, w, 2), value, np.uint8))
        if i % 2 == 1:
            hm = np.full((17, h // 2, w // 2), value, np.uint8)
            write_view_frame(frame_dir, "kphm", i, hm)
            write_view_frame(frame_dir, "seg", i, hm[0])
    return frame_dir


def test_data_contract_keeps_the_original_file_layout():
    series = (FRAMES, FLOW_X, FLOW_Y, HEATMAPS, SEGMASKS)
    assert [s.name(12) for s in series] == [
        "image_00012.jpg", "flow_x_00012.jpg", "flow_y_00012.jpg", "heatmap_00012.npz", "segmask_00012.npz"]
    assert (HEATMAPS.key, SEGMASKS.key) == ("hm", "seg") and FRAMES.glob == "image_*.jpg"
    assert FRAMES.index("image_00012.jpg") == 12 and FRAMES.index("image_x.jpg") is None
    assert FRAMES.index("flow_x_00012.jpg") is None
    assert {v: (VIEWS[v].folder, VIEWS[v].files) for v in VIEWS} == {
        "imgs": ("frame", FRAMES), "flow": ("flow", FLOW_X), "farne": ("farne", FLOW_X),
        "kphm": ("heatmaps", HEATMAPS), "seg": ("segmasks", SEGMASKS)}


def test_views_parse_and_locate():
    assert parse_views("imgs_flow_seg_kphm") == ["imgs", "flow", "seg", "kphm"]
    with pytest.raises(ValueError, match="--modalities.*unknown view.*rgb"):
        parse_views("imgs_rgb")
    with pytest.raises(ValueError, match="twice"):
        parse_views("imgs_imgs")
    assert view_dir("/d/ucf/frame/Run/v1", "kphm") == Path("/d/ucf/heatmaps/Run/v1")
    assert view_dir("/frame/x/frame/Run/v1", "flow") == Path("/frame/x/flow/Run/v1")
    with pytest.raises(ValueError, match="frame"):
        view_dir("/d/ucf/images/Run/v1", "flow")
    assert [VIEWS[v].size(224) for v in ("imgs", "flow", "kphm", "seg")] == [224, 128, 64, 64]
    assert [VIEWS[v].size(32) for v in ("imgs", "flow", "kphm", "seg")] == [32, 32, 32, 32]
    assert view_backbone("imgs", "resnet50") == "resnet50"
    assert view_backbone("flow", "resnet50") == "resnet18"
    assert view_backbone("flow", "resnet10") == "resnet10"


def test_class_index_and_split_csv(tmp_path):
    (tmp_path / "classInd.txt").write_text("1 Run\n2 Jump\n")
    assert read_class_index(tmp_path / "classInd.txt") == ["Run", "Jump"]
    (tmp_path / "train_split01.csv").write_text("/d/frame/Jump/v_a,40\n/d/frame/Run/v_b,12\n")
    entries, names = load_split(tmp_path, "train", 1)
    assert names == ["Run", "Jump"]
    assert entries == [VideoEntry(Path("/d/frame/Jump/v_a"), 40, 1), VideoEntry(Path("/d/frame/Run/v_b"), 12, 0)]
    (tmp_path / "bad.csv").write_text("/d/frame/Swim/v_c,3\n")
    with pytest.raises(ValueError, match=r"bad.csv:1: class 'Swim'"):
        read_split_csv(tmp_path / "bad.csv", names)
    (tmp_path / "bad2.csv").write_text("/d/frame/Run/v_c;3\n")
    with pytest.raises(ValueError, match=r"bad2.csv:1: expected"):
        read_split_csv(tmp_path / "bad2.csv", names)
    with pytest.raises(FileNotFoundError, match="write_csv.py"):
        read_class_index(tmp_path / "missing" / "classInd.txt")
    (tmp_path / "gap.txt").write_text("1 a\n3 b\n")
    with pytest.raises(ValueError, match="without gaps"):
        read_class_index(tmp_path / "gap.txt")
    (tmp_path / "twice.txt").write_text("1 a\n2 b\n3 a\n")
    with pytest.raises(ValueError, match=r"twice.txt:3: class 'a' is listed twice"):
        read_class_index(tmp_path / "twice.txt")
    (tmp_path / "same_id.txt").write_text("1 a\n1 b\n")
    with pytest.raises(ValueError, match=r"same_id.txt:2: class id 1 is given twice \('a' and 'b'\)"):
        read_class_index(tmp_path / "same_id.txt")


def test_split_csv_path_kinetics_style(tmp_path):
    (tmp_path / "train_split.csv").write_text("")
    (tmp_path / "val_split.csv").write_text("")
    assert split_csv_path(tmp_path, "train") == tmp_path / "train_split.csv"
    assert split_csv_path(tmp_path, "test") == tmp_path / "val_split.csv"
    with pytest.raises(FileNotFoundError, match="train_split02.csv"):
        split_csv_path(tmp_path / "nothing", "train", 2)


def test_holdout_split_is_stratified_seeded_and_disjoint():
    entries = [VideoEntry(Path(f"/f/c{c}/v{i}"), 50, c) for c in range(3) for i in range(10)]
    train, val = holdout_split(entries, 0.2, seed=1)
    assert len(val) == 6 and len(train) == 24
    assert sorted(e.label for e in val) == [0, 0, 1, 1, 2, 2]
    assert not set(train) & set(val)
    assert holdout_split(entries, 0.2, seed=1) == (train, val)
    assert holdout_split(entries, 0.2, seed=2)[1] != val


def test_clip_indices_strides_and_short_videos():
    mid = clip_indices(100, 4, 5, 3)
    assert mid.shape == (4, 5)
    assert np.all(np.diff(mid.reshape(-1)) == 3)
    assert mid[0, 0] == 1 + (100 - 58) // 2
    short = clip_indices(30, 4, 5, 3)  # 20 frames need stride 1
    assert np.all(np.diff(short.reshape(-1)) == 1)
    tiny = clip_indices(7, 2, 5, 3)
    assert tiny.max() == 7 and tiny.min() == 1
    rng = np.random.default_rng(0)
    starts = {clip_indices(200, 4, 5, 3, rng)[0, 0] for _ in range(20)}
    assert len(starts) > 1 and min(starts) >= 1 and max(starts) <= 200 - 57


def test_video_group_indices_cover_the_video_with_half_overlap():
    groups = video_group_indices(50, 4, 5, 1)  # 10 blocks, groups of 4 every 2 blocks
    assert groups.shape == (4, 4, 5)
    assert groups[:, 0, 0].tolist() == [1, 11, 21, 31]
    assert groups[-1, -1, -1] == 50
    ends = video_group_indices(60, 4, 5, 1)  # 12 blocks: starts 0,2,4,6,8
    assert ends[-1, -1, -1] == 60
    short = video_group_indices(7, 2, 5, 3)  # shorter than 10 frames even at stride 1: the last frame repeats
    assert short.shape == (1, 2, 5) and short.reshape(-1).tolist() == [1, 2, 3, 4, 5, 6, 7, 7, 7, 7]


@pytest.mark.parametrize("num_frames", [20, 30, 39, 40, 57, 58, 100])
def test_training_clips_and_test_groups_read_a_short_video_at_the_same_stride(num_frames):
    """4 blocks of 5 frames at --ds 3 need 58 frames; a shorter video is read at the largest stride that fits."""
    clip = clip_indices(num_frames, 4, 5, 3).reshape(-1)
    groups = video_group_indices(num_frames, 4, 5, 3)
    expected = clip_sampling.clip_stride(num_frames, 4, 5, 3)
    assert expected == (3 if num_frames >= 58 else 2 if num_frames >= 39 else 1)
    assert set(np.diff(clip)) == {expected}
    assert all(set(np.diff(g.reshape(-1))) == {expected} for g in groups)  # no frame repeated, no other stride
    assert groups.max() > num_frames - expected * 5  # the groups reach the last whole block


def test_frame_reader_fills_missing_frames_from_nearest(tmp_path):
    frame_dir = _write_video(tmp_path, "Run", "v1", n=9)
    reader = FrameReader()
    hm = reader.read(frame_dir, "kphm", np.array([1, 2, 4, 9]))
    assert hm.shape == (4, 12, 16, 17) and hm.dtype == torch.uint8
    # Heatmaps exist at 1, 3, 5, 7, 9: frame 2 -> 1 or 3, frame 4 -> 3 or 5.
    assert hm[0, 0, 0, 0] == 4 and hm[1, 0, 0, 0] in (4, 12) and hm[3, 0, 0, 0] == 36
    flow = reader.read(frame_dir, "flow", np.array([9]))  # 8 flow pairs: frame 9 uses pair 8
    assert flow.shape == (1, 24, 32, 2) and abs(int(flow[0, 0, 0, 0]) - 32) <= 1
    rgb = reader.read(frame_dir, "imgs", np.array([3, 3]))
    assert rgb.shape == (2, 24, 32, 3) and torch.equal(rgb[0], rgb[1])


def test_clip_dataset_uses_the_same_frames_and_crop_for_every_view(tmp_path):
    entries = [VideoEntry(_write_video(tmp_path, "Run", "v1", n=40), 40, 0)]
    views = ["imgs", "flow", "kphm", "seg"]
    sizes = {"imgs": 16, "flow": 16, "kphm": 8, "seg": 8}
    # One colour draw per clip keeps the RGB frames' order of brightness (a draw per frame would not).
    ds = MultiViewClipDataset(entries, views, sizes, num_seq=3, seq_len=2, ds=2, train=True, hflip=True, seed=0,
                              colour_jitter="clip")
    item = as_model_input(ds[0])
    assert item["label"] == 0 and item["index"] == 0
    for view in views:
        assert item[view].shape == (3, VIEWS[view].channels, 2, sizes[view], sizes[view])
    # Frame i is uniformly 4·i in every view, so the per-frame means recover the indices.
    seg_frames = (item["seg"][:, 0].mean(dim=(-1, -2)) * 255 / 4).round()
    flow_frames = ((item["flow"][:, 1].mean(dim=(-1, -2)) + 0.5) * 255 / 4).round()
    rgb = item["imgs"][:, 0].mean(dim=(-1, -2))  # normalised, but monotone in the index
    assert torch.all(rgb.reshape(-1).diff() > 0)
    assert torch.all((seg_frames - flow_frames).abs() <= 1)  # heatmaps are every other frame
    again = as_model_input(ds[0])
    assert torch.equal(again["imgs"], item["imgs"])
    ds.set_epoch(1)
    assert not torch.equal(as_model_input(ds[0])["imgs"], item["imgs"])


def test_clip_dataset_crop_lines_up_across_resolutions(tmp_path):
    root = tmp_path
    frame_dir = _write_video(root, "Run", "v1", n=10, h=24, w=32)
    # Paint the right half of every RGB frame and every mask white.
    for i in range(1, 11):
        img = np.zeros((24, 32, 3), np.uint8)
        img[:, 16:] = 255
        write_view_frame(frame_dir, "imgs", i, img)
        if i % 2 == 1:
            seg = np.zeros((12, 16), np.uint8)
            seg[:, 8:] = 255
            write_view_frame(frame_dir, "seg", i, seg)
    ds = MultiViewClipDataset([VideoEntry(frame_dir, 10, 0)], ["imgs", "seg"], {"imgs": 16, "seg": 8},
                              num_seq=2, seq_len=2, ds=1, train=True, hflip=True)
    for epoch in range(6):
        ds.set_epoch(epoch)
        item = as_model_input(ds[0])
        row = item["imgs"][0, 0, 0].mean(dim=0)  # columns of the (possibly flipped, jittered) crop
        rgb_white = row > (row.max() + row.min()) / 2
        seg_white = item["seg"][0, 0, 0].mean(dim=0) > 0.5
        rgb_cols = torch.nn.functional.avg_pool1d(rgb_white.float()[None], 2)[0] > 0.5
        assert (rgb_cols == seg_white).float().mean() >= 0.75


def test_group_dataset_shapes(tmp_path):
    entries = [VideoEntry(_write_video(tmp_path, "Run", "v1", n=25), 25, 0)]
    ds = VideoGroupDataset(entries, ["imgs", "kphm"], {"imgs": 16, "kphm": 8}, num_seq=2, seq_len=3, ds=2)
    item = as_model_input(ds[0])
    groups = video_group_indices(25, 2, 3, 2)
    assert item["imgs"].shape == (len(groups), 2, 3, 3, 16, 16)
    assert item["kphm"].shape == (len(groups), 2, 17, 3, 8, 8)


def test_missing_view_on_disk_is_named_with_a_count(tmp_path):
    entries = [VideoEntry(_write_video(tmp_path, "Run", f"v{i}", n=4), 4, 0) for i in range(3)]
    for p in (tmp_path / "flow" / "Run" / "v1").iterdir():
        p.unlink()
    shutil.rmtree(tmp_path / "flow" / "Run" / "v2")
    check_views_on_disk(entries, ["imgs", "kphm"], "train")
    with pytest.raises(FileNotFoundError, match=r"flow: 2 missing .*v1") as err:
        check_views_on_disk(entries, ["imgs", "flow"], "train")
    assert "imgs" not in str(err.value).split("listed videos:")[1]


def test_frames_missing_on_disk_are_filled_but_reported_once_per_folder(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(frame_reader, "_fill_warnings", set())
    frame_dir = _write_video(tmp_path, "Run", "v1", n=20)
    for i in range(6, 16):  # a hole of 10 frames in the RGB view
        view_dir(frame_dir, "imgs").joinpath(FRAMES.name(i)).unlink()
    reader = FrameReader()
    with caplog.at_level(logging.WARNING, logger="utils.frame_reader"):
        sparse = reader.read(frame_dir, "kphm", np.arange(1, 21))  # every other frame by design: no warning
        assert not caplog.records
        reader.read(frame_dir, "imgs", np.arange(1, 21))
        reader.read(frame_dir, "imgs", np.arange(1, 21))
    assert sparse.shape[0] == 20
    assert len(caplog.records) == 1
    assert "imgs frames of" in caplog.text and "frame 5 is read for frame 10, 5 frames away" in caplog.text
