"""Fault injection: the real scripts are killed (SIGKILL) mid-epoch and mid-checkpoint-write, run out of
disk, and have their preprocessing pool killed; each test checks what is left on disk, that the run
resumes, and that the resumed result is bit for bit what an uninterrupted run gives.

The kills run in subprocesses through tests/fault_inject.py; the resumed runs, which only need to be
correct, run in this process to save the start-up of a second interpreter.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from script_module import load_test_cli
from tiny_dataset import make_tiny_dataset

from train import model_trainer
from utils import files
from utils.checkpoint import load_checkpoint
from utils.cli import run_cli

REPO = Path(__file__).resolve().parents[1]


finetune_cli = load_test_cli("cocon_finetune_cli")

VIEWS = ("imgs", "flow")
EPOCHS = 2


def _pretrain_argv(csv_root: Path, save_dir: Path, *extra: str) -> list[str]:
    return ["--dataset", "tiny", "--csv_root", str(csv_root), "--net", "resnet10", "--img_dim", "32",
            "--modalities", "_".join(VIEWS), "--num_seq", "4", "--seq_len", "2", "--ds", "2", "--pred_step", "2",
            "--batch_size", "2", "--num_workers", "0", "--save_dir", str(save_dir), "--val_fraction", "0.2",
            "--ft_freq", "0", "--print_freq", "1000", "--vis_log_freq", "1000", "--epochs", str(EPOCHS), *extra]


def _finetune_argv(csv_root: Path, save_dir: Path, pretrain: Path, *extra: str) -> list[str]:
    return ["--dataset", "tiny", "--csv_root", str(csv_root), "--net", "resnet10", "--img_dim", "32",
            "--modality", "imgs", "--num_seq", "4", "--seq_len", "2", "--ds", "2", "--batch_size", "2",
            "--num_workers", "0", "--save_dir", str(save_dir), "--val_fraction", "0.2", "--epochs", str(EPOCHS),
            "--pretrain", str(pretrain), *extra]


def _inject(script: str, argv: list[str], fault: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COCON_FAULT": fault, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(REPO / "tests" / "fault_inject.py"), str(REPO / script), *argv],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)


def _model_dir(save_dir: Path) -> Path:
    (folder,) = save_dir.glob("*/model")
    return folder


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a["epoch"] == b["epoch"] and a["iteration"] == b["iteration"] and a["best_acc"] == b["best_acc"]
    for key, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][key]), key
    for pid, state in a["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg"], b["optimizer"]["state"][pid]["exp_avg"]), pid
    assert a["scheduler"] == b["scheduler"]


def _assert_best_matches(model_dir: Path, view: str) -> None:
    """The best file exists, loads, and is the epoch (and accuracy) the newest checkpoint records."""
    newest = max(model_dir.glob(f"mode_{view}_epoch*.pth.tar"), key=lambda p: int(p.name.split("epoch")[1].split(".")[0]))
    last, best = load_checkpoint(newest), load_checkpoint(model_dir / f"mode_{view}_best.pth.tar")
    assert best["epoch"] == last["best_epoch"] and best["best_acc"] == last["best_acc"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> None:
    # The killed runs are single-threaded subprocesses; the runs here must use the same kernels.
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def csv_root(tmp_path_factory):
    """The tiny four-view tree: 2 classes × 6 videos of 20 frames (8 training clips, 2 validation)."""
    return make_tiny_dataset(tmp_path_factory.mktemp("faults") / "tiny", videos_per_class=6, num_frames=20)


@pytest.fixture(scope="module")
def tiny(csv_root, tmp_path_factory):
    """An uninterrupted pretraining and fine-tuning run on the tiny tree: what every resumed run must equal."""
    root = tmp_path_factory.mktemp("straight")
    pre = model_trainer.main(model_trainer.get_args_parser().parse_args(_pretrain_argv(csv_root, root / "pre")))
    pre_model = pre["exp_dir"] / "model"
    pretrain = pre_model / "mode_imgs_best.pth.tar"
    ft = finetune_cli.main(finetune_cli.get_args_parser().parse_args(_finetune_argv(csv_root, root / "ft", pretrain)))
    return {
        "csv_root": csv_root, "pretrain": pretrain,
        "pre": {v: load_checkpoint(pre_model / f"mode_{v}_epoch{EPOCHS}.pth.tar") for v in VIEWS},
        "ft": load_checkpoint(Path(ft["finetune"]["exp"]) / "model" / f"mode_imgs_epoch{EPOCHS}.pth.tar"),
        "ft_top1": ft["finetune"]["test"]["top1"],
    }


@pytest.mark.slow
@pytest.mark.parametrize("fault, keep_last, left", [
    # The second view's epoch-2 file: with --keep_last 1, the first view's epoch 1 must still be there.
    ("kill_write:mode_flow_epoch2.pth.tar", 1, {"mode_imgs_epoch1", "mode_imgs_epoch2", "mode_flow_epoch1",
                                                "mode_imgs_best", "mode_flow_best"}),
    # The first best copy: the epoch it copies is on disk, the best file is not yet.
    ("kill_write:mode_imgs_best.pth.tar", 1, {"mode_imgs_epoch1", "mode_flow_epoch1"}),
    # Mid-epoch 2 (8 optimiser steps per epoch: 4 batches × 2 views).
    ("kill_step:11", 2, {"mode_imgs_epoch1", "mode_flow_epoch1", "mode_imgs_best", "mode_flow_best"}),
])
def test_pretraining_killed_resumes_to_the_uninterrupted_result(tiny, tmp_path, fault, keep_last, left):
    argv = _pretrain_argv(tiny["csv_root"], tmp_path, "--keep_last", str(keep_last))
    killed = _inject("train/model_trainer.py", argv, fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    model_dir = _model_dir(tmp_path)
    assert {p.name.removesuffix(".pth.tar") for p in model_dir.glob("*.pth.tar")} == left
    for path in model_dir.glob("*.pth.tar"):
        load_checkpoint(path)  # every visible checkpoint is complete
    assert all(".tmp-" in name for name in _hidden(model_dir))  # only the killed write's temporary file

    model_trainer.main(model_trainer.get_args_parser().parse_args(argv + ["--resume", str(model_dir)]))
    assert _hidden(model_dir) == []
    for view in VIEWS:
        epochs = sorted(int(p.name.split("epoch")[1].split(".")[0]) for p in model_dir.glob(f"mode_{view}_epoch*"))
        assert epochs == list(range(EPOCHS - keep_last + 1, EPOCHS + 1))
        _assert_same_weights(load_checkpoint(model_dir / f"mode_{view}_epoch{EPOCHS}.pth.tar"), tiny["pre"][view])
        _assert_best_matches(model_dir, view)


@pytest.mark.slow
@pytest.mark.parametrize("fault, keep_last, left", [
    # Fine-tuning wrote (and pruned) its epoch file before the best copy: a kill there lost the best weights.
    ("kill_write:mode_imgs_best.pth.tar", 1, {"mode_imgs_epoch1"}),
    ("kill_write:mode_imgs_epoch2.pth.tar", 2, {"mode_imgs_epoch1", "mode_imgs_best"}),
    ("kill_step:6", 1, {"mode_imgs_epoch1", "mode_imgs_best"}),  # mid-epoch 2 (4 steps per epoch)
])
def test_finetuning_killed_resumes_to_the_uninterrupted_result(tiny, tmp_path, fault, keep_last, left):
    argv = _finetune_argv(tiny["csv_root"], tmp_path, tiny["pretrain"], "--keep_last", str(keep_last))
    killed = _inject("test/test.py", argv, fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    model_dir = _model_dir(tmp_path)
    assert {p.name.removesuffix(".pth.tar") for p in model_dir.glob("*.pth.tar")} == left

    resumed = finetune_cli.main(finetune_cli.get_args_parser().parse_args(argv + ["--resume", str(model_dir)]))
    assert _hidden(model_dir) == []
    _assert_same_weights(load_checkpoint(model_dir / f"mode_imgs_epoch{EPOCHS}.pth.tar"), tiny["ft"])
    _assert_best_matches(model_dir, "imgs")
    assert resumed["finetune"]["test"]["top1"] == tiny["ft_top1"]


def test_disk_full_during_a_checkpoint_is_one_line_and_keeps_what_was_written(csv_root, tmp_path, monkeypatch, capsys):
    real = files._write

    def full(file, data, path):
        if path.name == "mode_flow_epoch1.pth.tar":
            real(file, data[: len(data) // 2], path)
            raise OSError(28, "No space left on device")
        real(file, data, path)

    monkeypatch.setattr(files, "_write", full)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(model_trainer.main, model_trainer.get_args_parser(), _pretrain_argv(csv_root, tmp_path))
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: no space left on the device while writing ") and "mode_flow_epoch1.pth.tar" in err
    model_dir = _model_dir(tmp_path)
    assert _hidden(model_dir) == [] and sorted(p.name for p in model_dir.glob("*.pth.tar")) == ["mode_imgs_epoch1.pth.tar"]
    load_checkpoint(model_dir / "mode_imgs_epoch1.pth.tar")


# ---------------------------------------------------------------- preprocessing


def _write_video(path: Path, frames: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process parents from /proc")
def test_killed_parallel_frame_extraction_stops_its_workers_and_resumes(tmp_path):
    videos, frames = tmp_path / "videos", tmp_path / "frame"
    for i in range(8):
        _write_video(videos / "walk" / f"v{i}.avi", 150)
    proc = subprocess.Popen([sys.executable, "process_data/extract_frame.py", "--video_root", str(videos),
                             "--frame_root", str(frames), "--dim", "32", "--workers", "2"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (frames / "walk").is_dir() or not _hidden(frames / "walk"):  # a worker is writing a video
        assert time.time() < deadline and proc.poll() is None, "no worker started writing"
        time.sleep(0.05)
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while any(_running(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert workers and not any(_running(pid) for pid in workers)
    done = [p for p in (frames / "walk").iterdir() if not p.name.startswith(".")]
    assert all(len(list(p.iterdir())) == 150 for p in done)  # a visible folder is a finished video

    rerun = subprocess.run([sys.executable, "process_data/extract_frame.py", "--video_root", str(videos),
                            "--frame_root", str(frames), "--dim", "32"], cwd=REPO, capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert _hidden(frames / "walk") == []
    assert sorted(p.name for p in (frames / "walk").iterdir()) == [f"v{i}" for i in range(8)]
    assert all(len(list(p.iterdir())) == 150 for p in (frames / "walk").iterdir())
