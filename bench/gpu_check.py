"""GPU check, ready for the day a GPU is lent: one run (under 8 minutes on 1 to 8 GPUs) checks what the review
of the CUDA, DataParallel and DDP paths could only check on a CPU, and prints one table.

    python bench/gpu_check.py               # everything below
    python bench/gpu_check.py --skip_runs   # the throughput rows only

On a machine without a CUDA device it says so and exits with status 0: there is nothing to check.

What it checks:
1. Throughput rows, pretraining (imgs + flow encoders, CoCon loss) and fine-tuning (the action classifier,
   cross-entropy): one full step (forward, loss, backward, Adam) through the trainers' own wrapper
   (utils.distributed.wrap_model) on one GPU and with DataParallel over every visible GPU, in float32,
   bf16 (where the GPU computes it natively) and fp16 with a GradScaler. The uint8 batch comes from pinned
   host memory, as the loaders hand it over. Columns:
   - clips/s (median step);
   - peak memory of GPU 0 and of the busiest other GPU: under DataParallel GPU 0 should hold little more
     than the others, since every replica builds its own float share of the batch;
   - channels-last: the GPUs whose replica fed its first convolution a channels-last input, of those used
     (every one under --amp; float32 keeps the default layout);
   - the loader's clips/s with the default --num_workers, on JPEG frames of --frame_height px, and whether
     the step is loader-bound (the loader is slower than the step).
2. Run rows: short real runs of train/model_trainer.py (--debug) and test/finetune.py (one epoch, then the
   test) with --amp on a tiny dataset: on GPU 0 alone (--gpu 0), with DataParallel over every GPU in one
   process, and under torchrun --nproc_per_node <GPUs> (DDP over NCCL). Each must exit 0, write one
   experiment folder with one log line per epoch (rank 0 alone writes) and its checkpoints, and, for
   fine-tuning, a test report of every test video.
cuDNN autotuning is on, as the trainers set it (utils.distributed.tune_device). Rows that would not fit in
--budget seconds are reported as skipped. Everything is also written as JSON to --out.
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
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from train.losses import CoConLossConfig, cocon_loss
from train.model_3d import DPCRNN
from train.model_trainer import build_optimizer
from train.pretrain_loop import forward_views
from utils.cli_options import HelpFormatter, default_num_workers
from utils.distributed import DistInfo, feed, tune_device, unwrap, wrap_model
from utils.precision import cuda_has_bf16, describe_amp, grad_scaler, to_channels_last
from utils.video_data import MultiViewClipDataset
from utils.video_index import VideoEntry
from utils.views import VIEWS

REPO_ROOT = Path(__file__).resolve().parents[1]
for folder in ("test", "bench"):  # the classifier lives with the evaluation scripts; the JPEG writer with the loader bench
    if str(REPO_ROOT / folder) not in sys.path:
        sys.path.append(str(REPO_ROOT / folder))
from action_classifier import ActionClassifier  # noqa: E402
from bench_loader import write_video  # noqa: E402

TASK_VIEWS = {"pretrain": ("imgs", "flow"), "finetune": ("imgs",)}
PRECISIONS = {"float32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
NUM_CLASSES = 101
MIN_RUN_SECONDS = 45  # a trainer run on the tiny dataset: start-up, CUDA and NCCL initialisation, one short epoch


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--net", default="resnet18", help="backbone of every view")
    parser.add_argument("--img_dim", type=int, default=128, help="RGB side in pixels (flow takes min(img_dim, 128))")
    parser.add_argument("--batch_size", type=int, default=16, help="clips per GPU")
    parser.add_argument("--num_seq", type=int, default=8, help="blocks per clip")
    parser.add_argument("--seq_len", type=int, default=5, help="frames per block")
    parser.add_argument("--ds", type=int, default=3, help="frame stride of the loader's clips")
    parser.add_argument("--pred_step", type=int, default=3, help="predicted blocks")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per throughput row (the median is reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (cuDNN autotuning, allocator)")
    parser.add_argument("--frame_height", type=int, default=240, help="height of the loader check's JPEG frames (4:3)")
    parser.add_argument("--loader_batches", type=int, default=6, help="loader batches timed (after the first)")
    parser.add_argument("--skip_runs", action="store_true", help="only the throughput rows, no trainer runs")
    parser.add_argument("--run_timeout", type=int, default=150,
                        help="seconds allowed to each trainer run (at most what is left of --budget)")
    parser.add_argument("--budget", type=int, default=450, help="seconds for the whole check; rows beyond it are skipped")
    parser.add_argument("--out", default=str(REPO_ROOT / "runs" / "gpu_check.json"), help="JSON file of the results")
    return parser


# ---------------------------------------------------------------- throughput


def gpu_inventory() -> list[dict]:
    """Name, memory, compute capability and native bf16 of every visible CUDA device."""
    devices = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        devices.append({"index": i, "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                        "capability": f"{props.major}.{props.minor}"})
    if devices:
        devices[0]["native_bf16"] = cuda_has_bf16()
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


def build_task(task: str, args: argparse.Namespace, device: torch.device, n_gpu: int,
               amp_dtype: torch.dtype | None) -> dict:
    """Models as the trainers wrap them (channels-last under autocast, DataParallel over ``n_gpu`` > 1), their
    Adam optimisers, the GradScaler of fp16 and a uint8 batch of ``batch_size × n_gpu`` clips in host memory."""
    torch.manual_seed(0)
    info = DistInfo(0, 1, 0, device, False)
    clips = args.batch_size * n_gpu
    models: dict[str, nn.Module] = {}
    for view in TASK_VIEWS[task]:
        size, channels = VIEWS[view].size(args.img_dim), VIEWS[view].channels
        if task == "pretrain":
            model = DPCRNN(args.net, channels, size, args.seq_len, args.num_seq, args.pred_step)
        else:
            model = ActionClassifier(args.net, channels, size, args.seq_len, args.num_seq, NUM_CLASSES)
        if amp_dtype is not None:
            to_channels_last(model)
        models[view] = wrap_model(model, view, info, n_gpu, amp_dtype)
    pin = device.type == "cuda"
    batch = {v: torch.randint(0, 256, (clips, args.num_seq, VIEWS[v].channels, args.seq_len, VIEWS[v].size(args.img_dim),
                                       VIEWS[v].size(args.img_dim)), dtype=torch.uint8) for v in TASK_VIEWS[task]}
    batch = {v: x.pin_memory() if pin else x for v, x in batch.items()}
    labels = torch.randint(0, NUM_CLASSES, (clips,))
    optimizers = {v: build_optimizer(m, 1e-3, 1e-5, 1.0) for v, m in models.items()}
    return {"models": models, "optimizers": optimizers, "scaler": grad_scaler(amp_dtype, device), "batch": batch,
            "labels": labels, "task": task}


def step_function(parts: dict, device: torch.device) -> Callable[[], None]:
    """One training step of the task: forward through the wrappers, float32 loss, backward, Adam."""
    models, optimizers, scaler, batch = (parts[k] for k in ("models", "optimizers", "scaler", "batch"))
    cfg = CoConLossConfig()

    def loss() -> torch.Tensor:
        if parts["task"] == "pretrain":
            return cocon_loss(forward_views(models, batch, device), cfg)[0]
        logits = feed(models["imgs"], batch["imgs"], "imgs", device).float()
        return F.cross_entropy(logits, parts["labels"].to(device))

    def step() -> None:
        value = loss()
        (scaler.scale(value) if scaler is not None else value).backward()
        for opt in optimizers.values():
            scaler.step(opt) if scaler is not None else opt.step()
            opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.update()

    return step


def record_first_conv_layouts(models: dict[str, nn.Module]) -> dict[str, bool]:
    """Record, per device, whether the first 3-D convolution of each model got a channels-last input.

    The hook is copied into every DataParallel replica with the module's other attributes, so every GPU reports.
    """
    seen: dict[str, bool] = {}

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0]
        seen[str(x.device)] = seen.get(str(x.device), True) and x.is_contiguous(memory_format=torch.channels_last_3d)

    for model in models.values():
        next(m for m in unwrap(model).modules() if isinstance(m, nn.Conv3d)).register_forward_pre_hook(hook)
    return seen


def bench_config(args: argparse.Namespace, device: torch.device, n_gpu: int, task: str, precision: str) -> dict:
    """One throughput row: clips/s, peak memory of GPU 0 and of the other GPUs, channels-last replicas."""
    amp_dtype = PRECISIONS[precision]
    if device.type == "cuda":
        torch.cuda.empty_cache()
        for i in range(n_gpu):
            torch.cuda.reset_peak_memory_stats(i)
    parts = build_task(task, args, device, n_gpu, amp_dtype)
    layouts = record_first_conv_layouts(parts["models"])
    step_s = median_step_seconds(step_function(parts, device), args.steps, args.warmup, device)
    peaks = [torch.cuda.max_memory_allocated(i) / 2**30 for i in range(n_gpu)] if device.type == "cuda" else [0.0]
    return {"check": f"{task} step", "mode": "DataParallel" if n_gpu > 1 else "one device", "gpus": n_gpu,
            "precision": describe_amp(amp_dtype), "clips_per_s": args.batch_size * n_gpu / step_s, "step_s": step_s,
            "gpu0_gib": peaks[0], "others_gib": max(peaks[1:], default=None),
            "channels_last": f"{sum(layouts.values())}/{len(layouts)}", "passed": True}


def loader_clips_per_s(args: argparse.Namespace, task: str, n_gpu: int, folder: Path) -> dict:
    """The training loader's clips/s with the default ``--num_workers`` for ``n_gpu`` GPUs in one process."""
    num_frames = args.num_seq * args.seq_len * args.ds + 8
    frame_dir = folder / "frame" / "c" / "v"
    if not frame_dir.exists():
        write_video(folder, num_frames, args.frame_height)
    views = TASK_VIEWS[task]
    entries = [VideoEntry(frame_dir, num_frames, 0)] * (args.batch_size * n_gpu * (args.loader_batches + 1))
    dataset = MultiViewClipDataset(entries, views, {v: VIEWS[v].size(args.img_dim) for v in views}, args.num_seq,
                                   args.seq_len, args.ds, train=True)
    workers = default_num_workers(n_gpu)
    loader = DataLoader(dataset, batch_size=args.batch_size * n_gpu, num_workers=workers, drop_last=True)
    batches = iter(loader)
    next(batches)  # workers started, first batch made
    start = time.perf_counter()
    clips = sum(len(batch["label"]) for batch in batches)
    return {"loader_clips_per_s": clips / (time.perf_counter() - start), "workers": workers}


