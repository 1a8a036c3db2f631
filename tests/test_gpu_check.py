"""The CPU-side parts of bench/gpu_check.py: it exits cleanly without a GPU, its throughput code runs
(on the CPU here), and its trainer commands parse with the trainer's own flags."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import gpu_check  # noqa: E402

from train.model_trainer import get_args_parser as trainer_parser  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_exits_cleanly_without_a_gpu(capsys):
    assert gpu_check.main(gpu_check.get_args_parser().parse_args([])) == 0
    assert "no CUDA device is visible" in capsys.readouterr().out


def _tiny_args():
    return gpu_check.get_args_parser().parse_args(
        ["--net", "resnet10", "--img_dim", "32", "--batch_size", "2", "--num_seq", "4", "--seq_len", "2",
         "--pred_step", "2", "--steps", "1", "--warmup", "0"])


def test_throughput_step_runs_on_the_cpu():
    result = gpu_check.bench_config(_tiny_args(), torch.device("cpu"), n_gpu=1, amp=False)
    assert result["gpus"] == 1 and result["clips_per_s"] > 0 and result["ratio"] > 0 and result["amp"] == "float32"


def test_amp_setup_is_the_trainers():
    # Only the set-up: a first bf16 step on a CPU spends minutes compiling oneDNN kernels.
    parts = gpu_check.build_views(_tiny_args(), torch.device("cpu"), n_gpu=1, amp=True)
    conv = next(m for m in parts["models"]["imgs"].modules() if isinstance(m, torch.nn.Conv3d))
    bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert parts["amp_dtype"] == (torch.bfloat16 if bf16 else None) and parts["scaler"] is None
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d) == bf16


def test_trainer_commands_parse_with_the_trainer_flags(tmp_path):
    commands = gpu_check.run_commands(tmp_path / "csv", tmp_path / "runs", n_gpu=4, img_dim=128)
    dp, ddp = commands["dataparallel"], commands["torchrun"]
    assert dp[1].endswith("train/model_trainer.py")
    assert ddp[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    for command in (dp, ddp):
        flags = command[command.index(dp[1]) + 1:]
        args = trainer_parser().parse_args(flags)
        assert args.amp and args.debug and args.img_dim == 128 and args.modalities == "imgs_flow"
