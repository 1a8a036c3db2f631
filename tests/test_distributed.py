"""utils.distributed in one process, and 2-process Gloo runs: against one process on the same global batch
(training loss and gradients, and a validation pass over a set DistributedSampler has to pad), and the
helpers that keep processes apart (seeds) or together (scheduler metric, start-up checks, gathered results)."""
import datetime
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from script_module import load_script
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, SequentialSampler

from train.losses import CoConLossConfig, cocon_loss
from train.model_3d import DPCRNN
from train.pretrain_loop import evaluate, forward_views
from utils.distributed import (
    PROCESS_GROUP_TIMEOUT,
    DistInfo,
    ReplicaInput,
    all_gather_with_grad,
    cleanup,
    first_occurrences,
    gather_objects,
    init_distributed,
    is_main_process,
    mean_over_processes,
    once_on_main,
    process_seed,
    seed_everything,
    shard,
    unwrap,
    wrap_model,
)

torch.set_num_threads(1)

WORLD, LOCAL_B = 2, 2
CFG = CoConLossConfig(temperature=0.1, msync_wt=10.0, dot_wt=10.0)
CHANNELS = {"imgs": 3, "flow": 2}


def _models() -> dict[str, DPCRNN]:
    torch.manual_seed(0)
    # Running statistics + eval mode: BatchNorm does not depend on how the batch is split.
    models = {
        view: DPCRNN("resnet10", c, 32, seq_len=2, num_seq=4, pred_step=2, track_running_stats=True)
        for view, c in CHANNELS.items()
    }
    for model in models.values():
        model.eval()
    return models


def _global_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {view: torch.randint(0, 256, (WORLD * LOCAL_B, 4, c, 2, 32, 32), dtype=torch.uint8, generator=g) for view, c in CHANNELS.items()}


class _ValClips(Dataset):
    """3 validation clips: with 2 processes DistributedSampler pads them to 4 by repeating clip 0."""

    def __init__(self):
        g = torch.Generator().manual_seed(2)
        self.clips = {view: torch.randint(0, 256, (3, 4, c, 2, 32, 32), dtype=torch.uint8, generator=g) for view, c in CHANNELS.items()}

    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int) -> dict:
        return {**{view: x[index] for view, x in self.clips.items()}, "label": index % 2, "index": index}


def _validate(models, sampler_for, batch_size, device):
    dataset = _ValClips()
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler_for(dataset))
    stats, features, labels = evaluate(models, loader, CFG, device, collect=True)
    return {"stats": stats, "features": {v: torch.from_numpy(f) for v, f in features.items()}, "labels": torch.from_numpy(labels)}


