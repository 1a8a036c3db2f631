"""The scripts of test/ on a tiny frame tree: fine-tune from a checkpoint in the trainer's format, resume,
test, ensemble two views, retrieval (and its cache), linear probe and the qualitative figures, through the
test/test.py dispatcher and the protocol scripts; plus the action classifier (its parameter groups, the
checkpoint layout it keeps) and the clear failures."""
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from script_module import load_script, load_test_cli

from train.model_3d import DPCRNN
from utils import whole_video
from utils.checkpoint import CheckpointError, atomic_save, load_checkpoint
from utils.errors import UsageError
from utils.eval_files import load_probabilities

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
CLASSES = ("red", "green", "blue")

cli = load_test_cli("cocon_test_cli")
classifier = load_script("action_classifier")
classifier_test = load_script("classifier_test")
finetune = load_script("finetune")
eval_frozen = load_script("eval_frozen")


def _write_video(root: Path, name: str, video: str, c: int, rng: np.random.Generator) -> Path:
    frames = root / "frame" / name / video
    flow = root / "flow" / name / video
    frames.mkdir(parents=True)
    flow.mkdir(parents=True)
    for i in range(1, 17):
        image = rng.integers(0, 60, (48, 64, 3), dtype=np.uint8)
        image[..., 2 - c] += 150  # BGR on disk: class = dominant colour
        cv2.imwrite(str(frames / f"image_{i:05d}.jpg"), image)
        motion = np.full((48, 64), 128 + 30 * (c - 1), np.uint8)
        cv2.imwrite(str(flow / f"flow_x_{i:05d}.jpg"), motion)
        cv2.imwrite(str(flow / f"flow_y_{i:05d}.jpg"), motion)
    return frames


def _save_encoder(path: Path, view: str, channels: int) -> Path:
    """A DPCRNN state in train/model_trainer.py's checkpoint format."""
    torch.manual_seed(0)
    model = DPCRNN("resnet10", channels, 64, seq_len=3, num_seq=4, pred_step=1)
    atomic_save({"epoch": 3, "mode": view, "net": "resnet10", "state_dict": model.state_dict(), "best_acc": 0.2,
                 "optimizer": {}, "scheduler": {}, "iteration": 9, "args": {"net": "resnet10"}}, path)
    return path


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """3 classes × 5 videos of 16 frames (3 train, 2 test each), RGB and flow, and two encoders."""
    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    rows = {"train": [], "test": []}
    for c, name in enumerate(CLASSES):
        for v in range(5):
            frames = _write_video(root / "data", name, f"{name}_v{v}", c, rng)
            rows["train" if v < 3 else "test"].append(f"{frames},16\n")
    lists = root / "lists"
    lists.mkdir()
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(CLASSES)))
    for part, lines in rows.items():
        (lists / f"{part}_split01.csv").write_text("".join(lines))
    model = root / "pretrain" / "model"
    return {
        "root": root,
        "lists": lists,
        "imgs": _save_encoder(model / "mode_imgs_best.pth.tar", "imgs", 3),
        "flow": _save_encoder(model / "mode_flow_best.pth.tar", "flow", 2),
    }


def _argv(tree, *extra: str) -> list[str]:
    return ["--net", "resnet10", "--dataset", "tiny", "--csv_root", str(tree["lists"]), "--img_dim", "64",
            "--seq_len", "3", "--num_seq", "4", "--ds", "1", "--batch_size", "3", "--num_workers", "0",
            "--save_dir", str(tree["root"] / "runs"), *extra]


def _args(tree, *extra: str):
    return cli.get_args_parser().parse_args(_argv(tree, *extra))


def test_seed_command_parses_with_the_documented_defaults():
    argv = "--net resnet18 --dataset ucf101 --modality imgs --batch_size 8 --img_dim 128 --pretrain m.pth.tar --epochs 100"
    args = cli.get_args_parser().parse_args(argv.split())
    assert finetune.lr_milestones(args) == [50, 70, 90] and finetune.use_hflip(args)
    assert args.lr == 1e-3 and args.wd == 1e-3 and args.train_what == "all"
    synthetic = cli.get_args_parser().parse_args([*argv.split(), "--dataset", "synthetic", "--img_dim", "224"])
    assert not finetune.use_hflip(synthetic) and finetune.lr_milestones(synthetic) == [60, 120, 180]
    assert finetune.use_hflip(cli.get_args_parser().parse_args(["--dataset", "synthetic", "--hflip"]))


