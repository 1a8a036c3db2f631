"""Write the split lists the datasets read: `<out>/train_split01.csv`, `test_split01.csv`, `classInd.txt`.

    python process_data/write_csv.py --dataset ucf101 --frame_root data/ucf101/frame --split_root data/ucf101/splits_classification
    python process_data/write_csv.py --dataset hmdb51 --frame_root data/hmdb51/frame --split_root data/hmdb51/testTrainMulti_7030_splits
    python process_data/write_csv.py --dataset kinetics400 --frame_root data/kinetics400/frame
    python process_data/write_csv.py --dataset folder --frame_root data/mine/frame --test_fraction 0.3

Each csv row is `<absolute video frame dir>,<num frames>` with no header and no quoting (readers
split on the last comma, so a comma inside a path is harmless); `classInd.txt` has `<1-based id> <class name>` lines
(a Kinetics class name may contain spaces: split on the first space only). Videos a split names
that are missing or empty on disk are reported and left out; short videos are reported and kept; a video
listed twice in one list is kept once, with a warning; a video in both lists of a split (a test or
validation video that is also a training video) is warned about on stderr.

`--dataset folder` splits by source, not by clip: clips cut from one recording, and mirrored copies of it,
all go to train or all to test, or evaluation would measure recall of seen footage. A video's source is
its folder name with the trailing clip and mirror suffixes removed (`source_key`): `_c01`, `_clip2`, `-3`,
`_part4`, `_flip`, `_mirror`, ... (`v_Archery_g03_c02` -> `v_Archery_g03`, UCF101's groups;
`walk-3_flip` -> `walk`); `--group REGEX` replaces that rule (its first group, or whole match, is the source).

All lists are written to temporary files first, then renamed into place one after the other, so a run
killed while writing leaves the earlier lists as they were, never a new train list beside an old test list.
"""
import argparse
import os
import random
import re
import sys
from pathlib import Path

from process_data.common import count_frames, list_video_dirs
from utils import layout
from utils.cli import run_cli
from utils.cli_options import HelpFormatter, canonical_dataset
from utils.files import atomic_write, clean_stale_tmp, temp_sibling
from utils.layout import FRAMES, read_class_index

DATASETS = ("ucf101", "hmdb51", "kinetics400", "jhmdb", "synthetic", "folder")
SPLIT_IDS = (1, 2, 3)
_HMDB_SPLIT_RE = re.compile(r"^(?P<cls>.+)_test_split(?P<k>[123])\.txt$")
_SHOW = 5
# Trailing parts of a video name that mark a clip or a mirrored copy of one source (stripped repeatedly).
_CLIP_SUFFIX = re.compile(r"[_-](?:(?:c|clip|part|seg|cut|shot)?\d+|h?flip(?:ped)?|mirror(?:ed)?)$", re.IGNORECASE)

# name of an output csv -> the video frame folders it lists, in order
Splits = dict[str, list[Path]]


def _read_ucf_list(path: Path, frame_root: Path, classes: list[str]) -> list[Path]:
    index = {name: i + 1 for i, name in enumerate(classes)}
    dirs = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        rel = Path(parts[0].replace("\\", "/"))
        if len(rel.parts) != 2:
            raise ValueError(f"{path}:{lineno}: expected '<class>/<video file> [label]', got {line!r}")
        cls = rel.parts[0]
        if cls not in index:
            raise ValueError(f"{path}:{lineno}: class {cls!r} is not in classInd.txt")
        if len(parts) > 1 and parts[1] != str(index[cls]):
            raise ValueError(f"{path}:{lineno}: label {parts[1]} disagrees with classInd id {index[cls]} of {cls!r}")
        dirs.append(frame_root / cls / Path(rel.parts[1]).stem)
    return dirs


def ucf_splits(frame_root: Path, split_root: Path) -> tuple[list[str], Splits]:
    """Read UCF-style `classInd.txt`, `trainlist0K.txt`, `testlist0K.txt` (every K present).

    Args:
        frame_root: frame root holding `<class>/<video>/` folders.
        split_root: folder of the split files.
    Raises:
        FileNotFoundError: no complete train/test pair or no classInd.txt in `split_root`.
        ValueError: a malformed line in classInd.txt or a list, or a class that classInd.txt lacks.
    """
    class_ind = split_root / "classInd.txt"
    if not class_ind.is_file():  # read_class_index's own message points at this script, which reads it here
        raise FileNotFoundError(f"--split_root {split_root} has no classInd.txt (the official '<id> <class>' list)")
    classes = read_class_index(class_ind)
    splits: Splits = {}
    for k in SPLIT_IDS:
        train, test = split_root / f"trainlist0{k}.txt", split_root / f"testlist0{k}.txt"
        if not train.exists() and not test.exists():
            continue
        if not (train.is_file() and test.is_file()):
            raise FileNotFoundError(f"split {k}: need both {train.name} and {test.name} in {split_root}")
        splits[f"train_split0{k}.csv"] = _read_ucf_list(train, frame_root, classes)
        splits[f"test_split0{k}.csv"] = _read_ucf_list(test, frame_root, classes)
    if not splits:
        raise FileNotFoundError(f"--split_root {split_root} has no trainlist0K.txt/testlist0K.txt pair")
    return classes, splits


