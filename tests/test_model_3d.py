"""Tests of the DPC-RNN encoder on tiny CPU clips."""

import math

import pytest
import torch
import torch.nn.functional as F
from script_module import load_script

from train.model_3d import DPCRNN, ClipEncoder

torch.set_num_threads(1)

B, N, SL, P = 2, 4, 5, 2


def _model(channels: int = 3, img_dim: int = 64, **kwargs) -> DPCRNN:
    torch.manual_seed(0)
    return DPCRNN("resnet10", in_channels=channels, img_dim=img_dim, seq_len=SL, num_seq=N,
                  pred_step=P, **kwargs)


def _clip(channels: int, img_dim: int = 64) -> torch.Tensor:
    return torch.randn(B, N, channels, SL, img_dim, img_dim)


@pytest.mark.parametrize("channels", [3, 17])  # an imgs view and a kphm view
def test_forward_shapes_and_unit_norm(channels):
    model = _model(channels)
    assert model.feature_size == 256 and model.spatial_size == 2 and model.last_duration == 2
    pred, z = model(_clip(channels))
    assert pred.shape == (B, P, 256, 2, 2)
    assert z.shape == (B, N, 256, 2, 2)
    assert torch.allclose(pred.norm(dim=2), torch.ones(B, P, 2, 2), atol=1e-5)
    assert torch.allclose(z.norm(dim=2), torch.ones(B, N, 2, 2), atol=1e-5)
    assert (z < 0).any()  # targets are taken before the ReLU, as in DPC


def test_pretraining_model_keeps_its_checkpoint_layout_around_the_shared_encoder():
    model = _model()
    assert isinstance(model, ClipEncoder)  # the fine-tuning classifier encodes with the same code
    modules = list(dict.fromkeys(key.split(".")[0] for key in model.state_dict()))
    assert modules == ["backbone", "agg", "network_pred"]  # DPC's and the original CoCon's checkpoints load


def test_without_l2_norm_outputs_are_not_normalised():
    pred, z = _model(l2_norm=False)(_clip(3))
    assert not torch.allclose(z.norm(dim=2), torch.ones(B, N, 2, 2), atol=1e-2)
    assert not torch.allclose(pred.norm(dim=2), torch.ones(B, P, 2, 2), atol=1e-2)


def test_spatial_size_follows_img_dim():
    model = _model(img_dim=96)
    assert model.spatial_size == 3
    pred, z = model(_clip(3, img_dim=96))
    assert pred.shape == (B, P, 256, 3, 3) and z.shape == (B, N, 256, 3, 3)


def test_matches_cocon_recurrence():
    """Prediction = GRU over z[:N-P] as it is, then P steps of head + feedback of the prediction."""
    model = _model().eval()
    clip = _clip(3)
    with torch.no_grad():
        pred, z = model(clip)
        assert torch.allclose(z, model.encode(clip))
        _, h = model.agg(z[:, : N - P])
        h = F.normalize(h[:, -1], dim=1)
        for step in range(P):
            p = F.normalize(model.network_pred(h), dim=1)
            assert torch.allclose(pred[:, step], p, atol=1e-5)
            _, h = model.agg(p.unsqueeze(1), h.unsqueeze(0))
            h = F.normalize(h[:, -1], dim=1)


def _hand_set_gru(model: ClipEncoder) -> torch.Tensor:
    """Update gate 1, out gate tanh(input): a step's hidden state is tanh(its input). Returns the identity."""
    d = model.feature_size
    cell = model.agg.cell_list[0]
    eye = torch.eye(d).reshape(d, d, 1, 1)
    with torch.no_grad():
        for gate in (cell.reset_gate, cell.update_gate, cell.out_gate):
            gate.weight.zero_()
            gate.bias.zero_()
        cell.update_gate.bias.fill_(100.0)  # sigmoid = 1: the state is replaced every step
        cell.out_gate.weight[:, :d] = eye
    return eye


def _hand_set_predictor(model: DPCRNN) -> None:
    """The GRU of :func:`_hand_set_gru`; head -ReLU(-h), which keeps only the negative components."""
    eye = _hand_set_gru(model)
    with torch.no_grad():
        model.network_pred[0].weight.copy_(-eye)
        model.network_pred[2].weight.copy_(-eye)
        model.network_pred[0].bias.zero_()
        model.network_pred[2].bias.zero_()


@pytest.mark.parametrize("gru_relu", [False, True])
def test_predictor_reads_negative_map_components_unless_dpc_relu(gru_relu, monkeypatch):
    # One position (32 px), the last context block's map z = (0.6, -0.8, 0, ...).
    torch.manual_seed(0)
    model = DPCRNN("resnet10", img_dim=32, seq_len=SL, num_seq=N, pred_step=P, gru_relu=gru_relu).eval()
    _hand_set_predictor(model)
    z = torch.zeros(1, N, 256, 1, 1)
    z[0, N - P - 1, :2, 0, 0] = torch.tensor([0.6, -0.8])
    monkeypatch.setattr(model, "encode", lambda block: z)
    with torch.no_grad():
        pred, _ = model(torch.zeros(1, N, 3, SL, 32, 32))
    expected = torch.zeros(P, 256)
    if not gru_relu:
        # h = tanh(z) ∝ (0.537, -0.664) -> head -ReLU(-h) ∝ (0, -0.664) -> p = (0, -1); fed back, tanh(p) ∝ (0, -1)
        # gives p = (0, -1) again.
        expected[:, 1] = -1.0
    # With DPC's ReLU the GRU sees (0.6, 0): h = (1, 0) and the head gives 0 (0 / (0 + 1e-5)); fed back, 0 again.
    torch.testing.assert_close(pred[0, :, :, 0, 0], expected, atol=1e-4, rtol=0)


