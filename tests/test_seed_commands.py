"""The command lines of the original CoCon and DPC READMEs, as written, still work here.

They name datasets `hmdb`, `kinetics` and `k400` (this repo writes hmdb51/kinetics400 lists) and pass
`--gpu 0,1`; they are run from inside train/ and test/. Each is parsed verbatim; a pretraining and a
fine-tuning run then start from the verbatim line with only size flags appended (argparse keeps the last
value), since 100 epochs at 128 px are not a test.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from script_module import load_test_cli
from tiny_dataset import make_tiny_dataset

from train import model_trainer
from utils import layout

REPO = Path(__file__).resolve().parents[1]

# (folder, script, arguments) exactly as the original READMEs print them
PRETRAIN = {
    "cocon_hmdb": "--net resnet18 --dataset hmdb --modalities imgs_flow_seg_kphm --batch_size 16 --img_dim 128 --epochs 100",
    "cocon_kinetics": "--net resnet18 --dataset kinetics --modalities imgs_flow --batch_size 16 --img_dim 128 --epochs 100",
    "dpc_ucf101": "--gpu 0,1 --net resnet18 --dataset ucf101 --batch_size 128 --img_dim 128 --epochs 100",
    "dpc_k400": "--gpu 0,1 --net resnet34 --dataset k400 --batch_size 128 --img_dim 224 --epochs 100",
}
FINETUNE = {
    "cocon_ucf101": "--net resnet18 --dataset ucf101 --modality imgs --batch_size 8 --img_dim 128 --pretrain {model_path} --epochs 100",
    "dpc_ucf101": "--gpu 0,1 --net resnet18 --dataset ucf101 --batch_size 128 --img_dim 128 --pretrain {model_path} "
                  "--train_what ft --epochs 300",
    "cocon_hmdb": "--net resnet18 --dataset hmdb --modality flow --batch_size 8 --img_dim 128 --pretrain {model_path} --epochs 100",
}
CANONICAL = {"hmdb": "hmdb51", "kinetics": "kinetics400", "k400": "kinetics400", "ucf101": "ucf101"}
# Appended to a verbatim line to make it a CPU-sized smoke run.
TINY = ["--net", "resnet10", "--img_dim", "32", "--batch_size", "2", "--epochs", "1", "--num_seq", "4",
        "--seq_len", "2", "--ds", "2", "--num_workers", "0"]


def _test_cli():
    return load_test_cli("cocon_test_cli_seed")


@pytest.mark.parametrize("name", sorted(PRETRAIN))
def test_pretraining_lines_parse_verbatim(name):
    line = PRETRAIN[name]
    args = model_trainer.get_args_parser().parse_args(shlex.split(line))
    assert args.dataset == CANONICAL[shlex.split(line)[shlex.split(line).index("--dataset") + 1]]
    assert args.gpu == ("0,1" if "--gpu" in line else None)


@pytest.mark.parametrize("name", sorted(FINETUNE))
def test_finetuning_lines_parse_verbatim(name):
    line = FINETUNE[name].format(model_path="runs/x/model/mode_imgs_best.pth.tar")
    args = _test_cli().get_args_parser().parse_args(shlex.split(line))
    assert args.dataset == CANONICAL[shlex.split(line)[shlex.split(line).index("--dataset") + 1]]
    assert args.pretrain == "runs/x/model/mode_imgs_best.pth.tar"


def test_original_names_find_the_lists_write_csv_wrote(tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "DEFAULT_CSV_ROOT", tmp_path)
    for canonical in ("hmdb51", "kinetics400"):
        (tmp_path / canonical).mkdir()
    for alias, canonical in (("hmdb", "hmdb51"), ("kinetics", "kinetics400"), ("k400", "kinetics400")):
        args = model_trainer.get_args_parser().parse_args(["--dataset", alias])
        assert layout.resolve_csv_root(args.csv_root, args.dataset) == tmp_path / canonical


@pytest.fixture(scope="module")
def lists(tmp_path_factory) -> Path:
    """A tiny four-view dataset whose lists sit where the default --csv_root of `ucf101` and `hmdb51` looks."""
    root = tmp_path_factory.mktemp("seed")
    csv = make_tiny_dataset(root, videos_per_class=4, num_frames=20)
    for name in ("ucf101", "hmdb51"):
        (root / "lists" / name).mkdir(parents=True)
        for f in csv.iterdir():
            (root / "lists" / name / f.name).write_text(f.read_text())
    return root / "lists"


@pytest.mark.slow
def test_original_lines_run_from_train_then_test(lists, tmp_path, monkeypatch):
    # `cd train && python model_trainer.py <verbatim>`: a subprocess, from inside train/ (csv_root given:
    # the default one is inside the repository).
    argv = [sys.executable, "model_trainer.py", *shlex.split(PRETRAIN["cocon_hmdb"]), "--gpu", "0", *TINY,
            "--pred_step", "2", "--val_fraction", "0.4", "--ft_freq", "0", "--csv_root", str(lists / "hmdb51"),
            "--save_dir", str(tmp_path / "pretrain")]
    done = subprocess.run(argv, cwd=REPO / "train", capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (exp,) = (tmp_path / "pretrain").iterdir()
    assert exp.name.startswith("cocon_hmdb51-32_resnet10_imgs_flow_seg_kphm_bs2")
    args = json.loads((exp / "args.json").read_text())
    assert args["dataset"] == "hmdb51" and args["gpu"] == "0"

    # `cd test && python test.py <verbatim>` with {model_path} filled in, run in this process so the
    # default --csv_root (process_data/data/<dataset>) can point at the tiny lists.
    monkeypatch.setattr(layout, "DEFAULT_CSV_ROOT", lists)
    monkeypatch.chdir(REPO / "test")
    line = FINETUNE["cocon_hmdb"].format(model_path=exp / "model" / "mode_flow_epoch1.pth.tar")
    cli = _test_cli()
    result = cli.main(cli.get_args_parser().parse_args([*shlex.split(line), *TINY, "--save_dir", str(tmp_path / "ft")]))
    tested = result["finetune"]["test"]
    assert 0 <= tested["top1"] <= 1 and tested["num_videos"] == 2  # the test list: one video per class
    assert "ft_hmdb51" in result["finetune"]["exp"]