def hmdb_splits(frame_root: Path, split_root: Path) -> tuple[list[str], Splits]:
    """Read HMDB51/JHMDB `<class>_test_split{1,2,3}.txt` files (1 = train, 2 = test, 0 = unused).

    Args:
        frame_root: frame root holding `<class>/<video>/` folders.
        split_root: folder of the split files (`testTrainMulti_7030_splits`, or JHMDB's `splits`).
    Returns:
        sorted class names, and the splits.
    Raises:
        FileNotFoundError: no split file in `split_root`.
        ValueError: a line is not `<video file> {0,1,2}`.
    """
    files = sorted(p for p in Path(split_root).glob("*_test_split*.txt") if _HMDB_SPLIT_RE.match(p.name))
    if not files:
        raise FileNotFoundError(f"--split_root {split_root} has no <class>_test_split{{1,2,3}}.txt files")
    classes = sorted({_HMDB_SPLIT_RE.match(p.name)["cls"] for p in files})
    per_split: dict[int, dict[str, list[Path]]] = {}
    for path in files:
        m = _HMDB_SPLIT_RE.match(path.name)
        sets = per_split.setdefault(int(m["k"]), {"train": [], "test": []})
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise ValueError(f"{path}:{lineno}: expected '<video file> <0|1|2>', got {line!r}")
            if parts[1] != "0":
                sets["train" if parts[1] == "1" else "test"].append(frame_root / m["cls"] / Path(parts[0]).stem)
    splits: Splits = {}
    for k in sorted(per_split):
        splits[f"train_split0{k}.csv"] = per_split[k]["train"]
        splits[f"test_split0{k}.csv"] = per_split[k]["test"]
    return classes, splits


def kinetics_splits(frame_root: Path) -> tuple[list[str], Splits]:
    """List `frame_root/{train,val}/<class>/<video>/` into `train_split.csv` and `val_split.csv`.

    Args:
        frame_root: Kinetics frame root with `train/` and `val/` folders.
    """
    train, val = list_video_dirs(frame_root / "train"), list_video_dirs(frame_root / "val")
    classes = sorted({d.parent.name for d in train + val})
    return classes, {"train_split.csv": train, "val_split.csv": val}


def source_key(name: str, group: re.Pattern | None = None) -> str:
    """The source recording a video folder name comes from: clips and mirrored copies of it share the key.

    Args:
        name: the video folder name (``v_Archery_g03_c02``, ``walk-3_flip``).
        group: ``--group``: its first group (or whole match) is the key; a name it does not match is its own source.
    """
    if group is not None:
        match = group.search(name)
        if match is None:
            return name
        return match.group(1) if group.groups else match.group(0)
    key = name
    while (stripped := _CLIP_SUFFIX.sub("", key)) != key and stripped:
        key = stripped
    return key


def folder_splits(frame_root: Path, counts: dict[Path, int], test_fraction: float, seed: int,
                  group: re.Pattern | None = None) -> tuple[list[str], Splits]:
    """Split `frame_root/<class>/<video>/` into seeded, class-stratified train/test sets of whole sources.

    The non-empty videos of a class are grouped by :func:`source_key`; whole groups, in a seeded order, go
    to test until it holds round(n * test_fraction) videos (at least one group, never all of them). A class
    whose videos come from one source keeps them in train, with a warning. Empty folders are left to the
    caller's report.

    Args:
        frame_root: frame root holding `<class>/<video>/` folders.
        counts: frame count of every video folder (filled in here).
        test_fraction: share of each class that goes to test, in (0, 1).
        seed: shuffle seed; the same seed gives the same split.
        group: ``--group`` (see :func:`source_key`), or ``None`` for the default rule.
    """
    by_class: dict[str, list[Path]] = {}
    for d in list_video_dirs(frame_root):
        by_class.setdefault(d.parent.name, []).append(d)
    rng = random.Random(seed)
    train, test = [], []
    for cls in sorted(by_class):
        dirs = by_class[cls]
        sources: dict[str, list[Path]] = {}
        for d in dirs:
            if _count(d, counts) > 0:
                sources.setdefault(source_key(d.name, group), []).append(d)
        order = sorted(sources)
        rng.shuffle(order)
        n_videos = sum(len(v) for v in sources.values())
        wanted, taken = round(n_videos * test_fraction), []
        for key in order[:-1]:  # the last source always stays in train
            if taken and sum(len(sources[k]) for k in taken) >= wanted:
                break
            taken.append(key)
        test += [d for key in taken for d in sources[key]]
        train += [d for key in order if key not in taken for d in sources[key]]
        train += [d for d in dirs if _count(d, counts) <= 0]  # empties: reported later
        if len(sources) < 2:
            what = f"{n_videos} non-empty video(s)" + (f" from one source ({order[0]!r})" if n_videos > 1 else "")
            print(f"warning: class {cls!r} has {what}; it cannot appear in both sets"
                  + (" (pass --group if they are separate recordings)" if n_videos > 1 else ""))
    n_sources = len({(d.parent.name, source_key(d.name, group)) for d in train + test if _count(d, counts) > 0})
    print(f"folder split: {len(train) + len(test)} videos from {n_sources} sources; a source's clips share one set")
    return sorted(by_class), {"train_split01.csv": sorted(train), "test_split01.csv": sorted(test)}


