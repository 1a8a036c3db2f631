"""GPU check, ready for the day a GPU is lent: CoCon pretraining on every visible GPU.

    python bench/gpu_check.py                         # everything below (a few minutes)
    python bench/gpu_check.py --skip_runs --steps 5   # the throughput table only

On a machine without a CUDA device it says so and exits with status 0: there is nothing to check.

1. Throughput of one full training step (both encoders forward, CoCon loss, backward, Adam) at
   ``--img_dim`` (128) with resnet18 on imgs + flow, ``--batch_size`` clips per GPU, on random clips
   already on the GPU: on one GPU and through DataParallel on every visible GPU, in float32 and with
   ``--amp`` as the trainer sets it up (utils.precision: bf16 where the GPU has it, fp16 with a
   GradScaler under DataParallel; channels-last 3-D weights). Printed: clips/s, the step over the
   bare backbones' forward+backward in the same precision, and the peak memory of the busiest GPU.
2. Two short real runs of ``train/model_trainer.py --amp --debug`` on a tiny dataset written to a
   temporary folder: one process with DataParallel over every GPU, and
   ``torchrun --standalone --nproc_per_node <GPUs>`` (DDP over NCCL). Each must exit 0 and write its
   checkpoints; the wall time and the last lines of output are printed.

Everything is also written as JSON to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from train.losses import CoConLossConfig, cocon_loss
from train.model_3d import DPCRNN
from train.model_trainer import build_optimizer
from train.pretrain_loop import forward_views
from utils.augmentation import model_input
from utils.cli_options import HelpFormatter
from utils.precision import amp_dtype_for, describe_amp, grad_scaler, to_channels_last
from utils.views import VIEWS

REPO_ROOT = Path(__file__).resolve().parents[1]
CHECK_VIEWS = ("imgs", "flow")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    parser.add_argument("--net", default="resnet18", help="backbone of both views")
    parser.add_argument("--img_dim", type=int, default=128, help="RGB side in pixels (flow takes min(img_dim, 128))")
    parser.add_argument("--batch_size", type=int, default=16, help="clips per GPU")
    parser.add_argument("--num_seq", type=int, default=8, help="blocks per clip")
    parser.add_argument("--seq_len", type=int, default=5, help="frames per block")
    parser.add_argument("--pred_step", type=int, default=3, help="predicted blocks")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per configuration (the median is reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (cuDNN autotuning, allocator)")
    parser.add_argument("--skip_runs", action="store_true", help="only the throughput table, no trainer runs")
    parser.add_argument("--run_timeout", type=int, default=600, help="seconds allowed to each trainer run")
    parser.add_argument("--out", default=str(REPO_ROOT / "runs" / "gpu_check.json"), help="JSON file of the results")
    return parser


# ---------------------------------------------------------------- throughput


def gpu_inventory() -> list[dict]:
    """Name, memory and bf16 support of every visible CUDA device."""
    devices = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        devices.append({"index": i, "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                        "capability": f"{props.major}.{props.minor}"})
    if devices:
        devices[0]["bf16"] = torch.cuda.is_bf16_supported()
    return devices


def median_step_seconds(fn: Callable[[], None], steps: int, warmup: int, device: torch.device) -> float:
    """Median wall time of ``fn`` over ``steps`` calls after ``warmup``, waiting for the device each time."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build_views(args: argparse.Namespace, device: torch.device, n_gpu: int, amp: bool) -> dict:
    """Models (channels-last under ``amp``, DataParallel over ``n_gpu`` > 1), optimisers, scaler and a batch."""
    torch.manual_seed(0)
    sizes = {v: VIEWS[v].size(args.img_dim) for v in CHECK_VIEWS}
    amp_dtype = amp_dtype_for(amp, device, data_parallel=n_gpu > 1)
    models: dict[str, nn.Module] = {}
    for view in CHECK_VIEWS:
        model = DPCRNN(args.net, VIEWS[view].channels, sizes[view], args.seq_len, args.num_seq, args.pred_step).to(device)
        if amp_dtype is not None:
            to_channels_last(model)
        models[view] = nn.DataParallel(model) if n_gpu > 1 else model
    batch = {v: torch.randint(0, 256, (args.batch_size * n_gpu, args.num_seq, VIEWS[v].channels, args.seq_len, sizes[v],
                                       sizes[v]), dtype=torch.uint8, device=device) for v in CHECK_VIEWS}  # as loaders give
    optimizers = {v: build_optimizer(m, 1e-3, 1e-5, 1.0) for v, m in models.items()}
    return {"models": models, "optimizers": optimizers, "scaler": grad_scaler(amp_dtype, device), "batch": batch,
            "amp_dtype": amp_dtype}


