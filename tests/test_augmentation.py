import cv2
import numpy as np
import pytest
import torch

from utils.augmentation import (
    _LUMA,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClipGeometry,
    _float_affine,
    _hue_rotations,
    apply_colour_transform,
    center_square,
    crop_resize,
    hflip,
    jitter_colours_uint8,
    model_input,
    random_colour_transform,
    random_colour_transforms,
    random_sized_crop,
    transform_view,
)
from utils.views import VIEWS
from utils.visualize import view_to_rgb


def _ramp_frames(t=4, c=2, h=8, w=12):
    """uint8 ``[T, H, W, C]``: frame t, pixel (y, x), channel c holds 50·t + 20·c + 2·y + x."""
    tt, yy, xx, cc = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), np.arange(c), indexing="ij")
    return (50 * tt + 20 * cc + 2 * yy + xx).astype(np.uint8)


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
    clip = torch.full((3, 4, 4, 2), 128, dtype=torch.uint8)
    clip[..., 0] = 255
    geometry = ClipGeometry(0, 0, 1, 1, flip=True)
    out = transform_view(clip, VIEWS["flow"], geometry=geometry, size=4)
    assert torch.allclose(out[:, 0], torch.full((3, 4, 4), -0.5))
    assert torch.allclose(out[:, 1], torch.full((3, 4, 4), 128 / 255 - 0.5))


def test_crop_resize_takes_the_fractional_box_from_every_frame():
    frames = _ramp_frames()
    exact = crop_resize(frames, ClipGeometry(0.25, 0.5, 0.5, 1 / 3), size=4)  # a 4x4 box: no resampling
    assert exact.shape == (4, 2, 4, 4) and exact.dtype == torch.float32
    assert torch.equal(exact, torch.from_numpy(frames[:, 2:6, 6:10]).permute(0, 3, 1, 2).float())
    out = crop_resize(frames, ClipGeometry(top=0.25, left=0.5, height=0.5, width=0.5), size=4)  # 4x6 box
    assert torch.allclose(out[1] - out[0], torch.tensor(50.0), atol=1e-3)  # frames keep their identity
    assert torch.allclose(out[:, 1] - out[:, 0], torch.tensor(20.0), atol=1e-3)  # and channels theirs
    assert torch.all(out[:, :, :, 1:] > out[:, :, :, :-1])  # and left-right order


def test_same_geometry_crops_the_same_scene_region_at_any_resolution():
    # A bright square at the same place in fractions of the frame, stored at two resolutions.
    big = np.zeros((1, 120, 160, 1), np.uint8)
    big[:, 30:60, 80:120] = 255
    small = np.zeros((1, 30, 40, 17), np.uint8)
    small[:, 7:15, 20:30] = 255
    geometry = ClipGeometry(0.25, 0.5, 0.25, 0.25)  # exactly the square
    assert crop_resize(big, geometry, 16).min() > 250
    assert crop_resize(small, geometry, 16).mean() > 0.9 * 255


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


def _jitter(clip, rng, brightness=0.5, contrast=0.5, saturation=0.5, hue=0.25, gray_prob=0.0):
    transform = random_colour_transform(rng, clip.mean(dim=(0, 2, 3)), brightness, contrast, saturation, hue, gray_prob)
    return apply_colour_transform(clip, *transform)


def test_color_jitter_is_one_draw_for_all_frames():
    frame = torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    clip = frame.repeat(5, 1, 1, 1)
    out = _jitter(clip.clone(), np.random.default_rng(3))
    assert not torch.allclose(out[0], frame[0])
    for t in range(1, 5):
        assert torch.allclose(out[t], out[0])
    assert out.min() >= 0 and out.max() <= 1


def _still_clip(frames=6):
    """uint8 ``[T, 8, 8, 3]``: one seeded random frame repeated, so any difference between frames is the jitter's."""
    frame = np.random.default_rng(0).integers(30, 220, (1, 8, 8, 3), dtype=np.uint8)
    return np.repeat(frame, frames, axis=0)


def test_frame_jitter_draws_every_frame_afresh_and_clip_jitter_once():
    clip = _still_clip()
    per_frame = jitter_colours_uint8(clip, np.random.default_rng(5), "frame")
    per_clip = jitter_colours_uint8(clip, np.random.default_rng(5), "clip")
    assert per_frame.shape == per_clip.shape == clip.shape and per_frame.dtype == np.uint8
    frame_gaps = [np.abs(per_frame[t].astype(int) - per_frame[0]).max() for t in range(1, len(clip))]
    assert min(frame_gaps) > 0  # six independent draws never all agree with the first
    assert all(np.array_equal(per_clip[t], per_clip[0]) for t in range(1, len(clip)))
    assert not np.array_equal(per_clip[0], clip[0])


