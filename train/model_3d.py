"""DPC-RNN: the per-view encoder of CoCon (dense predictive coding, Han et al. 2019).

A clip of N blocks is encoded block by block into feature maps z ``[B, N, D, s, s]``. A ConvGRU
reads the first N-P blocks and a small conv head predicts the maps of the last P blocks one at a
time, each prediction fed back into the GRU. The CPC loss scores predictions against z[:, -P:];
the cross-view losses pool z. As in CoCon (unlike DPC, which applied a ReLU there), the GRU reads z and
the fed-back predictions as they are. Submodule names (``backbone``, ``agg``, ``network_pred``) match DPC
and the original CoCon, so their checkpoints load. :class:`ClipEncoder` (backbone, GRU and
:meth:`ClipEncoder.encode`) is the part the fine-tuning classifier shares.

Usage::

    model = DPCRNN("resnet18", in_channels=3, img_dim=128)
    pred, z = model(torch.randn(4, 8, 3, 5, 128, 128))  # [4, 3, 256, 4, 4], [4, 8, 256, 4, 4]
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from backbone.convrnn import ConvGRU
from backbone.select_backbone import select_resnet
from utils.embedding import l2_normalize
from utils.precision import match_layout

__all__ = ["ClipEncoder", "DPCRNN"]


class ClipEncoder(nn.Module):
    """Backbone and ConvGRU of one view: encodes the blocks of a clip; subclasses read them with the GRU.

    Args:
        backbone: name in ``backbone.select_backbone.BACKBONES``.
        in_channels: channels of the view (3 imgs, 2 flow/farne, 17 kphm, 1 seg).
        img_dim: input height and width; a multiple of 32 (the backbone's spatial stride).
        seq_len: frames per block (SL).
        l2_norm: L2-normalise the block features over D.
        track_running_stats: BatchNorm running statistics in the backbone. DPC and CoCon
            pretrained with False (batch statistics even in eval mode); we keep them (True) so
            that eval-mode features — retrieval, probes, the DDP equivalence check — do not
            depend on what else is in the batch. Checkpoints of either kind load.
    """

    def __init__(self, backbone: str = "resnet18", in_channels: int = 3, img_dim: int = 128, seq_len: int = 5,
                 l2_norm: bool = True, track_running_stats: bool = True) -> None:
        super().__init__()
        _check_block_size(img_dim, seq_len)
        self.in_channels = in_channels
        self.img_dim = img_dim
        self.seq_len = seq_len
        self.l2_norm = l2_norm
        # The backbone halves time twice (layer3, layer4); pooling this many steps leaves one.
        self.last_duration = math.ceil(seq_len / 4)
        self.spatial_size = math.ceil(img_dim / 32)
        self.backbone, self.feature_size = select_resnet(
            backbone, in_channels=in_channels, track_running_stats=track_running_stats
        )
        d = self.feature_size
        self.agg = ConvGRU(input_size=d, hidden_size=d, kernel_size=1, num_layers=1)

    def _check_block(self, block: torch.Tensor) -> None:
        if block.dim() != 6 or block.shape[2] != self.in_channels:
            raise ValueError(
                f"expected a block [B, N, {self.in_channels}, SL, H, W], "
                f"got shape {tuple(block.shape)}"
            )

    def _normalize(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        return l2_normalize(x, dim=dim) if self.l2_norm else x

    def encode(self, block: torch.Tensor) -> torch.Tensor:
        """Encode every block of a clip, without prediction.

        Args:
            block: ``[B, N, C, SL, H, W]``; any N, and H, W need not equal ``img_dim``.

        Returns z ``[B, N, D, ceil(H/32), ceil(W/32)]`` (L2-normalised over D when ``l2_norm``).
        """
        self._check_block(block)
        b, n, c, sl, h, w = block.shape
        x = match_layout(block.reshape(b * n, c, sl, h, w), self.backbone.conv1)  # channels-last under --amp
        feature = self.backbone(x)  # [B*N, D, ceil(SL/4), h', w']
        feature = F.avg_pool3d(feature, (self.last_duration, 1, 1), stride=(1, 1, 1))
        if feature.shape[2] != 1:
            raise ValueError(
                f"--seq_len: blocks of {sl} frames do not pool to one time step "
                f"with a model built for seq_len={self.seq_len}"
            )
        feature = feature.reshape(b, n, self.feature_size, *feature.shape[-2:])
        return self._normalize(feature, dim=2)  # [B, N, D, s, s]


class DPCRNN(ClipEncoder):
    """DPC-RNN encoder for one view: :class:`ClipEncoder` plus the predictor of future blocks.

    Args:
        backbone, in_channels, img_dim, seq_len, l2_norm, track_running_stats: see :class:`ClipEncoder`
            (``l2_norm`` also normalises hidden states and predictions).
        num_seq: blocks per clip (N).
        pred_step: future blocks to predict (P), in [1, num_seq - 1].
        gru_relu: DPC's variant: a ReLU on the context maps and on each fed-back prediction before the GRU.
            CoCon removed it (False, the default), so the GRU sees both signs of the unit vectors.
    """

    def __init__(self, backbone: str = "resnet18", in_channels: int = 3, img_dim: int = 128, seq_len: int = 5,
                 num_seq: int = 8, pred_step: int = 3, l2_norm: bool = True, track_running_stats: bool = True,
                 gru_relu: bool = False) -> None:
        _check_pred_step(num_seq, pred_step)
        super().__init__(backbone, in_channels, img_dim, seq_len, l2_norm, track_running_stats)
        self.num_seq = num_seq
        self.pred_step = pred_step
        d = self.feature_size
        self.network_pred = nn.Sequential(
            nn.Conv2d(d, d, kernel_size=1, padding=0),
            nn.ReLU(inplace=True),
            nn.Conv2d(d, d, kernel_size=1, padding=0),
        )
        self.gru_input = nn.ReLU(inplace=False) if gru_relu else nn.Identity()
        _initialize_weights(self.network_pred)

    def forward(self, block: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a clip and predict its last ``pred_step`` blocks from the earlier ones.

        Args:
            block: ``[B, N, C, SL, H, W]`` with N > pred_step.

        Returns ``(pred [B, P, D, s, s], z [B, N, D, s, s])``; the CPC targets are z[:, -P:].
        """
        self._check_block(block)
        n = block.shape[1]
        if n <= self.pred_step:
            raise ValueError(
                f"--num_seq: forward needs more than pred_step={self.pred_step} blocks, "
                f"got block of shape {tuple(block.shape)}"
            )
        z = self.encode(block)  # [B, N, D, s, s], signed: the last backbone block has no ReLU
        context = self.gru_input(z[:, : n - self.pred_step])  # [B, N-P, D, s, s]

        _, hidden = self.agg(context)
        hidden = self._normalize(hidden[:, -1], dim=1)  # last layer: [B, D, s, s]
        pred = []
        for _ in range(self.pred_step):
            p = self._normalize(self.network_pred(hidden), dim=1)  # [B, D, s, s]
            pred.append(p)
            _, hidden = self.agg(self.gru_input(p).unsqueeze(1), hidden.unsqueeze(0))
            hidden = self._normalize(hidden[:, -1], dim=1)
        return torch.stack(pred, dim=1), z  # [B, P, D, s, s], [B, N, D, s, s]


def _check_block_size(img_dim: int, seq_len: int) -> None:
    if img_dim < 32 or img_dim % 32:
        raise ValueError(f"--img_dim must be a positive multiple of 32 (>= 32), got {img_dim}")
    if seq_len < 1:
        raise ValueError(f"--seq_len must be >= 1, got {seq_len}")


def _check_pred_step(num_seq: int, pred_step: int) -> None:
    if not 1 <= pred_step <= num_seq - 1:
        raise ValueError(
            f"--pred_step must be in [1, num_seq - 1] = [1, {num_seq - 1}], got {pred_step}"
        )


def _initialize_weights(module: nn.Module) -> None:
    """DPC's init of the predictor (the ConvGRU cells init themselves alike): orthogonal weights, zero biases."""
    for name, param in module.named_parameters():
        if "bias" in name:
            nn.init.zeros_(param)
        elif "weight" in name:
            nn.init.orthogonal_(param, gain=1)
