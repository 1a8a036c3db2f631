"""The on-disk data layout, without torch: where each view's tree lives and how class lists are read.

Every view of a video is found from its RGB frame folder. The tree
``<root>/<dataset>/frame/<class>/<video>/image_00001.jpg`` has sibling trees ``flow/`` (``flow_x_00001.jpg``,
``flow_y_00001.jpg``), ``farne/`` (the same, Farneback), ``heatmaps/`` (``heatmap_00001.npz``) and
``segmasks/`` (``segmask_00001.npz``) under the same dataset root; Kinetics adds a subset level
(``…/kinetics400/frame/train/<class>/<video>`` beside ``…/kinetics400/flow/train/…``). Split lists are
``<csv_root>/train_split01.csv`` (rows ``<video frame dir>,<num frames>``) with ``classInd.txt``
(``<1-based id> <class name>`` lines).

The preprocessing scripts import this module, not :mod:`utils.views` (which needs the backbones and so
torch), so extracting frames or flow never loads torch.
"""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CSV_ROOT = REPO_ROOT / "process_data" / "data"
# Its classes are mirror pairs (wave_left vs wave_right, ...): a flip would swap labels.
MIRRORED_DATASETS = ("synthetic",)


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
        if parts[i] == "frame":
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
        ValueError: a malformed line, or ids that are not 1..K.
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
        names[int(parts[0])] = parts[1].strip()
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
