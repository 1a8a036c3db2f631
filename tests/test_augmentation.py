import numpy as np
import pytest
import torch

from utils.augmentation import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClipGeometry,
    center_square,
    color_jitter,
    crop_resize,
    hflip,
    random_grayscale,
    random_sized_crop,
    transform_view,
)
from utils.views import VIEWS


def _ramp_clip(t=4, c=2, h=8, w=12):
    """Frame t, channel c, pixel (y, x) holds 1000·t + 100·c + 10·y + x (distinct everywhere)."""
    tt, cc, yy, xx = torch.meshgrid(torch.arange(t), torch.arange(c), torch.arange(h), torch.arange(w), indexing="ij")
    return (1000 * tt + 100 * cc + 10 * yy + xx).float()


def test_flipped_flow_clip_has_negated_x_and_mirrored_pixels():
    flow = torch.zeros(2, 2, 1, 3)
    flow[:, 0] = torch.tensor([0.1, 0.2, 0.3])  # x displacement
    flow[:, 1] = torch.tensor([0.4, 0.5, 0.6])  # y displacement
    out = hflip(flow, is_flow=True)
    assert torch.allclose(out[:, 0, 0], torch.tensor([-0.3, -0.2, -0.1]))
    assert torch.allclose(out[:, 1, 0], torch.tensor([0.6, 0.5, 0.4]))
    rgb = hflip(flow, is_flow=False)
    assert torch.allclose(rgb[:, 0, 0], torch.tensor([0.3, 0.2, 0.1]))


def test_flip_in_transform_view_negates_stored_flow_around_128():
    # A stored flow of 255 in x (right motion) must come back as left motion after a flip.
    clip = torch.full((3, 2, 4, 4), 128, dtype=torch.uint8)
    clip[:, 0] = 255
    geometry = ClipGeometry(0, 0, 1, 1, flip=True)
    out = transform_view(clip, VIEWS["flow"], geometry=geometry, size=4)
    assert torch.allclose(out[:, 0], torch.full((3, 4, 4), -0.5))
    assert torch.allclose(out[:, 1], torch.full((3, 4, 4), 128 / 255 - 0.5))


def test_crop_resize_takes_the_fractional_box_from_every_frame():
    clip = _ramp_clip()
    box = ClipGeometry(top=0.25, left=0.5, height=0.5, width=0.5)  # rows 2..5, cols 6..11
    out = crop_resize(clip, box, size=4)
    assert out.shape == (4, 2, 4, 4)
    # The box is 4 rows x 6 cols; resizing keeps the corner ordering and frame/channel identity.
    assert torch.allclose(out[1] - out[0], torch.tensor(1000.0), atol=1e-3)
    assert torch.allclose(out[:, 1] - out[:, 0], torch.tensor(100.0), atol=1e-3)
    exact = crop_resize(clip, ClipGeometry(0.25, 0.5, 0.5, 1 / 3), size=4)  # 4x4 box: no resampling
    assert torch.equal(exact, clip[:, :, 2:6, 6:10])


def test_same_geometry_crops_the_same_scene_region_at_any_resolution():
    # A bright square at the same place in fractions of the frame, stored at two resolutions.
    big = torch.zeros(1, 1, 120, 160)
    big[..., 30:60, 80:120] = 1
    small = torch.zeros(1, 17, 30, 40)
    small[..., 7:15, 20:30] = 1
    geometry = ClipGeometry(0.25, 0.5, 0.25, 0.25)  # exactly the square
    assert crop_resize(big, geometry, 16).min() > 0.99
    assert crop_resize(small, geometry, 16).mean() > 0.9


def test_random_sized_crop_stays_inside_and_respects_area():
    rng = np.random.default_rng(0)
    for _ in range(200):
        g = random_sized_crop(rng, aspect=4 / 3, scale=(0.3, 1.0))
        assert 0 <= g.top and g.top + g.height <= 1 + 1e-9
        assert 0 <= g.left and g.left + g.width <= 1 + 1e-9
        assert 0.3 - 1e-9 <= g.height * g.width <= 1 + 1e-9
    flips = [random_sized_crop(rng, 1.0, flip_prob=0.0).flip for _ in range(50)]
    assert not any(flips)


def test_center_square_is_square_in_pixels():
    g = center_square(aspect=320 / 240)
    assert g.height == 1 and abs(g.width * 320 - 240) < 1e-6 and abs(g.left - (1 - g.width) / 2) < 1e-9
    g = center_square(aspect=0.5)
    assert g.width == 1 and abs(g.height - 0.5) < 1e-9


def test_color_jitter_is_one_draw_for_all_frames():
    frame = torch.rand(1, 3, 6, 6)
    clip = frame.repeat(5, 1, 1, 1)
    out = color_jitter(clip.clone(), np.random.default_rng(3))
    assert not torch.allclose(out[0], frame[0])
    for t in range(1, 5):
        assert torch.allclose(out[t], out[0])
    assert out.min() >= 0 and out.max() <= 1


def test_random_grayscale_all_or_nothing():
    clip = torch.rand(4, 3, 5, 5)
    gray = random_grayscale(clip, np.random.default_rng(0), p=1.0)
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    assert torch.equal(random_grayscale(clip, np.random.default_rng(0), p=0.0), clip)


def test_rgb_evaluation_pipeline_normalises_with_imagenet_stats():
    clip = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    out = transform_view(clip, VIEWS["imgs"], geometry=ClipGeometry(0, 0, 1, 1), size=4)
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(out[0, :, 0, 0], expected)


@pytest.mark.parametrize("view", ["imgs", "flow", "kphm", "seg"])
def test_transform_view_handles_any_channel_count(view):
    channels = VIEWS[view].channels
    clip = torch.randint(0, 256, (6, channels, 30, 40), dtype=torch.uint8)
    geometry = random_sized_crop(np.random.default_rng(1), 40 / 30)
    out = transform_view(clip, VIEWS[view], geometry=geometry, size=16, rng=np.random.default_rng(1))
    assert out.shape == (6, channels, 16, 16) and out.dtype == torch.float32


def test_flipped_heatmaps_swap_left_and_right_joints():
    clip = torch.zeros(1, 17, 4, 4, dtype=torch.uint8)
    clip[0, 9, :, 0] = 255  # left wrist (COCO 9) in the image's left column
    out = transform_view(clip, VIEWS["kphm"], ClipGeometry(0, 0, 1, 1, flip=True), size=4)
    assert out[0, 10, :, 3].eq(1).all()  # now a right wrist (COCO 10) in the right column
    assert out[0, 9].eq(0).all()
