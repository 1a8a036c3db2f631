"""Kinetics-scale data structures: the video index and gallery retrieval, on synthetic data.

    python bench/bench_index.py                      # 240k videos, 10k items per worker, 20k x 240k retrieval
    python bench/bench_index.py --videos 20000 --items 2000 --queries 2000 --gallery 20000   # a quick run

Figures:
- index build: ``read_split_csv`` of a ``--videos``-row csv (400 classes) into a :class:`VideoIndex`,
  against the former list of ``VideoEntry`` objects built from the same rows, and the hold-out split;
- DataLoader worker memory: two forked workers read ``--items`` random videos of each structure; the
  growth of each worker's private memory (USS: pages it no longer shares with the main process, which
  is what copy-on-access costs) and of its RSS, the larger of the two workers;
- retrieval: recall@k of ``--queries`` random features in a ``--gallery`` of random features with
  ``utils.retrieval.retrieval_recall`` (chunked top-k), its time and peak memory above the inputs.
"""
from __future__ import annotations

import argparse
import gc
import os
import resource
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from utils.cli_options import HelpFormatter
from utils.retrieval import retrieval_recall
from utils.video_index import VideoEntry, VideoIndex, holdout_split, read_split_csv

NUM_CLASSES = 400


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    parser.add_argument("--videos", type=int, default=240_000, help="rows of the synthetic split csv")
    parser.add_argument("--items", type=int, default=10_000, help="random videos each DataLoader worker reads")
    parser.add_argument("--queries", type=int, default=20_000, help="retrieval queries")
    parser.add_argument("--gallery", type=int, default=240_000, help="retrieval gallery videos")
    parser.add_argument("--dim", type=int, default=256, help="feature dimension (resnet18: 256)")
    return parser


# ---------------------------------------------------------------- memory


def rss_bytes() -> int:
    """Resident memory of this process now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def private_bytes() -> int:
    """Memory of this process not shared with any other (USS), from ``/proc/self/smaps_rollup``."""
    total = 0
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1]) * 1024
    return total


class PeakRSS:
    """Samples this process's RSS every few milliseconds; ``peak`` is the largest seen above the start."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def __enter__(self) -> PeakRSS:
        self.start = rss_bytes()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes() - self.start)
            time.sleep(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes() - self.start)


# ---------------------------------------------------------------- index build


def write_split(folder: Path, videos: int) -> tuple[Path, list[str]]:
    """A Kinetics-like split csv of ``videos`` rows over 400 classes; returns it and the class names."""
    names = [f"class_{c:03d}" for c in range(NUM_CLASSES)]
    rows = [f"/data/kinetics400/frame/train/{names[i % NUM_CLASSES]}/video_{i:07d}_000010_000020,{250 + i % 50}"
            for i in range(videos)]
    path = folder / "train_split.csv"
    path.write_text("\n".join(rows) + "\n")
    return path, names


def legacy_entries(path: Path, class_names: list[str]) -> list[VideoEntry]:
    """The former index: one frozen ``VideoEntry`` (with a ``Path``) per row."""
    label_of = {name: i for i, name in enumerate(class_names)}
    entries = []
    for line in path.read_text().splitlines():
        video, _, count = line.rpartition(",")
        frame_dir = Path(video)
        entries.append(VideoEntry(frame_dir, int(count), label_of[frame_dir.parent.name]))
    return entries


def bench_build(path: Path, class_names: list[str]) -> tuple[dict[str, float], VideoIndex]:
    """Build time of the index, the hold-out split's time, and the index's bytes."""
    start = time.perf_counter()
    index = read_split_csv(path, class_names)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    holdout_split(index, 0.1, seed=0)
    split_s = time.perf_counter() - start
    index_bytes = index.paths.nbytes + index.offsets.nbytes + index.num_frames.nbytes + index.labels.nbytes
    return {"build_s": build_s, "holdout_s": split_s, "index_mib": index_bytes / 2**20}, index


# ---------------------------------------------------------------- worker memory


class _Touch(Dataset):
    """Reads one video's entry, as a clip dataset does, and reports the worker's memory growth.

    At its ``items``-th video a worker also runs a full garbage collection, as a long epoch's
    allocations eventually do: it visits every tracked object, so it copies every page holding one.
    """

    def __init__(self, entries, items: int) -> None:
        self.entries, self.items = entries, items

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> torch.Tensor:
        entry = self.entries[i]
        touched = len(entry.frame_dir.name) + entry.num_frames + entry.label
        worker = torch.utils.data.get_worker_info().id
        _SEEN[worker] = _SEEN.get(worker, 0) + 1
        if _SEEN[worker] != self.items:  # reading smaps_rollup takes milliseconds: only at the end
            return torch.tensor([worker, 0, 0, 0, touched], dtype=torch.int64)
        uss, rss = private_bytes() - _BASELINE[worker][0], rss_bytes() - _BASELINE[worker][1]
        gc.collect()
        after_gc = private_bytes() - _BASELINE[worker][0]
        return torch.tensor([worker, uss, rss, after_gc, touched], dtype=torch.int64)


