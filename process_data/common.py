"""Helpers shared by the preprocessing scripts: atomic outputs, a parallel map, folder listings, run summaries.

Every per-video output folder is built under a temporary sibling name and renamed into place
only when complete, so "the folder exists" means "the video is done" and a killed run can be
resumed by skipping existing folders.
"""
import contextlib
import fnmatch
import multiprocessing
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import TypeVar

from tqdm import tqdm

from utils.files import atomic_write, pid_alive
from utils.layout import FRAMES

T = TypeVar("T")
R = TypeVar("R")

VIDEO_EXTS = (".avi", ".mp4", ".mkv", ".webm")
_TMP_TAG = ".tmp-"
_SHOW_FAILURES = 5  # failures printed at the end of a run; failed.txt has them all
_PARENT_POLL_S = 0.2  # how often a pool worker checks that the run that started it is alive


def _temp_name(final: Path, pid: int) -> Path:
    return final.with_name(f".{final.name}{_TMP_TAG}{pid}")


def clean_stale_temps(final: Path) -> list[Path]:
    """Remove temporary siblings of `final` left by runs that are no longer alive.

    Args:
        final: the output path whose `.<name>.tmp-<pid>` siblings are checked.
    Returns:
        the removed paths.
    """
    removed = []
    if not final.parent.is_dir():
        return removed
    for tmp in final.parent.glob(f".{final.name}{_TMP_TAG}*"):
        pid_text = tmp.name.rsplit(_TMP_TAG, 1)[1]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and pid_alive(int(pid_text)):
            continue  # another live run is writing it
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp)
        else:
            tmp.unlink()
        removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield an empty temporary sibling folder that becomes `final` when the block succeeds.

    The temporary folder is `.<name>.tmp-<pid>` next to `final`; stale ones left by killed runs
    are removed first. On an exception the temporary folder is deleted and the exception re-raised.

    Args:
        final: the folder to create; it must not exist yet.
    Raises:
        FileExistsError: `final` already exists.
    """
    final = Path(final)
    if final.exists():
        raise FileExistsError(f"{final} already exists; refusing to overwrite a finished output")
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(final)
    tmp = _temp_name(final, os.getpid())
    tmp.mkdir()
    try:
        yield tmp
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (:func:`utils.files.atomic_write`).

    Args:
        path: destination file; its parent folder is created if needed.
        text: the full file content.
    """
    atomic_write(path, text)


def _exit_with_parent(parent: int) -> None:
    """Pool-worker initializer: end the worker once the run that started it is gone.

    A run killed with SIGKILL cannot stop its workers, which would otherwise go on writing outputs.

    Args:
        parent: the pid of the process that starts the pool.
    """
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _call(fn: Callable[[T], R], item: T) -> R | Exception:
    try:
        return fn(item)
    except Exception as exc:  # reported per item by the caller, so one bad video stops nothing
        return exc


def parallel_map(fn: Callable[[T], R], items: Sequence[T], workers: int, desc: str) -> list[R | Exception]:
    """Apply `fn` to every item, in a (spawned) process pool when `workers > 1`, with a tqdm bar.

    An exception raised by `fn` for one item is caught and returned in that item's slot, so
    callers test `isinstance(result, Exception)`; the other items still run. If the pool itself
    breaks (a worker killed by a signal), the items it did not finish get that error.
    With workers, `fn` and its arguments are pickled to spawned processes.

    Args:
        fn: a picklable (module-level) function of one item.
        items: the inputs.
        workers: number of processes; 1 or less runs in this process.
        desc: label of the progress bar.
    Returns:
        one result (or exception) per item, in the order of `items`.
    """
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [_call(fn, item) for item in tqdm(items, desc=desc)]
    results: list[R | Exception | None] = [None] * len(items)
    # spawn, not fork: a child forked after OpenCV or torch started their thread pools can deadlock
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=ctx,
                             initializer=_exit_with_parent, initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(_call, fn, item): i for i, item in enumerate(items)}
        for fut in tqdm(as_completed(futures), total=len(futures), desc=desc):
            try:
                results[futures[fut]] = fut.result()
            except Exception as exc:  # a broken pool, or a result or error that could not be pickled back
                results[futures[fut]] = exc
    return results


