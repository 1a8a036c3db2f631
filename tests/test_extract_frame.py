"""process_data/extract_frame.py and the atomic helpers of process_data/common.py on generated videos."""
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from process_data import extract_frame
from process_data.common import atomic_dir, count_frames, finish_run, list_videos, parallel_map, short_side_size
from utils.layout import FRAMES

W, H, N = 80, 60, 12


def write_video(path: Path, n: int = N, size: tuple[int, int] = (W, H)) -> Path:
    """MJPG .avi whose frame i (0-based) is grey level 20 * i + 10 plus zero-mean noise.

    The noise makes the frame data, not the container header, the bulk of the file, so cutting
    the file in half keeps a readable header and loses frames.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, size)
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for i in range(n):
        noise = rng.integers(-8, 9, (size[1], size[0], 3))
        writer.write((20 * i + 10 + noise).astype(np.uint8))
    writer.release()
    return path


def run(video_root: Path, frame_root: Path, dim: int = 30, workers: int = 1) -> dict:
    args = extract_frame.get_args_parser().parse_args(
        ["--video_root", str(video_root), "--frame_root", str(frame_root), "--dim", str(dim), "--workers", str(workers)])
    return extract_frame.main(args)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_frames_count_size_and_1_based_order(tmp_path):
    write_video(tmp_path / "videos" / "walk" / "v_walk_g01.avi")
    stats = run(tmp_path / "videos", tmp_path / "frame", dim=30)
    out = tmp_path / "frame" / "walk" / "v_walk_g01"
    names = sorted(p.name for p in out.iterdir())
    assert names == [FRAMES.name(i) for i in range(1, N + 1)]
    assert stats == {"done": 1, "skipped": 0, "failed": 0, "frames": N}
    first = cv2.imread(str(out / FRAMES.name(1)))
    assert first.shape == (30, 40, 3)  # short side 30, aspect 4:3 kept
    for i in (1, 5, N):
        mean = cv2.imread(str(out / FRAMES.name(i))).mean()
        assert abs(mean - (20 * (i - 1) + 10)) < 4, f"frame {i} out of order"
    assert (tmp_path / "frame" / "failed.txt").read_text() == ""


def test_resize_short_side_portrait_and_upscale():
    img = np.zeros((100, 50, 3), np.uint8)
    assert extract_frame.resize_short_side(img, 20).shape == (40, 20, 3)
    assert extract_frame.resize_short_side(img, 100).shape == (200, 100, 3)
    assert extract_frame.resize_short_side(img, 50) is img


def test_short_side_size_keeps_the_aspect_ratio():
    assert short_side_size(240, 320, 64) == (64, 85)
    assert short_side_size(320, 240, 64) == (85, 64)
    assert short_side_size(128, 128, 64) == (64, 64)
    assert short_side_size(240, 320, 480) == (480, 640)
    assert short_side_size(2, 1000, 1) == (1, 500)
    with pytest.raises(ValueError, match="positive"):
        short_side_size(240, 320, 0)


def test_finish_run_writes_failures_and_prints_a_summary(tmp_path, capsys):
    failures = [(f"c/v{i}", f"reason\n{i}") for i in range(7)]
    stats = finish_run("tool", tmp_path / "out", failures, done=3, skipped=2, frames=40)
    assert stats == {"done": 3, "skipped": 2, "failed": 7, "frames": 40}
    lines = (tmp_path / "out" / "failed.txt").read_text().splitlines()
    assert lines == [f"c/v{i}\treason {i}" for i in range(7)]
    captured = capsys.readouterr()
    assert captured.out == f"tool: done 3 (40 frames), skipped 2, failed 7 (listed in {tmp_path / 'out' / 'failed.txt'})\n"
    assert captured.err.count("failed: ") == 5 and "c/v4" in captured.err and "c/v5" not in captured.err
    assert finish_run("tool", tmp_path / "out", [], done=1, skipped=0) == {"done": 1, "skipped": 0, "failed": 0}
    assert capsys.readouterr().out == "tool: done 1, skipped 0, failed 0\n"
    assert (tmp_path / "out" / "failed.txt").read_text() == ""


def test_truncated_and_garbage_videos_are_reported_and_others_done(tmp_path):
    videos = tmp_path / "videos"
    write_video(videos / "a" / "good1.avi")
    write_video(videos / "b" / "good2.avi")
    full = write_video(videos / "a" / "trunc.avi").read_bytes()
    (videos / "a" / "trunc.avi").write_bytes(full[: len(full) // 2])
    (videos / "b" / "garbage.avi").write_bytes(b"this is not a video" * 50)
    (videos / "b" / "notes.txt").write_text("ignored: not a video extension")
    stats = run(videos, tmp_path / "frame", workers=2)
    assert stats["done"] == 2 and stats["failed"] == 2
    failed = dict(line.split("\t") for line in (tmp_path / "frame" / "failed.txt").read_text().splitlines())
    assert set(failed) == {"a/trunc.avi", "b/garbage.avi"}
    assert "truncated" in failed["a/trunc.avi"] and "of the 12 frames" in failed["a/trunc.avi"]
    assert "cannot be opened" in failed["b/garbage.avi"]
    assert count_frames(tmp_path / "frame" / "a" / "good1") == N
    assert count_frames(tmp_path / "frame" / "b" / "good2") == N
    assert not (tmp_path / "frame" / "a" / "trunc").exists()
    assert not [p for p in (tmp_path / "frame").rglob(".*")], "temporary folders left behind"


def test_interrupted_run_resumes_and_rerun_skips(tmp_path):
    videos = tmp_path / "videos"
    write_video(videos / "a" / "v1.avi")
    write_video(videos / "a" / "v2.avi", n=7)
    frame = tmp_path / "frame"
    extract_frame.extract_video(videos / "a" / "v1.avi", frame / "a" / "v1", 30)
    stale = frame / "a" / f".v2.tmp-{dead_pid()}"  # what a killed run leaves
    stale.mkdir()
    (stale / FRAMES.name(1)).write_bytes(b"partial")
    done_mtime = (frame / "a" / "v1" / FRAMES.name(1)).stat().st_mtime_ns

    stats = run(videos, frame)
    assert stats == {"done": 1, "skipped": 1, "failed": 0, "frames": 7}
    assert not stale.exists()
    assert count_frames(frame / "a" / "v1") == N and count_frames(frame / "a" / "v2") == 7
    assert (frame / "a" / "v1" / FRAMES.name(1)).stat().st_mtime_ns == done_mtime

    assert run(videos, frame) == {"done": 0, "skipped": 2, "failed": 0, "frames": 0}


def test_atomic_dir_removes_temp_on_error_and_refuses_existing(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "x").write_text("1")
            raise RuntimeError("boom")
    assert not final.exists() and os.listdir(tmp_path) == []
    with atomic_dir(final) as tmp:
        (tmp / "x").write_text("1")
    assert (final / "x").read_text() == "1"
    with pytest.raises(FileExistsError, match="out"):
        with atomic_dir(final):
            pass


def _fails_on_two(x: int) -> int:
    if x == 2:
        raise ValueError("two")
    return x * 10


@pytest.mark.parametrize("workers", [1, 2])
def test_parallel_map_keeps_order_and_returns_errors(workers):
    res = parallel_map(_fails_on_two, [1, 2, 3], workers, desc="t")
    assert res[0] == 10 and res[2] == 30
    assert isinstance(res[1], ValueError) and str(res[1]) == "two"


def test_list_videos_filters_and_sorts(tmp_path):
    for rel in ["b/z.mp4", "a/y.AVI", "a/x.webm", "a/readme.txt", ".hidden/q.avi", "top.avi"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in list_videos(tmp_path)] == ["a/x.webm", "a/y.AVI", "b/z.mp4"]
    with pytest.raises(FileNotFoundError, match="nope"):
        list_videos(tmp_path / "nope")