def _count(video_dir: Path, counts: dict[Path, int]) -> int:
    """Frames in `video_dir`, -1 when the folder is missing; cached in `counts`."""
    if video_dir not in counts:
        counts[video_dir] = count_frames(video_dir) if video_dir.is_dir() else -1
    return counts[video_dir]


def build_rows(
    dirs: list[Path], counts: dict[Path, int], short_frames: int,
) -> tuple[list[tuple[str, int]], dict[str, list[Path]]]:
    """Turn video folders into csv rows, leaving out the missing, the empty and the repeated ones.

    Args:
        dirs: video frame folders.
        counts: frame count cache shared across splits.
        short_frames: videos with fewer frames than this are reported (and kept).
    Returns:
        rows `(absolute dir, num frames)`, and the `missing`, `empty`, `short` and `duplicate` folders.
    """
    rows, issues, seen = [], {"missing": [], "empty": [], "short": [], "duplicate": []}, set()
    for d in dirs:
        n = _count(d, counts)
        if n < 0:
            issues["missing"].append(d)
        elif n == 0:
            issues["empty"].append(d)
        elif d.resolve() in seen:
            issues["duplicate"].append(d)
        else:
            seen.add(d.resolve())
            if n < short_frames:
                issues["short"].append(d)
            rows.append((str(d.resolve()), n))
    return rows, issues


def csv_text(rows: list[tuple[str, int]]) -> str:
    """`<dir>,<num frames>` rows, no header, no quoting (readers split on the last comma)."""
    return "".join(f"{d},{n}\n" for d, n in rows)


def write_together(files: dict[Path, str]) -> None:
    """Write several files so that a kill leaves either all the old ones or all the new ones in place.

    Each is first written whole to a hidden temporary sibling (which a later run cleans if this one is
    killed); only then are they renamed over the targets, back to back.
    """
    for folder in {path.parent for path in files}:
        clean_stale_tmp(folder)
    staged = {}
    try:
        for path, text in files.items():
            staged[path] = atomic_write(temp_sibling(path), text)
        for path, tmp in staged.items():
            os.replace(tmp, path)
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)


def paired_lists(names: list[str]) -> list[tuple[str, str]]:
    """The (training list, evaluation list) pairs among csv names: train_split0K/test_split0K, train_split/val_split."""
    pairs = []
    for name in names:
        if name.startswith("train_split"):
            for other in (name.replace("train_split", "test_split"), name.replace("train_split", "val_split")):
                if other in names:
                    pairs.append((name, other))
    return pairs


def warn_overlap(train_name: str, test_name: str, train: list[tuple[str, int]], test: list[tuple[str, int]]) -> int:
    """Warn on stderr when videos of an evaluation list are also training videos; return how many are."""
    shared = sorted({d for d, _ in test} & {d for d, _ in train})
    if shared:
        what = "is the same list as" if len(shared) == len(test) == len(train) else "shares videos with"
        print(f"warning: {test_name} {what} {train_name}: {len(shared)} of its {len(test)} videos are training videos "
              f"(first: {shared[0]}); an evaluation on them measures memorisation, not recognition; check the split "
              "files", file=sys.stderr)
    return len(shared)


def class_ind_text(classes: list[str]) -> str:
    """`<1-based id> <class name>` lines."""
    return "".join(f"{i} {name}\n" for i, name in enumerate(classes, 1))