def test_parameter_groups_and_freezing_match_real_names():
    model = classifier.ActionClassifier("resnet10", 3, 64, seq_len=3, num_seq=4, num_classes=5)
    assert model(torch.randn(2, 4, 3, 3, 64, 64)).shape == (2, 5)
    backbone = {id(p) for p in model.backbone.parameters()}
    groups = classifier.parameter_groups(model, "ft", lr=1e-3)
    assert {id(p) for p in groups[0]["params"]} == backbone and groups[0]["lr"] == pytest.approx(1e-4)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    head = classifier.parameter_groups(model, "last", lr=1e-3)[0]["params"]
    assert {id(p) for p in head} == {id(p) for m in (model.final_bn, model.final_fc) for p in m.parameters()}
    model.train()
    classifier.set_trainable(model, "all", epoch=0)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.agg.parameters())  # the GRU is never frozen by "all"
    stats = model.backbone.bn1.running_mean.clone()
    model(torch.randn(2, 4, 3, 3, 64, 64))  # a frozen backbone keeps its BatchNorm statistics too
    assert not model.backbone.training and torch.equal(model.backbone.bn1.running_mean, stats)
    model.train()
    classifier.set_trainable(model, "all", epoch=1)
    assert all(p.requires_grad for p in model.parameters()) and model.backbone.training
    classifier.set_trainable(model, "last", epoch=5)
    assert not any(p.requires_grad for p in [*model.backbone.parameters(), *model.agg.parameters()])
    assert not model.backbone.training and model.final_fc.training


def test_classifier_loads_the_old_layout_and_reads_the_encoder_with_the_original_head():
    """Fine-tuning checkpoints saved by the classifier's former class (keys backbone.*, agg.*, final_bn.*,
    final_fc.1.*, in that order) load strictly, and the logits are the original CoCon's: the backbone's
    time-pooled maps (no ReLU, no L2 normalisation), GRU, last hidden state averaged over space, BatchNorm,
    linear."""
    torch.manual_seed(0)
    encoder = DPCRNN("resnet10", 3, 64, seq_len=3, num_seq=4, pred_step=1, l2_norm=False).eval()
    d, k = encoder.feature_size, 5
    old = {key: value for key, value in encoder.state_dict().items() if key.startswith(("backbone.", "agg."))}
    old.update({"final_bn.weight": torch.rand(d) + 0.5, "final_bn.bias": torch.randn(d),
                "final_bn.running_mean": torch.randn(d), "final_bn.running_var": torch.rand(d) + 0.5,
                "final_bn.num_batches_tracked": torch.tensor(7), "final_fc.1.weight": torch.randn(k, d),
                "final_fc.1.bias": torch.randn(k)})
    model = classifier.ActionClassifier("resnet10", 3, 64, seq_len=3, num_seq=4, num_classes=k)
    assert list(model.state_dict()) == list(old)
    model.load_state_dict(old)
    model.eval()
    clip = torch.randn(2, 4, 3, 3, 64, 64)
    with torch.no_grad():
        _, hidden = encoder.agg(encoder.encode(clip))
        context = torch.nn.functional.batch_norm(hidden[:, -1].mean(dim=(2, 3)), old["final_bn.running_mean"],
                                                 old["final_bn.running_var"], old["final_bn.weight"], old["final_bn.bias"])
        expected = context @ old["final_fc.1.weight"].T + old["final_fc.1.bias"]
        assert torch.allclose(model(clip), expected, atol=1e-5)


def test_each_protocol_script_takes_its_flags_as_the_dispatcher_does():
    dispatcher = {a.dest: a for a in cli.get_args_parser()._actions}
    for script in (finetune, eval_frozen, load_script("ensemble")):
        for action in script.get_args_parser()._actions:
            assert action.dest in dispatcher, (script.__name__, action.dest)
            assert action.default == dispatcher[action.dest].default, (script.__name__, action.dest)
    with pytest.raises(UsageError, match="nothing to evaluate"):
        eval_frozen.main(eval_frozen.get_args_parser().parse_args(["--pretrain", "random"]))


