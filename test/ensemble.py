"""Fuse the test-set class probabilities of several views (late fusion): their weighted average, scored
like a single view.

    python test/ensemble.py --prob_imgs A/probs_imgs.npz --prob_flow B/probs_flow.npz
    python test/ensemble.py --prob_imgs A/probs_imgs.npz --prob_seg C/probs_seg.npz --ensemble_weights imgs=1,seg=1

outputs: <out_dir>/ensemble_results.json, probs_<views>.npz, ensemble_confusion.png, ensemble_per_class.{md,csv};
--out_dir defaults to ensemble_<views>/ beside the folder of the first file, views taken in the order imgs,
flow, farne, kphm, seg whatever the flag order.
"""
# ruff: noqa: E402 (the flags are parsed before torch is imported)
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:  # siblings import alike however this file is loaded
    sys.path.append(str(Path(__file__).resolve().parent))
from eval_flags import ensemble_parser


def get_args_parser() -> argparse.ArgumentParser:
    """Every flag of the view ensemble, grouped."""
    return ensemble_parser(__doc__)


if __name__ == "__main__":  # --help and a bad flag answer before torch is imported
    get_args_parser().parse_args()


from eval_setup import report, start

from utils.classification_report import classification_metrics
from utils.cli import run_cli
from utils.distributed import cleanup, is_main_process
from utils.ensemble import ensemble_probabilities, parse_ensemble_weights
from utils.eval_files import load_probabilities
from utils.views import VIEWS


def run_ensemble(args: argparse.Namespace) -> dict:
    """Fuse the given ``--prob_<view>`` files with the view weights.

    Views are taken in the canonical order of :data:`utils.views.VIEWS` (imgs, flow, farne, kphm, seg),
    whatever the order of the flags: the fused view name (``imgs+flow``), the video order of the
    result and the default output folder (beside the first of them) follow it.
    """
    paths = {v: getattr(args, f"prob_{v}") for v in VIEWS if getattr(args, f"prob_{v}") is not None}
    if len(paths) < 2:
        raise ValueError(f"--ensemble 1 needs two or more of {[f'--prob_{v}' for v in VIEWS]}, got {len(paths)}")
    files = {v: load_probabilities(p) for v, p in paths.items()}
    for view, content in files.items():
        if content.view != view:
            raise ValueError(f"--prob_{view} {paths[view]} holds probabilities of the {content.view!r} view")
    weights = parse_ensemble_weights(args.ensemble_weights)
    fused = ensemble_probabilities(files, weights)
    first = Path(next(iter(paths.values()))).resolve()
    out_dir = args.out_dir or first.parent.parent / f"ensemble_{fused.view}"
    singles = {v: classification_metrics(f.probs, f.labels, len(f.class_names))[0]["top1"] for v, f in files.items()}
    extra = {"inputs": {v: str(p) for v, p in paths.items()}, "weights": {v: weights[v] for v in paths},
             "single_view_top1": singles}
    return report(fused, out_dir, "ensemble", extra)


def main(args: argparse.Namespace) -> dict:
    """Fuse the probability files; returns the fused view's metrics."""
    start(args)
    try:  # under torchrun rank 0 alone fuses and writes
        return {"ensemble": run_ensemble(args)} if is_main_process() else {}
    finally:
        cleanup()


if __name__ == "__main__":
    run_cli(main, get_args_parser())
