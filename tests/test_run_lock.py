"""One writer per experiment folder (utils/run.py's lock), and a --resume that carries the run's settings."""
import argparse
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from script_module import load_test_cli

from train.model_trainer import get_args_parser, main
from train.pretrain_run import experiment_dir
from utils import run
from utils.checkpoint import load_checkpoint
from utils.cli import describe
from utils.errors import UsageError
from utils.files import atomic_copy

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
finetune_cli = load_test_cli("cocon_lock_test_cli")
_HOLD = "import sys; from utils import run; run.lock_experiment(sys.argv[1]); print('locked', flush=True); sys.stdin.read()"


def _holder(exp: Path) -> subprocess.Popen:
    """Another process holding the lock of ``exp`` until its stdin closes."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(exp)], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_writer_is_refused_until_the_first_exits(tmp_path):
    exp = tmp_path / "exp"
    holder = _holder(exp)
    try:
        with pytest.raises(UsageError, match=rf"{exp} is being written by another run \(process {holder.pid} on ") as err:
            run.open_experiment(exp, argparse.Namespace(lr=0.1), None)
        message, status = describe(err.value)
        assert "\n" not in message and status == 2 and "another --save_dir or --prefix" in message
        assert not (exp / "args.json").exists() and not (exp / "model").exists()
        assert json.loads((exp / run.LOCK_NAME).read_text())["pid"] == holder.pid
    finally:
        holder.stdin.close()
        holder.wait()
    assert not (exp / run.LOCK_NAME).exists()  # released when its process ended
    run.open_experiment(exp, argparse.Namespace(lr=0.1), None)
    assert json.loads((exp / run.LOCK_NAME).read_text())["pid"] == os.getpid()
    run.release_experiment(exp)
    assert not (exp / run.LOCK_NAME).exists()


def test_the_lock_of_a_killed_run_is_taken_over_with_a_warning(tmp_path, caplog):
    exp = tmp_path / "exp"
    holder = _holder(exp)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert json.loads((exp / run.LOCK_NAME).read_text())["pid"] == holder.pid  # kill -9 leaves the file
    with caplog.at_level(logging.WARNING, logger="cocon.run"):
        run.open_experiment(exp, argparse.Namespace(lr=0.1), None)
    assert f"taking over the lock of process {holder.pid}" in caplog.text
    assert json.loads((exp / run.LOCK_NAME).read_text())["pid"] == os.getpid()
    run.release_experiment(exp)


def test_a_lock_file_naming_a_live_process_of_this_host_is_respected_without_flock(tmp_path):
    # A filesystem whose flock does nothing: the pid alone must keep a second writer out, and a dead pid must not.
    exp = tmp_path / "exp"
    exp.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        (exp / run.LOCK_NAME).write_text(json.dumps({"pid": sleeper.pid, "host": os.uname().nodename}))
        with pytest.raises(UsageError, match=f"process {sleeper.pid}"):
            run.lock_experiment(exp)
    finally:
        sleeper.stdin.close()
        sleeper.wait()
    (exp / run.LOCK_NAME).write_text(json.dumps({"pid": _dead_pid(), "host": os.uname().nodename}))
    run.lock_experiment(exp)
    run.release_experiment(exp)


# ---------------------------------------------------------------- pretraining runs


@pytest.fixture(scope="module")
def first_run(tiny_csv_root, tmp_path_factory) -> Path:
    """A finished 1-epoch pretraining run of imgs_flow with non-default flags."""
    save_dir = tmp_path_factory.mktemp("runs")
    return main(_args(tiny_csv_root, save_dir))["exp_dir"]


def _args(csv_root: Path, save_dir: Path, *extra: str) -> argparse.Namespace:
    return get_args_parser().parse_args([
        "--dataset", "tiny", "--csv_root", str(csv_root), "--net", "resnet10", "--img_dim", "32", "--modalities",
        "imgs_flow", "--num_seq", "4", "--seq_len", "2", "--ds", "1", "--pred_step", "2", "--batch_size", "2",
        "--num_workers", "0", "--save_dir", str(save_dir), "--val_fraction", "0.2", "--ft_freq", "0",
        "--print_freq", "1000", "--vis_log_freq", "1000", "--grad_diag_freq", "0", "--epochs", "1", *extra])


def _resume(*argv: str) -> argparse.Namespace:
    return get_args_parser().parse_args(["--num_workers", "0", *argv])


def _copy_run(exp: Path, tmp_path: Path) -> Path:
    """A copy of a run's folder (tests that add epochs must not change the shared one)."""
    copy = tmp_path / exp.name
    subprocess.run(["cp", "-r", str(exp), str(copy)], check=True)
    return copy


