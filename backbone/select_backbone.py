"""Backbone registry: a name -> (network, feature size D)."""

from collections.abc import Callable

from torch import nn

from backbone.resnet_2d3d import (
    ResNet2d3d,
    resnet10_2d3d_full,
    resnet18_2d3d_full,
    resnet34_2d3d_full,
    resnet50_2d3d_full,
    resnet101_2d3d_full,
    resnet152_2d3d_full,
)

__all__ = ["BACKBONES", "select_resnet"]

_REGISTRY: dict[str, Callable[..., ResNet2d3d]] = {
    "resnet10": resnet10_2d3d_full,
    "resnet18": resnet18_2d3d_full,
    "resnet34": resnet34_2d3d_full,
    "resnet50": resnet50_2d3d_full,
    "resnet101": resnet101_2d3d_full,
    "resnet152": resnet152_2d3d_full,
}

BACKBONES: tuple[str, ...] = tuple(_REGISTRY)


def select_resnet(
    name: str, in_channels: int = 3, track_running_stats: bool = True
) -> tuple[nn.Module, int]:
    """Build a ResNet-2d3d backbone.

    Args:
        name: one of ``BACKBONES`` (the value of ``--net``).
        in_channels: channels of the input view (3 RGB, 2 flow, 17 heatmaps, 1 mask).
        track_running_stats: keep BatchNorm running statistics; DPC pretraining used False
            (batch statistics in train and eval alike).

    Returns ``(network, D)`` with D = 256 for resnet10/18/34 and 1024 for resnet50/101/152.
    """
    if name not in _REGISTRY:
        raise ValueError(
            f"--net: unknown backbone {name!r}; expected one of {', '.join(BACKBONES)}"
        )
    net = _REGISTRY[name](in_channels=in_channels, track_running_stats=track_running_stats)
    return net, net.feature_size
