"""process_data/extract_flow.py: flow values, encoding, file layout, failures and resuming."""
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from process_data import extract_flow
from utils.layout import FLOW_X, FLOW_Y, FRAMES, decode_flow, encode_flow

SIZE, SQ, TOP, SHIFT, BOUND = 96, 32, 32, 3, 20


def texture(shape: tuple[int, int], seed: int, lo: int, hi: int) -> np.ndarray:
    tex = cv2.GaussianBlur(np.random.default_rng(seed).uniform(0, 255, shape), (0, 0), 1.0)
    return cv2.normalize(tex, None, lo, hi, cv2.NORM_MINMAX).astype(np.uint8)


def moving_square_frames(n: int) -> list[np.ndarray]:
    """Grey frames: a textured SQxSQ square moving SHIFT px right per frame over a static textured background."""
    tex, background = texture((SQ, SQ), 0, 30, 230), texture((SIZE, SIZE), 1, 90, 160)
    frames = []
    for i in range(n):
        img = background.copy()
        left = 24 + SHIFT * i
        img[TOP:TOP + SQ, left:left + SQ] = tex
        frames.append(img)
    return frames


def write_frames(video_dir: Path, frames: list[np.ndarray]) -> Path:
    video_dir.mkdir(parents=True)
    for i, f in enumerate(frames, 1):
        cv2.imwrite(str(video_dir / FRAMES.name(i)), f, [cv2.IMWRITE_JPEG_QUALITY, 100])
    return video_dir


def run(frame_root: Path, *argv: str) -> dict:
    return extract_flow.main(extract_flow.get_args_parser().parse_args(["--frame_root", str(frame_root), *argv]))


def test_encode_decode_hand_cases():
    f = np.array([0.0, 20.0, -20.0, 35.0, -100.0, 10.0])
    u8 = encode_flow(f, 20)
    assert u8.dtype == np.uint8
    assert abs(int(u8[0]) - 128) <= 1
    assert u8[1:].tolist() == [255, 0, 255, 0, 191]  # 10 px -> 30 * 255 / 40 = 191.25
    back = decode_flow(u8, 20)
    assert np.allclose(back[[0, 1, 2, 5]], [0, 20, -20, 10], atol=20 / 255 + 1e-6)
    assert back[3] == pytest.approx(20) and back[4] == pytest.approx(-20)
    all_u8 = np.arange(256, dtype=np.uint8)
    assert np.array_equal(encode_flow(decode_flow(all_u8, 7.5), 7.5), all_u8)
    with pytest.raises(ValueError, match="bound"):
        encode_flow(f, 0)


@pytest.mark.parametrize(
    "method,preset", [("tvl1", "accurate"), ("tvl1", "fast"), ("farneback", "accurate"), ("dis", "accurate")])
def test_square_moving_right_gives_plus_three_x(tmp_path, method, preset):
    video = write_frames(tmp_path / "frame" / "c" / "v", moving_square_frames(2))
    out = tmp_path / "flow" / "c" / "v"
    assert extract_flow.extract_video_flow(video, out, extract_flow.make_flow_fn(method, preset), BOUND) == 1
    fx = decode_flow(cv2.imread(str(out / FLOW_X.name(1)), cv2.IMREAD_GRAYSCALE), BOUND)
    fy = decode_flow(cv2.imread(str(out / FLOW_Y.name(1)), cv2.IMREAD_GRAYSCALE), BOUND)
    inner = (slice(TOP + 6, TOP + SQ - 6), slice(24 + 6, 24 + SQ - 6))  # the square's core in frame 1
    assert np.median(fx[inner]) == pytest.approx(SHIFT, abs=0.5)
    assert np.median(fy[inner]) == pytest.approx(0, abs=0.5)
    assert np.median(np.abs(fx[:20, :])) < 0.5 and np.median(np.abs(fy[:20, :])) < 0.5  # static background


def test_cli_pairs_failures_default_root_and_resume(tmp_path):
    frame = tmp_path / "ds" / "frame"
    write_frames(frame / "c" / "four", moving_square_frames(4))
    write_frames(frame / "c" / "single", moving_square_frames(1))
    gap = write_frames(frame / "d" / "gap", moving_square_frames(3))
    (gap / FRAMES.name(2)).unlink()
    stats = run(frame, "--method", "dis", "--bound", "20")
    flow = tmp_path / "ds" / "flow"
    names = sorted(p.name for p in (flow / "c" / "four").iterdir())
    assert names == [files.name(i) for files in (FLOW_X, FLOW_Y) for i in (1, 2, 3)]
    assert cv2.imread(str(flow / "c" / "four" / FLOW_X.name(1)), cv2.IMREAD_UNCHANGED).shape == (SIZE, SIZE)
    assert stats == {"done": 1, "skipped": 0, "failed": 2, "pairs": 3}
    failed = dict(line.split("\t") for line in (flow / "failed.txt").read_text().splitlines())
    assert "1 frame(s); flow needs at least 2" in failed["c/single"]
    assert "not numbered" in failed["d/gap"]

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    (frame / "d" / "gap" / FRAMES.name(2)).write_bytes((frame / "d" / "gap" / FRAMES.name(1)).read_bytes())
    stale = flow / "d" / f".gap.tmp-{proc.pid}"  # left by a killed run
    stale.mkdir(parents=True)
    (stale / FLOW_X.name(1)).write_bytes(b"partial")
    mtime = (flow / "c" / "four" / FLOW_X.name(1)).stat().st_mtime_ns
    stats = run(frame, "--method", "dis", "--workers", "2")
    assert stats == {"done": 1, "skipped": 1, "failed": 1, "pairs": 2}
    assert not stale.exists() and len(list((flow / "d" / "gap").iterdir())) == 4
    assert (flow / "c" / "four" / FLOW_X.name(1)).stat().st_mtime_ns == mtime
    assert (flow / "failed.txt").read_text().startswith("c/single\t")


def test_default_roots_and_flow_dim(tmp_path):
    frame, ucf = tmp_path / "ucf" / "frame", (tmp_path / "ucf").resolve()
    assert extract_flow.default_flow_root(frame, "farneback") == ucf / "farne"
    assert extract_flow.default_flow_root(frame, "tvl1") == ucf / "flow"
    assert extract_flow.default_flow_root(frame, "dis") == ucf / "flow"
    kinetics = tmp_path / "k" / "frame" / "train"
    assert extract_flow.default_flow_root(kinetics, "tvl1") == (tmp_path / "k").resolve() / "flow" / "train"
    with pytest.raises(ValueError, match="no 'frame' folder"):
        extract_flow.default_flow_root(tmp_path / "ucf" / "rgb", "tvl1")
    write_frames(frame / "c" / "v", moving_square_frames(2))
    run(frame, "--method", "farneback", "--dim", "48")
    flow_y = cv2.imread(str(ucf / "farne" / "c" / "v" / FLOW_Y.name(1)), cv2.IMREAD_UNCHANGED)
    assert flow_y.shape == (48, 48)
