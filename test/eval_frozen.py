"""Evaluate a frozen pretrained encoder: nearest-neighbour retrieval (recall@k of test videos against the
train videos), a linear probe on the same features, and qualitative figures (t-SNE, nearest neighbours).

    python test/eval_frozen.py --dataset ucf101 --modality imgs --img_dim 128 \\
        --pretrain runs/<exp>/model/mode_imgs_best.pth.tar --retrieval --linear_probe --qualitative

Each video's feature is the clip embedding (:func:`utils.embedding.clip_embedding`) of each of its groups of
blocks, averaged over the groups. outputs: <out_dir>/features_<hash>.npz (cache), retrieval.{md,json},
linear_probe.json, tsne.png, nearest_neighbours.png; --out_dir defaults to
<exp>/eval/<checkpoint name>_<dataset>_split<NN>/ next to the checkpoint.
"""
# ruff: noqa: E402 (the flags are parsed before torch is imported)
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:  # siblings import alike however this file is loaded
    sys.path.append(str(Path(__file__).resolve().parent))
from eval_flags import frozen_parser


def get_args_parser() -> argparse.ArgumentParser:
    """Every flag of the frozen-encoder evaluation, grouped."""
    return frozen_parser(__doc__)


if __name__ == "__main__":  # --help and a bad flag answer before torch is imported
    get_args_parser().parse_args()

import time

import numpy as np
import torch
from checkpoint_settings import adopt_checkpoint_settings
from eval_setup import (
    check_lists,
    csv_root,
    default_out_dir,
    group_loader,
    log,
    precision,
    pretrain_running_stats,
    start,
    view_size,
)

from train.model_3d import DPCRNN
from utils import whole_video
from utils.checkpoint import load_pretrained
from utils.cli import run_cli
from utils.distributed import cleanup, gather_objects, is_main_process, shard
from utils.errors import UsageError
from utils.eval_figures import nearest_neighbour_figure, tsne_figure
from utils.eval_files import feature_cache_key, feature_cache_path, frames_stamp, load_features, save_features
from utils.files import atomic_write, write_json
from utils.precision import to_channels_last
from utils.retrieval import center_normalize, linear_probe, rank_gallery, recall_table, retrieval_recall
from utils.video_index import VideoEntry, load_split, split_csv_path
from utils.views import VIEWS, view_backbone, view_dir

PROTOCOLS = ("retrieval", "linear_probe", "qualitative")


def requested(args: argparse.Namespace) -> bool:
    """Whether the flags ask for any frozen-encoder protocol."""
    return any(getattr(args, name) for name in PROTOCOLS)


def parse_recall_k(spec: str) -> list[int]:
    """``"1,5,10"`` → the sorted distinct k of recall@k.

    Args:
        spec: the ``--recall_k`` value, comma-separated positive integers.

    Raises:
        ValueError: an entry is not a positive integer, or none is given.
    """
    ks = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f"--recall_k: expected comma-separated positive integers, got {part!r} in {spec!r}")
        ks.add(int(part))
    if not ks:
        raise ValueError(f"--recall_k: expected comma-separated positive integers, got {spec!r}")
    return sorted(ks)


def build_encoder(args: argparse.Namespace, amp_dtype: torch.dtype | None = None) -> DPCRNN:
    """The pretrained encoder of ``--pretrain`` (or a seeded random one), frozen, in eval mode."""
    torch.manual_seed(args.seed)
    encoder = DPCRNN(view_backbone(args.modality, args.net), VIEWS[args.modality].channels, view_size(args),
                     args.seq_len, args.num_seq, pred_step=min(3, args.num_seq - 1), l2_norm=args.l2_norm,
                     track_running_stats=pretrain_running_stats(args))
    if args.pretrain != "random":
        log.info("pretrain %s: %s", args.pretrain, load_pretrained(encoder, args.pretrain, args.modality).summary())
    encoder.requires_grad_(False)
    if amp_dtype is not None:
        to_channels_last(encoder)
    return encoder.to(args.device).eval()


def encoder_features(args: argparse.Namespace, train: list[VideoEntry], test: list[VideoEntry], out_dir: Path,
                     amp_dtype: torch.dtype | None = None) -> dict:
    """Train (gallery) and test (query) video features of the frozen encoder, cached in ``out_dir``."""
    lists = [split_csv_path(csv_root(args), part, args.split) for part in ("train", "test")]
    settings = {
        "view": args.modality, "net": view_backbone(args.modality, args.net), "size": view_size(args),
        "seq_len": args.seq_len, "num_seq": args.num_seq, "ds": args.ds, "l2_norm": args.l2_norm,
        "seed": args.seed, **{p.name: f"{p.resolve()}@{p.stat().st_mtime_ns}" for p in lists},
        "frames": frames_stamp([view_dir(e.frame_dir, args.modality) for e in [*train, *test]],
                               VIEWS[args.modality].files.name(1)),
        "embedding": "clip_embedding avg",  # caches of the former embedding (maps averaged, then normalised) miss
    }
    key = feature_cache_key(args.pretrain, settings)
    path = feature_cache_path(out_dir, key)
    cached = load_features(path, key) if args.cache else None
    if cached is not None:
        log.info("features loaded from cache %s", path)
        return {**cached, "cache": "hit"}
    encoder = build_encoder(args, amp_dtype)
    arrays = {}
    for part, entries in (("train", train), ("test", test)):
        start_time = time.time()
        mine = shard(len(entries))  # under torchrun each process extracts its share, gathered back in order
        feats, labels = whole_video.extract_video_features(encoder.encode, group_loader([entries[i] for i in mine], args),
                                                           args.modality, args.batch_size, args.device, is_main_process(),
                                                           amp_dtype)
        parts = gather_objects((np.asarray(mine, dtype=np.int64), feats, labels))
        order = np.argsort(np.concatenate([p[0] for p in parts]), kind="stable")
        feats, labels = (np.concatenate([p[i] for p in parts])[order] for i in (1, 2))
        arrays[f"{part}_features"], arrays[f"{part}_labels"] = feats, labels
        log.info("%s: %d video features %s in %.1fs", part, len(entries), feats.shape, time.time() - start_time)
    if is_main_process():
        save_features(path, key, arrays)
    return {**arrays, "cache": "miss"}


