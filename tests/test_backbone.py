"""Tests of the ResNet-2d3d backbones and the ConvGRU on tiny CPU tensors."""

import pytest
import torch
import torch.nn.functional as F

from backbone.convrnn import ConvGRU, ConvGRUCell
from backbone.select_backbone import BACKBONES, select_resnet

torch.set_num_threads(1)

HEAVY = ("resnet101", "resnet152")  # one forward each keeps the file fast
CHANNELS = (1, 2, 3, 17)
FEATURE_SIZE = {"resnet10": 256, "resnet18": 256, "resnet34": 256,
                "resnet50": 1024, "resnet101": 1024, "resnet152": 1024}
SHAPE_CASES = [(name, c) for name in BACKBONES for c in ((3,) if name in HEAVY else CHANNELS)]


def _num_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_registry_is_complete():
    assert set(BACKBONES) == set(FEATURE_SIZE)


@pytest.mark.parametrize(("name", "channels"), SHAPE_CASES)
def test_backbone_output_shape(name, channels):
    torch.manual_seed(0)
    net, d = select_resnet(name, in_channels=channels)
    assert d == FEATURE_SIZE[name]
    assert net.conv1.weight.shape == (64, channels, 1, 7, 7)
    net.eval()
    with torch.no_grad():
        y = net(torch.randn(1, channels, 4, 64, 64))
    assert y.shape == (1, d, 1, 2, 2)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize(("name", "expected"), [
    ("resnet18", 14_057_536), ("resnet34", 32_422_208), ("resnet50", 23_562_304),
])
def test_parameter_counts(name, expected):
    net, _ = select_resnet(name, in_channels=3)
    assert _num_params(net) == expected


@pytest.mark.parametrize(("img_dim", "seq_len", "out"), [
    (128, 5, (2, 4, 4)), (64, 5, (2, 2, 2)), (224, 5, (2, 7, 7)), (64, 8, (2, 2, 2)),
])
def test_resnet18_output_size(img_dim, seq_len, out):
    net, _ = select_resnet("resnet18")
    net.eval()
    with torch.no_grad():
        y = net(torch.randn(2, 3, seq_len, img_dim, img_dim))
    assert y.shape == (2, 256, *out)


def test_dpc_layout_and_names():
    net, _ = select_resnet("resnet18")
    keys = set(net.state_dict())
    for key in ("conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer4.1.bn2.bias",
                "layer2.0.downsample.0.weight", "layer4.0.downsample.1.weight"):
        assert key in keys
    assert "layer1.0.downsample.0.weight" not in keys
    assert net.conv1.stride == (1, 2, 2) and net.conv1.padding == (0, 3, 3)
    assert net.conv1.bias is None
    assert net.maxpool.kernel_size == (1, 3, 3) and net.maxpool.stride == (1, 2, 2)
    assert net.layer2[0].conv1.kernel_size == (1, 3, 3) and net.layer2[0].conv1.stride == (1, 2, 2)
    assert net.layer3[0].conv1.kernel_size == (3, 3, 3) and net.layer3[0].conv1.stride == (2, 2, 2)
    assert net.layer3[0].downsample[0].stride == (2, 2, 2)
    assert net.layer2[0].downsample[0].stride == (1, 2, 2)
    assert net.layer4[-1].conv2.out_channels == 256
    bottleneck, _ = select_resnet("resnet50")
    assert bottleneck.layer1[0].conv3.out_channels == 256
    assert bottleneck.layer4[0].conv2.kernel_size == (3, 3, 3)
    assert bottleneck.layer2[0].conv2.kernel_size == (1, 3, 3)


def test_last_block_has_no_final_relu():
    torch.manual_seed(0)
    net, _ = select_resnet("resnet18")
    flags = [blk.use_final_relu for layer in (net.layer1, net.layer2, net.layer3, net.layer4)
             for blk in layer]
    assert flags == [True] * 7 + [False]
    net.eval()
    with torch.no_grad():
        y = net(torch.randn(2, 3, 4, 64, 64))
    assert (y < 0).any() and (y > 0).any()
    single, _ = select_resnet("resnet10")
    assert len(single.layer4) == 1 and not single.layer4[0].use_final_relu


