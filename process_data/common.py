"""Helpers shared by the preprocessing scripts: atomic outputs, a parallel map, folder listings, tree
manifests, run summaries.

Every per-video output folder is built under a temporary sibling name and renamed into place
only when complete, so "the folder exists" means "the video is done" and a killed run can be
resumed by skipping existing folders. Since a skipped folder is trusted as it is, each output root
records how its tree is made (:func:`check_manifest`), and a run with other settings refuses to add to it.
"""
import contextlib
import fnmatch
import json
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

import cv2
import numpy as np
from tqdm import tqdm

from utils.errors import DataError, UsageError
from utils.files import atomic_write, is_disk_full, pid_alive, write_json
from utils.layout import FRAMES

T = TypeVar("T")
R = TypeVar("R")

VIDEO_EXTS = (".avi", ".mp4", ".mkv", ".webm", ".mov", ".mpg", ".mpeg", ".m4v", ".wmv", ".flv", ".3gp", ".ogv")
MANIFEST = "manifest.json"  # at the top of every output root: how its tree is made
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


def _write_bytes(path: Path, data: bytes) -> None:
    # The one raw write of the preprocessing outputs, named so that tests can fail it as a full disk would.
    with open(path, "wb") as f:
        f.write(data)


def write_image(path: Path, image: np.ndarray, params: Sequence[int] = ()) -> None:
    """Encode ``image`` by ``path``'s extension and write it.

    ``cv2.imwrite`` only returns False when the write fails, so a full disk would look like any other
    failure; here the file is written by Python and its ``OSError`` (``ENOSPC``) names the file.

    Args:
        path: the image file.
        image: ``[H, W]`` or ``[H, W, 3]`` uint8.
        params: OpenCV encoding parameters (``[cv2.IMWRITE_JPEG_QUALITY, 80]``).

    Raises:
        ValueError: OpenCV cannot encode the image.
        OSError: the write failed, naming ``path``.
    """
    ok, encoded = cv2.imencode(Path(path).suffix, image, list(params))
    if not ok:
        raise ValueError(f"cannot encode {path} ({image.shape} {image.dtype})")
    try:
        _write_bytes(path, encoded.tobytes())
    except OSError as err:
        if err.filename is None and err.errno is not None:
            raise OSError(err.errno, os.strerror(err.errno), str(path)) from err
        raise


def _call(fn: Callable[[T], R], item: T) -> R | Exception:
    try:
        return fn(item)
    except Exception as exc:  # reported per item by the caller, so one bad video stops nothing
        if is_disk_full(exc):  # ...but a full disk fails every later one too: the run stops
            raise
        return exc


def parallel_map(fn: Callable[[T], R], items: Sequence[T], workers: int, desc: str) -> list[R | Exception]:
    """Apply `fn` to every item, in a (spawned) process pool when `workers > 1`, with a tqdm bar.

    An exception raised by `fn` for one item is caught and returned in that item's slot, so
    callers test `isinstance(result, Exception)`; the other items still run. If the pool itself
    breaks (a worker killed by a signal), the items it did not finish get that error. A full disk
    or quota (``ENOSPC``, ``EDQUOT``) is raised instead: every later item would fail the same way.
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
        with tqdm(items, desc=desc) as bar:  # closed (its line ended) before an error is printed
            return [_call(fn, item) for item in bar]
    results: list[R | Exception | None] = [None] * len(items)
    # spawn, not fork: a child forked after OpenCV or torch started their thread pools can deadlock
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=ctx,
                             initializer=_exit_with_parent, initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(_call, fn, item): i for i, item in enumerate(items)}
        with tqdm(as_completed(futures), total=len(futures), desc=desc) as bar:
            for fut in bar:
                try:
                    results[futures[fut]] = fut.result()
                except Exception as exc:  # a broken pool, or a result or error that could not be pickled back
                    if is_disk_full(exc):
                        pool.shutdown(wait=True, cancel_futures=True)
                        raise
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


def _describe(settings: dict) -> str:
    return ", ".join(f"{key} {value}" for key, value in settings.items())


def check_manifest(root: Path, settings: dict, made_by: str, versions: dict, advice: str) -> None:
    """Refuse to add to a tree made with other settings; record this run's settings in ``<root>/manifest.json``.

    Called before a run writes its first video. A tree without a manifest (made by an earlier version, or
    by hand) is taken as it is, with a note, and gets this run's manifest; an empty or new root gets it too.
    The manifest is ``{"settings", "made_by", "versions"}``; only ``settings`` must match, versions are a record.

    Args:
        root: the output root (frame, flow, heatmaps or segmasks tree).
        settings: what decides the files' content (method, size, preset, ...), JSON values.
        made_by: the script writing it.
        versions: the libraries that compute the files (``{"opencv": "4.10.0"}``).
        advice: how to write elsewhere (``"pass another --flow_root"``).

    Raises:
        UsageError: the manifest records other settings; naming the root, both settings and what to do.
        DataError: the manifest is not readable JSON.
    """
    path = Path(root) / MANIFEST
    if path.is_file():
        try:
            recorded = json.loads(path.read_text()).get("settings", {})
        except (ValueError, AttributeError) as err:
            raise DataError(f"{path} is not a manifest of this project ({err}): restore it, or remove it to take "
                            f"{root} as it is") from err
        if recorded != settings:
            recorded = {**{k: recorded[k] for k in settings if k in recorded}, **recorded}  # in this run's order
            raise UsageError(
                f"{root} holds a tree made with {_describe(recorded)}; this run asks for {_describe(settings)}: the two "
                f"would mix in one tree. {advice[0].upper()}{advice[1:]}, or remove {root} to make it again"
            )
        return
    existing = list_video_dirs(root) if Path(root).is_dir() else []
    if existing:
        print(f"note: {root} has no {MANIFEST} (made before trees recorded their settings): its {len(existing)} "
              f"finished videos are kept as they are and taken as made with {_describe(settings)}", file=sys.stderr)
    write_json(path, {"settings": settings, "made_by": made_by, "versions": versions})


def other_files(video_root: Path, exts: Sequence[str] = VIDEO_EXTS) -> list[Path]:
    """The files in `<video_root>/<class>/` that :func:`list_videos` leaves out (not a known video extension), sorted."""
    exts = tuple(e.lower() for e in exts)
    return sorted(
        p for p in Path(video_root).glob("*/*")
        if p.is_file() and not p.name.startswith(".") and not p.parent.name.startswith(".")
        and p.suffix.lower() not in exts
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