def retrieval(args: argparse.Namespace, feats: dict, ks: list[int], sizes: tuple[int, int], out_dir: Path) -> dict:
    """Recall@k of the test videos (queries) among the train videos (gallery); writes retrieval.{md,json}."""
    queries, gallery = sizes
    beyond = [k for k in ks if k > gallery]
    if beyond:
        log.warning("recall@%s left out: the gallery has only %d videos, so every query would count as found",
                    ",".join(map(str, beyond)), gallery)
        ks = [k for k in ks if k <= gallery]
    recalls = retrieval_recall(feats["test_features"], feats["test_labels"], feats["train_features"],
                               feats["train_labels"], ks)
    table = recall_table(recalls, f"Retrieval, {args.dataset} split {args.split}, {args.modality}: "
                                  f"{queries} test queries, {gallery} train gallery videos (recall %)")
    atomic_write(out_dir / "retrieval.md", table)
    write_json(out_dir / "retrieval.json", {"recall": {str(k): v for k, v in recalls.items()}, "queries": queries,
                                            "gallery": gallery, "checkpoint": str(args.pretrain)})
    print(table)
    return recalls


def probe(args: argparse.Namespace, feats: dict, out_dir: Path) -> dict:
    """The linear probe's train and test top-1; writes linear_probe.json."""
    result = linear_probe(feats["train_features"], feats["train_labels"], feats["test_features"],
                          feats["test_labels"], seed=args.seed)
    write_json(out_dir / "linear_probe.json", {**result, "checkpoint": str(args.pretrain)})
    print(f"linear probe {args.modality}: train top-1 {100 * result['train_top1']:.2f}% "
          f"test top-1 {100 * result['test_top1']:.2f}%")
    return result


def qualitative(args: argparse.Namespace, feats: dict, train: list[VideoEntry], test: list[VideoEntry],
                class_names: list[str], out_dir: Path) -> dict:
    """t-SNE of the test videos and a nearest-neighbour grid of evenly spaced test queries."""
    query_feats = center_normalize(feats["test_features"])
    gallery_feats = center_normalize(feats["train_features"])
    tsne = tsne_figure(query_feats, feats["test_labels"], class_names, out_dir / "tsne.png", seed=args.seed)
    rows = np.unique(np.linspace(0, len(test) - 1, min(args.nn_queries, len(test))).round().astype(int))
    ranked = rank_gallery(query_feats[rows], gallery_feats, args.nn_k)
    grid = nearest_neighbour_figure([test[i] for i in rows], [[train[j] for j in r] for r in ranked],
                                    class_names, out_dir / "nearest_neighbours.png")
    log.info("figures: %s, %s", tsne, grid)
    return {"tsne": str(tsne), "nearest_neighbours": str(grid)}


def evaluate_encoder(args: argparse.Namespace, amp_dtype: torch.dtype | None = None) -> dict:
    """Retrieval, linear probe and figures of the frozen ``--pretrain`` encoder, as the flags ask."""
    if args.pretrain is None:
        raise ValueError("--retrieval/--linear_probe/--qualitative evaluate the --pretrain encoder: pass a checkpoint")
    if args.pretrain == "random" and args.out_dir is None:
        raise ValueError("--pretrain random has no checkpoint folder to write next to: pass --out_dir")
    ks = parse_recall_k(args.recall_k) if args.retrieval else []
    out_dir = Path(args.out_dir or default_out_dir(args.pretrain, args))
    train, class_names = load_split(csv_root(args), "train", args.split)
    test, _ = load_split(csv_root(args), "test", args.split)
    check_lists(train, test, class_names, "gallery", "frozen-encoder evaluation")
    feats = encoder_features(args, train, test, out_dir, amp_dtype)
    if not is_main_process():  # rank 0 alone writes the protocols' files
        return {}
    results: dict = {"feature_cache": feats["cache"], "out_dir": str(out_dir)}
    if args.retrieval:
        results["retrieval"] = retrieval(args, feats, ks, (len(test), len(train)), out_dir)
    if args.linear_probe:
        results["linear_probe"] = probe(args, feats, out_dir)
    if args.qualitative:
        results["figures"] = qualitative(args, feats, train, test, class_names, out_dir)
    return results


def main(args: argparse.Namespace) -> dict:
    """Run the protocols the flags ask for; returns their results."""
    if not requested(args):
        raise UsageError("nothing to evaluate: pass --retrieval, --linear_probe and/or --qualitative")
    start(args)
    try:
        adopt_checkpoint_settings(args)
        return {"encoder": evaluate_encoder(args, precision(args))}
    finally:
        cleanup()


if __name__ == "__main__":
    run_cli(main, get_args_parser())