# ---------------------------------------------------------------- trainer runs


def _clip_flags(img_dim: int) -> list[str]:
    return ["--dataset", "tiny", "--net", "resnet18", "--img_dim", str(img_dim), "--batch_size", "2", "--num_seq", "4",
            "--seq_len", "5", "--ds", "1", "--epochs", "1", "--amp", "--num_workers", "2", "--val_fraction", "0.3"]


def run_commands(csv_root: Path, save_dir: Path, n_gpu: int, img_dim: int) -> dict[str, list[str]]:
    """Pretraining and fine-tuning runs: on GPU 0 alone, DataParallel over every GPU, torchrun with one process per GPU."""
    scripts = {"pretrain": str(REPO_ROOT / "train" / "model_trainer.py"), "finetune": str(REPO_ROOT / "test" / "finetune.py")}
    extra = {"pretrain": ["--modalities", "imgs_flow", "--pred_step", "2", "--debug", "--ft_freq", "1"],
             "finetune": ["--modality", "imgs", "--pretrain", "random"]}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n_gpu}"]
    commands = {}
    for task, script in scripts.items():
        flags = [*_clip_flags(img_dim), "--csv_root", str(csv_root), "--save_dir", str(save_dir), *extra[task]]
        commands[f"{task} one GPU"] = [sys.executable, script, *flags, "--gpu", "0", "--prefix", f"{task}-one"]
        if n_gpu > 1:
            commands[f"{task} DataParallel"] = [sys.executable, script, *flags, "--prefix", f"{task}-dp"]
        commands[f"{task} torchrun"] = [*torchrun, script, *flags, "--prefix", f"{task}-ddp"]
    return commands