def step_functions(parts: dict, device: torch.device) -> tuple[Callable[[], None], Callable[[], None]]:
    """A full training step, and the bare backbones' forward+backward in the same precision."""
    models, optimizers, scaler, batch, amp_dtype = (parts[k] for k in ("models", "optimizers", "scaler", "batch", "amp_dtype"))
    cfg = CoConLossConfig()

    def full_step() -> None:
        loss, _ = cocon_loss(forward_views(models, batch, device, amp_dtype), cfg)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        for opt in optimizers.values():
            scaler.step(opt) if scaler is not None else opt.step()
            opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.update()

    inputs = {v: model_input(x, v, device) for v, x in batch.items()}  # the bare backbones get the float made

    def bare_backbones() -> None:
        for view, model in models.items():
            backbone = model.module.backbone if isinstance(model, nn.DataParallel) else model.backbone
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                out = backbone(inputs[view].flatten(0, 1))
            out.float().sum().backward()
        for model in models.values():
            model.zero_grad(set_to_none=True)

    return full_step, bare_backbones


def bench_config(args: argparse.Namespace, device: torch.device, n_gpu: int, amp: bool) -> dict:
    """clips/s, step / bare backbone and peak memory per GPU of one configuration."""
    if device.type == "cuda":
        for i in range(n_gpu):
            torch.cuda.reset_peak_memory_stats(i)
    parts = build_views(args, device, n_gpu, amp)
    full_step, bare = step_functions(parts, device)
    step_s = median_step_seconds(full_step, args.steps, args.warmup, device)
    bare_s = median_step_seconds(bare, args.steps, args.warmup, device)
    peak = max((torch.cuda.max_memory_allocated(i) for i in range(n_gpu)), default=0) if device.type == "cuda" else 0
    clips = args.batch_size * n_gpu
    return {"gpus": n_gpu, "amp": describe_amp(parts["amp_dtype"], n_gpu > 1), "clips_per_s": clips / step_s,
            "step_s": step_s, "ratio": step_s / bare_s, "peak_gib": peak / 2**30}


# ---------------------------------------------------------------- trainer runs


def trainer_args(csv_root: Path, save_dir: Path, img_dim: int) -> list[str]:
    """Flags of a short ``--amp`` pretraining run on the tiny dataset (3 batches per epoch)."""
    return ["--dataset", "tiny", "--csv_root", str(csv_root), "--save_dir", str(save_dir), "--net", "resnet18",
            "--modalities", "imgs_flow", "--img_dim", str(img_dim), "--batch_size", "2", "--num_seq", "4",
            "--seq_len", "5", "--ds", "1", "--pred_step", "2", "--epochs", "1", "--debug", "--amp",
            "--num_workers", "2", "--ft_freq", "0", "--val_fraction", "0.3"]


def run_commands(csv_root: Path, save_dir: Path, n_gpu: int, img_dim: int) -> dict[str, list[str]]:
    """The two runs: DataParallel in one process, and torchrun with one process per GPU."""
    trainer = str(REPO_ROOT / "train" / "model_trainer.py")
    flags = trainer_args(csv_root, save_dir, img_dim)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n_gpu}", trainer]
    return {"dataparallel": [sys.executable, trainer, *flags, "--prefix", "dp"],
            "torchrun": [*torchrun, *flags, "--prefix", "ddp"]}


