import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from train.losses import (
    CoConLossConfig,
    cocon_loss,
    cooperative_loss,
    cpc_accuracy,
    cpc_logits,
    cpc_loss,
    cpc_temperature,
    pool_blocks,
    sync_loss,
)


def unit_maps(*shape: int, seed: int = 0) -> torch.Tensor:
    """Random maps [B, N, D, s, s], unit vectors over D."""
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=gen), dim=2)


def test_cpc_uniform_scores_give_log_m():
    target = unit_maps(2, 3, 4, 2, 2)
    m = 2 * 3 * 2 * 2
    loss, logits = cpc_loss(torch.zeros_like(target), target, temperature=0.07)
    assert logits.shape == (m, m)
    assert loss.item() == pytest.approx(math.log(m), abs=1e-6)
    # Predictions orthogonal to every target: all targets live in dims 0-2, predictions in dim 3.
    target = F.normalize(torch.cat([torch.rand(2, 3, 3, 2, 2) + 0.1, torch.zeros(2, 3, 1, 2, 2)], dim=2), dim=2)
    pred = torch.zeros_like(target)
    pred[:, :, 3] = 1.0
    loss, _ = cpc_loss(pred, target, temperature=0.07)
    assert loss.item() == pytest.approx(math.log(m), abs=1e-6)


def test_cpc_perfect_predictor():
    b, p, s = 2, 2, 2
    m = b * p * s * s
    # Row i of the identity is the target of flattened position i = (b, p, y, x).
    target = torch.eye(m).reshape(b, p, s, s, m).permute(0, 1, 4, 2, 3)  # [B, P, D=M, s, s]
    loss, logits = cpc_loss(target.clone(), target, temperature=0.01)
    assert loss.item() < 1e-6
    assert torch.equal(logits.diagonal(), torch.full((m,), 100.0))
    assert cpc_accuracy(logits) == [1.0, 1.0]


def test_cpc_logits_match_loop_reference():
    b, p, d, s = 2, 2, 4, 2
    pred, target = unit_maps(b, p, d, s, s, seed=1), unit_maps(b, p, d, s, s, seed=2)
    temp = 0.5
    logits = cpc_logits(pred, target, temp)
    positions = list(itertools.product(range(b), range(p), range(s), range(s)))
    ref = torch.zeros(len(positions), len(positions))
    for i, (bi, pi, yi, xi) in enumerate(positions):
        for j, (bj, pj, yj, xj) in enumerate(positions):
            ref[i, j] = pred[bi, pi, :, yi, xi] @ target[bj, pj, :, yj, xj] / temp
    torch.testing.assert_close(logits, ref)
    # Row i's positive is the same (b, p, y, x): cross-entropy = mean of -log softmax on the diagonal.
    loss, _ = cpc_loss(pred, target, temp)
    torch.testing.assert_close(loss, -ref.log_softmax(dim=1).diagonal().mean())


def test_cpc_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        cpc_logits(unit_maps(2, 3, 4, 2, 2), unit_maps(2, 2, 4, 2, 2), 0.07)
    with pytest.raises(ValueError, match="temperature"):
        cpc_logits(unit_maps(2, 3, 4, 2, 2), unit_maps(2, 3, 4, 2, 2), 0.0)


def test_cpc_accuracy_hand_case():
    # Row 0: diagonal ranks 1st; row 1: 2nd; row 2: 3rd; row 3: 4th.
    logits = torch.tensor(
        [
            [9.0, 1.0, 2.0, 3.0],
            [5.0, 4.0, 1.0, 0.0],
            [7.0, 6.0, 5.0, 0.0],
            [9.0, 8.0, 7.0, 1.0],
        ]
    )
    assert cpc_accuracy(logits, (1, 2, 3)) == pytest.approx([0.25, 0.5, 0.75])
    # k above M counts every row.
    assert cpc_accuracy(logits[:2, :2], (1, 3)) == pytest.approx([0.5, 1.0])


