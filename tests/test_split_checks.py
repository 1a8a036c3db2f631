"""Leak and emptiness checks of the lists a run trains and evaluates on (utils/split_checks.py), and where the
pretraining datasets call them."""
import logging
import shutil

import cv2
import numpy as np
import pytest
from tiny_dataset import make_tiny_dataset

from train.dataset_3d import build_pretrain_datasets
from utils import split_checks
from utils.video_index import VideoEntry, load_split


@pytest.fixture()
def lists(tmp_path):
    """Train and test videos of a tiny tree: 2 classes × 3 videos (2 train, 1 test each)."""
    csv_root = make_tiny_dataset(tmp_path, classes=("jump", "wave"), videos_per_class=3, num_frames=6, views=("imgs",))
    train, test = load_split(csv_root, "train")[0], load_split(csv_root, "test")[0]
    for k, entry in enumerate([*train, *test]):  # tiny videos are alike: give each its own first frame
        cv2.imwrite(str(entry.frame_dir / "image_00001.jpg"), np.full((8, 8, 3), 20 * k, np.uint8))
    return train, test


def test_test_videos_in_the_train_list_are_found_by_path_and_by_first_frame(lists, caplog):
    train, test = (list(part) for part in lists)
    assert split_checks.leaked_test_videos(train, test, "eval") == 0
    copy = test[1].frame_dir.parent / "v_wave_copy"
    shutil.copytree(test[1].frame_dir, copy)  # the same video under another name
    with caplog.at_level(logging.WARNING, logger="cocon.data"):
        leaked = split_checks.leaked_test_videos([*train, test[0], VideoEntry(copy, 6, 1)], test, "eval")
    assert leaked == 2
    assert "eval: 2 of 2 test videos are also training videos (1 by path, 1 with the same first frame" in caplog.text


def test_repeated_rows_and_classes_without_training_videos_are_warned_about(lists, caplog):
    train, _ = (list(part) for part in lists)
    with caplog.at_level(logging.WARNING, logger="cocon.data"):
        assert split_checks.repeated_videos([*train, train[0], train[0]], "train list") == 2
        assert split_checks.classes_without_videos(train[:2], ["jump", "wave"], "gallery", "retrieval") == ["wave"]
    assert "train list: 2 rows repeat a video listed before" in caplog.text
    assert "retrieval: 1 of 2 classes have no gallery video (wave)" in caplog.text
    caplog.clear()
    assert split_checks.repeated_videos(train, "train list") == 0 and not split_checks.classes_without_videos(
        train, ["jump", "wave"], "gallery", "retrieval")
    assert caplog.text == ""


def test_pretraining_warns_when_one_video_would_choose_the_best_checkpoint(tmp_path, caplog):
    csv_root = make_tiny_dataset(tmp_path, classes=("jump",), videos_per_class=3, num_frames=12, views=("imgs",))
    with caplog.at_level(logging.WARNING, logger="cocon.data"):
        _, val, _ = build_pretrain_datasets(csv_root, 1, ["imgs"], 32, 2, 2, 1, False, "dynamic", 0.25, seed=0)
    assert len(val) == 1 and "pretraining: 1 validation video: the 'best' checkpoint would be chosen on one video" in caplog.text
