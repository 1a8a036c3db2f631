"""The on-disk data contract, without torch: each view's tree, file names and encoding, and the split lists.

Every view of a video is found from its RGB frame folder. The tree
``<root>/<dataset>/frame/<class>/<video>/image_00001.jpg`` has sibling trees ``flow/`` (``flow_x_00001.jpg``,
``flow_y_00001.jpg``), ``farne/`` (the same, Farneback), ``heatmaps/`` (``heatmap_00001.npz``) and
``segmasks/`` (``segmask_00001.npz``) under the same dataset root; Kinetics adds a subset level
(``…/kinetics400/frame/train/<class>/<video>`` beside ``…/kinetics400/flow/train/…``). Split lists are
``<csv_root>/train_split01.csv`` (rows ``<video frame dir>,<num frames>``) with ``classInd.txt``
(``<1-based id> <class name>`` lines).

Files are numbered from 1 with 5 digits. RGB frames are JPEGs; flow pair ``i`` (frame ``i`` to ``i + 1``) is
two 8-bit grayscale JPEGs coded by :func:`encode_flow`; heatmap files hold array ``hm``, uint8
``[17, h, w]`` (255 = 1.0, channels in :data:`utils.keypoints.COCO_KEYPOINTS` order), and mask files array
``seg``, uint8 ``[h, w]`` (255 = person). The preprocessing scripts write and the loader reads through
these definitions.

The preprocessing scripts import this module, not :mod:`utils.views` (which needs the backbones and so
torch), so extracting frames or flow never loads torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CSV_ROOT = REPO_ROOT / "process_data" / "data"
# Its classes are mirror pairs (wave_left vs wave_right, ...): a flip would swap labels.
MIRRORED_DATASETS = ("synthetic",)

# The trees of a dataset root: RGB frames, and the other views' trees beside it.
FRAME_TREE = "frame"
FLOW_TREE = "flow"  # TV-L1 (or DIS) flow
FARNE_TREE = "farne"  # Farneback flow
HEATMAP_TREE = "heatmaps"
SEGMASK_TREE = "segmasks"


@dataclass(frozen=True)
class FileSeries:
    """The numbered files of one kind in a video's folder: ``<prefix><5-digit 1-based index><suffix>``.

    Args:
        prefix: the name before the index (``image_``).
        suffix: the extension (``.jpg``).
        key: the array's name inside each ``.npz`` file (``None`` for images).
    """

    prefix: str
    suffix: str
    key: str | None = None

    def name(self, index: int) -> str:
        """File name of frame ``index`` (1-based): ``image_00001.jpg`` for 1."""
        return f"{self.prefix}{index:05d}{self.suffix}"

    @property
    def glob(self) -> str:
        """Glob pattern of every file of the series (``image_*.jpg``)."""
        return f"{self.prefix}*{self.suffix}"

    def index(self, name: str) -> int | None:
        """1-based index of the file ``name``; ``None`` when it is not a file of this series."""
        digits = name[len(self.prefix) : len(name) - len(self.suffix)]
        if name.startswith(self.prefix) and name.endswith(self.suffix) and digits.isdigit():
            return int(digits)
        return None

    def save_array(self, folder: Path, index: int, array: np.ndarray) -> Path:
        """Write frame ``index``'s array into ``folder`` as a compressed ``.npz`` under :attr:`key`; return its path."""
        path = Path(folder) / self.name(index)
        np.savez_compressed(path, **{self.key: array})
        return path


FRAMES = FileSeries("image_", ".jpg")
FLOW_X = FileSeries("flow_x_", ".jpg")
FLOW_Y = FileSeries("flow_y_", ".jpg")
HEATMAPS = FileSeries("heatmap_", ".npz", key="hm")
SEGMASKS = FileSeries("segmask_", ".npz", key="seg")

# Flow coding (dense_flow's): pixels clipped to [-bound, bound] map linearly onto 0..255, so no motion is
# 127.5 (stored as 128), the loader's ``u8 / 255 - FLOW_ZERO / 255`` lies in [-0.5, 0.5], and negating a
# displacement is ``255 - u8``.
FLOW_ZERO = 127.5