@pytest.mark.slow
def test_finetune_resume_test_and_two_view_ensemble(tree, caplog):
    caplog.set_level(logging.INFO, logger="cocon.test")
    args = _args(tree, "--modality", "imgs", "--pretrain", str(tree["imgs"]), "--epochs", "2", "--val_fraction", "0.34")
    result = cli.main(args)["finetune"]
    exp = Path(result["exp"])
    model_dir = exp / "model"
    assert sorted(p.name for p in model_dir.iterdir()) == ["mode_imgs_best.pth.tar", "mode_imgs_epoch2.pth.tar"]
    assert list((exp / "img" / "train").glob("events.out.tfevents.*"))
    assert "epoch 2/2: train loss" in caplog.text  # progress goes to the cocon.test logger
    last = load_checkpoint(model_dir / "mode_imgs_epoch2.pth.tar")
    assert last["mode"] == "imgs" and last["epoch"] == 2 and last["args"]["train_what"] == "all"
    pretrained = load_checkpoint(tree["imgs"])["state_dict"]
    for key in ("backbone.layer1.0.conv1.weight", "agg.cell_list.0.update_gate.weight"):
        # unfrozen after the first epoch: both the backbone and the GRU learned
        assert not torch.equal(last["state_dict"][key], pretrained[key]), key

    out = exp / "eval" / "mode_imgs_best_tiny_split01"
    stats = json.loads((out / "test_results.json").read_text())
    assert stats["num_videos"] == 6 and stats["top1"] == result["test"]["top1"]
    for name in ("test_confusion.png", "test_per_class.md", "test_per_class.csv"):
        assert (out / name).stat().st_size > 0
    probs = load_probabilities(out / "probs_imgs.npz")
    assert probs.probs.shape == (6, 3) and probs.view == "imgs"
    top1 = (probs.probs.argmax(1) == probs.labels).mean()
    assert stats["top1"] == pytest.approx(top1)

    resumed = cli.main(_args(tree, "--modality", "imgs", "--resume", str(model_dir / "mode_imgs_epoch2.pth.tar"),
                             "--epochs", "3", "--val_fraction", "0.34"))["finetune"]
    assert resumed["exp"] == str(exp)
    assert load_checkpoint(model_dir / "mode_imgs_epoch3.pth.tar")["iteration"] == 3 * last["iteration"] // 2
    assert not (model_dir / "mode_imgs_epoch2.pth.tar").exists()

    # A flow classifier checkpoint, tested from test/ as the seed runs it.
    flow_ckpt = tree["root"] / "flowft" / "model" / "mode_flow_best.pth.tar"
    flow_model = classifier.ActionClassifier("resnet10", 2, 64, seq_len=3, num_seq=4, num_classes=3)
    atomic_save({"epoch": 1, "mode": "flow", "state_dict": flow_model.state_dict()}, flow_ckpt)
    run = subprocess.run([sys.executable, "test.py", *_argv(tree, "--modality", "flow", "--test", str(flow_ckpt))],
                         cwd=REPO / "test", capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "test flow: top-1" in run.stdout
    flow_probs = flow_ckpt.parents[1] / "eval" / "mode_flow_best_tiny_split01" / "probs_flow.npz"

    # Ensemble from the repository root; views are fused in VIEWS order, not flag order.
    run = subprocess.run([sys.executable, "test/test.py", "--ensemble", "1", "--prob_flow", str(flow_probs),
                          "--prob_imgs", str(out / "probs_imgs.npz"), "--out_dir", str(tree["root"] / "ens")],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    fused = load_probabilities(tree["root"] / "ens" / "probs_imgs+flow.npz")
    imgs_probs = load_probabilities(out / "probs_imgs.npz").probs  # rewritten by the resumed run
    expected = (imgs_probs + load_probabilities(flow_probs).probs) / 2  # weights 2 and 2
    assert np.allclose(fused.probs, expected, atol=1e-6)
    assert json.loads((tree["root"] / "ens" / "ensemble_results.json").read_text())["weights"] == {"imgs": 2.0, "flow": 2.0}


@pytest.mark.slow
def test_finetuning_resume_equals_straight_run(tree, tmp_path):
    common = ("--modality", "imgs", "--pretrain", str(tree["imgs"]), "--val_fraction", "0.34")
    straight = cli.main(cli.get_args_parser().parse_args(_argv(tree, *common, "--epochs", "2", "--save_dir", str(tmp_path / "a"))))
    first = cli.main(cli.get_args_parser().parse_args(_argv(tree, *common, "--epochs", "1", "--save_dir", str(tmp_path / "b"))))
    model_dir = Path(first["finetune"]["exp"]) / "model"
    # A run killed during epoch 2 left epoch 1's checkpoint: resume from the folder.
    resumed = cli.main(cli.get_args_parser().parse_args(
        _argv(tree, *common, "--epochs", "2", "--save_dir", str(tmp_path / "b"), "--resume", str(model_dir))))
    a = load_checkpoint(Path(straight["finetune"]["exp"]) / "model" / "mode_imgs_epoch2.pth.tar")
    b = load_checkpoint(model_dir / "mode_imgs_epoch2.pth.tar")
    assert a["epoch"] == b["epoch"] == 2 and a["iteration"] == b["iteration"] and a["best_acc"] == b["best_acc"]
    for key, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][key]), key
    for pid, state in a["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg"], b["optimizer"]["state"][pid]["exp_avg"])
    assert a["scheduler"] == b["scheduler"] and a["best_epoch"] == b["best_epoch"]
    assert resumed["finetune"]["test"]["top1"] == straight["finetune"]["test"]["top1"]
    assert json.loads((model_dir.parent / "args.json").read_text())["epochs"] == 1
    assert json.loads((model_dir.parent / "args_resume1.json").read_text())["epochs"] == 2