def test_frame_jitter_applies_map_t_to_frame_t():
    clip = np.random.default_rng(1).integers(30, 220, (3, 8, 8, 3), dtype=np.uint8)
    per_frame = jitter_colours_uint8(clip, np.random.default_rng(7), "frame")
    means = np.stack([frame.reshape(-1, 3).mean(axis=0) / 255 for frame in clip])
    matrices, offsets = random_colour_transforms(np.random.default_rng(7), means)
    for t in range(len(clip)):
        expected = np.clip(clip[t].astype(np.float64) / 255 @ matrices[t].T + offsets[t], 0, 1) * 255
        assert np.abs(per_frame[t] - expected).max() <= 1  # OpenCV rounds in float32: within one level


def test_vectorised_draws_match_single_draws_in_distribution_of_their_factors():
    # Brightness alone: each map is a scaled identity, with its own factor in [0.5, 1.5].
    matrices, offsets = random_colour_transforms(np.random.default_rng(3), np.full((500, 3), 0.5), 0.5, 0, 0, 0, 0)
    factors = matrices[:, 0, 0]
    assert np.allclose(matrices, factors[:, None, None] * np.eye(3), atol=1e-9) and np.allclose(offsets, 0, atol=1e-9)
    assert factors.min() >= 0.5 and factors.max() <= 1.5 and len(np.unique(factors)) == 500
    # Grayscale with probability 0.5: about half the maps (500 draws: 4 std of 11 around 250) are gray.
    gray = random_colour_transforms(np.random.default_rng(4), np.full((500, 3), 0.5), 0, 0, 0, 0, 0.5)[0]
    is_gray = np.all(np.abs(gray - gray[:, :1, :]) < 1e-9, axis=(1, 2))
    assert 206 <= is_gray.sum() <= 294


def test_unknown_colour_jitter_mode_names_the_flag():
    with pytest.raises(ValueError, match="--colour_jitter must be one of"):
        jitter_colours_uint8(_still_clip(), np.random.default_rng(0), "video")


@pytest.mark.parametrize("seed", range(20))
def test_random_grayscale_all_or_nothing(seed):
    # Zero jitter still composes a float32 hue rotation (an identity up to ~1e-7) into the map, so
    # comparisons need an absolute tolerance: allclose's default (1e-8) fails near black pixels.
    clip = torch.rand(4, 3, 5, 5, generator=torch.Generator().manual_seed(seed))
    gray = _jitter(clip, np.random.default_rng(seed), 0, 0, 0, 0, gray_prob=1.0)
    torch.testing.assert_close(gray[:, 0], gray[:, 1], rtol=0, atol=1e-6)
    torch.testing.assert_close(gray[:, 1], gray[:, 2], rtol=0, atol=1e-6)
    luma = 0.299 * clip[:, 0] + 0.587 * clip[:, 1] + 0.114 * clip[:, 2]
    torch.testing.assert_close(gray[:, 0], luma.clamp(0, 1), rtol=0, atol=1e-5)
    same = _jitter(clip, np.random.default_rng(seed), 0, 0, 0, 0, gray_prob=0.0)
    torch.testing.assert_close(same, clip, rtol=0, atol=1e-5)


def test_rgb_evaluation_pipeline_normalises_with_imagenet_stats():
    clip = torch.full((2, 4, 4, 3), 255, dtype=torch.uint8)
    out = transform_view(clip, VIEWS["imgs"], geometry=ClipGeometry(0, 0, 1, 1), size=4)
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(out[0, :, 0, 0], expected)


@pytest.mark.parametrize("view", ["imgs", "flow", "kphm", "seg"])
def test_transform_view_handles_any_channel_count(view):
    channels = VIEWS[view].channels
    clip = torch.randint(0, 256, (6, 30, 40, channels), dtype=torch.uint8)
    geometry = random_sized_crop(np.random.default_rng(1), 40 / 30)
    out = transform_view(clip, VIEWS[view], geometry=geometry, size=16, rng=np.random.default_rng(1))
    assert out.shape == (6, channels, 16, 16) and out.dtype == torch.float32


def test_flipped_heatmaps_swap_left_and_right_joints():
    clip = torch.zeros(1, 4, 4, 17, dtype=torch.uint8)
    clip[0, :, 0, 9] = 255  # left wrist (COCO 9) in the image's left column
    out = transform_view(clip, VIEWS["kphm"], ClipGeometry(0, 0, 1, 1, flip=True), size=4)
    assert out[0, 10, :, 3].eq(1).all()  # now a right wrist (COCO 10) in the right column
    assert out[0, 9].eq(0).all()


