"""Tests of the DPC-RNN encoder on tiny CPU clips."""

import pytest
import torch
import torch.nn.functional as F

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


def test_matches_dpc_recurrence():
    """Prediction = GRU over ReLU(z[:N-P]), then P steps of head + feedback of ReLU(pred)."""
    model = _model().eval()
    clip = _clip(3)
    with torch.no_grad():
        pred, z = model(clip)
        assert torch.allclose(z, model.encode(clip))
        _, h = model.agg(F.relu(z[:, : N - P]))
        h = F.normalize(h[:, -1], dim=1)
        for step in range(P):
            p = F.normalize(model.network_pred(h), dim=1)
            assert torch.allclose(pred[:, step], p, atol=1e-5)
            _, h = model.agg(F.relu(p).unsqueeze(1), h.unsqueeze(0))
            h = F.normalize(h[:, -1], dim=1)


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
