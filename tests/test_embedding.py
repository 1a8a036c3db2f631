import pytest
import torch

from utils.embedding import clip_embedding


def test_clip_embedding_normalises_blocks_before_averaging():
    maps = torch.zeros(1, 2, 2, 1, 1)
    maps[0, 0, :, 0, 0] = torch.tensor([10.0, 0.0])  # a long block vector must not dominate the mean
    maps[0, 1, :, 0, 0] = torch.tensor([0.0, 1.0])
    expected = torch.tensor([[1.0, 1.0]]) / 2**0.5
    assert torch.allclose(clip_embedding(maps), expected, atol=1e-6)


def test_clip_embedding_max_pool_and_shape():
    maps = torch.zeros(3, 4, 5, 2, 2)
    maps[:, :, 0, 1, 1] = 2.0
    out = clip_embedding(maps, pool="max")
    assert out.shape == (3, 5)
    assert torch.allclose(out[:, 0], torch.ones(3))


def test_clip_embedding_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[B, N, D, s, s\]"):
        clip_embedding(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="pool"):
        clip_embedding(torch.zeros(1, 1, 2, 1, 1), pool="sum")
