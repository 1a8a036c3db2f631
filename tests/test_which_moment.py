"""bench/which_moment.py: its clips move a square of one colour by a few pixels per frame, and a short run
prints one table row per measurement."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import which_moment  # noqa: E402


def _square_centres(frames: np.ndarray) -> np.ndarray:
    """[T, 2] centre of the pixels that differ from the top-left corner's background, frames [T, 3, S, S]."""
    centres = []
    for frame in frames:
        foreground = np.argwhere(np.abs(frame - frame[:, :1, :1]).sum(axis=0) > 1e-6)
        assert len(foreground) == which_moment.SQUARE**2, "one whole square per frame"
        centres.append(foreground.mean(axis=0))
    return np.stack(centres)


def test_moving_squares_keep_their_colour_and_move_a_few_pixels_per_frame():
    clips = which_moment.moving_squares(np.random.default_rng(0), 3, 64)
    n, sl = which_moment.NUM_SEQ, which_moment.SEQ_LEN
    assert clips.shape == (3, n, 3, sl, 64, 64)
    frames = clips.permute(0, 1, 3, 2, 4, 5).reshape(3, n * sl, 3, 64, 64).numpy()
    colours = []
    for clip in frames:
        steps = np.linalg.norm(np.diff(_square_centres(clip), axis=0), axis=1)
        assert steps.max() <= 1.5 * np.sqrt(2) + 1  # at most 1.5 px per frame, plus integer placement
        assert steps.sum() > 0.5 * len(steps)  # and it keeps moving
        colours.append(clip.max(axis=(0, 2, 3)))
        assert np.allclose(clip.max(axis=(2, 3)), colours[-1])  # the same colour in every frame
    assert not np.allclose(colours[0], colours[1])


def test_a_short_run_prints_a_row_per_measurement(capsys):
    args = which_moment.get_args_parser().parse_args(
        ["--steps", "2", "--eval_every", "1", "--img_dim", "32", "--batch_size", "4"])
    which_moment.main(args)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split("|")[1].strip() for row in rows] == ["0", "1", "2"]
    assert rows[0].split("|")[2].strip() == "–"  # no step taken yet
    for row in rows[1:]:
        loss, clip, moment = (float(cell) for cell in row.split("|")[2:5])
        assert np.isfinite(loss) and 0 <= clip <= 1 and 0 <= moment <= 1
