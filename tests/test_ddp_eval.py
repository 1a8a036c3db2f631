"""Pretraining, then fine-tuning and testing, under ``torchrun --nproc_per_node 2`` on the CPU (Gloo), end to end:
every process trains, rank 0 alone writes, and the test report covers every test video (each process tests
its share)."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_dataset import make_tiny_dataset

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(script: str, *flags: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), script, *flags]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done


def _records(exp: Path) -> list[dict]:
    return [json.loads(line) for line in (exp / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_pretrain_then_finetune_and_test_under_torchrun(tmp_path):
    csv_root = make_tiny_dataset(tmp_path / "data", videos_per_class=6, views=("imgs",))
    clip = ["--net", "resnet10", "--dataset", "tiny", "--csv_root", str(csv_root), "--img_dim", "32", "--num_seq", "4",
            "--seq_len", "2", "--ds", "2", "--num_workers", "0", "--epochs", "1"]
    pre_dir = tmp_path / "pretrain"
    _torchrun("train/model_trainer.py", *clip, "--modalities", "imgs", "--pred_step", "2", "--batch_size", "2",
              "--save_dir", str(pre_dir), "--val_fraction", "0.2", "--ft_freq", "1", "--print_freq", "1000",
              "--vis_log_freq", "1000")
    (exp,) = pre_dir.iterdir()  # one experiment folder, written by rank 0
    (record,) = _records(exp)  # one line per epoch, not one per process
    assert record["epoch"] == 1 and record["probe"]  # rank 0 probed while rank 1 waited
    checkpoint = exp / "model" / "mode_imgs_best.pth.tar"
    assert checkpoint.is_file()

    ft_dir = tmp_path / "finetune"
    done = _torchrun("test/finetune.py", *clip, "--modality", "imgs", "--batch_size", "2", "--pretrain", str(checkpoint),
                     "--save_dir", str(ft_dir), "--val_fraction", "0.34")
    (ft_exp,) = ft_dir.iterdir()
    (record,) = _records(ft_exp)
    assert record["epoch"] == 1 and 0 <= record["val"]["top1"] <= 1
    assert {p.name for p in (ft_exp / "model").iterdir()} == {"mode_imgs_epoch1.pth.tar", "mode_imgs_best.pth.tar"}
    (report,) = ft_exp.glob("eval/*/test_results.json")
    results = json.loads(report.read_text())
    assert results["num_videos"] == 2  # the two test videos, one tested by each process, gathered on rank 0
    assert done.stdout.count("test imgs: top-1") == 1  # rank 0 alone reports

    # --test alone, under torchrun: the same figures from the same checkpoint.
    out_dir = tmp_path / "retest"
    _torchrun("test/finetune.py", *clip, "--modality", "imgs", "--test", str(ft_exp / "model" / "mode_imgs_best.pth.tar"),
              "--out_dir", str(out_dir))
    again = json.loads((out_dir / "test_results.json").read_text())
    assert again["top1"] == results["top1"] and again["num_videos"] == 2
