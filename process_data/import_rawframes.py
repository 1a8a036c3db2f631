"""Reuse frames and flow extracted by mmaction2 / denseflow: link them into this repo's layout.

    python process_data/import_rawframes.py --src_root data/ucf101/rawframes --dataset_root data/ucf101
    python process_data/write_csv.py --dataset ucf101 --frame_root data/ucf101/frame --split_root ...

mmaction2's `build_rawframes.py` and denseflow write one folder per video holding everything:
`<src_root>/<class>/<video>/img_00001.jpg`, `flow_x_00001.jpg`, `flow_y_00001.jpg`. This repo reads
DPC's layout, one tree per view: `<dataset_root>/frame/<class>/<video>/image_00001.jpg` and
`<dataset_root>/flow/<class>/<video>/flow_x_00001.jpg` (+ `flow_y_`). Both number frames from 1, flow
pair i is frame i -> i+1, and denseflow's 8-bit flow uses the same bound-20 encoding as
`extract_flow.py`, so the files are reused as they are: hard-linked (no extra disk) where the file
system allows, else copied (`--mode copy` always copies, `--mode symlink` links to the originals).

Each video's folders are built under temporary names and renamed when complete, so a rerun skips
finished videos; videos without frames are listed in `<dataset_root>/frame/failed.txt`. Both trees'
`manifest.json` names the imported folder, so extract_frame.py or extract_flow.py refuse to add their
own frames or flow (of another size or algorithm) to them.
"""
from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from process_data.common import atomic_dir, check_manifest, finish_run, list_video_dirs
from utils.cli import run_cli
from utils.cli_options import HelpFormatter
from utils.files import is_disk_full
from utils.layout import FLOW_TREE, FLOW_X, FLOW_Y, FRAME_TREE, FRAMES

MODES = ("hardlink", "symlink", "copy")


def place_file(src: Path, dst: Path, mode: str) -> None:
    """Make `dst` show the content of `src`: a hard link (copy across file systems), a symlink or a copy.

    Args:
        src: the existing file.
        dst: the new path; must not exist.
        mode: one of `MODES`.
    """
    if mode == "symlink":
        os.symlink(src.resolve(), dst)
        return
    if mode == "hardlink":
        try:
            os.link(src, dst)
            return
        except OSError:  # another file system, or one without hard links
            pass
    shutil.copy2(src, dst)


def _renamed(video_dir: Path, prefix: str, new_prefix: str) -> list[tuple[Path, str]]:
    """(source file, new name) of every `<prefix>NNNNN.jpg` in `video_dir`, sorted."""
    files = sorted(video_dir.glob(f"{prefix}[0-9]*.jpg"))
    return [(f, new_prefix + f.name[len(prefix):]) for f in files if f.name[len(prefix):-4].isdigit()]


def import_video(video_dir: Path, frame_dir: Path, flow_dir: Path, prefixes: dict[str, str], mode: str) -> str:
    """Place one video's frames (and its flow, if it has any); return "done" or "skipped".

    Args:
        video_dir: `<src_root>/<class>/<video>`.
        frame_dir: the video's folder in the frame tree.
        flow_dir: the video's folder in the flow tree.
        prefixes: source file prefixes of `img`, `flow_x` and `flow_y`.
        mode: how files are placed (`MODES`).
    Raises:
        ValueError: the folder has no frame, or flow_x and flow_y files do not pair up.
    """
    frames = _renamed(video_dir, prefixes["img"], FRAMES.prefix)
    flows = (_renamed(video_dir, prefixes["flow_x"], FLOW_X.prefix)
             + _renamed(video_dir, prefixes["flow_y"], FLOW_Y.prefix))
    if not frames:
        raise ValueError(f"{video_dir} has no {prefixes['img']}NNNNN.jpg frames")
    n_x = sum(name.startswith(FLOW_X.prefix) for _, name in flows)
    if n_x != len(flows) - n_x:
        raise ValueError(f"{video_dir} has {n_x} {prefixes['flow_x']}*.jpg but {len(flows) - n_x} "
                         f"{prefixes['flow_y']}*.jpg files")
    jobs = [(frame_dir, frames)] + ([(flow_dir, flows)] if flows else [])
    todo = [(folder, files) for folder, files in jobs if not folder.is_dir()]
    for folder, files in todo:
        with atomic_dir(folder) as tmp:
            for src, name in files:
                place_file(src, tmp / name, mode)
    return "done" if todo else "skipped"


def get_args_parser() -> argparse.ArgumentParser:
    """The command line of import_rawframes.py."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    io = parser.add_argument_group("input/output")
    io.add_argument("--src_root", type=Path, required=True,
                    help="mmaction2/denseflow output: <src_root>/<class>/<video>/img_00001.jpg, flow_x_00001.jpg, ...")
    io.add_argument("--dataset_root", type=Path, required=True,
                    help="gets frame/<class>/<video>/ and flow/<class>/<video>/ (for Kinetics, e.g. "
                    "data/kinetics400 with --subset train)")
    io.add_argument("--subset", default="", help="a level between the view and the class, e.g. train or val")
    io.add_argument("--mode", choices=MODES, default="hardlink",
                    help="hardlink (no extra disk; copies across file systems), symlink, or copy")
    names = parser.add_argument_group("source file names")
    names.add_argument("--img_prefix", default="img_", help="prefix of the RGB frames")
    names.add_argument("--flow_x_prefix", default="flow_x_", help="prefix of the horizontal flow")
    names.add_argument("--flow_y_prefix", default="flow_y_", help="prefix of the vertical flow")
    return parser


def main(args: argparse.Namespace) -> dict:
    """Place every video of --src_root in the frame and flow trees; return the done/skipped/failed counts."""
    src_root = Path(args.src_root)
    frame_root = Path(args.dataset_root) / FRAME_TREE / args.subset
    flow_root = Path(args.dataset_root) / FLOW_TREE / args.subset
    if src_root.resolve() in (frame_root.resolve(), flow_root.resolve()):
        raise ValueError(f"--src_root {src_root} is where the frame or flow tree would be written")
    video_dirs = list_video_dirs(src_root)
    if not video_dirs:
        raise FileNotFoundError(f"--src_root {src_root} has no <class>/<video>/ folders")
    for root in (frame_root, flow_root):
        check_manifest(root, {"imported_from": str(src_root.resolve())}, "process_data/import_rawframes.py", {},
                       "pass another --dataset_root")
    prefixes = {"img": args.img_prefix, "flow_x": args.flow_x_prefix, "flow_y": args.flow_y_prefix}
    results, failures = [], []
    for video_dir in video_dirs:
        rel = video_dir.relative_to(src_root)
        try:
            results.append(import_video(video_dir, frame_root / rel, flow_root / rel, prefixes, args.mode))
        except (OSError, ValueError) as exc:
            if is_disk_full(exc):  # every later video would fail the same way
                raise
            failures.append((str(rel), str(exc)))
    return finish_run(f"import_rawframes -> {frame_root}, {flow_root}", frame_root, failures,
                      done=results.count("done"), skipped=results.count("skipped"))


if __name__ == "__main__":
    run_cli(main, get_args_parser())
