"""Preprocessing runs: each output tree's manifest (how it was made) and the faults the scripts report."""
import errno
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_extract_flow import moving_square_frames, write_frames
from test_extract_frame import write_video

from process_data import common, extract_features, extract_flow, extract_frame, import_rawframes
from process_data.synthetic_render import render_video
from utils.cli import run_cli
from utils.errors import UsageError
from utils.layout import FLOW_X, FRAMES

REPO = Path(__file__).resolve().parents[1]


def _frames(video_root: Path, frame_root: Path, *extra: str) -> dict:
    return extract_frame.main(extract_frame.get_args_parser().parse_args(
        ["--video_root", str(video_root), "--frame_root", str(frame_root), *extra]))


def _flow(frame_root: Path, *extra: str) -> dict:
    return extract_flow.main(extract_flow.get_args_parser().parse_args(["--frame_root", str(frame_root), *extra]))


# ---------------------------------------------------------------- manifests


def test_a_frame_tree_refuses_a_rerun_at_another_size(tmp_path):
    write_video(tmp_path / "videos" / "walk" / "a.avi")
    _frames(tmp_path / "videos", tmp_path / "frame", "--dim", "30")
    manifest = json.loads((tmp_path / "frame" / common.MANIFEST).read_text())
    assert manifest["settings"] == {"dim": 30, "jpeg_quality": 80} and manifest["versions"]["opencv"] == cv2.__version__
    write_video(tmp_path / "videos" / "walk" / "b.avi")
    with pytest.raises(UsageError, match=rf"{tmp_path / 'frame'} holds a tree made with dim 30, jpeg_quality 80; this run asks "
                                         r"for dim 40, jpeg_quality 80: .*Pass another --frame_root, or remove .*frame"):
        _frames(tmp_path / "videos", tmp_path / "frame", "--dim", "40")
    assert not (tmp_path / "frame" / "walk" / "b").exists()  # nothing of the other size was added
    assert _frames(tmp_path / "videos", tmp_path / "frame", "--dim", "30")["done"] == 1  # same settings: b is added


def test_a_flow_tree_refuses_another_method_or_size(tmp_path):
    frame = tmp_path / "ds" / "frame"
    write_frames(frame / "c" / "v", moving_square_frames(3))
    _flow(frame, "--method", "dis")
    # Before manifests, this reported "done 0, skipped 1" over a folder of DIS flow.
    with pytest.raises(UsageError, match=r"flow holds a tree made with method dis, tvl1_preset None, bound 20.0, dim None; this "
                                         r"run asks for method tvl1, tvl1_preset fast, .*another --flow_root"):
        _flow(frame, "--method", "tvl1", "--tvl1_preset", "fast")
    with pytest.raises(UsageError, match=r"dim None; this run asks for method dis, tvl1_preset None, bound 20.0, dim 24"):
        _flow(frame, "--method", "dis", "--dim", "24")
    assert _flow(frame, "--method", "tvl1", "--tvl1_preset", "fast", "--flow_root", str(tmp_path / "tvl1"))["done"] == 1


def test_a_tree_made_before_manifests_is_taken_with_one_note(tmp_path, capsys):
    frame = tmp_path / "ds" / "frame"
    write_frames(frame / "c" / "v", moving_square_frames(3))
    write_frames(frame / "c" / "w", moving_square_frames(3))
    _flow(frame, "--method", "dis")
    (tmp_path / "ds" / "flow" / common.MANIFEST).unlink()  # as an earlier version left it
    capsys.readouterr()
    assert _flow(frame, "--method", "dis")["skipped"] == 2
    assert capsys.readouterr().err.count("has no manifest.json (made before trees recorded their settings): its 2") == 1
    assert _flow(frame, "--method", "dis")["skipped"] == 2
    assert "no manifest" not in capsys.readouterr().err
    assert json.loads((tmp_path / "ds" / "flow" / common.MANIFEST).read_text())["settings"]["method"] == "dis"