_BASELINE: dict[int, tuple[int, int]] = {}
_SEEN: dict[int, int] = {}


def _record_baseline(worker_id: int) -> None:
    _BASELINE[worker_id] = (private_bytes(), rss_bytes())


def worker_growth(entries, items: int, seed: int = 0) -> dict[str, float]:
    """Largest memory growth (MiB) of two forked workers over ``items`` random videos each.

    Returns:
        ``uss_mib`` (private memory) and ``rss_mib`` after the reads, ``uss_gc_mib`` after a full collection.
    """
    order = np.random.default_rng(seed).permutation(len(entries))[: 2 * items].tolist()
    loader = DataLoader(_Touch(entries, items), batch_size=100, sampler=order, num_workers=2,
                        worker_init_fn=_record_baseline, multiprocessing_context="fork")
    rows = torch.cat(list(loader))
    return {key: float(rows[:, column].max()) / 2**20 for key, column in (("uss_mib", 1), ("rss_mib", 2), ("uss_gc_mib", 3))}


# ---------------------------------------------------------------- retrieval


def bench_retrieval(queries: int, gallery: int, dim: int) -> dict[str, float]:
    """Recall@k of random features: time and peak memory above the inputs."""
    rng = np.random.default_rng(0)
    query = rng.standard_normal((queries, dim), dtype=np.float32)
    gallery_x = rng.standard_normal((gallery, dim), dtype=np.float32)
    query_y, gallery_y = rng.integers(0, NUM_CLASSES, queries), rng.integers(0, NUM_CLASSES, gallery)
    with PeakRSS() as peak:
        start = time.perf_counter()
        recalls = retrieval_recall(query, query_y, gallery_x, gallery_y)
        seconds = time.perf_counter() - start
    inputs = query.nbytes + gallery_x.nbytes
    return {"seconds": seconds, "peak_mib": peak.peak / 2**20, "inputs_mib": inputs / 2**20,
            "full_matrix_gib": queries * gallery * 4 / 2**30, "recall_1": recalls[1], "recall_50": recalls[50]}


def main(args: argparse.Namespace) -> dict:
    """Run and print every benchmark; return the figures."""
    results: dict = {"workers": {}}
    with tempfile.TemporaryDirectory() as tmp:
        path, names = write_split(Path(tmp), args.videos)
        results["build"], index = bench_build(path, names)
        # Each structure is measured while it is the only one in the main process.
        results["workers"]["index"] = worker_growth(index, args.items)
        del index
        start = time.perf_counter()
        legacy = legacy_entries(path, names)
        results["build"]["legacy_build_s"] = time.perf_counter() - start
        results["workers"]["list"] = worker_growth(legacy, args.items)
    b = results["build"]
    print(f"index of {args.videos} videos ({NUM_CLASSES} classes): read_split_csv {b['build_s']:.2f} s "
          f"({b['index_mib']:.1f} MiB of arrays), hold-out split {b['holdout_s']:.2f} s; "
          f"the former list of VideoEntry {b['legacy_build_s']:.2f} s")
    for name, w in results["workers"].items():
        label = "VideoIndex" if name == "index" else "list of VideoEntry"
        print(f"  DataLoader worker memory after {args.items} random videos, {label}: private (USS) "
              f"+{w['uss_mib']:.1f} MiB (+{w['uss_gc_mib']:.1f} MiB after a full gc), RSS +{w['rss_mib']:.1f} MiB")
    del legacy
    gc.collect()
    r = results["retrieval"] = bench_retrieval(args.queries, args.gallery, args.dim)
    print(f"retrieval of {args.queries} queries in {args.gallery} videos (dim {args.dim}): {r['seconds']:.1f} s, "
          f"peak memory {r['peak_mib']:.0f} MiB above the {r['inputs_mib']:.0f} MiB of features "
          f"(the full similarity matrix alone: {r['full_matrix_gib']:.1f} GiB); "
          f"R@1 {100 * r['recall_1']:.2f}%, R@50 {100 * r['recall_50']:.2f}% (chance: random features)")
    results["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return results


if __name__ == "__main__":
    main(get_args_parser().parse_args())