def test_retrieval_probe_and_figures_then_cached_second_run(tree, monkeypatch):
    argv = ("--modality", "imgs", "--pretrain", str(tree["imgs"]), "--retrieval", "--linear_probe", "--qualitative",
            "--nn_queries", "3", "--nn_k", "4")
    first = cli.main(_args(tree, *argv))["encoder"]
    out = Path(first["out_dir"])
    assert out == tree["imgs"].parents[1] / "eval" / "mode_imgs_best_tiny_split01"
    assert first["feature_cache"] == "miss" and len(list(out.glob("features_*.npz"))) == 1
    assert set(first["retrieval"]) == {1, 5}  # a gallery of 9: R@10 and up would count every query
    saved = json.loads((out / "retrieval.json").read_text())
    assert saved["queries"] == 6 and saved["gallery"] == 9
    assert set(saved["recall"]) == {"1", "5"} and 0 <= saved["recall"]["1"] <= saved["recall"]["5"] <= 1
    assert "R@1" in (out / "retrieval.md").read_text() and "R@10" not in (out / "retrieval.md").read_text()
    assert 0 <= json.loads((out / "linear_probe.json").read_text())["test_top1"] <= 1
    for name in ("tsne.png", "nearest_neighbours.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"

    def no_extraction(*_args, **_kwargs):
        raise AssertionError("features were recomputed despite the cache")

    monkeypatch.setattr(whole_video, "extract_video_features", no_extraction)
    second = cli.main(_args(tree, *argv))["encoder"]
    assert second["feature_cache"] == "hit" and second["retrieval"] == first["retrieval"]
    assert second["linear_probe"] == first["linear_probe"]


def test_pretrain_of_another_view_fails_clearly(tree):
    with pytest.raises(CheckpointError, match=r"--modality imgs \(from the command line\) contradicts --pretrain "
                       r".*mode_flow_best.pth.tar, which was trained with --modality flow"):
        cli.main(_args(tree, "--modality", "imgs", "--pretrain", str(tree["flow"]), "--epochs", "1"))
    with pytest.raises(ValueError, match="--pretrain is required"):
        cli.main(_args(tree, "--modality", "imgs", "--epochs", "1"))


def test_pretrain_checkpoint_given_to_test_fails_clearly(tree):
    with pytest.raises(CheckpointError, match="a pretraining checkpoint goes to --pretrain"):
        cli.main(_args(tree, "--modality", "imgs", "--test", str(tree["imgs"]), "--out_dir", str(tree["root"] / "x")))


def test_missing_class_index_fails_clearly(tree, tmp_path):
    for name in ("train_split01.csv", "test_split01.csv"):
        (tmp_path / name).write_text((tree["lists"] / name).read_text())
    args = _args(tree, "--modality", "imgs", "--pretrain", "random", "--epochs", "1")
    args.csv_root = tmp_path
    with pytest.raises(FileNotFoundError, match=f"{os.sep}classInd.txt does not exist"):
        cli.main(args)


def _classifier_checkpoint(path: Path, channels: int, saved_args: dict, class_names: list[str]) -> Path:
    """A fine-tuning checkpoint in test.py's format, optimiser and scheduler of --train_what all."""
    model = classifier.ActionClassifier("resnet10", channels, 64, seq_len=3, num_seq=4, num_classes=len(class_names))
    optimizer = torch.optim.Adam(classifier.parameter_groups(model, "all", 1e-3))
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [50], gamma=0.1)
    atomic_save({"epoch": 1, "mode": "imgs" if channels == 3 else "flow", "net": "resnet10",
                 "state_dict": model.state_dict(), "best_acc": 0.0, "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "iteration": 1, "args": saved_args,
                 "class_names": class_names, "track_running_stats": True}, path)
    return path


