"""The CPU-side parts of bench/gpu_check.py: it exits cleanly without a GPU, its throughput rows (pretraining and
fine-tuning through the trainers' wrapper), loader check and table run on the CPU, its --help lists what it
checks, and its trainer commands parse with the scripts' own flags."""
import sys
from pathlib import Path

import pytest
import torch
from script_module import load_script

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import gpu_check  # noqa: E402

from train.model_trainer import get_args_parser as trainer_parser  # noqa: E402
from utils.cli_options import available_cpus  # noqa: E402
from utils.distributed import unwrap  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_exits_cleanly_without_a_gpu(capsys):
    assert gpu_check.main(gpu_check.get_args_parser().parse_args([])) == 0
    assert "no CUDA device is visible" in capsys.readouterr().out


def test_help_lists_what_it_checks():
    text = gpu_check.get_args_parser().format_help()
    for check in ("DataParallel", "torchrun", "bf16", "fp16", "GPU 0", "channels-last", "loader-bound", "clips/s",
                  "test/finetune.py", "train/model_trainer.py", "one table"):
        assert check in text, check


def _tiny_args(*extra: str):
    return gpu_check.get_args_parser().parse_args(
        ["--net", "resnet10", "--img_dim", "32", "--batch_size", "2", "--num_seq", "4", "--seq_len", "2", "--ds", "1",
         "--pred_step", "2", "--steps", "1", "--warmup", "0", "--frame_height", "48", "--loader_batches", "1", *extra])


@pytest.mark.parametrize("task", ["pretrain", "finetune"])
def test_throughput_row_runs_on_the_cpu(task):
    row = gpu_check.bench_config(_tiny_args(), torch.device("cpu"), n_gpu=1, task=task, precision="float32")
    assert row["gpus"] == 1 and row["clips_per_s"] > 0 and row["precision"] == "float32"
    assert row["channels_last"] == "0/1"  # one device saw its first convolution's input, in the default layout


def test_amp_rows_are_set_up_as_the_trainers_do():
    # Only the set-up: a first bf16 step on a CPU spends minutes compiling oneDNN kernels.
    for task in gpu_check.TASK_VIEWS:
        parts = gpu_check.build_task(task, _tiny_args(), torch.device("cpu"), n_gpu=1, amp_dtype=torch.float16)
        model = parts["models"]["imgs"]
        conv = next(m for m in unwrap(model).modules() if isinstance(m, torch.nn.Conv3d))
        assert model.amp_dtype == torch.float16 and parts["scaler"] is not None  # the wrapper autocasts
        assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
        assert parts["batch"]["imgs"].dtype == torch.uint8  # converted inside the replicas


def test_loader_check_and_table(tmp_path):
    loader = gpu_check.loader_clips_per_s(_tiny_args(), "pretrain", 1, tmp_path)
    assert loader["loader_clips_per_s"] > 0 and 1 <= loader["workers"] <= available_cpus()
    rows = [{"check": "pretrain step", "mode": "DataParallel", "gpus": 2, "precision": "bf16", "clips_per_s": 100.0,
             "gpu0_gib": 3.0, "others_gib": 2.5, "channels_last": "2/2", "passed": True, "loader_clips_per_s": 80.0},
            {"check": "finetune run", "mode": "torchrun", "gpus": 2, "precision": "--amp", "seconds": 30.0, "passed": False,
             "problems": ["2 log lines for 1 epoch"]}]
    lines = gpu_check.table(rows).splitlines()
    assert len(lines) == 4 and lines[0].count("|") == lines[2].count("|") == lines[3].count("|")
    assert "| yes |" in lines[2] and "3.00 GiB | 2.50 GiB | 2/2 | passed" in lines[2]
    assert "FAILED: 2 log lines for 1 epoch" in lines[3]


def test_trainer_commands_parse_with_the_scripts_flags(tmp_path):
    commands = gpu_check.run_commands(tmp_path / "csv", tmp_path / "runs", n_gpu=4, img_dim=128)
    assert set(commands) == {f"{task} {mode}" for task in ("pretrain", "finetune") for mode in ("one GPU", "DataParallel", "torchrun")}
    finetune = load_script("finetune").get_args_parser()
    for name, command in commands.items():
        script = next(part for part in command if part.endswith(".py"))
        if "torchrun" in name:
            assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
        args = (trainer_parser() if "pretrain" in name else finetune).parse_args(command[command.index(script) + 1:])
        assert args.amp and args.img_dim == 128 and (args.gpu == "0") == ("one GPU" in name)
    assert set(gpu_check.run_commands(tmp_path, tmp_path, n_gpu=1, img_dim=64)) == {"pretrain one GPU", "pretrain torchrun",
                                                                                   "finetune one GPU", "finetune torchrun"}


def _run_folder(save_dir, prefix, log_lines, views, test_videos=None):
    exp = save_dir / f"{prefix}_exp"
    (exp / "model").mkdir(parents=True)
    (exp / "log.jsonl").write_text("{}\n" * log_lines)
    for view in views:
        (exp / "model" / f"mode_{view}_best.pth.tar").write_bytes(b"")
    if test_videos is not None:
        (exp / "eval" / "best").mkdir(parents=True)
        (exp / "eval" / "best" / "test_results.json").write_text(f'{{"num_videos": {test_videos}}}')


def test_a_run_passes_only_with_rank_0_outputs(tmp_path):
    _run_folder(tmp_path, "pretrain-ddp", 1, ("imgs", "flow"))
    assert gpu_check.check_run_outputs(tmp_path, "pretrain-ddp", "pretrain", 4) == []
    _run_folder(tmp_path, "pretrain-dp", 2, ("imgs",))  # every rank appended, one view's checkpoint missing
    assert gpu_check.check_run_outputs(tmp_path, "pretrain-dp", "pretrain", 4) == ["2 log lines for 1 epoch",
                                                                                 "no mode_flow_best.pth.tar"]
    _run_folder(tmp_path, "finetune-ddp", 1, ("imgs",), test_videos=2)  # one rank's share of the 4 test videos
    assert gpu_check.check_run_outputs(tmp_path, "finetune-ddp", "finetune", 4) == [
        "test report missing or not of all 4 test videos"]
    assert gpu_check.check_run_outputs(tmp_path, "finetune-one", "finetune", 4) == ["0 experiment folders"]