def test_pool_blocks_hand_case():
    feature = torch.zeros(1, 1, 2, 2, 2)  # [B, N, D, s, s]
    feature[0, 0, 0] = torch.tensor([[1.0, 3.0], [0.0, 0.0]])  # avg 1, max 3
    feature[0, 0, 1] = torch.tensor([[0.0, 0.0], [4.0, 0.0]])  # avg 1, max 4
    avg = pool_blocks(feature, "avg")
    mx = pool_blocks(feature, "max")
    assert avg.shape == (1, 1, 2)
    torch.testing.assert_close(avg[0, 0], torch.tensor([1.0, 1.0]) / math.sqrt(2))
    torch.testing.assert_close(mx[0, 0], torch.tensor([0.6, 0.8]))  # [3, 4] / 5
    pooled = pool_blocks(torch.randn(3, 4, 8, 2, 2), "avg")
    torch.testing.assert_close(pooled.norm(dim=-1), torch.ones(3, 4))
    with pytest.raises(ValueError, match="'median'"):
        pool_blocks(feature, "median")


def _ramp_map(side: int) -> torch.Tensor:
    """[1, 1, 2, side, side]: channel 0 holds 0, 1, ... row by row, channel 1 its negative."""
    ramp = torch.arange(side * side, dtype=torch.float32).reshape(side, side)
    return torch.stack([ramp, -ramp]).reshape(1, 1, 2, side, side)


def _unit(*values: float) -> torch.Tensor:
    vector = torch.tensor(values)
    return vector / (vector.norm() + 1e-5)


def test_original_pooling_of_a_4x4_map():
    # 2x2 max-pool cells of 0..15: 5, 7, 13, 15 -> mean 10; of -(0..15): 0, -2, -8, -10 -> mean -5.
    feature = _ramp_map(4)
    torch.testing.assert_close(pool_blocks(feature, "original")[0, 0], _unit(10.0, -5.0))
    torch.testing.assert_close(pool_blocks(feature, "avg")[0, 0], _unit(7.5, -7.5))
    torch.testing.assert_close(pool_blocks(feature, "max")[0, 0], _unit(15.0, 0.0))


def test_original_pooling_of_a_7x7_map():
    # 0..48 = 7r + c. Max-pool 2, stride 2, padding 1 keeps rows/columns 0, 2, 4, 6; the next max-pool keeps
    # 2 and 6: 16, 20, 44, 48 -> mean 32. For -(7r + c) the windows' first rows/columns win: 0, 1, 3, 5, then
    # 0 and 3: 0, -3, -21, -24 -> mean -12.
    feature = _ramp_map(7)
    torch.testing.assert_close(pool_blocks(feature, "original")[0, 0], _unit(32.0, -12.0))
    torch.testing.assert_close(pool_blocks(feature, "avg")[0, 0], _unit(24.0, -24.0))


@pytest.mark.parametrize("side", [1, 2])
def test_original_pooling_is_the_average_up_to_2x2(side):
    feature = torch.randn(2, 3, 8, side, side, generator=torch.Generator().manual_seed(side))
    torch.testing.assert_close(pool_blocks(feature, "original"), pool_blocks(feature, "avg"))


@pytest.mark.parametrize("side, expected", [(3, (4.0, -2.0)), (5, (12.0, -3.0)), (6, (21.0, -7.0))])
def test_original_pooling_of_sides_the_original_does_not_define(side, expected):
    # The same rule: 2x2 max-pools, padded by 1 where the side is odd, down to 2x2, then the mean.
    # 3: rows/columns {0}, {1, 2} -> 0 and 2 win for the ramp (0, 2, 6, 8), 0 and 1 for its negative.
    # 5: -> 3x3 (0, 2, 4) -> 2x2 (0, 4): 0, 4, 20, 24; negative: (0, 1, 3) -> (0, 1): 0, -1, -5, -6.
    # 6: -> 3x3 (1, 3, 5) -> 2x2 (1, 5): 7, 11, 31, 35; negative: (0, 2, 4) -> (0, 2): 0, -2, -12, -14.
    torch.testing.assert_close(pool_blocks(_ramp_map(side), "original")[0, 0], _unit(*expected))


