import pytest
import torch
from torch import nn

from train.model_3d import DPCRNN
from utils.checkpoint import (
    CheckpointError,
    atomic_save,
    clean_state_dict,
    has_running_stats,
    load_checkpoint,
    load_pretrained,
    load_weights,
    prune_epochs,
    state_dict_of,
)


def _model(channels: int = 3) -> DPCRNN:
    return DPCRNN("resnet10", in_channels=channels, img_dim=64, seq_len=5, num_seq=4, pred_step=2)


def test_round_trip_with_and_without_module_prefix(tmp_path):
    torch.manual_seed(0)
    source = _model()
    for wrap in (False, True):
        net = nn.DataParallel(source) if wrap else source
        path = tmp_path / f"ckpt_{wrap}.pth.tar"
        atomic_save({"epoch": 3, "mode": "imgs", "state_dict": net.state_dict()}, path)
        checkpoint = load_checkpoint(path)
        assert checkpoint["epoch"] == 3
        target = _model()
        report = load_weights(target, state_dict_of(checkpoint, path), path)
        assert not report.missing and not report.unexpected and not report.mismatched
        for key, value in source.state_dict().items():
            assert torch.equal(target.state_dict()[key], value), key


def test_dpc_checkpoint_with_duplicate_gru_names_loads_without_unmatched_backbone_keys(tmp_path):
    # DPC/CoCon saved a DataParallel model whose ConvGRU registered each cell twice.
    torch.manual_seed(1)
    source = _model()
    dpc_state = {}
    for key, value in source.state_dict().items():
        dpc_state[f"module.{key}"] = value
        if key.startswith("agg.cell_list.0."):
            dpc_state["module." + key.replace("agg.cell_list.0.", "agg.ConvGRUCell_00.")] = value
    path = tmp_path / "dpc.pth.tar"
    torch.save({"epoch": 100, "state_dict": dpc_state, "optimizer": {}}, path)
    target = _model()
    report = load_weights(target, state_dict_of(load_checkpoint(path), path), path)
    assert not report.unexpected and not report.mismatched and not report.missing
    assert torch.equal(target.agg.cell_list[0].out_gate.weight, source.agg.cell_list[0].out_gate.weight)
    cleaned = clean_state_dict({"module.agg.ConvGRUCell_00.reset_gate.weight": torch.ones(1)})
    assert list(cleaned) == ["agg.cell_list.0.reset_gate.weight"]


def test_dpc_checkpoint_without_running_stats_reports_them_missing(tmp_path):
    source = DPCRNN("resnet10", img_dim=64, seq_len=5, num_seq=4, pred_step=2, track_running_stats=False)
    report = load_weights(_model(), source.state_dict())
    assert report.missing and all("running" in k or "num_batches" in k for k in report.missing)
    assert not any(k.startswith("backbone.") and "weight" in k for k in report.missing)


def test_corrupt_truncated_and_missing_checkpoints_raise(tmp_path):
    path = tmp_path / "good.pth.tar"
    atomic_save({"state_dict": _model().state_dict()}, path)
    truncated = tmp_path / "truncated.pth.tar"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pth.tar.*cannot be read"):
        load_checkpoint(truncated)
    garbage = tmp_path / "garbage.pth.tar"
    garbage.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pth.tar"):
        load_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pth.tar")
    torch.save([1, 2], tmp_path / "list.pth.tar")
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_checkpoint(tmp_path / "list.pth.tar")
    with pytest.raises(CheckpointError, match="no state_dict"):
        state_dict_of({"epoch": 1}, "x.pth.tar")


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": {}, "payload": nn.Linear(1, 1)}, path)  # a module needs full unpickling
    with pytest.raises(CheckpointError, match="evil.pth.tar"):
        load_checkpoint(path)


def test_checkpoint_of_another_view_is_refused():
    flow_state = _model(channels=2).state_dict()
    report = load_weights(_model(channels=3), flow_state)
    assert report.mismatched and report.mismatched[0].startswith("backbone.conv1.weight")
    with pytest.raises(CheckpointError, match="another view"):
        load_weights(nn.Linear(2, 2), flow_state)


def test_atomic_save_leaves_no_partial_file(tmp_path):
    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_save({"x": Unsaveable()}, tmp_path / "a.pth.tar")
    assert list(tmp_path.iterdir()) == []