def check_run_outputs(save_dir: Path, prefix: str, task: str, test_videos: int) -> list[str]:
    """What a finished run left that it should not have (empty: all as it should be)."""
    exps = sorted(save_dir.glob(f"{prefix}_*"))
    if len(exps) != 1:
        return [f"{len(exps)} experiment folders"]
    exp, problems = exps[0], []
    lines = (exp / "log.jsonl").read_text().splitlines() if (exp / "log.jsonl").exists() else []
    if len(lines) != 1:
        problems.append(f"{len(lines)} log lines for 1 epoch")
    views = TASK_VIEWS[task] if task == "finetune" else ("imgs", "flow")
    for view in views:
        if not (exp / "model" / f"mode_{view}_best.pth.tar").exists():
            problems.append(f"no mode_{view}_best.pth.tar")
    if task == "finetune":
        reports = list(exp.glob("eval/*/test_results.json"))
        if len(reports) != 1 or json.loads(reports[0].read_text())["num_videos"] != test_videos:
            problems.append(f"test report missing or not of all {test_videos} test videos")
    return problems


def run_trainer(name: str, command: list[str], save_dir: Path, timeout: int, test_videos: int, gpus: int) -> dict:
    """Run one command on ``gpus`` GPUs; it passes when it exits 0 and left exactly what :func:`check_run_outputs`
    expects."""
    task, prefix = name.split()[0], command[command.index("--prefix") + 1]
    start = time.time()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as err:
        code, output = None, f"timed out after {timeout} s\n{err.stdout or ''}{err.stderr or ''}"
    problems = check_run_outputs(save_dir, prefix, task, test_videos) if code == 0 else [f"exit {code}"]
    return {"check": f"{task} run", "mode": name.split(maxsplit=1)[1], "gpus": gpus, "precision": "--amp",
            "seconds": round(time.time() - start, 1), "passed": not problems, "problems": problems,
            "tail": output.strip().splitlines()[-8:]}


