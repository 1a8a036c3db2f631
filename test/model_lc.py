"""The action classifier fine-tuned on a pretrained CoCon/DPC encoder (DPC's ``LC``).

Blocks ``[B, N, C, SL, H, W]`` → backbone per block → time pooled → ConvGRU over the N blocks →
last hidden state, spatial average → BatchNorm1d → dropout → linear → logits ``[B, K]``.
The submodules ``backbone`` and ``agg`` are named as in ``train.model_3d.DPCRNN`` so pretrained
keys load; ``final_bn`` and ``final_fc`` are DPC's names for the head.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from backbone.convrnn import ConvGRU
from backbone.select_backbone import select_resnet
from utils.precision import match_layout

TRAIN_WHAT = ("all", "ft", "last")


class LinearClassifier(nn.Module):
    """Backbone + ConvGRU + BatchNorm/dropout/linear head.

    Args:
        backbone: name in ``backbone.select_backbone.BACKBONES``.
        in_channels: channels of the view.
        img_dim: input side (a multiple of 32).
        seq_len: frames per block.
        num_seq: blocks per clip.
        num_classes: K.
        dropout: dropout before the linear layer.
        l2_norm: L2-normalise the block features over D before the GRU, as pretraining did, so a
            pretrained GRU sees inputs of the scale it was trained on.
        track_running_stats: BatchNorm running statistics in the backbone.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        in_channels: int = 3,
        img_dim: int = 128,
        seq_len: int = 5,
        num_seq: int = 8,
        num_classes: int = 101,
        dropout: float = 0.5,
        l2_norm: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        if img_dim < 32 or img_dim % 32:
            raise ValueError(f"--img_dim must be a positive multiple of 32, got {img_dim}")
        self.in_channels = in_channels
        self.num_seq = num_seq
        self.l2_norm = l2_norm
        self.last_duration = math.ceil(seq_len / 4)
        self.backbone, self.feature_size = select_resnet(
            backbone, in_channels=in_channels, track_running_stats=track_running_stats
        )
        d = self.feature_size
        self.agg = ConvGRU(input_size=d, hidden_size=d, kernel_size=1, num_layers=1)  # initialises itself orthogonally
        self.final_bn = nn.BatchNorm1d(d)
        self.final_fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(d, num_classes))
        nn.init.ones_(self.final_bn.weight)
        nn.init.zeros_(self.final_bn.bias)
        nn.init.orthogonal_(self.final_fc[1].weight)
        nn.init.zeros_(self.final_fc[1].bias)

    def forward(self, block: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, K]`` of blocks ``[B, N, C, SL, H, W]``."""
        if block.dim() != 6 or block.shape[2] != self.in_channels:
            raise ValueError(f"expected blocks [B, N, {self.in_channels}, SL, H, W], got {tuple(block.shape)}")
        b, n, c, sl, h, w = block.shape
        feature = self.backbone(match_layout(block.reshape(b * n, c, sl, h, w), self.backbone.conv1))  # [B·N, D, t, s, s]
        feature = F.avg_pool3d(feature, (self.last_duration, 1, 1), stride=1)
        feature = feature.reshape(b, n, self.feature_size, *feature.shape[-2:])  # [B, N, D, s, s]
        if self.l2_norm:
            feature = F.normalize(feature, dim=2)
        _, hidden = self.agg(F.relu(feature))  # [B, layers, D, s, s]
        context = hidden[:, -1].mean(dim=(2, 3))  # [B, D]
        return self.final_fc(self.final_bn(context))


def parameter_groups(model: LinearClassifier, train_what: str, lr: float) -> list[dict]:
    """Optimiser groups for ``--train_what``.

    - ``all``: every parameter at ``lr``;
    - ``ft``: the backbone (parameters named ``backbone.*``) at ``lr / 10``, the rest at ``lr``;
    - ``last``: only the head (``final_bn``, ``final_fc``); see :func:`set_trainable`.
    """
    if train_what not in TRAIN_WHAT:
        raise ValueError(f"--train_what must be one of {TRAIN_WHAT}, got {train_what!r}")
    backbone = [p for name, p in model.named_parameters() if name.startswith("backbone.")]
    head = [p for name, p in model.named_parameters() if name.startswith(("final_bn.", "final_fc."))]
    rest = [p for name, p in model.named_parameters() if not name.startswith("backbone.")]
    if train_what == "last":
        return [{"params": head, "lr": lr, "name": "head"}]
    if train_what == "ft":
        return [{"params": backbone, "lr": lr / 10, "name": "backbone"}, {"params": rest, "lr": lr, "name": "gru+head"}]
    return [{"params": backbone + rest, "lr": lr, "name": "all"}]


def set_trainable(model: LinearClassifier, train_what: str, epoch: int, frozen_epochs: int = 1) -> None:
    """Freeze what should not learn in ``epoch``.

    The backbone is frozen during the first ``frozen_epochs`` epochs (the new head settles before
    it is disturbed) and learns afterwards; the GRU always learns. A frozen backbone is also in
    eval mode, so its BatchNorm statistics stay as pretrained. With ``last`` the backbone and GRU
    stay frozen for good, in eval mode (no GRU dropout either): a linear probe. Call after
    ``model.train()``.
    """
    backbone_on = train_what != "last" and epoch >= frozen_epochs
    for p in model.backbone.parameters():
        p.requires_grad_(backbone_on)
    for p in model.agg.parameters():
        p.requires_grad_(train_what != "last")
    if not backbone_on:
        model.backbone.eval()
    if train_what == "last":
        model.agg.eval()