def test_a_trainer_on_a_folder_another_trainer_writes_refuses_to_start(tiny_csv_root, tmp_path):
    args = _args(tiny_csv_root, tmp_path)
    exp = experiment_dir(args)
    holder = _holder(exp)
    try:
        with pytest.raises(UsageError, match=f"being written by another run \\(process {holder.pid}"):
            main(args)
    finally:
        holder.stdin.close()
        holder.wait()
    assert sorted(p.name for p in exp.iterdir()) == []  # no checkpoint, log line or event of the refused run


def test_a_fine_tuning_run_on_a_folder_another_run_writes_refuses_to_start(first_run, tiny_csv_root, tmp_path):
    args = finetune_cli.get_args_parser().parse_args([
        "--dataset", "tiny", "--csv_root", str(tiny_csv_root), "--net", "resnet10", "--img_dim", "32", "--modality",
        "imgs", "--num_seq", "4", "--seq_len", "2", "--ds", "1", "--batch_size", "2", "--num_workers", "0",
        "--save_dir", str(tmp_path), "--val_fraction", "0.2", "--epochs", "1",
        "--pretrain", str(first_run / "model" / "mode_imgs_epoch1.pth.tar")])
    holder = _holder(tmp_path / finetune_cli.finetune.exp_name(args))
    try:
        with pytest.raises(UsageError, match=f"being written by another run \\(process {holder.pid}"):
            finetune_cli.main(args)
    finally:
        holder.stdin.close()
        holder.wait()
    assert [p.name for p in tmp_path.iterdir()] == [finetune_cli.finetune.exp_name(args)]
    assert list((tmp_path / finetune_cli.finetune.exp_name(args)).iterdir()) == []


def test_a_finished_run_releases_its_folder(first_run):
    assert (first_run / "model" / "mode_imgs_epoch1.pth.tar").is_file() and not (first_run / run.LOCK_NAME).exists()


def test_a_bare_resume_of_the_experiment_folder_takes_the_runs_flags(first_run, tmp_path):
    exp = _copy_run(first_run, tmp_path)
    result = main(_resume("--resume", str(exp), "--epochs", "2"))
    assert result["exp_dir"] == exp and [h["epoch"] for h in result["history"]] == [2]
    recorded = json.loads((exp / "args_resume1.json").read_text())
    assert (recorded["dataset"], recorded["img_dim"], recorded["net"], recorded["modalities"], recorded["ds"]) == (
        "tiny", 32, "resnet10", "imgs_flow", 1)
    assert load_checkpoint(exp / "model" / "mode_flow_epoch2.pth.tar")["args"]["seq_len"] == 2
    assert "_given_flags" not in recorded


