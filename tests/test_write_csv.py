"""process_data/write_csv.py on split files and frame trees written by the test."""
from pathlib import Path

import pytest

from process_data import write_csv
from utils import layout
from utils.layout import FRAMES


def make_video(frame_root: Path, rel: str, n: int) -> Path:
    d = frame_root / rel
    d.mkdir(parents=True)
    for i in range(1, n + 1):
        (d / FRAMES.name(i)).write_bytes(b"")
    return d


def run(tmp_path: Path, *argv: str) -> dict:
    args = write_csv.get_args_parser().parse_args([*argv, "--out", str(tmp_path / "out")])
    return write_csv.main(args)


def read(tmp_path: Path, name: str) -> list[str]:
    return (tmp_path / "out" / name).read_text().splitlines()


@pytest.fixture
def ucf(tmp_path):
    frame = tmp_path / "ucf" / "frame"
    make_video(frame, "ApplyLipstick/v_ApplyLipstick_g01_c01", 50)
    make_video(frame, "ApplyLipstick/v_ApplyLipstick_g02_c01", 30)
    make_video(frame, "Archery/v_Archery_g01_c01", 45)
    make_video(frame, "Archery/v_Archery_g02_c01", 0)  # extraction produced nothing
    splits = tmp_path / "ucf" / "splits"
    splits.mkdir()
    (splits / "classInd.txt").write_text("1 ApplyLipstick\n2 Archery\n")
    (splits / "trainlist01.txt").write_text(
        "ApplyLipstick/v_ApplyLipstick_g01_c01.avi 1\r\nArchery/v_Archery_g01_c01.avi 2\r\n")
    (splits / "testlist01.txt").write_text(
        "ApplyLipstick/v_ApplyLipstick_g02_c01.avi\nArchery/v_Archery_g02_c01.avi\n"
        "Archery/v_Archery_g07_c03.avi\nArchery/v_Archery_g08_c01.avi\n")
    return frame.resolve(), splits


def test_ucf_rows_class_ind_and_reports(ucf, tmp_path, capsys):
    frame, splits = ucf
    stats = run(tmp_path, "--dataset", "ucf101", "--frame_root", str(frame), "--split_root", str(splits))
    assert read(tmp_path, "train_split01.csv") == [
        f"{frame}/ApplyLipstick/v_ApplyLipstick_g01_c01,50", f"{frame}/Archery/v_Archery_g01_c01,45"]
    assert read(tmp_path, "test_split01.csv") == [f"{frame}/ApplyLipstick/v_ApplyLipstick_g02_c01,30"]
    assert read(tmp_path, "classInd.txt") == ["1 ApplyLipstick", "2 Archery"]
    assert stats["test_split01.csv"] == {"rows": 1, "missing": 2, "empty": 1, "short": 1}
    assert stats["train_split01.csv"] == {"rows": 2, "missing": 0, "empty": 0, "short": 0}
    out = capsys.readouterr().out
    assert "test_split01.csv: 2 videos listed but missing" in out and "Archery/v_Archery_g07_c03" in out
    assert "1 videos with no image_*.jpg frame, left out; first: Archery/v_Archery_g02_c01" in out
    assert "1 videos with fewer than 40 frames (kept)" in out
    assert not (tmp_path / "out" / "train_split02.csv").exists()


def test_ucf_label_mismatch_and_unknown_class_raise(ucf, tmp_path):
    frame, splits = ucf
    (splits / "trainlist01.txt").write_text("Archery/v_Archery_g01_c01.avi 1\n")
    with pytest.raises(ValueError, match=r"trainlist01.txt:1: label 1 disagrees"):
        run(tmp_path, "--dataset", "ucf101", "--frame_root", str(frame), "--split_root", str(splits))
    (splits / "trainlist01.txt").write_text("Bowling/v_Bowling_g01_c01.avi\n")
    with pytest.raises(ValueError, match="'Bowling' is not in classInd"):
        run(tmp_path, "--dataset", "ucf101", "--frame_root", str(frame), "--split_root", str(splits))


def test_ucf_class_index_missing_or_malformed(ucf, tmp_path):
    frame, splits = ucf
    argv = ("--dataset", "ucf101", "--frame_root", str(frame), "--split_root", str(splits))
    (splits / "classInd.txt").write_text("1 ApplyLipstick\n3 Archery\n")
    with pytest.raises(ValueError, match="classInd.txt: class ids must be 1..2"):
        run(tmp_path, *argv)
    (splits / "classInd.txt").write_text("ApplyLipstick\n")
    with pytest.raises(ValueError, match="classInd.txt:1: expected"):
        run(tmp_path, *argv)
    (splits / "classInd.txt").unlink()
    with pytest.raises(FileNotFoundError, match="--split_root .* has no classInd.txt"):
        run(tmp_path, *argv)


def test_synthetic_defaults_split_root_next_to_frames(ucf, tmp_path):
    frame, _ = ucf  # <tmp>/ucf/frame with <tmp>/ucf/splits beside it
    stats = run(tmp_path, "--dataset", "synthetic", "--frame_root", str(frame))
    assert set(stats) == {"train_split01.csv", "test_split01.csv"}
    with pytest.raises(ValueError, match="--split_root is required"):
        run(tmp_path, "--dataset", "ucf101", "--frame_root", str(frame))


