"""The fast clip loader: reduced-resolution JPEG decoding (utils/frame_reader.py), the in-memory frame cache
(utils/video_data.py), and the numpy-backed video index (utils/video_index.py)."""
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from tiny_dataset import as_model_input, write_view_frame
from torch.utils.data import DataLoader

from utils import video_data as vd
from utils.augmentation import ClipGeometry, crop_resize_frame
from utils.frame_reader import decode_reduction, jpeg_size, smallest_crop_side
from utils.layout import FRAMES
from utils.video_data import MultiViewClipDataset, VideoGroupDataset, fill_frame_caches
from utils.video_index import VideoEntry, VideoIndex, holdout_split, read_split_csv

VIEWS4 = ["imgs", "flow", "kphm", "seg"]


def _smooth(h: int, w: int, phase: float) -> np.ndarray:
    """uint8 ``[h, w]`` of slow waves: what a reduced decode must reproduce closely."""
    yy, xx = np.meshgrid(np.arange(h) / h, np.arange(w) / w, indexing="ij")
    return (127.5 + 100 * np.sin(2 * np.pi * (1.5 * xx + phase)) * np.cos(2 * np.pi * yy)).astype(np.uint8)


def _write_video(root: Path, name: str, n: int, h: int = 96, w: int = 128) -> Path:
    """Every view of one video (heatmaps and masks at half size, every other frame); returns its frame dir."""
    frame_dir = root / "frame" / "Run" / name
    for i in range(1, n + 1):
        base = _smooth(h, w, i / n)
        write_view_frame(frame_dir, "imgs", i, np.stack([base, base[::-1], np.full_like(base, 60 + 4 * i)], axis=-1))
        if i < n:
            write_view_frame(frame_dir, "flow", i, np.stack([base, base[::-1]], axis=-1))
        if i % 2 == 1:
            small = cv2.resize(base, (w // 2, h // 2))
            write_view_frame(frame_dir, "kphm", i, np.repeat(small[None], 17, axis=0))
            write_view_frame(frame_dir, "seg", i, small)
    return frame_dir


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[VideoEntry]:
    root = tmp_path_factory.mktemp("loader")
    return [VideoEntry(_write_video(root, f"v{k}", 20), 20, k % 2) for k in range(3)]


def test_reduction_keeps_the_smallest_crop_at_least_the_output_size():
    # 240x320 frames, crops of 0.5-1 of the area with ratio 3/4-4/3: the smallest side is 170 px.
    side = smallest_crop_side(240, 320, True, (0.5, 1.0), (3 / 4, 4 / 3))
    assert side == pytest.approx(np.sqrt(0.5 * 240 * 320 * 0.75))
    assert [decode_reduction(side, s) for s in (256, 128, 84, 64, 42, 16)] == [1, 1, 2, 2, 4, 8]
    # Centre crops (evaluation) keep the whole short side.
    assert [decode_reduction(smallest_crop_side(240, 320, False, (0.5, 1), (1, 1)), s) for s in (128, 64, 32)] == [1, 2, 4]


def test_jpeg_size_reads_the_header_only(tmp_path):
    path = tmp_path / "a.jpg"
    cv2.imwrite(str(path), np.zeros((37, 53, 3), np.uint8))
    assert jpeg_size(path) == (37, 53)
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg")
    assert jpeg_size(tmp_path / "b.jpg") is None


def test_reduced_decode_then_resize_equals_full_decode_then_resize(videos):
    # A box on the 1/4 grid: both paths crop the same scene region, so only the filtering differs.
    path = videos[0].frame_dir / FRAMES.name(3)
    geometry = ClipGeometry(top=0.25, left=0.125, height=0.5, width=0.5)
    full = crop_resize_frame(cv2.imread(str(path), cv2.IMREAD_COLOR), geometry, 12).astype(float)
    reduced = crop_resize_frame(cv2.imread(str(path), cv2.IMREAD_REDUCED_COLOR_4), geometry, 12).astype(float)
    assert np.abs(full - reduced).mean() < 1.0 and np.abs(full - reduced).max() <= 4


@pytest.mark.parametrize("train", [True, False])
def test_reduced_decoding_gives_the_clip_of_full_decoding(videos, train):
    sizes = {"imgs": 16, "flow": 16, "kphm": 8, "seg": 8}
    common = dict(num_seq=2, seq_len=3, ds=2, train=train, seed=3)
    reduced = MultiViewClipDataset(videos, VIEWS4, sizes, **common)
    full = MultiViewClipDataset(videos, VIEWS4, sizes, **common, reduced_decoding=False)
    assert reduced.reduction("imgs", (96, 128)) == 4 and reduced.reduction("kphm", (48, 64)) == 1
    for epoch in range(3):
        reduced.set_epoch(epoch)
        full.set_epoch(epoch)
        for index in range(len(videos)):
            a, b = as_model_input(reduced[index]), as_model_input(full[index])
            for view in VIEWS4:
                assert a[view].shape == b[view].shape
                # In grey levels: RGB is normalised by std ~0.225, the other views are 0-1.
                levels = 255 * (0.225 if view == "imgs" else 1.0)
                diff = (a[view] - b[view]).abs() * levels
                if train:
                    # A random box is rounded to whole pixels of the 1/4-size frame: the crop moves by
                    # under one output pixel (crop jitter), so the clips differ by less than half a
                    # one-pixel shift of the fully decoded clip does (measured: at most 0.2 of it).
                    x = b[view] * levels
                    one_pixel = (x[..., 1:] - x[..., :-1]).abs().mean() + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
                    assert diff.mean() < 0.5 * one_pixel, (view, float(diff.mean()), float(one_pixel))
                else:
                    assert diff.mean() < 1.0 and diff.max() <= 3, (view, float(diff.mean()), float(diff.max()))


def test_frame_cache_returns_identical_samples_and_reads_no_file(videos, tmp_path):
    root = tmp_path / "copy"
    frame_dirs = [_write_video(root, f"v{k}", 20) for k in range(2)]
    entries = [VideoEntry(d, 20, 0) for d in frame_dirs]
    sizes = {"imgs": 16, "flow": 16, "kphm": 8, "seg": 8}
    plain = MultiViewClipDataset(entries, VIEWS4, sizes, num_seq=2, seq_len=3, ds=2)
    cached = MultiViewClipDataset(entries, VIEWS4, sizes, num_seq=2, seq_len=3, ds=2)
    estimate = cached.estimate_cache_bytes()
    held = cached.fill_cache(threads=2)
    assert held >= estimate > 0.9 * held  # the estimate counts the frames, not the index arrays
    groups_plain = VideoGroupDataset(entries, ["imgs", "kphm"], {"imgs": 16, "kphm": 8}, num_seq=2, seq_len=3, ds=2)
    groups_cached = VideoGroupDataset(entries, ["imgs", "kphm"], {"imgs": 16, "kphm": 8}, num_seq=2, seq_len=3, ds=2)
    groups_cached.fill_cache()
    expected = {}
    for epoch in range(3):
        plain.set_epoch(epoch)
        expected[epoch] = [plain[i] for i in range(len(entries))]
    expected_groups = [groups_plain[i] for i in range(len(entries))]
    for path in root.rglob("*.*"):  # from now on only the cache can answer
        path.unlink()
    for epoch in range(3):
        cached.set_epoch(epoch)
        for i in range(len(entries)):
            got = cached[i]
            assert all(torch.equal(got[v], expected[epoch][i][v]) for v in VIEWS4)
    for i in range(len(entries)):
        assert all(torch.equal(groups_cached[i][v], expected_groups[i][v]) for v in ("imgs", "kphm"))
    # Forked DataLoader workers use the main process's cache, epoch after epoch.
    loader = DataLoader(cached, batch_size=2, num_workers=2)
    for epoch in range(2):
        cached.set_epoch(epoch)
        batch = next(iter(loader))
        assert torch.equal(batch["imgs"][1], expected[epoch][1]["imgs"])


def test_fill_frame_caches_refuses_what_memory_cannot_hold(videos, monkeypatch):
    dataset = MultiViewClipDataset(videos, ["imgs"], {"imgs": 16}, num_seq=2, seq_len=3, ds=2)
    monkeypatch.setattr(vd, "available_memory", lambda: 1000)
    with pytest.raises(MemoryError, match="--cache_frames: the decoded frames need"):
        fill_frame_caches([dataset], loader_workers=0)
    monkeypatch.setattr(vd, "available_memory", lambda: None)
    assert fill_frame_caches([dataset], loader_workers=0) == sum(
        c.frames.nbytes + c.indices.nbytes for c in dataset.cache.values()
    )


def test_video_index_round_trips_paths_counts_and_labels(tmp_path):
    paths = ["/d/frame/Run/v_ü 1", "/d/frame/Jump/v2", "rel/frame/Run/v3"]
    index = VideoIndex.from_rows(paths, [40, 12, 7], [0, 1, 0])
    assert len(index) == 3 and [index.path(i) for i in range(3)] == paths
    assert index[0] == VideoEntry(Path(paths[0]), 40, 0) and index[-1].num_frames == 7
    assert list(index) == [VideoEntry(Path(p), n, c) for p, n, c in zip(paths, [40, 12, 7], [0, 1, 0])]
    picked = index.take([2, 0])
    assert [e.frame_dir.name for e in picked] == ["v3", "v_ü 1"] and picked.labels.tolist() == [0, 0]
    assert index[1:] == list(index)[1:] and index == VideoIndex.from_entries(list(index))
    assert pickle.loads(pickle.dumps(index)) == index
    with pytest.raises(IndexError):
        index[3]
    # The csv reader builds the same index, and the hold-out split of an index equals that of a list.
    (tmp_path / "split.csv").write_text("".join(f"{p},{n}\n" for p, n in zip(paths, [40, 12, 7])) + "\n")
    assert read_split_csv(tmp_path / "split.csv", ["Run", "Jump"]) == index
    many = VideoIndex.from_rows([f"/f/frame/c{c}/v{i}" for c in range(3) for i in range(10)], [50] * 30,
                                [c for c in range(3) for _ in range(10)])
    assert holdout_split(many, 0.2, seed=1) == holdout_split(list(many), 0.2, seed=1)


def test_read_split_csv_takes_the_label_from_the_normalised_parent(tmp_path):
    rows = ["/d/frame/Run/v1/,5", "/d/frame/Run//v2,5", "/d/frame/Jump/v3/.,5", "/d/frame/Jump/./v4,5"]
    (tmp_path / "s.csv").write_text("\n".join(rows) + "\n")
    index = read_split_csv(tmp_path / "s.csv", ["Run", "Jump", "frame"])
    # Path("/d/frame/Jump/v3/.") is /d/frame/Jump/v3, so its class is Jump, as before the index.
    assert [Path(r.split(",")[0]).parent.name for r in rows] == ["Run", "Run", "Jump", "Jump"]
    assert index.labels.tolist() == [0, 0, 1, 1]