def _report(name: str, rows: list, issues: dict[str, list[Path]], frame_root: Path, short_frames: int) -> None:
    print(f"{name}: {len(rows)} videos")
    labels = {"missing": "listed but missing under " + str(frame_root), "empty": f"with no {FRAMES.glob} frame",
              "short": f"with fewer than {short_frames} frames (kept)", "duplicate": "listed more than once"}
    for kind, dirs in issues.items():
        if dirs:
            first = ", ".join(f"{d.parent.name}/{d.name}" for d in dirs[:_SHOW])
            action = {"short": "", "duplicate": ", kept once"}.get(kind, ", left out")
            print(f"warning: {name}: {len(dirs)} videos {labels[kind]}{action}; first: {first}")


def get_args_parser() -> argparse.ArgumentParser:
    """The command line of write_csv.py."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASETS, type=canonical_dataset, required=True,
                      help="split file format to read (the original code's hmdb, kinetics and k400 name hmdb51 and "
                      "kinetics400)")
    data.add_argument("--frame_root", type=Path, required=True, help="frame root with <class>/<video>/image_00001.jpg "
                      "(kinetics400: with train/ and val/ inside)")
    data.add_argument("--split_root", type=Path, default=None,
                      help="official split files: ucf101 splits_classification/, hmdb51 testTrainMulti_7030_splits/, "
                      "jhmdb splits/; synthetic defaults to <frame_root>/../splits; unused by kinetics400 and folder")
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, default=None, help="output folder (default: <repo>/process_data/data/<dataset>)")
    out.add_argument("--short_frames", type=int, default=40,
                     help="report videos with fewer frames than this (they are kept: the loader lowers the stride)")
    fold = parser.add_argument_group("folder mode")
    fold.add_argument("--seed", type=int, default=0, help="seed of the folder-mode split")
    fold.add_argument("--test_fraction", type=float, default=0.3, help="share of each class in the folder-mode test set")
    fold.add_argument("--group", type=_regex, default=None,
                      help="regex whose first group (or whole match) in a video's folder name names its source; clips "
                      "of one source share a set (default: the name without trailing clip and mirror suffixes such as "
                      "_c01, -3, _clip2, _flip, _mirror)")
    return parser


def _regex(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as err:
        raise argparse.ArgumentTypeError(f"not a regular expression ({err})") from err


def _resolve_split_root(args: argparse.Namespace, frame_root: Path) -> Path | None:
    if args.dataset in ("kinetics400", "folder"):
        return None
    split_root = args.split_root
    if split_root is None and args.dataset == "synthetic":
        split_root = frame_root.parent / "splits"
    if split_root is None:
        raise ValueError(f"--split_root is required for --dataset {args.dataset}")
    if not Path(split_root).is_dir():
        raise FileNotFoundError(f"--split_root {split_root} is not a folder")
    return Path(split_root)


def main(args: argparse.Namespace) -> dict:
    """Write the split csv files and classInd.txt of --dataset; return per-csv row and issue counts."""
    frame_root = Path(args.frame_root).resolve()
    if not frame_root.is_dir():
        raise FileNotFoundError(f"--frame_root {frame_root} is not a folder")
    if not 0 < args.test_fraction < 1:
        raise ValueError(f"--test_fraction must be in (0, 1), got {args.test_fraction}")
    split_root = _resolve_split_root(args, frame_root)
    counts: dict[Path, int] = {}
    if args.dataset in ("ucf101", "synthetic"):
        classes, splits = ucf_splits(frame_root, split_root)
    elif args.dataset in ("hmdb51", "jhmdb"):
        classes, splits = hmdb_splits(frame_root, split_root)
    elif args.dataset == "kinetics400":
        classes, splits = kinetics_splits(frame_root)
    else:
        classes, splits = folder_splits(frame_root, counts, args.test_fraction, args.seed, args.group)
    out = Path(args.out) if args.out is not None else layout.DEFAULT_CSV_ROOT / args.dataset
    built = {name: build_rows(dirs, counts, args.short_frames) for name, dirs in splits.items()}
    for name, (rows, _) in built.items():  # every list is checked before any file is replaced
        if not rows:
            hint = " (a class needs two videos with frames to give one to test)" if not splits[name] else ""
            raise ValueError(f"{name} would be empty: none of its {len(splits[name])} videos has frames under "
                             f"{frame_root}{hint}; nothing was written to {out}")
    stats = {}
    for name, (rows, issues) in built.items():
        _report(name, rows, issues, frame_root, args.short_frames)
        stats[name] = {"rows": len(rows), **{k: len(v) for k, v in issues.items()}}
    for train_name, test_name in paired_lists(list(built)):
        stats[test_name]["in_train"] = warn_overlap(train_name, test_name, built[train_name][0], built[test_name][0])
    files = {out / name: csv_text(rows) for name, (rows, _) in built.items()}
    write_together({**files, out / "classInd.txt": class_ind_text(classes)})
    print(f"wrote {', '.join(splits)} and classInd.txt ({len(classes)} classes) to {out}")
    return stats


if __name__ == "__main__":
    run_cli(main, get_args_parser())
