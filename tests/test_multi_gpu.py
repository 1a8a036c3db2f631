"""Multi-GPU set-up that a CPU can check: --gpu takes effect because parsing touches no CUDA call; the
frame-cache memory check counts every process on the node; the default --num_workers fits the CPUs."""
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from script_module import load_script
from torch.utils.data import DataLoader

from train.pretrain_flags import get_args_parser as trainer_parser
from utils import cli_options, video_data
from utils.cli_options import default_num_workers

REPO = Path(__file__).resolve().parents[1]

# Every CUDA query torch offers before a device is used initialises the driver, which reads
# CUDA_VISIBLE_DEVICES once: after it, --gpu would be ignored. They are banned while the parsers are built.
NO_CUDA_WHILE_PARSING = """
import os, sys
import torch
sys.path.insert(0, {tests!r})
from script_module import load_script, load_test_cli

def banned(*args, **kwargs):
    raise AssertionError("a CUDA call while building or running a parser")

real = {{name: getattr(torch.cuda, name) for name in ("is_available", "device_count", "init", "_lazy_init", "is_bf16_supported")}}
for name in real:
    setattr(torch.cuda, name, banned)
from train.pretrain_flags import get_args_parser as trainer_parser
parsers = [load_script(stem).get_args_parser() for stem in ("finetune", "eval_frozen")]
parsers += [load_test_cli("cocon_test_cli").get_args_parser(), trainer_parser()]
parsed = [parser.parse_args(["--gpu", "3"]) for parser in parsers]
assert all(args.gpu == "3" for args in parsed)
assert all(getattr(args, "device", None) is None for args in parsed)
for name, fn in real.items():
    setattr(torch.cuda, name, fn)
eval_setup = sys.modules["eval_setup"]
args = parsed[0]
eval_setup.start(args)
assert os.environ["CUDA_VISIBLE_DEVICES"] == "3", os.environ.get("CUDA_VISIBLE_DEVICES")
assert args.device == ("cuda:0" if torch.cuda.is_available() else "cpu"), args.device
print("ok")
"""


def test_parsing_touches_no_cuda_call_so_gpu_takes_effect():
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    done = subprocess.run([sys.executable, "-c", NO_CUDA_WHILE_PARSING.format(tests=str(REPO / "tests"))], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


class _FakeCache:
    """A dataset whose cache would take ``gib`` GiB."""

    views = ("imgs",)
    cache = None

    def __init__(self, gib: float):
        self.bytes = int(gib * 2**30)
        self.filled = False

    def __len__(self) -> int:
        return 1

    def estimate_cache_bytes(self) -> int:
        return self.bytes

    def fill_cache(self, threads: int) -> int:
        self.filled = True
        return self.bytes


def test_frame_cache_check_counts_every_process_on_the_node(monkeypatch):
    monkeypatch.setattr(video_data, "available_memory", lambda: 100 * 2**30)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    alone = _FakeCache(15)
    video_data.fill_frame_caches([alone], loader_workers=0)
    assert alone.filled
    # 8 processes on the node, 15 GiB each: 120 GiB of 100 would be filled if each checked only its own copy.
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    eighth = _FakeCache(15)
    with pytest.raises(MemoryError, match=r"--cache_frames.*15\.0 GiB for each of the 8 processes"):
        video_data.fill_frame_caches([eighth], loader_workers=0)
    assert not eighth.filled
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    video_data.fill_frame_caches([_FakeCache(15)], loader_workers=0)  # 60 GiB of 100: fits


def test_default_num_workers_scales_with_gpus_within_the_cpus(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert default_num_workers(gpus=0) == 4 and default_num_workers(gpus=1) == 4
    assert default_num_workers(gpus=8) == 32  # DataParallel over 8 GPUs from one process
    assert default_num_workers(gpus=1, processes_per_node=8) == 4  # torchrun: 8 processes of one GPU
    assert default_num_workers(gpus=1, processes_per_node=32) == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert default_num_workers(gpus=8) == 2 and default_num_workers(gpus=1, processes_per_node=8) == 1
    assert cli_options.available_cpus() == 2


def test_default_num_workers_raise_no_warning_on_a_two_cpu_machine(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    finetune = load_script("finetune")
    args = finetune.get_args_parser().parse_args([])
    sys.modules["eval_setup"].start(args)
    assert 1 <= args.num_workers <= 2
    assert trainer_parser().parse_args([]).num_workers is None  # the trainer resolves it the same way
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when a loader has more workers than CPUs
        assert [int(x) for x in DataLoader(torch.arange(4), num_workers=args.num_workers)] == [0, 1, 2, 3]


def test_probe_runs_on_a_bounded_seeded_subset(monkeypatch):
    from sklearn.cluster import KMeans

    from train import probe

    fitted: list[int] = []
    real = KMeans.fit_predict
    monkeypatch.setattr(KMeans, "fit_predict", lambda self, x, *a, **k: fitted.append(len(x)) or real(self, x, *a, **k))
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 30)
    features = {"imgs": rng.normal(size=(120, 8)) + labels[:, None]}
    # Under torchrun the other ranks wait while rank 0 probes: at Kinetics size k-means would take minutes.
    first = probe.probe(features, labels, 4, seed=0, max_clips=40)
    assert fitted == [40] and first == probe.probe(features, labels, 4, seed=0, max_clips=40)
    fitted.clear()
    assert probe.probe(features, labels, 4, seed=0) != first and fitted == [120]  # below PROBE_MAX_CLIPS: every clip
    assert probe.PROBE_MAX_CLIPS <= 10_000
