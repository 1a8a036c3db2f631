"""Write a checkpoint of this repo in the original DPC/CoCon state-dict layout.

    python scripts/export_original.py runs/<exp>/model/mode_imgs_best.pth.tar original_imgs.pth.tar

The original code loads DataParallel-wrapped models whose ConvGRU registers every cell twice; the
export adds the ``module.`` prefix and the ``ConvGRUCell_0N.*`` duplicates and keeps ``epoch`` and
``mode``. (This repo loads either layout directly.)
"""
from __future__ import annotations

import argparse
from pathlib import Path

from utils.checkpoint import atomic_save, load_checkpoint, original_state_dict, state_dict_of
from utils.cli import run_cli
from utils.cli_options import HelpFormatter


def get_args_parser() -> argparse.ArgumentParser:
    """The two paths."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a checkpoint written by train/model_trainer.py or test/test.py")
    parser.add_argument("out", type=Path, help="where to write the original-layout checkpoint")
    return parser


def main(args: argparse.Namespace) -> Path:
    """Convert ``args.checkpoint`` and write it atomically to ``args.out``."""
    checkpoint = load_checkpoint(args.checkpoint)
    exported = {k: checkpoint[k] for k in ("epoch", "mode", "net", "best_acc") if k in checkpoint}
    exported["state_dict"] = original_state_dict(state_dict_of(checkpoint, args.checkpoint))
    atomic_save(exported, args.out)
    return args.out


if __name__ == "__main__":
    run_cli(lambda args: print(main(args)), get_args_parser())
