"""A full disk under TensorBoard: a failed event write or flush ends pretraining with the one-line error of a
failed checkpoint save, and keeps the checkpoints of the epochs it finished.

The CLI runs in a subprocess, as ``python train/model_trainer.py`` does, with tensorboardX's record writer
failing as on a full disk (ENOSPC, which a buffered write raises without naming its file).
"""
import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboardX.record_writer import RecordWriter
from tiny_dataset import make_tiny_dataset

from utils.checkpoint import load_checkpoint
from utils.cli import describe
from utils.run import EventLog

REPO = Path(__file__).resolve().parents[1]

# argv: <write|flush> <tag> <script> <flags…>; a write fails when its event holds <tag>, a flush always.
_FULL_DISK = """
import errno, os, runpy, sys
from tensorboardX.record_writer import RecordWriter

method, tag, script = sys.argv[1], sys.argv[2].encode(), sys.argv[3]
real = getattr(RecordWriter, method)

def full(self, *data):
    if method == "flush" or tag in data[0]:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real(self, *data)

setattr(RecordWriter, method, full)
sys.argv = sys.argv[3:]
sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
runpy.run_path(script, run_name="__main__")
"""


def _pretrain_argv(csv_root: Path, save_dir: Path) -> list[str]:
    return ["--dataset", "tiny", "--csv_root", str(csv_root), "--net", "resnet10", "--img_dim", "32",
            "--modalities", "imgs_flow", "--num_seq", "4", "--seq_len", "2", "--ds", "2", "--pred_step", "2",
            "--batch_size", "2", "--num_workers", "0", "--save_dir", str(save_dir), "--val_fraction", "0.2",
            "--ft_freq", "0", "--print_freq", "1", "--vis_log_freq", "1000", "--epochs", "2"]


def test_a_failed_event_write_names_the_event_file(tmp_path, monkeypatch):
    log = EventLog(tmp_path / "img")
    log.add_scalar("train/total", 1.5, 1)
    log.add_histogram("cos_sim/imgs-flow/positive", np.linspace(-1, 1, 50), 1)
    log.add_image("input/imgs", torch.linspace(0, 1, 3 * 8 * 8).reshape(3, 8, 8), 1)

    def full(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(RecordWriter, "write", full)
    with pytest.raises(OSError) as err:
        log.add_scalar("val/total", 1.0, 2)
    assert err.value.filename == str(log.path) and log.path.parent == tmp_path / "img"
    message, status = describe(err.value)
    assert status == 1 and message.startswith(f"no space left on the device while writing {log.path};")
    monkeypatch.undo()
    log.close()
    raw = log.path.read_bytes()
    assert all(tag in raw for tag in (b"train/total", b"cos_sim/imgs-flow/positive", b"input/imgs"))


@pytest.mark.slow
@pytest.mark.parametrize("method, tag, kept", [
    # The epoch's scalars are written after its checkpoints: epoch 1 is on disk, complete.
    ("write", "val/total", {"mode_imgs_epoch1", "mode_flow_epoch1", "mode_imgs_best", "mode_flow_best"}),
    # The first event is flushed at once: the first batch's scalars fail, before any checkpoint.
    ("flush", "", set()),
])
def test_full_disk_under_tensorboard_is_one_line_and_keeps_finished_epochs(tmp_path, method, tag, kept):
    csv_root = make_tiny_dataset(tmp_path / "tiny", videos_per_class=6, num_frames=20)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("COCON_DEBUG", None)
    argv = [sys.executable, "-c", _FULL_DISK, method, tag, "train/model_trainer.py",
            *_pretrain_argv(csv_root, tmp_path / "runs")]
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]  # none from the main thread nor a writer thread
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no space left on the device while writing ") and "/img/events.out.tfevents." in last
    (model_dir,) = (tmp_path / "runs").glob("*/model")
    assert {p.name.removesuffix(".pth.tar") for p in model_dir.glob("*.pth.tar")} == kept
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".")]
    for path in model_dir.glob("*.pth.tar"):
        load_checkpoint(path)
