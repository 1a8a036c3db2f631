"""process_data/write_csv.py on split files and frame trees written by the test."""
from pathlib import Path

import pytest

from process_data import write_csv
from utils import files, layout
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
    assert stats["test_split01.csv"] == {"rows": 1, "missing": 2, "empty": 1, "short": 1, "duplicate": 0, "in_train": 0}
    assert stats["train_split01.csv"] == {"rows": 2, "missing": 0, "empty": 0, "short": 0, "duplicate": 0}
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


@pytest.mark.parametrize("name, source", [
    ("v_Archery_g03_c02", "v_Archery_g03"), ("walk_c01", "walk"), ("walk-3", "walk"), ("walk_clip2", "walk"),
    ("walk_flip", "walk"), ("walk-3_mirror", "walk"), ("walk_c01_hflip", "walk"), ("cat0", "cat0"), ("42", "42"),
])
def test_source_key_strips_clip_and_mirror_suffixes(name, source):
    assert write_csv.source_key(name) == source


def test_folder_mode_keeps_the_clips_and_mirrors_of_one_source_in_one_set(tmp_path, capsys):
    # 3 sources per class, each cut into clips with a mirrored copy: a clip-level split would put one
    # source's clips (or a clip and its mirror) in both sets.
    frame = (tmp_path / "frame").resolve()
    for c in ("jump", "run"):
        for s in range(3):
            for clip in range(1, 4):
                make_video(frame, f"{c}/{c}{s}_c{clip:02d}", 40)
                make_video(frame, f"{c}/{c}{s}_c{clip:02d}_flip", 40)
    for seed in range(5):
        run(tmp_path, "--dataset", "folder", "--frame_root", str(frame), "--seed", str(seed))
        sets = {name: {Path(r.rsplit(",", 1)[0]).name for r in read(tmp_path, name)}
                for name in ("train_split01.csv", "test_split01.csv")}
        sources = {name: {write_csv.source_key(v) for v in videos} for name, videos in sets.items()}
        assert sources["train_split01.csv"].isdisjoint(sources["test_split01.csv"]), seed
        assert len(sets["test_split01.csv"]) == 12 and len(sets["train_split01.csv"]) == 24  # one source of 3 per class
    assert "36 videos from 6 sources" in capsys.readouterr().out


def test_folder_mode_group_regex_names_the_source(tmp_path, capsys):
    frame = (tmp_path / "frame").resolve()
    for c in ("jump", "run"):
        for s in range(4):
            for take in ("a", "b"):
                make_video(frame, f"{c}/{take}_{c}_cam{s}", 40)  # the source is the camera, not the take
    run(tmp_path, "--dataset", "folder", "--frame_root", str(frame), "--group", r"cam\d+")
    test = {Path(r.rsplit(",", 1)[0]).name for r in read(tmp_path, "test_split01.csv")}
    train = {Path(r.rsplit(",", 1)[0]).name for r in read(tmp_path, "train_split01.csv")}
    assert {n[2:] for n in test}.isdisjoint({n[2:] for n in train}) and len(test) == 4  # <class>_cam<s> per set


def test_folder_mode_warns_when_a_class_is_one_source(tmp_path, capsys):
    frame = (tmp_path / "frame").resolve()
    for clip in range(1, 4):
        make_video(frame, f"jump/jump_c{clip}", 40)
    for v in range(3):
        make_video(frame, f"run/run{v}", 40)
    run(tmp_path, "--dataset", "folder", "--frame_root", str(frame))
    assert not any("/jump/" in r for r in read(tmp_path, "test_split01.csv"))
    assert "class 'jump' has 3 non-empty video(s) from one source ('jump'); it cannot appear in both sets (pass --group" \
        in capsys.readouterr().out


def test_repeated_rows_are_kept_once_and_a_test_list_in_train_is_warned_about(ucf, tmp_path, capsys):
    frame, splits = ucf
    (splits / "trainlist01.txt").write_text(
        "ApplyLipstick/v_ApplyLipstick_g01_c01.avi 1\nApplyLipstick/v_ApplyLipstick_g01_c01.avi 1\n"
        "ApplyLipstick/v_ApplyLipstick_g02_c01.avi 1\nArchery/v_Archery_g01_c01.avi 2\n")
    (splits / "testlist01.txt").write_text("ApplyLipstick/v_ApplyLipstick_g02_c01.avi\n")
    stats = run(tmp_path, "--dataset", "ucf101", "--frame_root", str(frame), "--split_root", str(splits))
    assert read(tmp_path, "train_split01.csv") == [
        f"{frame}/ApplyLipstick/v_ApplyLipstick_g01_c01,50", f"{frame}/ApplyLipstick/v_ApplyLipstick_g02_c01,30",
        f"{frame}/Archery/v_Archery_g01_c01,45"]
    assert stats["train_split01.csv"]["duplicate"] == 1 and stats["test_split01.csv"]["in_train"] == 1
    out, err = capsys.readouterr()
    assert "train_split01.csv: 1 videos listed more than once, kept once; first: ApplyLipstick/v_ApplyLipstick_g01_c01" in out
    assert (f"warning: test_split01.csv shares videos with train_split01.csv: 1 of its 1 videos are training videos "
            f"(first: {frame}/ApplyLipstick/v_ApplyLipstick_g02_c01)") in err
    (splits / "testlist01.txt").write_text((splits / "trainlist01.txt").read_text().replace(" 1", "").replace(" 2", ""))
    run(tmp_path, "--dataset", "ucf101", "--frame_root", str(frame), "--split_root", str(splits))
    assert "test_split01.csv is the same list as train_split01.csv: 3 of its 3 videos" in capsys.readouterr().err


def test_a_run_that_dies_while_writing_the_test_list_leaves_the_earlier_pair(tmp_path, monkeypatch):
    frame = (tmp_path / "frame").resolve()
    for c in ("cat", "dog"):
        for v in range(4):
            make_video(frame, f"{c}/{c}{v}", 30)
    out = tmp_path / "out"
    out.mkdir()
    earlier = {name: f"{name} of an earlier run\n" for name in ("train_split01.csv", "test_split01.csv", "classInd.txt")}
    for name, text in earlier.items():
        (out / name).write_text(text)
    real = files._write

    def die_on_test_list(file, data, path):
        if "test_split01.csv" in path.name:
            raise KeyboardInterrupt  # as a kill: nothing after this point runs
        real(file, data, path)

    monkeypatch.setattr(files, "_write", die_on_test_list)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "--dataset", "folder", "--frame_root", str(frame))
    assert {p.name: p.read_text() for p in out.iterdir() if not p.name.startswith(".")} == earlier
    monkeypatch.setattr(files, "_write", real)
    run(tmp_path, "--dataset", "folder", "--frame_root", str(frame))
    assert len(read(tmp_path, "train_split01.csv")) == 6 and len(read(tmp_path, "test_split01.csv")) == 2
    assert sorted(p.name for p in out.iterdir()) == ["classInd.txt", "test_split01.csv", "train_split01.csv"]
