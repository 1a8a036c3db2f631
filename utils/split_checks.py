"""Checks of the videos a run trains and evaluates on, which warn loudly where a result would look better
(or worse) than it is: test videos that are also training videos, repeated rows, classes with no training or
gallery video, and a validation set too small to choose a best checkpoint on.

Nothing here reads more than the first frame file of each video; nothing imports torch.
"""
from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from utils.layout import FRAMES
from utils.video_index import VideoEntry

log = logging.getLogger("cocon.data")

_SHOWN = 3  # examples named in a warning


def _examples(items: Sequence[object]) -> str:
    shown = ", ".join(str(item) for item in list(items)[:_SHOWN])
    return shown + (", …" if len(items) > _SHOWN else "")


def repeated_videos(entries: Sequence[VideoEntry], what: str) -> int:
    """Warn when a list names a video more than once (each repeat weighs it once more); returns the repeats."""
    counts = Counter(str(entry.frame_dir) for entry in entries)
    repeated = [video for video, n in counts.items() if n > 1]
    extra = sum(counts[video] - 1 for video in repeated)
    if extra:
        log.warning("%s: %d rows repeat a video listed before (%s): each repeat counts the video again; rerun "
                    "process_data/write_csv.py", what, extra, _examples(repeated))
    return extra


def first_frame_hash(frame_dir: Path) -> str | None:
    """SHA-1 of a video's first frame file, or ``None`` where it cannot be read."""
    try:
        return hashlib.sha1((Path(frame_dir) / FRAMES.name(1)).read_bytes()).hexdigest()
    except OSError:
        return None


def leaked_test_videos(train: Sequence[VideoEntry], test: Sequence[VideoEntry], what: str) -> int:
    """Warn when test videos are training videos too: the same folder, or the same first frame file (a copy,
    a re-cut or a renamed folder). Returns how many test videos are.

    Args:
        train: the training (or gallery) videos.
        test: the test (query) videos.
        what: the evaluation, for the message.
    """
    train_paths = {str(e.frame_dir) for e in train}
    by_path = [str(e.frame_dir) for e in test if str(e.frame_dir) in train_paths]
    train_hashes = {h for h in map(first_frame_hash, (e.frame_dir for e in train)) if h is not None}
    by_content = [str(e.frame_dir) for e in test
                  if str(e.frame_dir) not in train_paths and first_frame_hash(e.frame_dir) in train_hashes]
    leaked = len(by_path) + len(by_content)
    if leaked:
        log.warning("%s: %d of %d test videos are also training videos (%d by path, %d with the same first frame: %s); "
                    "the scores measure memory, not generalisation: write the lists again with process_data/write_csv.py "
                    "(it splits by source video)", what, leaked, len(test), len(by_path), len(by_content),
                    _examples(by_path + by_content))
    return leaked


def classes_without_videos(entries: Sequence[VideoEntry], class_names: Sequence[str], role: str, what: str) -> list[str]:
    """Warn about classes of ``classInd.txt`` with no video in ``entries``; returns their names.

    Args:
        entries: the training (or gallery) videos.
        class_names: every class.
        role: what the videos are for (``"training"``, ``"gallery"``).
        what: the evaluation, for the message.
    """
    present = {entry.label for entry in entries}
    missing = [name for i, name in enumerate(class_names) if i not in present]
    if missing:
        log.warning("%s: %d of %d classes have no %s video (%s): their test videos cannot be recognised, which "
                    "lowers the scores; add videos of these classes to the train list", what, len(missing),
                    len(class_names), role, _examples(missing))
    return missing


def small_validation(count: int, what: str) -> bool:
    """Warn when fewer than 2 validation videos would choose the best checkpoint; returns whether it warned."""
    if count >= 2:
        return False
    log.warning("%s: %d validation video%s: the 'best' checkpoint would be chosen on %s; raise --val_fraction or add "
                "videos per class", what, count, "" if count == 1 else "s", "one video" if count else "nothing")
    return True
