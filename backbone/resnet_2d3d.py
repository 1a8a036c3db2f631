"""ResNet "2d3d": 2-D residual blocks in layer1/layer2, 3-D blocks in layer3/layer4.

The layout and parameter names follow DPC's ``backbone/resnet_2d3d.py`` (itself after
3D-ResNets-PyTorch), so DPC and original-CoCon checkpoints load key for key:
``conv1, bn1, layerK.i.conv1/bn1/conv2/bn2(/conv3/bn3), layerK.0.downsample.{0,1}``.

Differences from a plain ResNet, all inherited from DPC:
- the stem convolves space only (1x7x7, stride (1, 2, 2)), so time is kept until layer3;
- layer3 and layer4 stride 2 in time as well, so T frames leave as ceil(T / 4);
- layer4 is 256 wide (not 512) and its last block has no final ReLU, so features are signed.

Usage::

    net = resnet18_2d3d_full(in_channels=3)
    y = net(torch.randn(2, 3, 5, 128, 128))  # [2, 256, 2, 4, 4]
"""

from collections.abc import Sequence

import torch
from torch import nn

from utils.precision import Conv3d

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNet2d3d",
    "resnet10_2d3d_full",
    "resnet18_2d3d_full",
    "resnet34_2d3d_full",
    "resnet50_2d3d_full",
    "resnet101_2d3d_full",
    "resnet152_2d3d_full",
]


def _kernel_stride_pad(kernel: int, stride: int, temporal: bool) -> tuple[tuple, tuple, tuple]:
    """Kernel, stride and padding of a ``kernel``-sized conv; 2-D blocks use 1 in time."""
    pad = kernel // 2
    if temporal:
        return (kernel,) * 3, (stride,) * 3, (pad,) * 3
    return (1, kernel, kernel), (1, stride, stride), (0, pad, pad)


def _conv(in_planes: int, out_planes: int, kernel: int, stride: int, temporal: bool) -> nn.Conv3d:
    k, s, p = _kernel_stride_pad(kernel, stride, temporal)
    return Conv3d(in_planes, out_planes, kernel_size=k, stride=s, padding=p, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual; 1x3x3 when ``temporal`` is False.

    Args:
        inplanes: input channels.
        planes: output channels.
        stride: spatial stride (also temporal when ``temporal``).
        downsample: projection of the residual, or None for identity.
        temporal: 3x3x3 convolutions (DPC's BasicBlock3d) instead of 1x3x3 (BasicBlock2d).
        track_running_stats: passed to the BatchNorm layers.
        use_final_relu: apply the ReLU after the residual sum.
    """

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        temporal: bool = False,
        track_running_stats: bool = True,
        use_final_relu: bool = True,
    ) -> None:
        super().__init__()
        self.use_final_relu = use_final_relu
        self.conv1 = _conv(inplanes, planes, 3, stride, temporal)
        self.bn1 = nn.BatchNorm3d(planes, track_running_stats=track_running_stats)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv(planes, planes, 3, 1, temporal)
        self.bn2 = nn.BatchNorm3d(planes, track_running_stats=track_running_stats)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + residual
        return self.relu(out) if self.use_final_relu else out


class Bottleneck(nn.Module):
    """1x1x1 -> 3x3 (strided) -> 1x1x1 x4 bottleneck; the 3x3 is 1x3x3 unless ``temporal``.

    Args:
        inplanes: input channels.
        planes: bottleneck width; the block outputs ``planes * 4`` channels.
        stride: spatial stride of the middle conv (also temporal when ``temporal``).
        downsample: projection of the residual, or None for identity.
        temporal: 3x3x3 middle conv (DPC's Bottleneck3d) instead of 1x3x3 (Bottleneck2d).
        track_running_stats: passed to the BatchNorm layers.
        use_final_relu: apply the ReLU after the residual sum.
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        temporal: bool = False,
        track_running_stats: bool = True,
        use_final_relu: bool = True,
    ) -> None:
        super().__init__()
        self.use_final_relu = use_final_relu
        self.conv1 = nn.Conv3d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes, track_running_stats=track_running_stats)
        self.conv2 = _conv(planes, planes, 3, stride, temporal)
        self.bn2 = nn.BatchNorm3d(planes, track_running_stats=track_running_stats)
        self.conv3 = nn.Conv3d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * self.expansion, track_running_stats=track_running_stats)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + residual
        return self.relu(out) if self.use_final_relu else out


