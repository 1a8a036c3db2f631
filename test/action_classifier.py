"""The action classifier fine-tuned on a pretrained CoCon/DPC encoder (DPC's ``LC``).

Blocks ``[B, N, C, SL, H, W]`` → :meth:`train.model_3d.ClipEncoder.encode` (the pretraining encoder's
own code: backbone, time pooling) → ConvGRU over the N blocks → last hidden state, spatial average →
BatchNorm1d → dropout → linear → logits ``[B, K]``. As in the original CoCon, the GRU reads the maps as
they are (``gru_input="maps"``); ``"relu_l2"`` is this repo's earlier variant (ReLU and L2 normalisation
before the GRU). The submodules ``backbone`` and ``agg`` are the encoder's, so
pretrained keys load; ``final_bn`` and ``final_fc`` are DPC's names for the head.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from train.model_3d import ClipEncoder

if str(Path(__file__).resolve().parent) not in sys.path:  # siblings import alike however this file is loaded
    sys.path.append(str(Path(__file__).resolve().parent))
from eval_flags import GRU_INPUTS, TRAIN_WHAT  # noqa: E402


class ActionClassifier(ClipEncoder):
    """Clip encoder + ConvGRU + BatchNorm/dropout/linear head.

    Args:
        backbone, in_channels, img_dim, seq_len, track_running_stats: see :class:`~train.model_3d.ClipEncoder`.
        num_seq: blocks per clip.
        num_classes: K.
        dropout: dropout before the linear layer.
        gru_input: what the GRU reads: ``maps``, the time-pooled backbone maps as they are (the original's),
            or ``relu_l2``, their ReLU, L2-normalised over D.
    """

    def __init__(self, backbone: str = "resnet18", in_channels: int = 3, img_dim: int = 128, seq_len: int = 5,
                 num_seq: int = 8, num_classes: int = 101, dropout: float = 0.5, gru_input: str = "maps",
                 track_running_stats: bool = True) -> None:
        if gru_input not in GRU_INPUTS:
            raise ValueError(f"--gru_input must be one of {GRU_INPUTS}, got {gru_input!r}")
        super().__init__(backbone, in_channels, img_dim, seq_len, gru_input == "relu_l2", track_running_stats)
        self.gru_input = gru_input
        self.num_seq = num_seq
        d = self.feature_size
        self.final_bn = nn.BatchNorm1d(d)
        self.final_fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(d, num_classes))
        nn.init.ones_(self.final_bn.weight)
        nn.init.zeros_(self.final_bn.bias)
        nn.init.orthogonal_(self.final_fc[1].weight)
        nn.init.zeros_(self.final_fc[1].bias)

    def forward(self, block: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, K]`` of blocks ``[B, N, C, SL, H, W]``."""
        maps = self.encode(block)  # [B, N, D, s, s], L2-normalised with relu_l2
        if self.gru_input == "relu_l2":
            maps = F.relu(maps)
        _, hidden = self.agg(maps)  # [B, layers, D, s, s]
        context = hidden[:, -1].mean(dim=(2, 3))  # [B, D]
        with torch.autocast(context.device.type, enabled=False):  # float32 logits under --amp
            return self.final_fc(self.final_bn(context.float()))


def parameter_groups(model: ActionClassifier, train_what: str, lr: float) -> list[dict]:
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


def set_trainable(model: ActionClassifier, train_what: str, epoch: int, frozen_epochs: int = 1) -> None:
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