def test_color_jitter_identity_and_hand_cases():
    clip = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    same = _jitter(clip.clone(), np.random.default_rng(0), brightness=0, contrast=0, saturation=0, hue=0)
    assert torch.allclose(same, clip, atol=1e-6)
    # Brightness alone scales every value by one factor in [0.5, 1.5].
    dark = torch.full((2, 3, 4, 4), 0.4)
    bright = _jitter(dark.clone(), np.random.default_rng(1), brightness=0.5, contrast=0, saturation=0, hue=0)
    factor = bright[0, 0, 0, 0] / 0.4
    assert 0.5 <= factor <= 1.5 and torch.allclose(bright, dark * factor)
    # Contrast alone pulls values towards the clip's mean gray level.
    two_tone = torch.tensor([0.2, 0.6]).view(2, 1, 1, 1).expand(2, 3, 2, 2).contiguous()
    low = _jitter(two_tone, np.random.default_rng(5), brightness=0, contrast=0.5, saturation=0, hue=0)
    f = (low[1, 0, 0, 0] - low[0, 0, 0, 0]) / 0.4
    assert 0.5 <= f <= 1.5 and torch.allclose((low[0] + low[1]) / 2, torch.tensor(0.4))
    # Hue rotation keeps gray pixels gray and keeps luma; two half turns are the identity.
    gray = torch.full((1, 3, 2, 2), 0.3)
    assert torch.allclose(_jitter(gray, np.random.default_rng(2), 0, 0, 0, 0.5), gray, atol=1e-5)
    rot = _hue_rotations(np.array([0.2, 0.5]))
    assert np.allclose(_LUMA @ rot, _LUMA, atol=1e-9)
    assert np.allclose(rot[1] @ rot[1], np.eye(3), atol=1e-9)


def test_crop_resize_handles_17_channels_like_one():
    yy, xx = np.meshgrid(np.arange(40), np.arange(60), indexing="ij")
    ramp = (2 * yy + 3 * xx).astype(np.uint8)
    frames = np.repeat(ramp[None, :, :, None], 17, axis=3)
    geometry = ClipGeometry(0.1, 0.2, 0.8, 0.5)
    many = crop_resize(frames, geometry, 16)
    one = crop_resize(frames[..., :1].copy(), geometry, 16)
    assert many.shape == (1, 17, 16, 16) and many.is_contiguous()
    assert torch.equal(many, one.expand(1, 17, 16, 16))


def test_crop_resize_rejects_float_or_channels_first_input():
    with pytest.raises(ValueError, match=r"uint8 frames \[T, H, W, C\]"):
        crop_resize(np.zeros((2, 3, 8, 8), np.float32), ClipGeometry(0, 0, 1, 1), 4)


def test_model_input_hand_cases_for_every_view():
    blocks = {view: torch.full((2, VIEWS[view].channels, 3, 4, 4), 255, dtype=torch.uint8) for view in VIEWS}
    blocks["imgs"][:, 1] = 0  # magenta
    blocks["flow"][:, 1] = 128  # x full right, y half a level below the zero of 127.5
    out = {view: model_input(x, view, "cpu") for view, x in blocks.items()}
    assert all(x.dtype == torch.float32 and x.shape == blocks[view].shape for view, x in out.items())
    expected_rgb = [(1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], -IMAGENET_MEAN[1] / IMAGENET_STD[1], (1 - IMAGENET_MEAN[2]) / IMAGENET_STD[2]]
    assert torch.allclose(out["imgs"][0, :, 0, 0, 0], torch.tensor(expected_rgb), atol=1e-5)
    assert torch.allclose(out["flow"][0, :, 0, 0, 0], torch.tensor([0.5, 0.5 / 255]), atol=1e-6)
    assert torch.all(out["kphm"] == 1) and torch.all(out["seg"] == 1)


def test_model_input_refuses_float_input_naming_the_view():
    with pytest.raises(TypeError, match="uint8 flow pixels.*torch.float32"):
        model_input(torch.zeros(1, 2, 1, 2, 2), "flow", "cpu")


def test_view_to_rgb_shows_stored_pixels():
    frames = torch.zeros(1, 2, 1, 2, dtype=torch.uint8)
    frames[0, :, 0, 1] = 128  # no motion in the right pixel; full left/up motion (0) in the left one
    rgb = view_to_rgb(frames, "flow")
    assert rgb.shape == (1, 3, 1, 2)
    assert torch.allclose(rgb[0, :, 0, 1], torch.tensor([128 / 255, 128 / 255, 0.0]))
    assert torch.equal(rgb[0, :, 0, 0], torch.zeros(3))
    image = torch.tensor([10, 20, 30], dtype=torch.uint8).view(1, 3, 1, 1)
    assert torch.allclose(view_to_rgb(image, "imgs")[0, :, 0, 0], torch.tensor([10, 20, 30]) / 255)


@pytest.mark.parametrize("view", sorted(VIEWS))
def test_model_input_rounds_every_level_as_opencv_did(view):
    # The README's results were made with OpenCV's uint8 -> float conversion; the same bits keep them repeatable.
    channels = VIEWS[view].channels
    levels = torch.arange(256, dtype=torch.uint8).view(1, 1, 1, 1, 256).repeat(1, channels, 1, 1, 1)
    out = model_input(levels, view, "cpu")
    scale, shift = _float_affine(VIEWS[view], channels)
    for c in range(channels):
        plane = levels[0, c, 0].numpy()
        expected = cv2.addWeighted(plane, float(scale[c]), plane, 0.0, -float(shift[c]), dtype=cv2.CV_32F)
        assert np.array_equal(out[0, c, 0].numpy(), expected), (view, c)
