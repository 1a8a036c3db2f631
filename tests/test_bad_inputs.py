"""Bad inputs and user errors: every one ends in one line naming the file or flag (or, for a cache, a
rebuild), never a traceback, partly loaded weights or NaN results; bugs keep their traceback."""
import argparse
import errno
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from script_module import load_script, load_test_cli
from tiny_dataset import make_tiny_dataset

from train import model_trainer
from train.model_3d import DPCRNN
from utils import eval_files, files, frame_reader, run
from utils.checkpoint import CheckpointError, atomic_save, load_checkpoint, load_pretrained
from utils.cli import describe, run_cli
from utils.clip_sampling import check_clip_length
from utils.errors import DataError, NonFiniteError, UsageError, UserError, first_line
from utils.frame_reader import FrameReader
from utils.video_index import VideoEntry, load_split

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
finetune_cli = load_test_cli("cocon_finetune_cli_inputs")
classifier = load_script("action_classifier")


def _error_line(capsys, call) -> tuple[int, str]:
    """Run ``call`` (which must end the process), return its exit status and its single stderr line."""
    with pytest.raises(SystemExit) as exit_info:
        call()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "Traceback" not in lines[0]
    return exit_info.value.code, lines[0]


def _fails_with(exc: BaseException):
    def main(_args):
        raise exc
    return main


# ---------------------------------------------------------------- the CLI wrapper


class _Failing(torch.utils.data.Dataset):
    """Items that fail as a frame file might: a project error, a permission error, a project ValueError, or a kill."""

    def __init__(self, how: str, path: str) -> None:
        self.how, self.path = how, path

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> int:
        if self.how == "data":
            frame_reader.read_stored(Path(self.path), "imgs", 1)  # a JPEG cut short: a DataError of the reader
        if self.how == "permission":
            raise PermissionError(errno.EACCES, "Permission denied", self.path)
        if self.how == "value":
            raise ValueError(f"--ds 3: {self.path} is too short")
        os.kill(os.getpid(), signal.SIGKILL)  # what the out-of-memory killer does
        return index


def _loader_main(how: str, path: str, workers: int):
    def main(_args):
        for _ in torch.utils.data.DataLoader(_Failing(how, path), batch_size=2, num_workers=workers):
            pass
    return main


@pytest.mark.parametrize("how", ["data", "permission", "value"])
def test_errors_in_loader_workers_end_in_the_same_line_as_without_workers(tmp_path, capsys, how):
    frame = tmp_path / "image_00001.jpg"
    cv2.imwrite(str(frame), np.full((16, 16, 3), 90, np.uint8))
    frame.write_bytes(frame.read_bytes()[:-12])
    parser = argparse.ArgumentParser()
    alone = _error_line(capsys, lambda: run_cli(_loader_main(how, str(tmp_path), 0), parser, []))
    workers = _error_line(capsys, lambda: run_cli(_loader_main(how, str(tmp_path), 2), parser, []))
    assert workers == alone
    assert str(tmp_path) in alone[1]


def test_a_loader_worker_killed_by_the_oom_killer_ends_in_one_line_about_memory(capsys):
    status, line = _error_line(capsys, lambda: run_cli(_loader_main("kill", "", 1), argparse.ArgumentParser(), []))
    assert status == 1 and "out-of-memory killer" in line and "lower --num_workers" in line and "--resume" in line


@pytest.mark.parametrize("exc, status, text", [
    (UserError("checkpoint x.pth.tar is empty;\n  use another"), 1, "error: checkpoint x.pth.tar is empty; use another"),
    (UsageError("--lr must be > 0"), 2, "error: --lr must be > 0"),
    (CheckpointError("--resume a: of 'flow'"), 1, "error: --resume a: of 'flow'"),
    (FileNotFoundError(2, "No such file or directory", "/no/such.csv"), 1,
     "error: no such file or directory: /no/such.csv; check the path"),
    (FileNotFoundError("split list a.csv does not exist; write it"), 1, "error: split list a.csv does not exist; write it"),
    (OSError(errno.ENOSPC, "No space left on device", "/runs/a.pth.tar"), 1,
     "error: no space left on the device while writing /runs/a.pth.tar"),
    (KeyboardInterrupt(), 130, "error: interrupted"),
])
def test_user_errors_are_one_line_with_their_status(capsys, monkeypatch, exc, status, text):
    monkeypatch.delenv("COCON_DEBUG", raising=False)
    code, line = _error_line(capsys, lambda: run_cli(_fails_with(exc), argparse.ArgumentParser(), []))
    assert code == status and line.startswith(text)