def list_videos(video_root: Path, exts: Sequence[str] = VIDEO_EXTS) -> list[Path]:
    """List video files laid out as `<video_root>/<class>/<video>.<ext>`, sorted.

    Args:
        video_root: folder of class folders.
        exts: accepted file extensions (lower case, with the dot); matched case-insensitively.
    Raises:
        FileNotFoundError: `video_root` is not a folder.
    """
    video_root = Path(video_root)
    if not video_root.is_dir():
        raise FileNotFoundError(f"video root {video_root} is not a folder (expected <root>/<class>/<video>)")
    exts = tuple(e.lower() for e in exts)
    return sorted(
        p for p in video_root.glob("*/*")
        if p.is_file() and not p.name.startswith(".") and not p.parent.name.startswith(".")
        and p.suffix.lower() in exts
    )


def list_video_dirs(frame_root: Path) -> list[Path]:
    """List per-video folders laid out as `<frame_root>/<class>/<video>/`, sorted, skipping hidden (temporary) ones.

    Args:
        frame_root: folder of class folders.
    Raises:
        FileNotFoundError: `frame_root` is not a folder.
    """
    frame_root = Path(frame_root)
    if not frame_root.is_dir():
        raise FileNotFoundError(f"frame root {frame_root} is not a folder (expected <root>/<class>/<video>/)")
    return sorted(
        p for p in frame_root.glob("*/*")
        if p.is_dir() and not p.name.startswith(".") and not p.parent.name.startswith(".")
    )


def count_frames(video_dir: Path, pattern: str = FRAMES.glob) -> int:
    """Number of files matching `pattern` (default `image_*.jpg`) in `video_dir`; 0 if it does not exist.

    Args:
        video_dir: one video's frame folder.
        pattern: glob of the files to count.
    """
    try:
        return sum(1 for e in os.scandir(video_dir) if fnmatch.fnmatchcase(e.name, pattern))
    except (FileNotFoundError, NotADirectoryError):
        return 0


def short_side_size(height: int, width: int, dim: int) -> tuple[int, int]:
    """(h, w) of a `height` x `width` image resized to short side `dim`, keeping the aspect ratio.

    Args:
        height: image height in pixels.
        width: image width in pixels.
        dim: target short side in pixels.
    Raises:
        ValueError: a size is not positive.
    """
    if height < 1 or width < 1 or dim < 1:
        raise ValueError(f"sizes must be positive, got a {height}x{width} image and short side {dim}")
    scale = dim / min(height, width)
    return (dim, max(1, round(width * scale))) if height <= width else (max(1, round(height * scale)), dim)


def write_failed_list(out_root: Path, failures: Sequence[tuple[str, str]]) -> Path:
    """Write `<out_root>/failed.txt` atomically, one `<name>\\t<reason>` line per failure (empty when none).

    Args:
        out_root: output root of the run.
        failures: (item name, one-line reason) pairs.
    """
    lines = "".join(f"{name}\t{' '.join(str(reason).split())}\n" for name, reason in failures)
    path = Path(out_root) / "failed.txt"
    atomic_write_text(path, lines)
    return path


def finish_run(name: str, out_root: Path, failures: Sequence[tuple[str, str]], done: int, skipped: int,
               **totals: int) -> dict:
    """End a preprocessing run: write `<out_root>/failed.txt`, print the first failures and a summary line.

    Args:
        name: the script's label in the summary line.
        out_root: folder that gets `failed.txt` (created if needed).
        failures: (item name, reason) pairs.
        done: items processed by this run.
        skipped: items already finished by an earlier run.
        totals: extra counts (e.g. `frames=1234`), printed after `done` and returned.
    Returns:
        `{"done", "skipped", "failed", **totals}`.
    """
    failed_path = write_failed_list(out_root, failures)
    for item, reason in failures[:_SHOW_FAILURES]:
        print(f"failed: {item}: {reason}", file=sys.stderr)
    extra = f" ({', '.join(f'{n} {k}' for k, n in totals.items())})" if totals else ""
    listed = f" (listed in {failed_path})" if failures else ""
    print(f"{name}: done {done}{extra}, skipped {skipped}, failed {len(failures)}{listed}")
    return {"done": done, "skipped": skipped, "failed": len(failures), **totals}