def trainer_runs(n_gpu: int, args: argparse.Namespace, deadline: float) -> list[dict]:
    """Every run of :func:`run_commands` on a tiny dataset in a temporary folder, while the budget lasts."""
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from tiny_dataset import make_tiny_dataset

    tmp = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    try:
        # Enough videos for 2 clips per GPU after the hold-out, under DataParallel and DDP alike.
        csv_root = make_tiny_dataset(tmp / "data", videos_per_class=4 * n_gpu + 4, num_frames=24, views=("imgs", "flow"))
        test_videos = len((csv_root / "test_split01.csv").read_text().splitlines())
        rows = []
        for name, command in run_commands(csv_root, tmp / "runs", n_gpu, args.img_dim).items():
            left = int(deadline - time.time())
            if left < MIN_RUN_SECONDS:
                rows.append({"check": f"{name.split()[0]} run", "mode": name.split(maxsplit=1)[1], "passed": None,
                             "problems": ["skipped: --budget"]})
                continue
            print(f"  running {name} …", flush=True)
            gpus = 1 if "one GPU" in name else n_gpu
            rows.append(run_trainer(name, command, tmp / "runs", min(args.run_timeout, left), test_videos, gpus))
        return rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- main


def _cell(value: object, fmt: str = "{}") -> str:
    return "–" if value is None else fmt.format(value)


