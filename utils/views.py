"""The views CoCon learns from: their channels, where they live on disk and how big they are fed.

A view of a video is found from its RGB frame folder: the tree ``<root>/<dataset>/frame/<class>/<video>``
has siblings ``flow/``, ``farne/``, ``heatmaps/`` and ``segmasks/`` under the same dataset root. The tree
names, file names and encodings are defined once in :mod:`utils.layout` (torch-free, for the
preprocessing scripts that write them).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from utils.keypoints import FLIP_PERMUTATION
from utils.layout import (
    FARNE_TREE,
    FLOW_TREE,
    FLOW_X,
    FRAME_TREE,
    FRAMES,
    HEATMAP_TREE,
    HEATMAPS,
    SEGMASK_TREE,
    SEGMASKS,
    FileSeries,
    sibling_folder,
)


@dataclass(frozen=True)
class View:
    """One input view.

    Args:
        name: the name used on the command line (``--modalities imgs_flow``).
        channels: channels of the tensor fed to the encoder.
        folder: the tree that holds this view (``frame`` or a sibling of it).
        files: the view's numbered files (for flow, its x component; :data:`utils.layout.FLOW_Y` pairs it).
        max_size: largest spatial size the view is fed at (``None``: the full ``--img_dim``); the
            paper fed flow at 128 and heatmaps and masks at 64 whatever the RGB size.
        is_flow: the first channel is a horizontal displacement, negated by a horizontal flip.
        flip_channels: channel order after a horizontal flip (left and right joints swap places).
    """

    name: str
    channels: int
    folder: str
    files: FileSeries
    max_size: int | None = None
    is_flow: bool = False
    flip_channels: tuple[int, ...] | None = None

    @property
    def is_rgb(self) -> bool:
        """RGB gets colour augmentation and ImageNet normalisation."""
        return self.name == "imgs"

    def size(self, img_dim: int) -> int:
        """Spatial size of this view's input when RGB is fed at ``img_dim``."""
        if self.max_size is not None:
            return min(img_dim, self.max_size)
        return img_dim


VIEWS: dict[str, View] = {
    "imgs": View("imgs", 3, FRAME_TREE, FRAMES),
    "flow": View("flow", 2, FLOW_TREE, FLOW_X, max_size=128, is_flow=True),
    "farne": View("farne", 2, FARNE_TREE, FLOW_X, max_size=128, is_flow=True),
    "kphm": View("kphm", 17, HEATMAP_TREE, HEATMAPS, max_size=64, flip_channels=FLIP_PERMUTATION),
    "seg": View("seg", 1, SEGMASK_TREE, SEGMASKS, max_size=64),
}


def parse_views(spec: str, flag: str = "--modalities") -> list[str]:
    """Split an underscore-joined view list (``imgs_flow_seg_kphm``) and check every name.

    Raises:
        ValueError: naming ``flag`` for an empty list, an unknown or a repeated view.
    """
    names = [n for n in spec.split("_") if n]
    if not names:
        raise ValueError(f"{flag} is empty; expected views joined by '_' from {sorted(VIEWS)}")
    unknown = [n for n in names if n not in VIEWS]
    if unknown:
        raise ValueError(f"{flag} {spec!r}: unknown view(s) {unknown}; known views are {sorted(VIEWS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"{flag} {spec!r} names a view twice")
    return names


def view_backbone(view: str, net: str) -> str:
    """Backbone of ``view`` when RGB uses ``net``: only RGB may be deeper than resnet18."""
    from backbone.select_backbone import BACKBONES  # here, not above: parsers import this module before torch
    if view == "imgs" or net not in BACKBONES:
        return net
    return min(net, "resnet18", key=BACKBONES.index)  # BACKBONES is in depth order


def view_dir(frame_dir: str | Path, view: str) -> Path:
    """Folder of ``view`` for the video whose RGB frames are in ``frame_dir``."""
    folder = VIEWS[view].folder
    return Path(frame_dir) if folder == FRAME_TREE else sibling_folder(frame_dir, folder)