def test_test_checkpoint_must_match_model_flags_and_classes(tree, tmp_path):
    args = _args(tree, "--modality", "imgs")
    saved = {k: getattr(args, k) for k in ("net", "img_dim", "seq_len", "num_seq", "ds", "gru_input")}
    good = _classifier_checkpoint(tmp_path / "good.pth.tar", 3, saved, list(CLASSES))
    assert not classifier_test.load_classifier(good, args, list(CLASSES)).training
    for flag, value in (("seq_len", 5), ("gru_input", "relu_l2"), ("net", "resnet18")):
        path = _classifier_checkpoint(tmp_path / f"{flag}.pth.tar", 3, {**saved, flag: value}, list(CLASSES))
        with pytest.raises(CheckpointError, match=f"--{flag} {value!r}, but --{flag} is {getattr(args, flag)!r}"):
            classifier_test.load_classifier(path, args, list(CLASSES))
    renamed = ["red", "blue", "green"]
    with pytest.raises(CheckpointError, match=r"classInd.txt lists 3; they first differ at class 2: 'green' vs 'blue'"):
        classifier_test.load_classifier(_classifier_checkpoint(tmp_path / "cls.pth.tar", 3, saved, list(CLASSES)), args, renamed)
    # flow caps its side at 128: a flow classifier fine-tuned with --img_dim 224 fits --img_dim 128
    flow = _classifier_checkpoint(tmp_path / "flow.pth.tar", 2, {**saved, "img_dim": 224}, list(CLASSES))
    classifier_test.load_classifier(flow, _args(tree, "--modality", "flow", "--img_dim", "128"), list(CLASSES))
    with pytest.raises(CheckpointError, match="--img_dim 224, but --img_dim is 64"):
        classifier_test.load_classifier(flow, _args(tree, "--modality", "flow"), list(CLASSES))


def test_resume_with_another_train_what_fails_clearly(tree, tmp_path):
    path = tmp_path / "model" / "mode_imgs_epoch1.pth.tar"
    _classifier_checkpoint(path, 3, {"train_what": "all"}, list(CLASSES))
    with pytest.raises(CheckpointError, match="--train_what 'all', but --train_what is 'last'"):
        cli.main(_args(tree, "--modality", "imgs", "--resume", str(path), "--train_what", "last", "--epochs", "2"))


def test_recall_k_and_split_flags_are_checked():
    assert eval_frozen.parse_recall_k("10, 1,5,1") == [1, 5, 10]
    for bad in ("1,x", "0", "-1", " , "):
        with pytest.raises(ValueError, match="--recall_k"):
            eval_frozen.parse_recall_k(bad)
    with pytest.raises(SystemExit):
        cli.get_args_parser().parse_args(["--split", "4"])


