"""Shared pytest setup: every test starts from the same random state and thread count, whatever ran before it;
fake videos on disk come from one writer (tests/tiny_dataset.py)."""
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_dataset import make_tiny_dataset


@pytest.fixture(autouse=True)
def _isolate_global_state() -> Iterator[None]:
    # A test that draws from the global generators (torch.randn without a generator, np.random.*)
    # sees the same numbers on every run and in any order, so a tolerance that holds once holds always;
    # a test that changes torch's thread count gets it back, so later bit-for-bit comparisons hold.
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_csv_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Split lists of the default tiny dataset (2 classes × 5 videos of 24 frames, every view), written once.

    Tests read it only; one that changes files on disk writes its own with :func:`make_tiny_dataset`.
    """
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny"))