def _loss_and_grads(models, batch, device):
    outputs = forward_views(models, batch, device)
    loss, _ = cocon_loss(outputs, CFG)
    loss.backward()
    grads = {f"{v}.{n}": p.grad.clone() for v, m in models.items() for n, p in m.named_parameters()}
    return loss.detach(), grads, outputs["imgs"][1].shape[0]


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    info = init_distributed()
    try:
        assert info.distributed and info.rank == rank and info.world_size == WORLD
        assert is_main_process() == (rank == 0)
        base = _models()
        models = {v: wrap_model(m, v, info, n_gpu=1) for v, m in base.items()}
        assert all(unwrap(models[v]) is base[v] for v in base)
        local = {v: x[rank * LOCAL_B : (rank + 1) * LOCAL_B] for v, x in _global_batch().items()}
        loss, grads, gathered = _loss_and_grads(models, local, info.device)
        grads = {k.replace("module.model.", ""): g for k, g in grads.items()}
        # Rank 0 validates clips [0, 2], rank 1 [1, 0 (padding)]: gathered batches [0, 1] and [2, 0].
        val = _validate(models, lambda ds: DistributedSampler(ds, shuffle=False), 1, info.device)
        torch.save({"loss": loss, "grads": grads, "gathered": gathered, "val": val}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        cleanup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_matches_one_process(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    loss, grads, gathered = _loss_and_grads(_models(), _global_batch(), torch.device("cpu"))
    # One process, batches [0, 1] and [2]: the padded clip must not count twice.
    val = _validate(_models(), SequentialSampler, WORLD, torch.device("cpu"))
    assert val["labels"].tolist() == [0, 1, 0] and val["features"]["imgs"].shape[0] == 3
    for rank in range(WORLD):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert result["gathered"] == WORLD * LOCAL_B  # negatives span the global batch
        torch.testing.assert_close(result["loss"], loss, rtol=1e-5, atol=1e-6)
        # DDP averages the per-process gradients of the same global loss: the global gradient.
        assert result["grads"].keys() == grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(result["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)
        assert torch.equal(result["val"]["labels"], val["labels"])
        for view, features in val["features"].items():
            torch.testing.assert_close(result["val"]["features"][view], features, rtol=1e-4, atol=1e-6)
        assert result["val"]["stats"].keys() == val["stats"].keys()
        for key, value in val["stats"].items():
            assert abs(result["val"]["stats"][key] - value) < 1e-5, key
    # Sanity: one process's share of the batch alone gives another loss (fewer negatives).
    half = {v: x[:LOCAL_B] for v, x in _global_batch().items()}
    with torch.no_grad():
        alone, _ = cocon_loss(forward_views(_models(), half, torch.device("cpu")), CFG)
    assert not torch.allclose(alone, loss)


def test_single_process_helpers(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = init_distributed()
    assert info == DistInfo(0, 1, 0, info.device, False)
    assert info.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert is_main_process()
    x = torch.randn(3, 2, requires_grad=True)
    assert all_gather_with_grad(x) is x
    seen: set[int] = set()
    assert first_occurrences(torch.tensor([0, 1]), seen).tolist() == [True, True]
    assert first_occurrences(torch.tensor([2, 0, 2]), seen).tolist() == [True, False, False] and seen == {0, 1, 2}
    model = nn.Linear(2, 2)
    assert unwrap(model) is model and unwrap(nn.DataParallel(model)) is model
    assert unwrap(nn.DataParallel(ReplicaInput(model, "imgs"))) is model and unwrap(ReplicaInput(model, "imgs")) is model
    assert process_seed(7) == 7 and mean_over_processes(0.25) == 0.25 and gather_objects("x") == ["x"]
    assert shard(3) == [0, 1, 2] and once_on_main(lambda a: a + 1, 1) == 2
    seed_everything(5)
    a = torch.rand(3)
    seed_everything(5)
    assert torch.equal(a, torch.rand(3))
    cleanup()


def test_bad_torchrun_environment(monkeypatch):
    monkeypatch.setenv("RANK", "x")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="RANK"):
        init_distributed()


def test_cudnn_autotuning_is_on_for_a_cuda_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    assert init_distributed().device == torch.device("cuda", 0)
    assert torch.backends.cudnn.benchmark  # the clip shapes repeat: training and evaluation autotune once


def test_process_group_waits_long_enough_for_rank_0(monkeypatch):
    joined = {}
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kwargs: joined.update(kwargs))
    init_distributed()
    # NCCL's default is 10 minutes; rank 0's probe and checkpoint writes must fit in the timeout.
    assert joined["backend"] == "gloo" and joined["timeout"] == PROCESS_GROUP_TIMEOUT >= datetime.timedelta(minutes=30)


def _scan(counter: list[int], fail: bool) -> str:
    counter.append(1)
    if fail:
        raise FileNotFoundError("views missing on disk")
    return "scanned"


def _helpers_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    init_distributed()
    try:
        finetune = load_script("finetune")
        loader = DataLoader(range(4), generator=torch.Generator())
        finetune.seed_epoch(loader, 3, 1)
        finetune_mask = F.dropout(torch.ones(64), 0.5)
        seed_everything(process_seed(3 + 1))  # the pretraining epoch's seed
        pretrain_mask = F.dropout(torch.ones(64), 0.5)
        calls: list[int] = []
        result = once_on_main(_scan, calls, False)
        try:
            once_on_main(_scan, calls, True)
            error = None
        except FileNotFoundError as err:
            error = str(err)
        torch.save({"finetune_mask": finetune_mask, "pretrain_mask": pretrain_mask, "calls": len(calls), "result": result,
                    "error": error, "mean": mean_over_processes(1.0 + rank), "gathered": gather_objects(rank * 10),
                    "shard": shard(5)}, os.path.join(out, f"helpers{rank}.pt"))
    finally:
        cleanup()


@pytest.mark.slow
def test_two_processes_draw_their_own_dropout_and_share_checks_and_metrics(tmp_path):
    mp.spawn(_helpers_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    r0, r1 = (torch.load(tmp_path / f"helpers{rank}.pt", weights_only=True) for rank in range(WORLD))
    # Dropout masks differ between processes (the same mask on every rank would drop the same units of every clip).
    assert not torch.equal(r0["finetune_mask"], r1["finetune_mask"])
    assert not torch.equal(r0["pretrain_mask"], r1["pretrain_mask"])
    # Rank 0 draws what a single process draws: single-process runs and published seeds are unchanged.
    seed_everything(4)
    assert torch.equal(r0["pretrain_mask"], F.dropout(torch.ones(64), 0.5))
    # The views-on-disk scan runs on rank 0 alone; its result and its error reach every process.
    assert (r0["calls"], r1["calls"]) == (2, 0)
    assert r0["result"] == r1["result"] == "scanned"
    assert r0["error"] == r1["error"] == "views missing on disk"
    # ReduceLROnPlateau steps on one value everywhere: the mean of the processes' values.
    assert r0["mean"] == r1["mean"] == 1.5
    assert r0["gathered"] == r1["gathered"] == [0, 10]
    assert (r0["shard"], r1["shard"]) == ([0, 2, 4], [1, 3])