def _recorded_encoder(path: Path, **recorded) -> Path:
    """A pretraining checkpoint (resnet10, 64 px, 4 blocks of 3 frames) recording ``recorded`` as its flags."""
    _save_encoder(path, "imgs", 3)
    checkpoint = load_checkpoint(path)
    atomic_save({**checkpoint, "args": {"net": "resnet10", "img_dim": 64, "seq_len": 3, "num_seq": 4, "ds": 1,
                                        "l2_norm": True, "modalities": "imgs", **recorded}}, path)
    return path


def _bare_args(tree, *extra: str):
    """Flags of an evaluation that leaves the model flags out."""
    return cli.get_args_parser().parse_args(["--dataset", "tiny", "--csv_root", str(tree["lists"]), "--batch_size", "3",
                                             "--num_workers", "0", *extra])


def test_evaluation_takes_the_model_flags_left_out_from_the_pretrain_checkpoint(tree, tmp_path):
    ckpt = _recorded_encoder(tmp_path / "pre" / "model" / "mode_imgs_best.pth.tar")
    args = _bare_args(tree, "--pretrain", str(ckpt), "--retrieval", "--out_dir", str(tmp_path / "out"))
    result = cli.main(args)["encoder"]
    assert (args.net, args.img_dim, args.seq_len, args.num_seq, args.ds) == ("resnet10", 64, 3, 4, 1)
    assert 0 <= result["retrieval"][1] <= 1


def test_a_model_flag_contradicting_the_checkpoint_is_refused_and_clip_flags_are_logged(tree, tmp_path, caplog):
    settings = load_script("checkpoint_settings")
    ckpt = _recorded_encoder(tmp_path / "pre" / "model" / "mode_imgs_best.pth.tar")
    for flag, value in (("--img_dim", "128"), ("--net", "resnet18"), ("--seq_len", "5"), ("--no-l2_norm", None)):
        args = _bare_args(tree, "--pretrain", str(ckpt), "--retrieval", *[a for a in (flag, value) if a])
        dest = flag.removeprefix("--no-").removeprefix("--")
        with pytest.raises(CheckpointError, match=f"--{dest} .* contradicts --pretrain {ckpt}, which was trained with "
                                                  f"--{dest} "):
            settings.adopt_checkpoint_settings(args)
    caplog.set_level(logging.INFO, logger="cocon.test")
    args = _bare_args(tree, "--pretrain", str(ckpt), "--linear_probe", "--ds", "2")
    settings.adopt_checkpoint_settings(args)
    assert args.ds == 2 and args.img_dim == 64 and "trained with --ds 1; this evaluation reads clips of --ds 2" in caplog.text
    # a fine-tuned checkpoint gives --test its classifier's flags, --gru_input included
    saved = {"net": "resnet10", "img_dim": 64, "seq_len": 3, "num_seq": 4, "ds": 1, "gru_input": "relu_l2",
             "modality": "flow"}
    test_ckpt = _classifier_checkpoint(tmp_path / "ft.pth.tar", 2, saved, list(CLASSES))
    args = _bare_args(tree, "--test", str(test_ckpt))
    settings.adopt_checkpoint_settings(args)
    assert (args.modality, args.gru_input, args.img_dim, args.net) == ("flow", "relu_l2", 64, "resnet10")


def _finetuning_run(tree, exp: Path, epochs: tuple[int, ...]) -> Path:
    """A fine-tuning folder: args.json and the epoch checkpoints ``epochs`` of a resnet10 64-px imgs run."""
    recorded = {**vars(_args(tree, "--modality", "imgs", "--pretrain", "random", "--epochs", "2")), "save_dir": str(exp.parent)}
    recorded = {k: v if isinstance(v, (bool, int, float, str, type(None))) else str(v) for k, v in recorded.items()
                if not k.startswith("_")}
    (exp / "model").mkdir(parents=True)
    (exp / "args.json").write_text(json.dumps(recorded))
    for epoch in epochs:
        path = _classifier_checkpoint(exp / "model" / f"mode_imgs_epoch{epoch}.pth.tar", 3, recorded, list(CLASSES))
        atomic_save({**load_checkpoint(path), "epoch": epoch}, path)
    return exp / "model"