def test_sigterm_stops_a_run_like_ctrl_c_with_status_143_and_restores_the_default(capsys, monkeypatch):
    monkeypatch.delenv("COCON_DEBUG", raising=False)

    def killed(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)  # the handler raises at the next bytecode, long before this ends
        raise AssertionError("SIGTERM was not turned into an exception")

    code, line = _error_line(capsys, lambda: run_cli(killed, argparse.ArgumentParser(), []))
    assert code == 143 and line.startswith("error: terminated (SIGTERM); finished files are complete")
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_project_value_errors_are_user_errors_and_library_ones_bugs(capsys, monkeypatch):
    monkeypatch.delenv("COCON_DEBUG", raising=False)

    def bad_flag(_args):
        raise ValueError("--batch_size 64 exceeds the 8 training videos")

    def bad_input(_args):
        raise ValueError("split list a.csv lists no videos")

    assert _error_line(capsys, lambda: run_cli(bad_flag, argparse.ArgumentParser(), []))[0] == 2
    assert _error_line(capsys, lambda: run_cli(bad_input, argparse.ArgumentParser(), []))[0] == 1
    with pytest.raises(ValueError, match="same shape"):  # raised inside NumPy: a bug of ours, shown in full
        run_cli(lambda _args: np.stack([np.zeros(2), np.zeros(3)]), argparse.ArgumentParser(), [])
    with pytest.raises(KeyError):
        run_cli(lambda _args: {}["missing"], argparse.ArgumentParser(), [])
    monkeypatch.setenv("COCON_DEBUG", "1")
    with pytest.raises(ValueError, match="lists no videos"):
        run_cli(bad_input, argparse.ArgumentParser(), [])
    assert describe(RuntimeError("boom")) is None


