"""What a researcher meets on day one: every script's --help, torch-free preprocessing, TensorBoard in the
venv, the mmaction/denseflow layout, and a repository that cites no file it does not contain."""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from process_data import import_rawframes, write_csv
from utils.cli_options import canonical_dataset, gpu_list, select_gpus

REPO = Path(__file__).resolve().parents[1]
SCRIPT_FOLDERS = ("process_data", "train", "test", "scripts", "bench")
PREPROCESSING = ("common", "extract_frame", "extract_flow", "extract_features", "import_rawframes", "keypoints",
                 "make_synthetic", "write_csv")


def _scripts() -> list[Path]:
    """Every file of the repo's script folders that builds a command line."""
    return sorted(p for folder in SCRIPT_FOLDERS for p in (REPO / folder).glob("*.py")
                  if "def get_args_parser" in p.read_text())


def _load(path: Path):
    sys.path.insert(0, str(path.parent))  # as `python <script>` does: bench_train.py imports its sibling bench_loader
    try:
        spec = importlib.util.spec_from_file_location(f"cli_{path.parent.name}_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


@pytest.mark.parametrize("script", _scripts(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_help_names_the_script_and_shows_defaults(script, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(script)])  # argparse names the program after argv[0]
    parser = _load(script).get_args_parser()
    text = parser.format_help()
    assert text.startswith(f"usage: {script.name} "), text[:200]
    assert parser.description, "no description"
    with_default = [a for a in parser._actions if a.option_strings and a.default not in (None, argparse.SUPPRESS)]
    assert text.count("(default:") >= len(with_default), text


def test_preprocessing_never_imports_torch():
    modules = ", ".join(f"process_data.{m}" for m in PREPROCESSING)
    code = f"import sys, {modules}; print(sorted({{m.split('.')[0] for m in sys.modules}} & {{'torch', 'torchvision'}}))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# Scripts whose --help and flag errors answer before torch is imported.
TORCH_FREE_HELP = ("train/model_trainer.py", "test/test.py", "test/finetune.py", "test/eval_frozen.py", "test/ensemble.py")


@pytest.mark.parametrize("script", TORCH_FREE_HELP)
def test_help_answers_before_torch_is_imported(script):
    code = ("import runpy, sys\n"
            f"sys.argv = [{script!r}, '--help']\n"
            "try:\n"
            f"    runpy.run_path({script!r}, run_name='__main__')\n"
            "except SystemExit as done:\n"
            "    assert done.code == 0, done.code\n"
            "print('torch' in sys.modules, file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.startswith(f"usage: {Path(script).name}") and done.stderr.strip() == "False"


def test_no_file_cites_a_spec_outside_the_repo():
    cited = []
    for folder, subfolders, files in os.walk(REPO):
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and d not in ("runs", "data", "__pycache__")]
        for name in files:
            path = Path(folder) / name
            text_file = path.suffix in (".py", ".md", ".toml", ".txt", ".cfg") or name == "Makefile"
            if text_file and path != Path(__file__) and "SPEC.md" in path.read_text(errors="ignore"):
                cited.append(str(path.relative_to(REPO)))
    assert not cited


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_tensorboard_serves_the_training_logs(tmp_path):
    from tensorboardX import SummaryWriter

    with SummaryWriter(str(tmp_path / "run" / "img")) as writer:
        writer.add_scalar("train/cpc/imgs", 1.5, 1)
    tensorboard = Path(sys.executable).with_name("tensorboard")
    assert tensorboard.is_file(), "tensorboard is not installed next to this Python (requirements.txt)"
    port = _free_port()
    server = subprocess.Popen([str(tensorboard), "--logdir", str(tmp_path), "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        tags, deadline = None, time.monotonic() + 60
        while tags is None and time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=5) as reply:
                    tags = json.loads(reply.read())
            except OSError:
                time.sleep(0.5)
        assert tags is not None, server.stderr.read().decode()[-2000:] if server.poll() is not None else "no answer"
        assert "train/cpc/imgs" in tags["run/img"]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_dataset_aliases_and_gpu_flag(monkeypatch):
    assert [canonical_dataset(n) for n in ("hmdb", "kinetics", "k400", "ucf", "ucf101", "mine")] == [
        "hmdb51", "kinetics400", "kinetics400", "ucf101", "ucf101", "mine"]
    assert gpu_list("0, 1") == "0,1"
    with pytest.raises(Exception, match="device ids"):
        gpu_list("0;1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    select_gpus(None)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    select_gpus("0,1")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_write_csv_accepts_the_original_dataset_names(tmp_path):
    frame_root = tmp_path / "frame"
    for cls, video in (("run", "a"), ("run", "b"), ("jump", "c"), ("jump", "d")):
        (frame_root / cls / video).mkdir(parents=True)
        cv2.imwrite(str(frame_root / cls / video / "image_00001.jpg"), np.zeros((8, 8, 3), np.uint8))
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "run_test_split1.txt").write_text("a.avi 1\nb.avi 2\n")
    (splits / "jump_test_split1.txt").write_text("c.avi 1\nd.avi 2\n")
    args = write_csv.get_args_parser().parse_args(["--dataset", "hmdb", "--frame_root", str(frame_root),
                                                   "--split_root", str(splits), "--out", str(tmp_path / "lists")])
    assert args.dataset == "hmdb51"
    stats = write_csv.main(args)
    assert stats["train_split01.csv"]["rows"] == 2 and stats["test_split01.csv"]["rows"] == 2
    assert write_csv.get_args_parser().parse_args(["--dataset", "kinetics", "--frame_root", "x"]).dataset == "kinetics400"


def test_import_rawframes_links_mmaction_folders_into_the_view_trees(tmp_path):
    src = tmp_path / "rawframes" / "run" / "v1"
    src.mkdir(parents=True)
    for i in (1, 2, 3):
        cv2.imwrite(str(src / f"img_{i:05d}.jpg"), np.full((8, 8, 3), 10 * i, np.uint8))
    for i in (1, 2):
        for axis in "xy":
            cv2.imwrite(str(src / f"flow_{axis}_{i:05d}.jpg"), np.full((8, 8), 100 + i, np.uint8))
    (tmp_path / "rawframes" / "run" / "empty").mkdir()
    argv = ["--src_root", str(tmp_path / "rawframes"), "--dataset_root", str(tmp_path / "ucf")]
    stats = import_rawframes.main(import_rawframes.get_args_parser().parse_args(argv))
    assert stats == {"done": 1, "skipped": 0, "failed": 1}
    frames = tmp_path / "ucf" / "frame" / "run" / "v1"
    flow = tmp_path / "ucf" / "flow" / "run" / "v1"
    assert sorted(p.name for p in frames.iterdir()) == ["image_00001.jpg", "image_00002.jpg", "image_00003.jpg"]
    assert sorted(p.name for p in flow.iterdir()) == ["flow_x_00001.jpg", "flow_x_00002.jpg", "flow_y_00001.jpg",
                                                      "flow_y_00002.jpg"]
    assert os.path.samefile(frames / "image_00002.jpg", src / "img_00002.jpg")  # a hard link, no extra disk
    assert "no img_NNNNN.jpg frames" in (tmp_path / "ucf" / "frame" / "failed.txt").read_text()
    again = import_rawframes.main(import_rawframes.get_args_parser().parse_args(argv))
    assert again == {"done": 0, "skipped": 1, "failed": 1}
