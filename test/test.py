"""Fine-tune a pretrained CoCon/DPC encoder for action recognition, test it on whole videos, fuse
views, and evaluate frozen encoders by retrieval, a linear probe and qualitative figures.

    cd test && python test.py --net resnet18 --dataset ucf101 --modality imgs --batch_size 8 \\
        --img_dim 128 --pretrain ../runs/<exp>/model/mode_imgs_best.pth.tar --epochs 100
    python test/test.py --dataset ucf101 --modality imgs --test runs/<ft exp>/model/mode_imgs_best.pth.tar
    python test/test.py --dataset ucf101 --ensemble 1 --prob_imgs A/probs_imgs.npz --prob_flow B/probs_flow.npz
    python test/test.py --dataset ucf101 --modality imgs --pretrain <ckpt> --retrieval --linear_probe --qualitative

This script takes the flags of all three protocols and hands them to the one the flags select; each protocol
is also a script of its own with only its flags: test/finetune.py (fine-tune and test, or --test),
test/ensemble.py and test/eval_frozen.py.
"""
# ruff: noqa: E402 (the flags are parsed before torch is imported)
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:  # siblings import alike however this file is loaded
    sys.path.append(str(Path(__file__).resolve().parent))
from eval_flags import test_parser

EPILOG = """\
modes:
  --ensemble 1          fuses probability files given with --prob_<view> (and does nothing else).
  --test CKPT           tests a fine-tuned classifier checkpoint on the test split.
  --retrieval / --linear_probe / --qualitative
                        evaluate the frozen --pretrain encoder (combine freely, also with --test;
                        train and test features are computed once and cached).
  otherwise             fine-tunes (needs --pretrain PATH|random), then tests the best checkpoint.

outputs:
  fine-tune: <save_dir>/<exp name>/model/  mode_<view>_epoch<N>.pth.tar (newest --keep_last), mode_<view>_best.pth.tar
                                   img/    TensorBoard logs (train/, val/)
                                   args.json (args_resume<N>.json for a resumed run)
             then the test of the best checkpoint as below, in <exp>/eval/mode_<view>_best_<dataset>_split<NN>/
  test:      <out_dir>/test_results.json, probs_<view>.npz, test_confusion.png, test_per_class.{md,csv}
  ensemble:  <out_dir>/ensemble_results.json, probs_<views>.npz, ensemble_confusion.png, ensemble_per_class.{md,csv}
  encoder:   <out_dir>/features_<hash>.npz (cache), retrieval.{md,json}, linear_probe.json, tsne.png,
             nearest_neighbours.png
  --out_dir defaults to <exp>/eval/<checkpoint name>_<dataset>_split<NN>/ next to the checkpoint
  (<exp>/ is the folder holding model/); for --ensemble, to ensemble_<views>/ beside the folder of
  the first file, views taken in the order imgs, flow, farne, kphm, seg whatever the flag order.
  A probs_<view>.npz holds probs float32 [V,K], labels int64 [V], videos str [V] (frame folders),
  class_names str [K] and view str; read it with np.load(path, allow_pickle=False).
"""


def get_args_parser() -> argparse.ArgumentParser:
    """The flags of every mode (fine-tune, test, ensemble, frozen-encoder evaluation), grouped."""
    return test_parser(__doc__, EPILOG)


if __name__ == "__main__":  # --help and a bad flag answer before torch is imported
    get_args_parser().parse_args()

import ensemble
import eval_frozen
import finetune
from classifier_test import test_checkpoint
from eval_setup import precision, start

from utils.cli import run_cli
from utils.distributed import cleanup, is_main_process


def main(args: argparse.Namespace) -> dict:
    """Run the mode the flags select (see the --help epilog); returns its results."""
    info = start(args)
    try:
        if args.ensemble:
            return {"ensemble": ensemble.run_ensemble(args)} if is_main_process() else {}
        evaluating = args.test is not None or eval_frozen.requested(args)
        finetune.settle_settings(args, fine_tuning=not evaluating)
        amp_dtype = precision(args)
        results = {}
        if args.test is not None:
            results["test"] = test_checkpoint(args, amp_dtype)
        if eval_frozen.requested(args):
            results["encoder"] = eval_frozen.evaluate_encoder(args, amp_dtype)
        return results or {"finetune": finetune.finetune(args, amp_dtype, info)}
    finally:
        cleanup()


if __name__ == "__main__":
    run_cli(main, get_args_parser())
