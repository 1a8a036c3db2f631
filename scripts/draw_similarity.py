"""Draw one batch's block-similarity matrices in every view, before and after CoCon pretraining.

    python scripts/draw_similarity.py --csv_root runs/demo/csv --model_dir runs/demo/seed0/pretrain/cocon/<exp>/model \
        --out assets/similarity.png

The cooperative loss asks every view's matrix of cosine similarities between all blocks of a batch to
agree with the others'. This figure shows those matrices for a fixed batch of test clips (the middle
clip of the first ``--clips`` test videos, ordered by class so that same-class blocks form squares on
the diagonal): the top row from freshly initialised encoders (same seed as the run), the bottom row
from the pretrained ones (``mode_<view>_best.pth.tar``). Each panel's title gives the correlation of its
off-diagonal entries with the RGB panel's (what the cooperative loss raises) and the mean similarity of
same-class against other-class blocks (the class structure a view can hand to RGB).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from train.diagnostics import block_similarities, similarity_agreement
from train.model_3d import DPCRNN
from utils.augmentation import model_input
from utils.checkpoint import load_pretrained
from utils.cli import run_cli
from utils.cli_options import HelpFormatter
from utils.metrics import save_figure
from utils.video_data import MultiViewClipDataset
from utils.video_index import load_split
from utils.views import VIEWS, view_backbone


def get_args_parser() -> argparse.ArgumentParser:
    """The figure's flags."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--csv_root", type=Path, required=True, help="folder of the split lists and classInd.txt")
    parser.add_argument("--model_dir", type=Path, required=True, help="a CoCon experiment's model/ folder")
    parser.add_argument("--clips", type=int, default=20, help="test videos in the batch (spread over the classes)")
    parser.add_argument("--out", type=Path, default=Path("assets/similarity.png"), help="output PNG")
    return parser


def run_args(model_dir: Path) -> dict:
    """The pretraining flags stored beside ``model/`` (``args.json``)."""
    path = model_dir.parent / "args.json"
    if not path.is_file():
        raise FileNotFoundError(f"--model_dir {model_dir}: no args.json in {model_dir.parent}; pass a pretraining model/ folder")
    return json.loads(path.read_text())


def class_balanced_batch(labels: np.ndarray, clips: int) -> np.ndarray:
    """Indices of ``clips`` videos taken round-robin over the classes, sorted by class."""
    per_class = [list(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    chosen: list[int] = []
    while len(chosen) < min(clips, len(labels)):
        for members in per_class:
            if members and len(chosen) < clips:
                chosen.append(members.pop(0))
    return np.array(sorted(chosen, key=lambda i: (labels[i], i)))


def encoder(view: str, args: dict, checkpoint: Path | None) -> DPCRNN:
    """The view's DPC-RNN as built by pretraining (seeded), optionally loaded from ``checkpoint``."""
    torch.manual_seed(args["seed"])
    model = DPCRNN(view_backbone(view, args["net"]), VIEWS[view].channels, VIEWS[view].size(args["img_dim"]),
                   args["seq_len"], args["num_seq"], args["pred_step"], args["l2_norm"],
                   gru_relu=args.get("gru_relu", False))
    if checkpoint is not None:
        load_pretrained(model, checkpoint, view)
    return model.eval()


@torch.no_grad()
def batch_outputs(views: list[str], batch: dict, args: dict, model_dir: Path | None) -> dict:
    """view -> (None, z [B, N, D, s, s]) for one batch, from random or pretrained encoders."""
    outputs = {}
    for view in views:
        checkpoint = model_dir / f"mode_{view}_best.pth.tar" if model_dir is not None else None
        outputs[view] = (None, encoder(view, args, checkpoint).encode(model_input(batch[view], view, "cpu")))
    return outputs


def class_contrast(sim: torch.Tensor, block_labels: np.ndarray) -> float:
    """Mean similarity of same-class block pairs minus that of other-class pairs (diagonal excluded)."""
    same = torch.from_numpy(block_labels[:, None] == block_labels[None, :])
    off = ~torch.eye(len(sim), dtype=torch.bool)
    return float(sim[same & off].mean() - sim[~same].mean())


def main(args: argparse.Namespace) -> Path:
    """Draw the figure; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = run_args(args.model_dir)
    views = run["modalities"].split("_")
    entries, class_names = load_split(args.csv_root, "test")
    chosen = class_balanced_batch(np.asarray(entries.labels), args.clips)
    sizes = {view: VIEWS[view].size(run["img_dim"]) for view in views}
    dataset = MultiViewClipDataset([entries[i] for i in chosen], views, sizes, run["num_seq"], run["seq_len"],
                                   run["ds"], train=False, hflip=False)
    items = [dataset[i] for i in range(len(dataset))]
    batch = {view: torch.stack([item[view] for item in items]) for view in views}
    block_labels = np.repeat([item["label"] for item in items], run["num_seq"])
    fig, axes = plt.subplots(2, len(views), figsize=(3.1 * len(views), 6.4), squeeze=False)
    for row, (title, folder) in enumerate((("random init", None), ("after CoCon", args.model_dir))):
        outputs = batch_outputs(views, batch, run, folder)
        agreement = similarity_agreement(outputs)
        for col, view in enumerate(views):
            sim = block_similarities(outputs[view][1])
            ax = axes[row, col]
            ax.imshow(sim.numpy(), cmap="viridis", vmin=-1, vmax=1)
            r = 1.0 if view == views[0] else agreement.get(f"agree/{views[0]}-{view}", float("nan"))
            ax.set_title(f"{view}, {title}\nr({views[0]}) {r:.2f}, class contrast {class_contrast(sim, block_labels):.2f}",
                         fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"block-similarity matrices of {len(items)} test clips × {run['num_seq']} blocks, ordered by class",
                 fontsize=9)
    fig.tight_layout()
    return save_figure(fig, args.out)


if __name__ == "__main__":
    run_cli(main, get_args_parser())