def test_heatmap_and_mask_trees_refuse_other_settings(tmp_path):
    ds = tmp_path / "ds"
    frames, keypoints, masks = render_video("squat", np.random.default_rng(0), 3, 64)
    video = ds / "frame" / "squat" / "v0"
    video.mkdir(parents=True)
    for i, rgb in enumerate(frames, 1):
        cv2.imwrite(str(video / FRAMES.name(i)), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    (ds / "annotations" / "squat").mkdir(parents=True)
    np.savez_compressed(ds / "annotations" / "squat" / "v0.npz", keypoints=keypoints, masks=masks)

    def features(*extra: str) -> dict:
        return extract_features.main(extract_features.get_args_parser().parse_args(
            ["--frame_root", str(ds / "frame"), "--backend", "annotations", "--annotations", str(ds / "annotations"), *extra]))

    features("--dim", "32")
    for root in ("heatmaps", "segmasks"):
        assert json.loads((ds / root / common.MANIFEST).read_text())["settings"] == {
            "backend": "annotations", "dim": 32, "stride": 2, "sigma": 2.0}
    with pytest.raises(UsageError, match=r"heatmaps holds a tree made with backend annotations, dim 32, .*dim 64, .*--out_root"):
        features("--dim", "64")


def test_frames_are_not_extracted_into_an_imported_tree(tmp_path):
    src = tmp_path / "rawframes" / "walk" / "a"
    src.mkdir(parents=True)
    for i in (1, 2):
        cv2.imwrite(str(src / f"img_{i:05d}.jpg"), np.full((8, 8, 3), 10 * i, np.uint8))
    import_rawframes.main(import_rawframes.get_args_parser().parse_args(
        ["--src_root", str(tmp_path / "rawframes"), "--dataset_root", str(tmp_path / "ds")]))
    write_video(tmp_path / "videos" / "walk" / "b.avi")
    with pytest.raises(UsageError, match=rf"frame holds a tree made with imported_from {tmp_path.resolve() / 'rawframes'}; "
                                         "this run asks for dim 240, jpeg_quality 80"):
        _frames(tmp_path / "videos", tmp_path / "ds" / "frame")


# ---------------------------------------------------------------- faults


def _full_disk(path: Path, data: bytes) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a write() on a full disk: no file name


@pytest.mark.parametrize("script", ["frame", "flow"])
def test_a_full_disk_stops_extraction_with_one_line_and_status_1(tmp_path, monkeypatch, capsys, script):
    if script == "frame":
        for name in ("a", "b", "c"):
            write_video(tmp_path / "videos" / "walk" / f"{name}.avi")
        module, argv = extract_frame, ["--video_root", str(tmp_path / "videos"), "--frame_root", str(tmp_path / "frame")]
        out, first = tmp_path / "frame", "image_00001.jpg"
    else:
        for name in ("a", "b", "c"):
            write_frames(tmp_path / "frame" / "walk" / name, moving_square_frames(3))
        module, argv = extract_flow, ["--frame_root", str(tmp_path / "frame"), "--method", "dis"]
        out, first = tmp_path / "flow", FLOW_X.name(1)
    calls = []
    monkeypatch.setattr(common, "_write_bytes", lambda path, data: calls.append(path) or _full_disk(path, data))
    with pytest.raises(SystemExit) as exit_info:
        run_cli(module.main, module.get_args_parser(), argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 1 and err[-1].startswith("error: no space left on the device while writing ")
    assert err[-1].endswith(f"{first}; free space there (or write elsewhere) and run again: the files finished before are "
                            "complete")
    assert not any(line.startswith("error") for line in err[:-1]) and "cannot write" not in "".join(err)
    assert len(calls) == 1  # the first failed write stops the run: no video after it is tried
    assert common.list_video_dirs(out) == [] and not [p for p in (out / "walk").iterdir()]


def test_mov_and_mpg_videos_are_extracted_and_other_files_reported(tmp_path, capsys):
    write_video(tmp_path / "videos" / "walk" / "a.mp4")
    for name, fourcc in (("b.mov", "MJPG"), ("c.mpg", "PIM1")):
        path = tmp_path / "videos" / "walk" / name
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25, (80, 60))
        assert writer.isOpened(), name
        for i in range(12):
            writer.write(np.full((60, 80, 3), 20 * i + 10, np.uint8))
        writer.release()
    (tmp_path / "videos" / "walk" / "notes.txt").write_text("shot on a phone")
    (tmp_path / "videos" / "walk" / "poster.gif").write_bytes(b"GIF89a")
    stats = _frames(tmp_path / "videos", tmp_path / "frame", "--dim", "30")
    assert stats["done"] == 3 and stats["failed"] == 0
    assert sorted(p.name for p in (tmp_path / "frame" / "walk").iterdir()) == ["a", "b", "c"]
    assert "skipped 2 file(s) that are not videos (extensions .gif, .txt;" in capsys.readouterr().err


class _ChangingCapture:
    """A capture whose frames 1-3 are 80x60 and 4-6 are 64x64, as a stream that changes resolution."""

    def __init__(self, path: str) -> None:
        self.frames = [np.full((60, 80, 3), 50, np.uint8)] * 3 + [np.full((64, 64, 3), 200, np.uint8)] * 3

    def isOpened(self) -> bool:
        return True

    def get(self, prop: int) -> float:
        return 6.0

    def read(self) -> tuple[bool, np.ndarray | None]:
        return (True, self.frames.pop(0)) if self.frames else (False, None)

    def release(self) -> None:
        pass


def test_a_video_whose_resolution_changes_is_named_and_keeps_one_size(tmp_path, monkeypatch, capsys):
    (tmp_path / "videos" / "walk").mkdir(parents=True)
    (tmp_path / "videos" / "walk" / "zoom.mp4").write_bytes(b"")
    monkeypatch.setattr(extract_frame.cv2, "VideoCapture", _ChangingCapture)
    assert _frames(tmp_path / "videos", tmp_path / "frame", "--dim", "30")["frames"] == 6
    shapes = {cv2.imread(str(p)).shape for p in (tmp_path / "frame" / "walk" / "zoom").iterdir()}
    assert shapes == {(30, 40, 3)}
    err = capsys.readouterr().err
    assert f"warning: {tmp_path / 'videos' / 'walk' / 'zoom.mp4'}: the resolution changes at frame 4, from 80x60 to 64x64; " \
           "every frame is saved at 40x30" in err


def test_tvl1_shows_progress_per_frame_pair(tmp_path, capsys):
    write_frames(tmp_path / "ds" / "frame" / "c" / "v", moving_square_frames(4))
    _flow(tmp_path / "ds" / "frame", "--method", "tvl1", "--tvl1_preset", "fast")
    err = capsys.readouterr().err
    assert "  c/v:   0%|          | 0/3 [00:00<?, ?pair/s]" in err  # a bar per video, over its 3 pairs


def test_mediapipe_set_up_lines_stay_off_the_terminal(tmp_path):
    rng = np.random.default_rng(0)
    for video in ("a", "b"):
        write_frames(tmp_path / "ds" / "frame" / "c" / video, [rng.integers(0, 255, (64, 64), np.uint8)] * 2)
    proc = subprocess.run([sys.executable, "process_data/extract_features.py", "--frame_root", str(tmp_path / "ds" / "frame"),
                           "--backend", "mediapipe", "--stride", "1"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "extract_features: done 2" in proc.stdout
    for noise in ("XNNPACK", "inference_feedback_manager", "absl::InitializeLog"):
        assert noise not in proc.stderr, proc.stderr


def test_draw_views_writes_under_runs_by_default():
    spec = importlib.util.spec_from_file_location("draw_views", REPO / "scripts" / "draw_views.py")
    draw_views = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(draw_views)
    out = draw_views.get_args_parser().parse_args(["--csv_root", "x"]).out
    assert out == REPO / "runs" / "views.png" and out != REPO / "assets" / "views.png"