def encode_flow(flow: np.ndarray, bound: float) -> np.ndarray:
    """Map flow in pixels to uint8: clip to [-bound, bound], then linearly to 0..255 (dense_flow).

    0 -> 128 (127.5 rounded), +bound -> 255, -bound -> 0. The training loader reads it back as
    `u8 / 255 - 0.5`, i.e. about [-0.5, 0.5] (flow / (2 * bound)); `decode_flow` gives pixels.

    Args:
        flow: flow in pixels, any shape (e.g. `[H, W]` one component or `[H, W, 2]`).
        bound: clipping bound in pixels (> 0).
    """
    if bound <= 0:
        raise ValueError(f"flow bound must be > 0, got {bound}")
    scaled = (np.clip(flow, -bound, bound) + bound) * (255.0 / (2 * bound))
    return np.rint(scaled).astype(np.uint8)


def decode_flow(u8: np.ndarray, bound: float) -> np.ndarray:
    """Inverse of `encode_flow`: uint8 0..255 back to float32 pixels in [-bound, bound].

    Args:
        u8: encoded flow, any shape.
        bound: the bound it was encoded with.
    """
    if bound <= 0:
        raise ValueError(f"flow bound must be > 0, got {bound}")
    return u8.astype(np.float32) * np.float32(2 * bound / 255.0) - np.float32(bound)


def negate_encoded_flow(u8: np.ndarray) -> None:
    """Negate one encoded flow component in place (``255 - u8``, exact in uint8: the coding is symmetric)."""
    np.subtract(255, u8, out=u8)


def sibling_folder(path: str | Path, folder: str) -> Path:
    """``path`` with its last component named ``frame`` swapped for ``folder``.

    ``…/ucf101/frame/Run/v1`` → ``…/ucf101/flow/Run/v1``; ``…/kinetics400/frame/train`` →
    ``…/kinetics400/flow/train``. This is how every view is found from the RGB frames.

    Args:
        path: an RGB frame root or a video's frame folder.
        folder: the sibling tree's name (``flow``, ``farne``, ``heatmaps``, ``segmasks``).
    Raises:
        ValueError: ``path`` has no ``frame`` component (frames must sit in a ``…/frame/<class>/<video>`` tree).
    """
    parts = list(Path(path).parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == FRAME_TREE:
            parts[i] = folder
            return Path(*parts)
    raise ValueError(
        f"cannot locate the '{folder}' tree beside {path}: frames must sit under a "
        f"'.../frame/<class>/<video>' tree with a sibling '{folder}/' tree"
    )


def read_class_index(path: str | Path) -> list[str]:
    """Class names in label order from a ``classInd.txt`` (``<1-based id> <name>`` per line).

    Args:
        path: the ``classInd.txt`` file.
    Raises:
        FileNotFoundError: the file is missing.
        ValueError: a malformed line, an id or a name given twice, or ids that are not 1..K.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"class index {path} does not exist; write it with process_data/write_csv.py"
        )
    names: dict[int, str] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise ValueError(f"{path}:{lineno}: expected '<1-based id> <class name>', got {line!r}")
        class_id, name = int(parts[0]), parts[1].strip()
        if class_id in names:
            raise ValueError(f"{path}:{lineno}: class id {class_id} is given twice ({names[class_id]!r} and {name!r})")
        if name in names.values():
            raise ValueError(f"{path}:{lineno}: class {name!r} is listed twice; each class needs one line")
        names[class_id] = name
    if sorted(names) != list(range(1, len(names) + 1)):
        raise ValueError(f"{path}: class ids must be 1..{len(names)} without gaps")
    return [names[i] for i in range(1, len(names) + 1)]


def resolve_csv_root(csv_root: str | Path | None, dataset: str) -> Path:
    """``--csv_root``, or ``process_data/data/<dataset>`` relative to the repository (not the cwd).

    Raises:
        FileNotFoundError: the folder does not exist.
    """
    root = Path(csv_root) if csv_root is not None else DEFAULT_CSV_ROOT / dataset
    if not root.is_dir():
        raise FileNotFoundError(
            f"no split lists for --dataset {dataset}: {root} does not exist; write them with "
            "process_data/write_csv.py or point --csv_root at the folder holding train_split01.csv"
        )
    return root


def resolve_hflip(hflip: bool | None, dataset: str) -> bool:
    """``--hflip``; unset means on, except for datasets whose classes are mirror images."""
    if hflip is not None:
        return hflip
    return dataset not in MIRRORED_DATASETS