def test_sync_and_coop_hand_case():
    # B=1, N=2, D=2.
    u = torch.tensor([[[1.0, 0.0], [0.6, 0.8]]])
    v = torch.tensor([[[0.8, 0.6], [-0.6, 0.8]]])
    # S = u vᵀ = [[0.8, -0.6], [0.96, 0.28]]
    # positives (diagonal): mean(1 - 0.8, 1 - 0.28) = mean(0.2, 0.72) = 0.46
    # negatives: mean(max(0, -0.6), max(0, 0.96)) = mean(0, 0.96) = 0.48
    # sync = 0.5 * 0.46 + 0.5 * 0.48 = 0.47
    assert sync_loss(u, v).item() == pytest.approx(0.47, abs=1e-6)
    # C_u = [[1, 0.6], [0.6, 1]]; C_v = [[1, -0.48 + 0.48], [0, 1]] = I
    # |C_u - C_v| = [[0, 0.6], [0.6, 0]] -> mean 1.2 / 4 = 0.3
    assert cooperative_loss(u, v).item() == pytest.approx(0.3, abs=1e-6)


def test_sync_matches_masked_formula():
    u = F.normalize(torch.randn(3, 4, 8), dim=-1)
    v = F.normalize(torch.randn(3, 4, 8), dim=-1)
    s = u.reshape(12, 8) @ v.reshape(12, 8).T
    eye = torch.eye(12, dtype=torch.bool)
    ref = 0.5 * (1 - s[eye]).mean() + 0.5 * s[~eye].clamp(min=0).mean()
    torch.testing.assert_close(sync_loss(u, v), ref)


def test_identical_views_and_bad_input():
    u = F.normalize(torch.randn(2, 3, 8), dim=-1)
    assert cooperative_loss(u, u.clone()).item() == 0.0
    with pytest.raises(ValueError, match="negatives"):
        sync_loss(u[:1, :1], u[:1, :1])
    with pytest.raises(ValueError, match="same shape"):
        sync_loss(u, u[:, :2])
    with pytest.raises(ValueError, match="same shape"):
        cooperative_loss(u, u[:1])


def test_cocon_single_view_is_dpc():
    pred, feature = unit_maps(2, 3, 8, 2, 2, seed=1), unit_maps(2, 5, 8, 2, 2, seed=2)
    total, stats = cocon_loss({"imgs": (pred, feature)}, CoConLossConfig())
    assert set(stats) == {"cpc/imgs", "cpc_top1/imgs", "cpc_top3/imgs", "total"}
    torch.testing.assert_close(total, cpc_loss(pred, feature[:, -3:], 0.07**2)[0])
    assert 0.0 <= stats["cpc_top1/imgs"].item() <= stats["cpc_top3/imgs"].item() <= 1.0


def test_cocon_two_views_total_keys_and_grads():
    # Different s per view: imgs s=4, kphm s=2; shared B, N, D.
    views = {
        "imgs": (unit_maps(2, 3, 8, 4, 4, seed=1), unit_maps(2, 5, 8, 4, 4, seed=2)),
        "kphm": (unit_maps(2, 3, 8, 2, 2, seed=3), unit_maps(2, 5, 8, 2, 2, seed=4)),
    }
    views = {k: (p.requires_grad_(), f.requires_grad_()) for k, (p, f) in views.items()}
    cfg = CoConLossConfig(temperature=0.1, msync_wt=3.0, dot_wt=5.0, pool="max")
    total, stats = cocon_loss(views, cfg)
    assert set(stats) == {
        "cpc/imgs", "cpc_top1/imgs", "cpc_top3/imgs",
        "cpc/kphm", "cpc_top1/kphm", "cpc_top3/kphm",
        "sync/imgs-kphm", "coop/imgs-kphm", "total",
    }
    assert all(not t.requires_grad and t.dim() == 0 for t in stats.values())
    u = pool_blocks(views["imgs"][1], "max")
    v = pool_blocks(views["kphm"][1], "max")
    manual = (
        cpc_loss(views["imgs"][0], views["imgs"][1][:, -3:], 0.1)[0]
        + cpc_loss(views["kphm"][0], views["kphm"][1][:, -3:], 0.1)[0]
        + 3.0 * sync_loss(u, v)
        + 5.0 * cooperative_loss(u, v)
    )
    torch.testing.assert_close(total, manual)
    torch.testing.assert_close(stats["total"], manual.detach())
    torch.testing.assert_close(stats["sync/imgs-kphm"], sync_loss(u, v).detach())
    total.backward()
    for pred, feature in views.values():
        assert pred.grad is not None and pred.grad.abs().sum() > 0
        assert feature.grad is not None and feature.grad.abs().sum() > 0