def test_prune_keeps_the_newest_epochs(tmp_path):
    for epoch in (1, 2, 10, 3):
        (tmp_path / f"mode_imgs_epoch{epoch}.pth.tar").write_text("x")
    (tmp_path / "mode_imgs_best.pth.tar").write_text("x")
    (tmp_path / "mode_flow_epoch1.pth.tar").write_text("x")
    deleted = prune_epochs(tmp_path, "mode_imgs_epoch", keep=2)
    assert sorted(p.name for p in deleted) == ["mode_imgs_epoch1.pth.tar", "mode_imgs_epoch2.pth.tar"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "mode_flow_epoch1.pth.tar", "mode_imgs_best.pth.tar", "mode_imgs_epoch10.pth.tar", "mode_imgs_epoch3.pth.tar"]


@pytest.fixture(scope="module")
def encoder_ckpt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    model = DPCRNN("resnet10", 3, 64, seq_len=3, num_seq=4, pred_step=1)
    path = folder / "mode_imgs_best.pth.tar"
    atomic_save({"epoch": 1, "mode": "imgs", "net": "resnet10", "state_dict": model.state_dict(), "best_acc": 0.5,
                 "optimizer": {}, "iteration": 1, "args": {}}, path)
    return path, model.state_dict()


def test_load_pretrained_loads_backbone_and_gru(encoder_ckpt):
    path, state = encoder_ckpt
    torch.manual_seed(1)
    model = DPCRNN("resnet10", 3, 64, seq_len=3, num_seq=4, pred_step=1)
    report = load_pretrained(model, path, "imgs")
    assert "backbone.conv1.weight" in report.loaded and "agg.cell_list.0.update_gate.weight" in report.loaded
    assert torch.equal(model.state_dict()["agg.cell_list.0.out_gate.weight"], state["agg.cell_list.0.out_gate.weight"])
    assert has_running_stats(path)
    dpc_style = {k: v for k, v in state.items() if "running_" not in k and "num_batches" not in k}
    atomic_save({"state_dict": dpc_style}, path.parent / "dpc_style.pth.tar")
    assert not has_running_stats(path.parent / "dpc_style.pth.tar")


def test_checkpoint_of_another_view_or_channel_count_fails_clearly(encoder_ckpt, tmp_path):
    path, state = encoder_ckpt
    flow_model = DPCRNN("resnet10", 2, 64, seq_len=3, num_seq=4, pred_step=1)
    with pytest.raises(CheckpointError, match="'imgs' view, but --modality is 'flow'"):
        load_pretrained(flow_model, path, "flow")
    no_mode = tmp_path / "dpc.pth.tar"
    atomic_save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, no_mode)
    with pytest.raises(CheckpointError, match="takes 3 channels.*view 'flow' has 2"):
        load_pretrained(flow_model, no_mode, "flow")
    deeper = DPCRNN("resnet18", 3, 64, seq_len=3, num_seq=4, pred_step=1)
    with pytest.raises(CheckpointError, match="another --net"):
        load_pretrained(deeper, no_mode, "imgs")


@pytest.mark.slow
def test_export_to_the_original_layout_and_back(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from utils.checkpoint import original_state_dict

    source = _model()
    original = original_state_dict(source.state_dict())
    assert "module.agg.cell_list.0.reset_gate.weight" in original
    assert torch.equal(original["module.agg.ConvGRUCell_00.reset_gate.weight"], source.agg.cell_list[0].reset_gate.weight)
    assert len(original) == len(source.state_dict()) + len(list(source.agg.cell_list[0].state_dict()))
    # The original model registered each cell twice, inside DataParallel: it accepts the export strictly.
    original_model = _model()
    original_model.agg.add_module("ConvGRUCell_00", original_model.agg.cell_list[0])
    nn.DataParallel(original_model).load_state_dict(original, strict=True)
    # The CLI writes it atomically, and our loader reads it back unchanged.
    ours = tmp_path / "ours.pth.tar"
    atomic_save({"epoch": 2, "mode": "imgs", "state_dict": source.state_dict()}, ours)
    repo = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, str(repo / "scripts" / "export_original.py"), str(ours), str(tmp_path / "orig.pth.tar")],
                   check=True, capture_output=True)
    exported = load_checkpoint(tmp_path / "orig.pth.tar")
    assert exported["mode"] == "imgs" and exported["epoch"] == 2
    target = _model()
    report = load_weights(target, exported["state_dict"])
    assert not report.missing and not report.unexpected
    assert torch.equal(target.backbone.conv1.weight, source.backbone.conv1.weight)