def test_finetuning_resume_takes_the_runs_flags_and_refuses_an_older_checkpoint(tree, tmp_path):
    model_dir = _finetuning_run(tree, tmp_path / "ft", (1, 2))
    args = _bare_args(tree, "--resume", str(model_dir), "--epochs", "3")
    finetune.resume_run_flags(args)
    assert (args.net, args.img_dim, args.seq_len, args.num_seq, args.ds, args.epochs) == ("resnet10", 64, 3, 4, 1, 3)
    with pytest.raises(UsageError, match=r"--img_dim 128 contradicts the resumed run's --img_dim 64 \(.*args.json\)"):
        finetune.resume_run_flags(_bare_args(tree, "--resume", str(model_dir), "--img_dim", "128"))
    with pytest.raises(UsageError, match="holds epoch 1, but .* holds later epochs of that run"):
        cli.main(_bare_args(tree, "--resume", str(model_dir / "mode_imgs_epoch1.pth.tar"), "--epochs", "3"))


def _lists_of(tree, folder: Path, keep) -> Path:
    """The tree's lists in ``folder``, the train list cut to the rows ``keep`` accepts."""
    folder.mkdir()
    (folder / "classInd.txt").write_text((tree["lists"] / "classInd.txt").read_text())
    rows = [row for row in (tree["lists"] / "train_split01.csv").read_text().splitlines() if keep(row)]
    (folder / "train_split01.csv").write_text("".join(f"{row}\n" for row in rows))
    (folder / "test_split01.csv").write_text((tree["lists"] / "test_split01.csv").read_text())
    return folder


def test_finetuning_without_validation_videos_says_so_once_and_keeps_the_last_epoch(tree, tmp_path, caplog):
    lists = _lists_of(tree, tmp_path / "lists", lambda row: "_v0," in row)  # one video per class
    caplog.set_level(logging.INFO, logger="cocon.test")
    args = _args(tree, "--modality", "imgs", "--pretrain", "random", "--epochs", "2", "--save_dir", str(tmp_path / "runs"))
    args.csv_root = lists
    result = cli.main(args)["finetune"]
    assert caplog.text.count("fine-tuning: no validation video") == 1
    assert "val loss" not in caplog.text and caplog.text.count("| no validation videos") == 2
    best = load_checkpoint(Path(result["exp"]) / "model" / "mode_imgs_best.pth.tar")
    assert best["epoch"] == 2 and best["best_epoch"] == 2
    records = [json.loads(line) for line in (Path(result["exp"]) / "log.jsonl").read_text().splitlines()]
    assert [r["val"] for r in records] == [None, None]


def test_finetuning_validated_on_one_video_says_so(tree, tmp_path, caplog):
    lists = _lists_of(tree, tmp_path / "lists", lambda row: "_v0," in row or "red_v1," in row)  # red has 2 videos
    args = _args(tree, "--modality", "imgs", "--pretrain", "random", "--epochs", "1", "--save_dir", str(tmp_path / "runs"))
    args.csv_root = lists
    with caplog.at_level(logging.WARNING, logger="cocon.data"):
        cli.main(args)
    assert "fine-tuning: 1 validation video: the 'best' checkpoint would be chosen on one video" in caplog.text


def test_the_feature_cache_is_not_reused_after_the_frames_are_extracted_again(tree, tmp_path):
    ckpt = _recorded_encoder(tmp_path / "pre" / "model" / "mode_imgs_best.pth.tar")
    argv = ("--pretrain", str(ckpt), "--retrieval", "--out_dir", str(tmp_path / "out"))
    assert cli.main(_bare_args(tree, *argv))["encoder"]["feature_cache"] == "miss"
    assert cli.main(_bare_args(tree, *argv))["encoder"]["feature_cache"] == "hit"
    frame = tree["root"] / "data" / "frame" / "red" / "red_v3" / "image_00001.jpg"
    stat = frame.stat()
    os.utime(frame, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # written again by a new extraction
    assert cli.main(_bare_args(tree, *argv))["encoder"]["feature_cache"] == "miss"