def test_hmdb_split_files(tmp_path):
    frame = (tmp_path / "frame").resolve()
    for rel, n in [("brush_hair/bh_a", 60), ("brush_hair/bh_b", 61), ("brush_hair/bh_c", 62),
                   ("cartwheel/cw_a", 70), ("cartwheel/cw_b", 71)]:
        make_video(frame, rel, n)
    splits = tmp_path / "testTrainMulti_7030_splits"
    splits.mkdir()
    (splits / "brush_hair_test_split1.txt").write_text("bh_a.avi 1 \nbh_b.avi 2 \nbh_c.avi 0 \n")
    (splits / "cartwheel_test_split1.txt").write_text("cw_a.avi 1 \ncw_b.avi 2 \n")
    (splits / "brush_hair_test_split2.txt").write_text("bh_a.avi 2 \nbh_b.avi 1 \nbh_c.avi 1 \n")
    (splits / "cartwheel_test_split2.txt").write_text("cw_a.avi 2 \ncw_b.avi 1 \n")
    run(tmp_path, "--dataset", "hmdb51", "--frame_root", str(frame), "--split_root", str(splits))
    assert read(tmp_path, "train_split01.csv") == [f"{frame}/brush_hair/bh_a,60", f"{frame}/cartwheel/cw_a,70"]
    assert read(tmp_path, "test_split01.csv") == [f"{frame}/brush_hair/bh_b,61", f"{frame}/cartwheel/cw_b,71"]
    assert read(tmp_path, "train_split02.csv") == [
        f"{frame}/brush_hair/bh_b,61", f"{frame}/brush_hair/bh_c,62", f"{frame}/cartwheel/cw_b,71"]
    assert read(tmp_path, "classInd.txt") == ["1 brush_hair", "2 cartwheel"]
    (splits / "cartwheel_test_split1.txt").write_text("cw_a.avi train\n")
    with pytest.raises(ValueError, match=r"cartwheel_test_split1.txt:1: expected"):
        run(tmp_path, "--dataset", "jhmdb", "--frame_root", str(frame), "--split_root", str(splits))


def test_kinetics_train_val(tmp_path):
    frame = (tmp_path / "frame").resolve()
    make_video(frame, "train/air drumming/k1", 90)
    make_video(frame, "train/abseiling/k2", 80)
    make_video(frame, "val/abseiling/k3", 70)
    run(tmp_path, "--dataset", "kinetics400", "--frame_root", str(frame))
    assert read(tmp_path, "train_split.csv") == [f"{frame}/train/abseiling/k2,80", f"{frame}/train/air drumming/k1,90"]
    assert read(tmp_path, "val_split.csv") == [f"{frame}/val/abseiling/k3,70"]
    assert read(tmp_path, "classInd.txt") == ["1 abseiling", "2 air drumming"]


def test_folder_mode_is_stratified_and_seeded(tmp_path):
    frame = (tmp_path / "frame").resolve()
    every = set()
    for c in ("cat", "dog", "eel"):
        for v in range(10):
            every.add(str(make_video(frame, f"{c}/{c}{v}", 41 + v)))
    make_video(frame, "dog/dog_empty", 0)

    def split(seed: int) -> tuple[list[str], list[str]]:
        run(tmp_path, "--dataset", "folder", "--frame_root", str(frame), "--seed", str(seed))
        return read(tmp_path, "train_split01.csv"), read(tmp_path, "test_split01.csv")

    train, test = split(0)
    assert split(0) == (train, test)
    assert split(1) != (train, test)
    train_dirs, test_dirs = {r.rsplit(",", 1)[0] for r in train}, {r.rsplit(",", 1)[0] for r in test}
    assert train_dirs.isdisjoint(test_dirs) and train_dirs | test_dirs == every
    for c in ("cat", "dog", "eel"):
        assert sum(Path(d).parent.name == c for d in test_dirs) == 3  # round(10 * 0.3)
        assert sum(Path(d).parent.name == c for d in train_dirs) == 7
    assert read(tmp_path, "classInd.txt") == ["1 cat", "2 dog", "3 eel"]


def test_default_out_is_where_the_loaders_look(tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "DEFAULT_CSV_ROOT", tmp_path / "lists")
    for video in ("cat/v1", "cat/v2", "dog/v1", "dog/v2"):
        make_video(tmp_path / "frame", video, 3)
    monkeypatch.chdir(tmp_path / "frame")
    write_csv.main(write_csv.get_args_parser().parse_args(["--dataset", "folder", "--frame_root", str(tmp_path / "frame")]))
    assert (layout.resolve_csv_root(None, "folder") / "classInd.txt").read_text() == "1 cat\n2 dog\n"


def test_a_list_that_would_be_empty_replaces_no_file(tmp_path):
    frame = (tmp_path / "frame").resolve()
    make_video(frame, "cat/cat0", 30)
    make_video(frame, "dog/dog0", 30)  # one video per class: nothing can go to test
    out = tmp_path / "out"
    out.mkdir()
    earlier = {name: f"{name} of an earlier run\n" for name in ("train_split01.csv", "test_split01.csv", "classInd.txt")}
    for name, text in earlier.items():
        (out / name).write_text(text)
    with pytest.raises(ValueError, match=r"test_split01.csv would be empty: .*two videos .*nothing was written to"):
        run(tmp_path, "--dataset", "folder", "--frame_root", str(frame))
    assert {p.name: p.read_text() for p in out.iterdir()} == earlier