def test_init():
    torch.manual_seed(0)
    net, _ = select_resnet("resnet18")
    assert torch.equal(net.bn1.weight, torch.ones(64))
    assert torch.equal(net.bn1.bias, torch.zeros(64))
    w = net.layer3[0].conv2.weight  # Kaiming fan_out: std = sqrt(2 / (256 * 27))
    assert w.std().item() == pytest.approx((2 / (256 * 27)) ** 0.5, rel=0.02)


def test_gradients_reach_conv1():
    net, _ = select_resnet("resnet10", in_channels=2)
    net(torch.randn(2, 2, 4, 64, 64)).pow(2).mean().backward()
    assert net.conv1.weight.grad is not None and net.conv1.weight.grad.abs().sum() > 0


def test_track_running_stats_off_drops_buffers():
    net, _ = select_resnet("resnet10", track_running_stats=False)
    assert not any("running_mean" in k for k in net.state_dict())


def test_unknown_backbone_raises():
    with pytest.raises(ValueError, match="resnet18") as info:
        select_resnet("resnet19")
    assert "resnet19" in str(info.value) and "resnet152" in str(info.value)


def test_convgru_parameter_count_and_names():
    gru = ConvGRU(256, 256, kernel_size=1, num_layers=1)
    assert _num_params(gru) == 393_984
    gates = ("reset_gate", "update_gate", "out_gate")
    expected = {f"cell_list.0.{g}.{p}" for g in gates for p in ("weight", "bias")}
    assert set(gru.state_dict()) == expected


def test_convgru_shapes_and_hidden_state():
    torch.manual_seed(0)
    gru = ConvGRU(8, 16, kernel_size=3, num_layers=2).eval()
    x = torch.randn(2, 5, 8, 4, 4)
    out, last = gru(x)
    assert out.shape == (2, 5, 16, 4, 4)
    assert last.shape == (2, 2, 16, 4, 4)
    assert torch.allclose(last[:, -1], out[:, -1])
    # Running the sequence in two halves, passing the state (layer first, as DPC), is the same.
    _, mid = gru(x[:, :3])
    out2, last2 = gru(x[:, 3:], mid.transpose(0, 1))
    assert torch.allclose(out2, out[:, 3:], atol=1e-6) and torch.allclose(last2, last, atol=1e-6)


def test_convgru_cell_matches_gru_equations():
    torch.manual_seed(0)
    cell = ConvGRUCell(3, 4, kernel_size=3)
    x, h = torch.randn(2, 3, 5, 5), torch.randn(2, 4, 5, 5)
    for gate in (cell.reset_gate, cell.update_gate, cell.out_gate):
        torch.nn.init.normal_(gate.bias)

    def conv(gate, inp):
        return F.conv2d(inp, gate.weight, gate.bias, padding=1)

    xh = torch.cat([x, h], 1)
    r, u = torch.sigmoid(conv(cell.reset_gate, xh)), torch.sigmoid(conv(cell.update_gate, xh))
    o = torch.tanh(conv(cell.out_gate, torch.cat([x, r * h], 1)))
    assert torch.allclose(cell(x, h), (1 - u) * h + u * o, atol=1e-6)
    assert torch.allclose(cell(x, None), cell(x, torch.zeros(2, 4, 5, 5)))


def test_convgru_init_is_orthogonal_with_zero_bias():
    cell = ConvGRUCell(256, 256, kernel_size=1)
    for gate in (cell.reset_gate, cell.update_gate, cell.out_gate):
        w = gate.weight.flatten(1)  # [256, 512]: orthonormal rows
        assert torch.allclose(w @ w.T, torch.eye(256), atol=1e-4)
        assert torch.equal(gate.bias, torch.zeros(256))