def test_prediction_does_not_see_target_blocks():
    # Running statistics in eval mode make each block's features independent of the others.
    model = _model(track_running_stats=True).eval()
    clip = _clip(3)
    changed = clip.clone()
    changed[:, -P:] = torch.randn_like(changed[:, -P:])
    with torch.no_grad():
        pred_a, z_a = model(clip)
        pred_b, z_b = model(changed)
    assert torch.allclose(pred_a, pred_b, atol=1e-6)
    assert torch.allclose(z_a[:, :-P], z_b[:, :-P], atol=1e-6)
    assert not torch.allclose(z_a[:, -P:], z_b[:, -P:])


def test_gradients_reach_backbone_and_agg():
    model = _model(2)
    pred, z = model(_clip(2))
    (pred * z[:, -P:]).sum().backward()
    for param in (model.backbone.conv1.weight, model.agg.cell_list[0].update_gate.weight,
                  model.network_pred[0].weight):
        assert param.grad is not None and param.grad.abs().sum() > 0


@pytest.mark.parametrize("img_dim", [0, 16, 100])
def test_invalid_img_dim_raises(img_dim):
    with pytest.raises(ValueError, match="--img_dim"):
        _model(img_dim=img_dim)


@pytest.mark.parametrize("pred_step", [0, N, N + 1])
def test_invalid_pred_step_raises(pred_step):
    with pytest.raises(ValueError, match="--pred_step"):
        DPCRNN("resnet10", num_seq=N, pred_step=pred_step)


def test_invalid_seq_len_and_input_raise():
    with pytest.raises(ValueError, match="--seq_len"):
        DPCRNN("resnet10", seq_len=0)
    model = _model()
    with pytest.raises(ValueError, match="17"):
        model(torch.randn(B, N, 17, SL, 64, 64))
    with pytest.raises(ValueError, match="SL, H, W"):
        model(torch.randn(N, 3, SL, 64, 64))
    with pytest.raises(ValueError, match="--num_seq"):
        model(torch.randn(B, P, 3, SL, 64, 64))


def test_state_dict_names_match_dpc():
    model = _model()
    keys = list(model.state_dict())
    assert all(k.startswith(("backbone.", "agg.", "network_pred.")) for k in keys)
    for key in ("backbone.conv1.weight", "backbone.layer4.0.downsample.0.weight",
                "agg.cell_list.0.reset_gate.weight", "network_pred.0.weight",
                "network_pred.2.bias"):
        assert key in keys
    # We keep BatchNorm running statistics (DPC did not); without them there are no buffers.
    assert "backbone.bn1.running_mean" in keys
    assert not any("running_mean" in k for k in _model(track_running_stats=False).state_dict())


def test_head_init_is_orthogonal_with_zero_bias():
    model = _model()
    w = model.network_pred[2].weight.flatten(1)
    assert torch.allclose(w @ w.T, torch.eye(256), atol=1e-4)
    assert torch.equal(model.network_pred[0].bias, torch.zeros(256))


def test_resnet50_feature_size():
    model = DPCRNN("resnet50", img_dim=128)
    assert model.feature_size == 1024 and model.spatial_size == 4
    assert model.agg.cell_list[0].out_gate.out_channels == 1024


@pytest.mark.parametrize("gru_input", ["maps", "relu_l2"])
def test_classifier_gru_reads_the_backbone_maps_as_the_original(gru_input, monkeypatch):
    """backbone -> time pool -> GRU -> last state, spatial mean -> BatchNorm1d -> dropout -> linear, with the
    GRU fed the maps as they are (the original's) or, in the variant, their ReLU after L2 normalisation."""
    classifier = load_script("action_classifier")
    torch.manual_seed(0)
    model = classifier.ActionClassifier("resnet10", 3, 32, seq_len=4, num_seq=N, num_classes=2, gru_input=gru_input)
    model.eval()
    _hand_set_gru(model)  # the GRU's state becomes tanh(last input)
    with torch.no_grad():
        model.final_fc[1].weight.zero_()
        model.final_fc[1].weight[0, 0] = 1.0  # logit k reads channel k
        model.final_fc[1].weight[1, 1] = 1.0
    feature = torch.zeros(N, 256, 1, 1, 1)  # backbone output of the N blocks of one clip: one step, one position
    feature[-1, :2] = torch.tensor([2.0, -3.0]).reshape(2, 1, 1, 1)
    monkeypatch.setattr(model.backbone, "forward", lambda x: feature)
    with torch.no_grad():
        logits = model(torch.zeros(1, N, 3, 4, 32, 32))
    if gru_input == "maps":
        expected = [math.tanh(2.0), math.tanh(-3.0)]
    else:  # (2, -3) / √13 -> ReLU -> (0.5547, 0) -> tanh
        expected = [math.tanh(2.0 / (math.sqrt(13.0) + 1e-5)), 0.0]
    bn = 1 / math.sqrt(1 + 1e-5)  # BatchNorm1d in eval: running mean 0, variance 1
    torch.testing.assert_close(logits[0], torch.tensor(expected) * bn, atol=1e-5, rtol=0)


def test_classifier_rejects_an_unknown_gru_input():
    with pytest.raises(ValueError, match="--gru_input"):
        load_script("action_classifier").ActionClassifier("resnet10", gru_input="relu")