def table(rows: list[dict]) -> str:
    """The one table of every row (throughput and runs)."""
    lines = ["| check | mode | GPUs | precision | clips/s | loader clips/s | loader-bound | GPU 0 peak | other GPUs "
             "peak | channels-last | result |", "|---|---|---:|---|---:|---:|---|---:|---:|---|---|"]
    for r in rows:
        loader = r.get("loader_clips_per_s")
        bound = None if loader is None or "clips_per_s" not in r else ("yes" if loader < r["clips_per_s"] else "no")
        result = {True: "passed", False: "FAILED", None: "skipped"}[r["passed"]]
        if r.get("problems"):
            result += ": " + "; ".join(r["problems"])
        elif "seconds" in r:
            result += f" in {r['seconds']} s"
        lines.append(
            f"| {r['check']} | {r['mode']} | {_cell(r.get('gpus'))} | {_cell(r.get('precision'))} | "
            f"{_cell(r.get('clips_per_s'), '{:.1f}')} | {_cell(loader, '{:.1f}')} | {_cell(bound)} | "
            f"{_cell(r.get('gpu0_gib'), '{:.2f} GiB')} | {_cell(r.get('others_gib'), '{:.2f} GiB')} | "
            f"{_cell(r.get('channels_last'))} | {result} |")
    return "\n".join(lines)


def throughput_rows(args: argparse.Namespace, n_gpu: int, deadline: float) -> list[dict]:
    """Every throughput row, each with the loader's rate for its task and GPU count."""
    device = torch.device("cuda:0")
    precisions = [p for p in PRECISIONS if p != "bf16" or cuda_has_bf16()]
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="gpu_check_loader_"))
    try:
        for gpus in sorted({1, n_gpu}):
            for task in TASK_VIEWS:
                loader = loader_clips_per_s(args, task, gpus, tmp)
                for precision in precisions:
                    if time.time() > deadline:
                        rows.append({"check": f"{task} step", "mode": "", "gpus": gpus, "precision": precision,
                                     "passed": None, "problems": ["skipped: --budget"]})
                        continue
                    rows.append({**bench_config(args, device, gpus, task, precision), **loader})
                    print(f"  {rows[-1]}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def main(args: argparse.Namespace) -> int:
    """Run the checks; return the exit status (0 also when there is no GPU to check)."""
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device is visible (torch.cuda.is_available() is False): nothing to check. "
              "Run it on a machine with a GPU; on this one, bench/bench_train.py measures the CPU.")
        return 0
    started = time.time()
    n_gpu = torch.cuda.device_count()
    tune_device(torch.device("cuda:0"))
    results: dict = {"devices": gpu_inventory(), "args": vars(args)}
    print(f"{n_gpu} GPU(s): " + ", ".join(f"{d['name']} ({d['memory_gib']} GiB, sm {d['capability']})" for d in results["devices"]))
    # The runs go last: the throughput rows leave them about MIN_RUN_SECONDS each.
    runs_share = 0 if args.skip_runs else len(run_commands(Path(), Path(), n_gpu, args.img_dim)) * MIN_RUN_SECONDS
    rows = throughput_rows(args, n_gpu, started + max(60, args.budget - runs_share))
    if not args.skip_runs:
        rows += trainer_runs(n_gpu, args, started + args.budget)
    results["rows"] = rows
    results["seconds"] = round(time.time() - started, 1)
    print(f"\n{args.net}, {args.img_dim} px, {args.batch_size} clips per GPU × {args.num_seq} blocks × {args.seq_len} frames; "
          f"{results['seconds']} s\n")
    print(table(rows))
    for row in rows:
        if row["passed"] is False and row.get("tail"):
            print(f"\n{row['check']} {row['mode']}:\n  " + "\n  ".join(row["tail"]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"results written to {out}")
    return 0 if all(r["passed"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