def run_trainer(command: list[str], save_dir: Path, prefix: str, timeout: int) -> dict:
    """Run one trainer command; it passes when it exits 0 and wrote a checkpoint of every view."""
    start = time.time()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as err:
        code, output = None, f"timed out after {timeout} s\n{err.stdout or ''}{err.stderr or ''}"
    checkpoints = sorted(p.name for p in save_dir.glob(f"{prefix}_*/model/*.pth.tar"))
    passed = code == 0 and all(any(name.startswith(f"mode_{v}_") for name in checkpoints) for v in CHECK_VIEWS)
    return {"passed": passed, "exit_code": code, "seconds": round(time.time() - start, 1), "checkpoints": checkpoints,
            "tail": output.strip().splitlines()[-8:]}


def trainer_runs(n_gpu: int, args: argparse.Namespace) -> dict:
    """Both trainer runs on a tiny dataset in a temporary folder."""
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from tiny_dataset import make_tiny_dataset

    tmp = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    try:
        # Enough videos for a batch of 2 clips per GPU after the hold-out, under DataParallel and DDP alike.
        csv_root = make_tiny_dataset(tmp / "data", videos_per_class=4 * n_gpu + 4, num_frames=24, views=CHECK_VIEWS)
        results = {}
        for name, command in run_commands(csv_root, tmp / "runs", n_gpu, args.img_dim).items():
            print(f"  running {name}: {' '.join(command[1:4])} …", flush=True)
            results[name] = run_trainer(command, tmp / "runs", "dp" if name == "dataparallel" else "ddp", args.run_timeout)
        return results
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- main


def report(results: dict, args: argparse.Namespace) -> None:
    """Print the throughput table and the runs' outcomes."""
    print(f"\n{args.net}, {'+'.join(CHECK_VIEWS)}, {args.img_dim} px, {args.batch_size} clips per GPU x "
          f"{args.num_seq} blocks x {args.seq_len} frames")
    print("| GPUs | precision | clips/s | step / bare backbone | peak memory (busiest GPU) |")
    print("|---:|---|---:|---:|---:|")
    for r in results["throughput"]:
        print(f"| {r['gpus']} | {r['amp']} | {r['clips_per_s']:.1f} | {r['ratio']:.2f} | {r['peak_gib']:.2f} GiB |")
    for name, run in results.get("runs", {}).items():
        verdict = "passed" if run["passed"] else f"FAILED (exit {run['exit_code']})"
        print(f"{name}: {verdict} in {run['seconds']} s; checkpoints {run['checkpoints']}")
        if not run["passed"]:
            print("  " + "\n  ".join(run["tail"]))


def main(args: argparse.Namespace) -> int:
    """Run the checks; return the exit status (0 also when there is no GPU to check)."""
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device is visible (torch.cuda.is_available() is False): nothing to check. "
              "Run it on a machine with a GPU; on this one, bench/bench_train.py measures the CPU.")
        return 0
    n_gpu = torch.cuda.device_count()
    device = torch.device("cuda:0")
    torch.backends.cudnn.benchmark = True
    results: dict = {"devices": gpu_inventory(), "args": vars(args), "throughput": []}
    print(f"{n_gpu} GPU(s): " + ", ".join(f"{d['name']} ({d['memory_gib']} GiB)" for d in results["devices"]))
    for gpus in sorted({1, n_gpu}):
        for amp in (False, True):
            results["throughput"].append(bench_config(args, device, gpus, amp))
            print(f"  {results['throughput'][-1]}", flush=True)
    if not args.skip_runs:
        results["runs"] = trainer_runs(n_gpu, args)
    report(results, args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"results written to {out}")
    return 0 if all(r["passed"] for r in results.get("runs", {}).values()) else 1


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