@pytest.mark.parametrize("flag, value, match", [
    ("--img_dim", "64", r"--img_dim 64 contradicts the resumed run's --img_dim 32 \(.*args.json\)"),
    ("--ds", "3", r"--ds 3 contradicts the resumed run's --ds 1"),
    ("--dataset", "ucf101", r"--dataset ucf101 contradicts the resumed run's --dataset tiny"),
    ("--modalities", "imgs", r"--modalities imgs: the run in .* trained imgs_flow .*leave --modalities out"),
])
def test_a_flag_contradicting_the_resumed_run_is_refused(first_run, flag, value, match):
    with pytest.raises(UsageError, match=match):
        main(_resume("--resume", str(first_run / "model"), "--epochs", "2", flag, value))
    assert not (first_run / "args_resume1.json").exists()


def test_a_folder_of_other_views_is_refused_without_an_args_file(tmp_path):
    model = tmp_path / "exp" / "model"
    model.mkdir(parents=True)
    for view in ("imgs", "flow"):
        (model / f"mode_{view}_epoch1.pth.tar").write_bytes(b"")
    with pytest.raises(UsageError, match=r"trained the views flow_imgs, not imgs; .*leave --modalities out"):
        run.find_resume(model.parent, ["imgs"])
    assert run.find_resume(model.parent, ["imgs", "flow"])["flow"] == model / "mode_flow_epoch1.pth.tar"


def test_resuming_a_best_file_older_than_the_last_epoch_is_refused(first_run, tmp_path):
    exp = _copy_run(first_run, tmp_path)
    main(_resume("--resume", str(exp), "--epochs", "2"))
    for view in ("imgs", "flow"):  # best = epoch 1 of 2
        atomic_copy(exp / "model" / f"mode_{view}_epoch1.pth.tar", exp / "model" / f"mode_{view}_best.pth.tar")
    epoch2 = (exp / "model" / "mode_imgs_epoch2.pth.tar").read_bytes()
    with pytest.raises(UsageError, match=r"holds epoch 1, but .* holds later epochs of that run \(up to 2\).*"
                                         r"--resume .*another --prefix"):
        main(_resume("--resume", str(exp / "model" / "mode_imgs_best.pth.tar"), "--epochs", "3", "--batch_size", "4"))
    assert (exp / "model" / "mode_imgs_epoch2.pth.tar").read_bytes() == epoch2 and not (exp / "args_resume2.json").exists()


def test_a_folder_where_one_view_ran_ahead_is_refused(first_run, tmp_path):
    # An earlier version's resume with a subset of the views trained imgs alone to epoch 3 in this folder.
    exp = _copy_run(first_run, tmp_path)
    for epoch in (2, 3):
        atomic_copy(exp / "model" / "mode_imgs_epoch1.pth.tar", exp / "model" / f"mode_imgs_epoch{epoch}.pth.tar")
    with pytest.raises(UsageError, match=r"holds epoch 1, but .* holds later epochs of that run \(up to 3\)"):
        main(_resume("--resume", str(exp), "--epochs", "4"))
    (exp / "model" / "mode_imgs_epoch3.pth.tar").unlink()  # epoch 2 of one view only: a kill while saving it
    assert [h["epoch"] for h in main(_resume("--resume", str(exp), "--epochs", "2"))["history"]] == [2]


def test_a_new_lr_and_wd_on_resume_reach_the_optimiser_and_are_recorded(first_run, tmp_path, caplog):
    exp = _copy_run(first_run, tmp_path)
    with caplog.at_level(logging.WARNING, logger="cocon.pretrain"):
        main(_resume("--resume", str(exp), "--epochs", "2", "--lr", "0.0005", "--wd", "0.001"))
    assert "overriding --lr 0.0005 (the run had 0.001), --wd 0.001 (the run had 1e-05)" in caplog.text
    groups = load_checkpoint(exp / "model" / "mode_imgs_epoch2.pth.tar")["optimizer"]["param_groups"]
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [(0.0005, 0.001), (0.0005, 0.001)]
    assert json.loads((exp / "args_resume1.json").read_text())["lr"] == 0.0005
    assert load_checkpoint(exp / "model" / "mode_imgs_epoch1.pth.tar")["optimizer"]["param_groups"][0]["lr"] == 0.001
