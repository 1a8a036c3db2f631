"""Diagnostics of cross-view learning (train/diagnostics.py): similarity agreement and per-term gradient norms."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from train.diagnostics import (
    block_similarities,
    cpc_parts,
    heldout_cpc_parts,
    similarity_agreement,
    term_gradient_norms,
)
from train.losses import CoConLossConfig, cocon_terms


def maps(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_block_similarities_are_cosines_of_pooled_blocks():
    feature = maps(2, 3, 4, 2, 2, seed=0)
    sim = block_similarities(feature, "avg")
    assert sim.shape == (6, 6)
    torch.testing.assert_close(sim.diagonal(), torch.ones(6), atol=2e-4, rtol=0)  # norms here are >= 0.1
    u = nn.functional.normalize(feature[1, 2].mean(dim=(1, 2)), dim=0)
    v = nn.functional.normalize(feature[0, 1].mean(dim=(1, 2)), dim=0)
    assert sim[5, 1].item() == pytest.approx(float(u @ v), abs=2e-4)


def test_agreement_is_one_for_the_same_geometry_and_low_for_unrelated_views():
    a = maps(4, 3, 16, 1, 1, seed=1)
    rotation, _ = torch.linalg.qr(maps(16, 16, seed=2))
    same = torch.einsum("bndxy,de->bnexy", a, rotation)  # same cosines, other coordinates
    unrelated = maps(4, 3, 16, 1, 1, seed=3)
    agree = similarity_agreement({"imgs": (None, a), "flow": (None, same), "seg": (None, unrelated)})
    assert agree["agree/imgs-flow"] == pytest.approx(1.0, abs=1e-6)
    assert abs(agree["agree/imgs-seg"]) < 0.5
    assert set(agree) == {"agree/imgs-flow", "agree/imgs-seg", "agree/flow-seg"}


def test_gradient_norms_split_by_kind_and_skip_other_views():
    torch.manual_seed(0)
    backbone = {view: nn.Linear(8, 8 * 4, bias=False) for view in ("imgs", "flow", "seg")}
    x = maps(2, 4, 8, seed=4)  # [B, N, in]

    def outputs():
        out = {}
        for view, layer in backbone.items():
            z = layer(x).reshape(2, 4, 8, 2, 2)  # [B, N, D, s, s]
            out[view] = (nn.functional.normalize(z[:, -1:], dim=2), nn.functional.normalize(z, dim=2))
        return out

    cfg = CoConLossConfig(temperature=0.1, msync_wt=10.0, dot_wt=10.0)
    terms, _ = cocon_terms(outputs(), cfg)
    norms = term_gradient_norms(terms, "imgs", backbone["imgs"])
    assert set(norms) == {"grad_norm/imgs/cpc", "grad_norm/imgs/sync", "grad_norm/imgs/coop"}
    # By hand: the coop kind is the sum of the two pairs with imgs; flow-seg sends nothing into imgs.
    expected = torch.autograd.grad(terms["coop/imgs-flow"] + terms["coop/imgs-seg"], backbone["imgs"].weight,
                                   retain_graph=True)[0].norm().item()
    assert norms["grad_norm/imgs/coop"] == pytest.approx(expected, rel=1e-5)
    assert all(value > 0 for value in norms.values())
    # The graph survives for the training step's own backward.
    torch.stack(list(terms.values())).sum().backward()
    assert backbone["imgs"].weight.grad is not None


def test_cpc_parts_tells_which_clip_from_which_moment():
    torch.manual_seed(0)
    b, n, p, d = 6, 5, 2, 16
    looks = F.normalize(torch.randn(b, 1, d, 1, 1), dim=2)
    moments = 0.05 * torch.randn(b, n, d, 1, 1)
    feature = F.normalize(looks + moments, dim=2)  # each clip: one look, slightly different moments
    exact = cpc_parts({"imgs": (feature[:, -p:].clone(), feature)}, 0.07)
    assert exact == {"cpc_clip_top1/imgs": 1.0, "cpc_moment_top1/imgs": 1.0}
    swapped = feature[:, -p:].flip(1).clone()  # the right clip, the other moment
    parts = cpc_parts({"imgs": (swapped, feature)}, 0.07)
    assert parts == {"cpc_clip_top1/imgs": 1.0, "cpc_moment_top1/imgs": 0.0}


def test_cpc_parts_on_a_map_tells_moment_from_place():
    torch.manual_seed(0)
    b, n, p, d, s = 4, 5, 2, 32, 2
    places = F.normalize(torch.randn(1, 1, d, s, s), dim=2)  # where in the frame: shared by every clip
    looks = F.normalize(torch.randn(b, 1, d, 1, 1), dim=2)
    moments = 0.05 * torch.randn(b, n, d, 1, 1)
    feature = F.normalize(places + looks + moments, dim=2)
    exact = cpc_parts({"imgs": (feature[:, -p:].clone(), feature)}, 0.07)
    assert exact == {"cpc_clip_top1/imgs": 1.0, "cpc_moment_top1/imgs": 1.0, "cpc_place_top1/imgs": 1.0}
    swapped = feature[:, -p:].flip(1).clone()  # right clip and place, the other moment
    assert cpc_parts({"imgs": (swapped, feature)}, 0.07) == {
        "cpc_clip_top1/imgs": 1.0, "cpc_moment_top1/imgs": 0.0, "cpc_place_top1/imgs": 1.0}
    shifted = feature[:, -p:].roll(1, dims=-1).clone()  # right clip and moment, the neighbouring place
    assert cpc_parts({"imgs": (shifted, feature)}, 0.07)["cpc_place_top1/imgs"] == 0.0


class _Echo(nn.Module):
    """A 'model' whose features are its input and whose predictions are the true future (or swapped)."""

    def __init__(self, swap: bool) -> None:
        super().__init__()
        self.swap = swap

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        future = x[:, -2:].clone()
        return (future.flip(1) if self.swap else future), x


def test_heldout_cpc_parts_weights_batches_by_their_predictions():
    torch.manual_seed(1)
    # each clip: one look, slightly different moments
    batches = [F.normalize(torch.randn(b, 1, 8, 1, 1) + 0.05 * torch.randn(b, 5, 8, 1, 1), dim=2) for b in (4, 2)]
    right = heldout_cpc_parts(_Echo(swap=False), "imgs", batches)
    assert right["cpc_clip_top1/imgs"] == 1.0 and right["cpc_moment_top1/imgs"] == 1.0
    assert right["cpc_clip_n/imgs"] == right["cpc_moment_n/imgs"] == 12  # (4 + 2) clips x 2 steps
    swapped = heldout_cpc_parts(_Echo(swap=True), "imgs", batches)
    assert swapped["cpc_moment_top1/imgs"] == 0.0 and swapped["cpc_clip_top1/imgs"] == 1.0
