"""Shared pytest setup: every test starts from the same random state and thread count, whatever ran before it."""
import random
from typing import Iterator

import numpy as np
import pytest
import torch


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