@pytest.mark.slow
def test_real_cli_user_error_and_bad_flag_in_a_subprocess(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "COCON_DEBUG"}
    missing = subprocess.run([sys.executable, "test/test.py", "--ensemble", "1", "--prob_imgs", str(tmp_path / "a.npz"),
                              "--prob_flow", str(tmp_path / "b.npz")], cwd=REPO, capture_output=True, text=True,
                             timeout=300, env=env)
    assert missing.returncode == 1 and missing.stderr.strip().splitlines() == [
        f"error: probability file {tmp_path / 'a.npz'} does not exist; write it again with test/test.py --test"]
    debug = subprocess.run([sys.executable, "train/model_trainer.py", "--grad_accum", "0", "--dataset", "nowhere"],
                           cwd=REPO, capture_output=True, text=True, timeout=300, env={**env, "COCON_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "--grad_accum must be >= 1" in debug.stderr


# ---------------------------------------------------------------- checkpoints


def _encoder(net: str = "resnet10", seed: int = 0) -> DPCRNN:
    torch.manual_seed(seed)
    return DPCRNN(net, 3, 32, seq_len=2, num_seq=4, pred_step=2)


def test_empty_and_truncated_checkpoints_name_the_file(tmp_path):
    assert first_line(RuntimeError("")) == "RuntimeError"  # an error without a message cannot break the message
    empty = tmp_path / "empty.pth.tar"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty.pth.tar is empty \(0 bytes\)"):
        load_pretrained(_encoder(), empty, "imgs")
    good = tmp_path / "good.pth.tar"
    atomic_save({"mode": "imgs", "state_dict": _encoder().state_dict()}, good)
    cut = tmp_path / "cut.pth.tar"
    cut.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cut.pth.tar cannot be read"):
        load_checkpoint(cut)


def test_another_architecture_never_loads_partially(tmp_path):
    deeper = tmp_path / "resnet18.pth.tar"
    atomic_save({"mode": "imgs", "state_dict": _encoder("resnet18", seed=1).state_dict()}, deeper)
    model = _encoder()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # Every resnet10 tensor has a same-shaped one in resnet18: only the extra blocks give it away.
    with pytest.raises(CheckpointError, match="another architecture.*another --net"):
        load_pretrained(model, deeper, "imgs")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_nan_encoder_weights_are_refused(tmp_path):
    model = _encoder()
    with torch.no_grad():
        model.backbone.conv1.weight[0, 0, 0, 0, 0] = float("nan")
    path = tmp_path / "nan.pth.tar"
    atomic_save({"mode": "imgs", "state_dict": model.state_dict()}, path)
    with pytest.raises(NonFiniteError, match=r"nan.pth.tar: encoder weight backbone.conv1.weight has 1 non-finite"):
        load_pretrained(_encoder(), path, "imgs")


def _checkpoint_dir(tmp_path: Path, view: str = "imgs") -> Path:
    """A pretraining run's model/ folder with epochs 1-2 of ``view`` (written by the protocol)."""
    model_dir = tmp_path / "exp" / "model"
    model = _encoder()
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
    args = argparse.Namespace(net="resnet10")
    for epoch, improved in ((1, [view]), (2, [])):
        ckpt = run.make_checkpoint(view, "resnet10", model, optimizer, scheduler, epoch=epoch, iteration=4 * epoch,
                                   best_acc=0.5, best_epoch=1, args=args)
        run.save_epoch(model_dir, epoch, {view: ckpt}, improved, keep_last=2)
    return model_dir


def test_best_copy_is_rebuilt_replaced_or_reported_at_resume(tmp_path, caplog):
    model_dir = _checkpoint_dir(tmp_path)
    best = model_dir / "mode_imgs_best.pth.tar"
    latest = load_checkpoint(model_dir / "mode_imgs_epoch2.pth.tar")
    best.unlink()  # killed before the best copy was renamed into place
    run.ensure_best(model_dir, "imgs", latest)
    assert load_checkpoint(best)["epoch"] == 1
    atomic_save({**load_checkpoint(model_dir / "mode_imgs_epoch2.pth.tar")}, best)  # a best file of the wrong epoch
    with caplog.at_level(logging.WARNING, logger="cocon.run"):
        run.ensure_best(model_dir, "imgs", latest)
    assert load_checkpoint(best)["epoch"] == 1 and "copied it again" in caplog.text
    best.unlink()
    (model_dir / "mode_imgs_epoch1.pth.tar").unlink()
    with pytest.raises(CheckpointError, match="mode_imgs_best.pth.tar is missing and .*epoch1.pth.tar.*pruned"):
        run.ensure_best(model_dir, "imgs", latest)


def test_stale_temporary_files_are_removed_but_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    live = os.getppid()
    for name in (f".a.pth.tar.tmp-{dead.stdout.strip()}-x1", ".b.pth.tar.Xq1.tmp", f".c.json.tmp-{live}-x2", "d.pth.tar"):
        (tmp_path / name).write_text("x")
    removed = files.clean_stale_tmp(tmp_path)
    assert sorted(p.name for p in removed) == [f".a.pth.tar.tmp-{dead.stdout.strip()}-x1", ".b.pth.tar.Xq1.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".c.json.tmp-{live}-x2", "d.pth.tar"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "args.json"
    files.write_json(target, {"epochs": 1})

    def full(file, data, path):
        file.write(data[:3])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "_write", full)
    with pytest.raises(OSError) as err:
        files.write_json(target, {"epochs": 2})
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["args.json"] and '"epochs": 1' in target.read_text()


def test_written_files_get_the_umask_mode_not_mkstemp_private_one(tmp_path):
    target = files.write_json(tmp_path / "args.json", {"epochs": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_new_run_refuses_a_folder_holding_an_earlier_runs_checkpoints(tmp_path):
    exp = tmp_path / "exp"
    args = argparse.Namespace(epochs=1)
    model_dir = run.open_experiment(exp, args, None)
    (model_dir / "mode_imgs_best.pth.tar").write_bytes(b"weights")
    with pytest.raises(UsageError, match=rf"{model_dir} already holds 1 checkpoint.* --resume {model_dir}, or .*--save_dir"):
        run.open_experiment(exp, args, None)
    assert (model_dir / "mode_imgs_best.pth.tar").read_bytes() == b"weights"
    assert run.open_experiment(exp, args, 1) == model_dir  # resuming it is fine
    assert (exp / "args_resume1.json").exists()


# ---------------------------------------------------------------- runs given the wrong checkpoint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("inputs"), videos_per_class=4, num_frames=20)


def _finetune(tiny: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["--dataset", "tiny", "--csv_root", str(tiny), "--net", "resnet10", "--img_dim", "32", "--modality", "imgs",
            "--num_seq", "4", "--seq_len", "2", "--ds", "2", "--batch_size", "2", "--num_workers", "0",
            "--save_dir", str(tmp_path / "runs"), "--epochs", "1", *extra]


def test_pretraining_checkpoint_given_to_finetuning_resume(tiny, tmp_path, capsys):
    model_dir = _checkpoint_dir(tmp_path)
    code, line = _error_line(capsys, lambda: run_cli(finetune_cli.main, finetune_cli.get_args_parser(),
                                                     _finetune(tiny, tmp_path, "--resume", str(model_dir))))
    assert code == 1 and "is a pretraining checkpoint" in line and "--pretrain" in line


def test_resume_with_another_net_is_refused(tiny, tmp_path, capsys):
    model = classifier.ActionClassifier("resnet10", 3, 32, seq_len=2, num_seq=4, num_classes=2)
    optimizer = torch.optim.Adam(classifier.parameter_groups(model, "all", 1e-3))
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [50])
    args = finetune_cli.get_args_parser().parse_args(_finetune(tiny, tmp_path))
    ckpt = run.make_checkpoint("imgs", "resnet10", model, optimizer, scheduler, epoch=1, iteration=2, best_acc=0.5,
                               best_epoch=1, args=args, class_names=["jump", "wave"], track_running_stats=True)
    model_dir = tmp_path / "ft" / "model"
    run.save_epoch(model_dir, 1, {"imgs": ckpt}, ["imgs"], keep_last=1)
    code, line = _error_line(capsys, lambda: run_cli(
        finetune_cli.main, finetune_cli.get_args_parser(),
        _finetune(tiny, tmp_path, "--resume", str(model_dir), "--net", "resnet18")))
    assert code == 1 and "resnet10 imgs encoder, but --net resnet18" in line
    pre_dir = _checkpoint_dir(tmp_path / "pre")
    code, line = _error_line(capsys, lambda: run_cli(model_trainer.main, model_trainer.get_args_parser(), [
        "--dataset", "tiny", "--csv_root", str(tiny), "--net", "resnet18", "--img_dim", "32", "--modalities", "imgs",
        "--num_seq", "4", "--seq_len", "2", "--ds", "2", "--pred_step", "2", "--batch_size", "2", "--num_workers", "0",
        "--epochs", "3", "--resume", str(pre_dir)]))
    assert code == 1 and "--net resnet18" in line and "pass the --net of the run you resume" in line


@pytest.mark.parametrize("flag, value, match", [
    ("--lr", "-1", "--lr must be > 0, got -1.0"),
    ("--wd", "-1", "--wd must be >= 0, got -1.0"),
    ("--dropout", "1.5", r"--dropout must be in \[0, 1\), got 1.5"),
])
def test_bad_finetuning_numbers_are_usage_errors_before_anything_is_written(tiny, tmp_path, capsys, flag, value, match):
    code, line = _error_line(capsys, lambda: run_cli(finetune_cli.main, finetune_cli.get_args_parser(),
                                                     _finetune(tiny, tmp_path, "--pretrain", "random", flag, value)))
    assert code == 2 and re.search(match, line)
    assert not (tmp_path / "runs").exists()


def test_nan_pretrained_weights_stop_finetuning_before_training(tiny, tmp_path, capsys):
    model = _encoder()
    with torch.no_grad():
        model.agg.cell_list[0].out_gate.weight.fill_(float("inf"))
    path = tmp_path / "diverged.pth.tar"
    atomic_save({"mode": "imgs", "state_dict": model.state_dict()}, path)
    code, line = _error_line(capsys, lambda: run_cli(finetune_cli.main, finetune_cli.get_args_parser(),
                                                     _finetune(tiny, tmp_path, "--pretrain", str(path))))
    assert code == 1 and "diverged.pth.tar: encoder weight agg.cell_list.0.out_gate.weight" in line
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- data files


def _probs(path: Path, probs: np.ndarray) -> Path:
    result = eval_files.VideoProbabilities(probs, np.array([0, 1]), np.array(["a/v0", "b/v1"]), np.array(["a", "b"]), "imgs")
    return eval_files._save_npz(path, {"probs": result.probs, "labels": result.labels, "videos": result.videos,
                               "class_names": result.class_names, "view": np.asarray("imgs")})


@pytest.mark.parametrize("damage, error, match", [
    (lambda p: p.write_bytes(b""), DataError, r"is empty \(0 bytes\)"),
    (lambda p: p.write_bytes(p.read_bytes()[:200]), DataError, "cannot be read .*truncated or corrupt"),
    (lambda p: p.write_text("not an npz"), DataError, "cannot be read"),
    (lambda p: np.savez(p.with_suffix(""), probs=np.ones((2, 2))), DataError, r"lacks \['labels'"),
    (lambda p: _probs(p, np.array([[0.5, 0.5], [np.nan, 0.5]], np.float32)), NonFiniteError, "1 non-finite"),
    (lambda p: _probs(p, np.array([[2.5, 2.5], [0.5, 0.5]], np.float32)), DataError, "not probabilities .*off 1 by 4"),
    (lambda p: _probs(p, np.array([[1.5, -0.5], [0.5, 0.5]], np.float32)), DataError, "not probabilities .*values -0.5"),
])
def test_damaged_probability_files_name_the_file(tmp_path, damage, error, match):
    path = _probs(tmp_path / "probs_imgs.npz", np.full((2, 2), 0.5, np.float32))
    damage(path)
    with pytest.raises(error, match=f"probability file {path}.* {match}|{path}.*{match}"):
        eval_files.load_probabilities(path)


def test_nan_probabilities_and_features_are_never_written(tmp_path):
    nan = np.array([[0.5, 0.5], [np.nan, 0.5]], np.float32)
    result = eval_files.VideoProbabilities(nan, np.array([0, 1]), np.array(["a", "b"]), np.array(["a", "b"]), "imgs")
    with pytest.raises(NonFiniteError, match="imgs probabilities"):
        eval_files.save_probabilities(tmp_path / "p.npz", result)
    with pytest.raises(NonFiniteError, match="encoder train_features"):
        eval_files.save_features(tmp_path / "f.npz", "k", {"train_features": nan, "train_labels": np.array([0, 1])})
    assert list(tmp_path.iterdir()) == []


def test_corrupt_feature_cache_is_rebuilt(tmp_path, caplog):
    path = tmp_path / "features_x.npz"
    arrays = {"train_features": np.ones((2, 3), np.float32), "train_labels": np.array([0, 1]),
              "test_features": np.ones((1, 3), np.float32), "test_labels": np.array([1])}
    eval_files.save_features(path, "key", arrays)
    path.write_bytes(path.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="cocon.evaluation"):
        assert eval_files.load_features(path, "key") is None
    assert "feature cache" in caplog.text and str(path) in caplog.text
    eval_files.save_features(path, "key", arrays)
    assert np.array_equal(eval_files.load_features(path, "key")["test_labels"], [1])


@pytest.mark.parametrize("view, name, damage, match", [
    ("kphm", "heatmap_00003.npz", lambda p: p.write_bytes(b""), r"heatmap .*heatmap_00003.npz is empty"),
    ("kphm", "heatmap_00003.npz", lambda p: p.write_bytes(p.read_bytes()[:150]), r"heatmap .*heatmap_00003.npz cannot be read"),
    ("seg", "segmask_00002.npz", lambda p: np.savez(p.with_suffix(""), other=np.zeros(3)), r"mask .*segmask_00002.npz lacks"),
    ("seg", "segmask_00002.npz", lambda p: np.savez_compressed(p.with_suffix(""), seg=np.zeros((12, 16), np.uint8)),
     r"seg frames of .*v_jump_00 differ in size: frame 1 is \(24, 32, 1\), frame 2 is \(12, 16, 1\)"),
])
def test_damaged_heatmaps_and_masks_name_the_file(tmp_path, view, name, damage, match):
    csv_root = make_tiny_dataset(tmp_path, classes=("jump",), videos_per_class=1, num_frames=6, views=("imgs", view))
    frame_dir = Path((csv_root / "test_split01.csv").read_text().split(",")[0])
    folder = frame_dir.parents[2] / ("heatmaps" if view == "kphm" else "segmasks") / "jump" / frame_dir.name
    damage(folder / name)
    with pytest.raises(DataError, match=match):
        FrameReader().read(frame_dir, view, np.arange(1, 6))


def _save(array: np.ndarray, key: str):
    return lambda p: np.savez_compressed(p.with_suffix(""), **{key: array})


@pytest.mark.parametrize("view, name, damage, match", [
    ("kphm", "heatmap_00003.npz", _save(np.zeros((12, 16), np.uint8), "hm"), r"holds uint8 \[12, 16\], expected uint8 \[17, h, w\]"),
    ("kphm", "heatmap_00003.npz", _save(np.zeros((12, 16, 17), np.uint8), "hm"), r"holds uint8 \[12, 16, 17\], expected"),
    ("kphm", "heatmap_00003.npz", _save(np.zeros((18, 12, 16), np.uint8), "hm"), r"holds uint8 \[18, 12, 16\], expected"),
    ("kphm", "heatmap_00003.npz", _save(np.zeros((17, 12, 16), np.float32), "hm"), r"holds float32 \[17, 12, 16\], expected"),
    ("kphm", "heatmap_00003.npz", _save(np.zeros((17, 12, 16), np.int64), "hm"), r"holds int64 \[17, 12, 16\], expected"),
    ("seg", "segmask_00002.npz", _save(np.zeros((12, 16, 3), np.uint8), "seg"), r"holds uint8 \[12, 16, 3\], expected uint8 \[h, w\]"),
    ("seg", "segmask_00002.npz", _save(np.eye(12, 16, dtype=np.uint8), "seg"), r"holds 0/1, expected 0/255 .*1/255 intensity"),
])
def test_heatmaps_and_masks_of_the_wrong_format_name_the_file_and_the_format(tmp_path, view, name, damage, match):
    csv_root = make_tiny_dataset(tmp_path, classes=("jump",), videos_per_class=1, num_frames=6, views=("imgs", view))
    frame_dir = Path((csv_root / "test_split01.csv").read_text().split(",")[0])
    folder = frame_dir.parents[2] / ("heatmaps" if view == "kphm" else "segmasks") / "jump" / frame_dir.name
    damage(folder / name)
    with pytest.raises(DataError, match=f"{re.escape(str(folder / name))} {match}"):
        FrameReader().read(frame_dir, view, np.arange(1, 6))


def test_a_jpeg_cut_short_and_a_missing_flow_y_name_the_file_and_the_script(tmp_path):
    csv_root = make_tiny_dataset(tmp_path, classes=("jump",), videos_per_class=1, num_frames=6, views=("imgs", "flow"))
    frame_dir = Path((csv_root / "test_split01.csv").read_text().split(",")[0])
    frame = frame_dir / "image_00002.jpg"
    frame.write_bytes(frame.read_bytes()[:-12])  # still decodes, grey below the cut
    assert cv2.imread(str(frame)) is not None
    with pytest.raises(DataError, match=rf"{re.escape(str(frame))} is cut short .*process_data/extract_frame.py"):
        FrameReader().read(frame_dir, "imgs", np.arange(1, 4))
    flow_y = frame_dir.parents[2] / "flow" / "jump" / frame_dir.name / "flow_y_00002.jpg"
    flow_y.unlink()
    with pytest.raises(DataError, match=rf"{re.escape(str(flow_y))} is missing; extract the video's flow again "
                                        r"\(process_data/extract_flow.py\)"):
        FrameReader().read(frame_dir, "flow", np.arange(1, 4))


def test_a_list_whose_frame_counts_disagree_with_the_disk_is_refused(tmp_path):
    csv_root = make_tiny_dataset(tmp_path, classes=("jump", "wave"), videos_per_class=3, num_frames=6, views=("imgs",))
    train = csv_root / "train_split01.csv"
    rows = train.read_text().splitlines()
    train.write_text("".join(f"{row.rsplit(',', 1)[0]},{12 if i else 6}\n" for i, row in enumerate(rows)))  # 3 of 4 off
    with pytest.raises(DataError, match=r"train_split01.csv: the frame counts of 3 of 4 videos checked disagree with the "
                                        r"frames on disk \(e.g. .*: 12 listed, 6 on disk\).*rerun process_data/write_csv.py"):
        load_split(csv_root, "train", 1)
    train.write_text("".join(f"{row.rsplit(',', 1)[0]},{12 if i == 1 else 6}\n" for i, row in enumerate(rows)))
    assert len(load_split(csv_root, "train", 1)[0]) == 4  # one video off: the reader fills its frames, with a warning


def test_clips_longer_than_the_videos_are_counted_or_refused(caplog):
    with caplog.at_level(logging.WARNING):
        assert check_clip_length(np.array([40, 30, 100]), num_seq=8, seq_len=5, ds=1) == 1
    assert "1 of 3 videos are shorter than a clip" in caplog.text and "shortest: 30)" in caplog.text
    assert "1 of them are shorter than 40 frames and repeat their last frame" in caplog.text
    assert check_clip_length(np.array([40, 50]), 8, 5, 1) == 0
    with pytest.raises(UsageError, match=r"--num_seq 8 × --seq_len 5 = 40 frames per clip, but 2 of 3 videos have fewer than 20"):
        check_clip_length(np.array([10, 19, 100]), 8, 5, 1)


def test_the_clip_length_check_accounts_for_the_stride(caplog):
    """8 blocks of 5 frames at --ds 3 need 118 frames: videos of 60 and 100 frames are read at stride 1 and 2."""
    with caplog.at_level(logging.WARNING):
        assert check_clip_length(np.array([60, 100, 118, 200]), num_seq=8, seq_len=5, ds=3) == 2
    assert ("2 of 4 videos are shorter than a clip of --num_seq 8 × --seq_len 5 frames at --ds 3 (118 frames; "
            "shortest: 60): they are read at the largest stride that fits (1, 2), in training and testing alike") in caplog.text
    assert "repeat their last frame" not in caplog.text


def test_unreadable_frames_and_folders_say_permission_not_missing(tmp_path, monkeypatch):
    # Root reads every file, so the denial is simulated where the loader meets it.
    frame = tmp_path / "image_00001.jpg"
    frame.write_bytes(b"\xff\xd8 a JPEG this user may not read")
    monkeypatch.setattr(frame_reader.cv2, "imread", lambda path, flags: None)
    monkeypatch.setattr(frame_reader.os, "access", lambda path, mode: False)
    with pytest.raises(PermissionError, match="permission denied") as err:
        frame_reader.read_stored(tmp_path, "imgs", 1)
    assert err.value.filename == str(frame)

    def denied(path):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(frame_reader.os, "scandir", denied)
    with pytest.raises(PermissionError, match=r"imgs folder .* cannot be read \(permission denied\)"):
        frame_reader.missing_views([VideoEntry(tmp_path / "video", 10, 0)], ["imgs"])