def test_cocon_three_views_pairs_follow_dict_order():
    views = {name: (unit_maps(2, 2, 4, 1, 1, seed=i), unit_maps(2, 4, 4, 1, 1, seed=i + 10))
             for i, name in enumerate(["seg", "imgs", "flow"])}
    _, stats = cocon_loss(views, CoConLossConfig())
    assert {k for k in stats if k.startswith("sync/")} == {"sync/seg-imgs", "sync/seg-flow", "sync/imgs-flow"}


def test_cocon_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one view"):
        cocon_loss({}, CoConLossConfig())
    with pytest.raises(ValueError, match="'imgs'"):
        cocon_loss({"imgs": (unit_maps(2, 3, 4, 2, 2), unit_maps(2, 2, 4, 2, 2))}, CoConLossConfig())


def test_adam_lowers_total_loss():
    torch.manual_seed(0)
    params = {
        "imgs": (torch.randn(2, 3, 8, 2, 2, requires_grad=True), torch.randn(2, 5, 8, 2, 2, requires_grad=True)),
        "flow": (torch.randn(2, 3, 8, 2, 2, requires_grad=True), torch.randn(2, 5, 8, 2, 2, requires_grad=True)),
    }
    opt = torch.optim.Adam([t for pair in params.values() for t in pair], lr=0.05)
    cfg = CoConLossConfig()

    def step() -> float:
        outputs = {k: (F.normalize(p, dim=2), F.normalize(f, dim=2)) for k, (p, f) in params.items()}
        total, _ = cocon_loss(outputs, cfg)
        opt.zero_grad()
        total.backward()
        opt.step()
        return total.item()

    losses = [step() for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]


def test_cpc_temperature_is_the_originals_square_by_default():
    assert cpc_temperature(0.07, l2_norm=True) == pytest.approx(0.0049)
    assert cpc_temperature(0.07, l2_norm=True, division="once") == pytest.approx(0.07)
    assert cpc_temperature(0.07, l2_norm=False) == 1.0  # raw dot products without --l2_norm
    with pytest.raises(ValueError, match="--temp_division"):
        cpc_temperature(0.07, True, "thrice")


def test_default_cpc_loss_against_hand_computed_case():
    # B=2 clips, P=1, s=1, D=2, so M=2 rows:
    # p0 = z0 = e0, p1 = e1, z1 = (e0 + e1)/sqrt(2). Scores <p, z> / T^2 with T = 0.5 -> divisor 0.25.
    r = 2**-0.5
    pred = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(2, 1, 2, 1, 1)
    target = torch.tensor([[1.0, 0.0], [r, r]]).reshape(2, 1, 2, 1, 1)
    loss, _ = cocon_loss({"imgs": (pred, target)}, CoConLossConfig(temperature=cpc_temperature(0.5, True)))
    row0 = -math.log(math.exp(1 / 0.25) / (math.exp(1 / 0.25) + math.exp(r / 0.25)))
    row1 = -math.log(math.exp(r / 0.25) / (math.exp(0.0) + math.exp(r / 0.25)))
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-5)