Block = type[BasicBlock] | type[Bottleneck]


class ResNet2d3d(nn.Module):
    """DPC's ResNet2d3d_full for any number of input channels.

    Args:
        block: BasicBlock or Bottleneck.
        layers: number of blocks in layer1..layer4.
        in_channels: channels of the input clip (3 RGB, 2 flow, 17 heatmaps, 1 mask, ...).
        track_running_stats: passed to every BatchNorm; DPC pretraining used False.

    Input ``[B, C, T, H, W]``;
    output ``[B, 256 * block.expansion, ceil(T/4), ceil(H/32), ceil(W/32)]``.
    """

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        in_channels: int = 3,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"layers must be 4 positive block counts, got {list(layers)}")
        self.inplanes = 64
        self.track_running_stats = track_running_stats
        self.conv1 = nn.Conv3d(
            in_channels, 64, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False
        )
        self.bn1 = nn.BatchNorm3d(64, track_running_stats=track_running_stats)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.layer1 = self._make_layer(block, 64, layers[0], stride=1, temporal=False)
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2, temporal=False)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2, temporal=True)
        # DPC narrows layer4 to 256 (not 512) and drops the ReLU after its last block.
        self.layer4 = self._make_layer(
            block, 256, layers[3], stride=2, temporal=True, is_final=True
        )
        self.feature_size = 256 * block.expansion
        self._initialize_weights()

    def _make_layer(
        self,
        block: Block,
        planes: int,
        blocks: int,
        stride: int,
        temporal: bool,
        is_final: bool = False,
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            k, s, _ = _kernel_stride_pad(1, stride, temporal)
            out_planes = planes * block.expansion
            downsample = nn.Sequential(
                nn.Conv3d(self.inplanes, out_planes, kernel_size=k, stride=s, bias=False),
                nn.BatchNorm3d(out_planes, track_running_stats=self.track_running_stats),
            )
        layers = []
        for i in range(blocks):
            layers.append(
                block(
                    self.inplanes,
                    planes,
                    stride=stride if i == 0 else 1,
                    downsample=downsample if i == 0 else None,
                    temporal=temporal,
                    track_running_stats=self.track_running_stats,
                    use_final_relu=not (is_final and i == blocks - 1),
                )
            )
            self.inplanes = planes * block.expansion
        return nn.Sequential(*layers)

    def _initialize_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # [B, 64, T, H/4, W/4]
        x = self.layer2(self.layer1(x))  # [B, 128 * e, T, H/8, W/8]
        return self.layer4(self.layer3(x))  # [B, 256 * e, T/4, H/32, W/32]


def resnet10_2d3d_full(**kwargs) -> ResNet2d3d:
    """One basic block per stage; a light network for CPU runs and tests."""
    return ResNet2d3d(BasicBlock, [1, 1, 1, 1], **kwargs)


def resnet18_2d3d_full(**kwargs) -> ResNet2d3d:
    """ResNet-18 2d3d (basic blocks 2-2-2-2), D = 256."""
    return ResNet2d3d(BasicBlock, [2, 2, 2, 2], **kwargs)


def resnet34_2d3d_full(**kwargs) -> ResNet2d3d:
    """ResNet-34 2d3d (basic blocks 3-4-6-3), D = 256."""
    return ResNet2d3d(BasicBlock, [3, 4, 6, 3], **kwargs)


def resnet50_2d3d_full(**kwargs) -> ResNet2d3d:
    """ResNet-50 2d3d (bottlenecks 3-4-6-3), D = 1024."""
    return ResNet2d3d(Bottleneck, [3, 4, 6, 3], **kwargs)


def resnet101_2d3d_full(**kwargs) -> ResNet2d3d:
    """ResNet-101 2d3d (bottlenecks 3-4-23-3), D = 1024."""
    return ResNet2d3d(Bottleneck, [3, 4, 23, 3], **kwargs)


def resnet152_2d3d_full(**kwargs) -> ResNet2d3d:
    """ResNet-152 2d3d (bottlenecks 3-8-36-3), D = 1024."""
    return ResNet2d3d(Bottleneck, [3, 8, 36, 3], **kwargs)
