"""Per-image transforms and RandAugment (minideit/data/transforms.py, randaugment.py)."""
import math
import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance

from minideit.data import _fast
from minideit.data import randaugment as ra
from minideit.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, ColorJitter, PadRandomCrop, RandomErasing,
                                      RandomResizedCrop, ResizeCenterCrop, ToNormalizedTensor, build_transform,
                                      resize_uint8, rrc_box)


def photo(w=320, h=240, seed=0) -> Image.Image:
    """A smooth colour image with some texture, values in [40, 200] so that even autocontrast and equalize
    have something to change."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    arr = np.asarray(small).astype(np.float32) * 0.55 + 50 + rng.integers(-10, 11, (h, w, 1))
    return Image.fromarray(arr.clip(40, 200).astype(np.uint8))


def run_seeded(transform, img, seed):
    random.seed(seed)
    torch.manual_seed(seed)
    return transform(img)


# ---- RandomResizedCrop ---------------------------------------------------------------------------------------

def test_rrc_box_bounds_area_and_ratio_statistics():
    random.seed(0)
    width, height = 400, 400  # square, so rejecting boxes that do not fit favours no aspect ratio
    areas, log_ratios = [], []
    for _ in range(4000):
        top, left, h, w = rrc_box(width, height, (0.08, 1.0), (3 / 4, 4 / 3))
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width and h > 0 and w > 0
        areas.append(h * w / (width * height))
        log_ratios.append(math.log(w / h))
    areas, log_ratios = np.array(areas), np.array(log_ratios)
    # accepted boxes: area within the scale range (up to rounding); the fallback is the whole image
    assert areas.min() >= 0.075 and areas.max() <= 1.0
    assert 0.25 < areas.mean() < 0.6  # uniform in [0.08, 1] minus the rejected big boxes
    assert log_ratios.min() >= math.log(3 / 4) - 0.02 and log_ratios.max() <= math.log(4 / 3) + 0.02
    assert abs(np.median(log_ratios)) < 0.05  # log-uniform around 1


def test_rrc_box_falls_back_to_a_centre_crop_of_allowed_ratio():
    random.seed(0)
    # a very wide image: no box with ratio <= 4/3 and area >= 90% fits, so the fallback is used
    top, left, h, w = rrc_box(1000, 100, scale=(0.9, 1.0))
    assert (h, w) == (100, 133) and top == 0 and left == (1000 - 133) // 2


def test_random_resized_crop_output_and_seeding():
    img = photo()
    rrc = RandomResizedCrop(224)
    a, b, c = run_seeded(rrc, img, 1), run_seeded(rrc, img, 1), run_seeded(rrc, img, 2)
    assert a.size == (224, 224) and a.mode == 'RGB'
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_fast_resize_matches_pil_bicubic():
    img = photo(500, 375)
    for box, size in [((10, 20, 310, 320), (224, 224)), ((100, 100, 160, 150), (224, 224)), (None, (256, 341))]:
        ours = np.asarray(resize_uint8(img, size, 'bicubic', box=box)).astype(int)
        crop = img.crop(box) if box else img
        ref = np.asarray(crop.resize((size[1], size[0]), Image.BICUBIC)).astype(int)
        assert ours.shape == ref.shape
        assert np.abs(ours - ref).max() <= 2 and np.abs(ours - ref).mean() < 0.05


# ---- eval, small inputs, colour jitter -------------------------------------------------------------------

def test_eval_resizes_shorter_side_to_256_then_centre_crops():
    t = ResizeCenterCrop(224, crop_pct=0.875)
    assert t.resize_to == 256
    img = photo(400, 300)
    out = t(img)
    assert out.size == (224, 224)
    # the same as resizing to 341x256 ourselves and cutting the middle
    ref = img.resize((341, 256), Image.BICUBIC).crop((58, 16, 282, 240))
    assert np.abs(np.asarray(out).astype(int) - np.asarray(ref).astype(int)).max() <= 2


def test_pad_random_crop_zero_padding_and_reflect():
    img = Image.new('RGB', (32, 32), (200, 100, 50))
    random.seed(3)
    outs = [np.asarray(PadRandomCrop(32)(img)) for _ in range(50)]
    assert all(o.shape == (32, 32, 3) for o in outs)
    assert any((o == 0).all(axis=-1).any() for o in outs)  # some crops show the black padding
    reflected = [np.asarray(PadRandomCrop(32, fill='reflect')(img)) for _ in range(20)]
    assert all((o == (200, 100, 50)).all() for o in reflected)  # mirroring a flat image changes nothing
    with pytest.raises(ValueError, match='zero'):
        PadRandomCrop(32, fill='wrap')


def test_color_jitter_changes_pixels_and_is_seeded():
    img = photo()
    cj = ColorJitter(0.3, 0.3, 0.3)
    a, b = np.asarray(run_seeded(cj, img, 5)), np.asarray(run_seeded(cj, img, 5))
    assert np.array_equal(a, b) and not np.array_equal(a, np.asarray(img))


# ---- tensor stage ------------------------------------------------------------------------------------------

def test_to_normalized_tensor_values():
    img = Image.new('RGB', (4, 3), (255, 0, 128))
    x = ToNormalizedTensor()(img)
    assert x.shape == (3, 3, 4) and x.dtype == torch.float32 and x.is_contiguous()
    expected = [(v / 255 - m) / s for v, m, s in zip((255, 0, 128), IMAGENET_MEAN, IMAGENET_STD)]
    assert torch.allclose(x[:, 0, 0], torch.tensor(expected), atol=1e-5)
    with pytest.raises(ValueError, match='RGB'):
        ToNormalizedTensor()(img.convert('L'))


def test_random_erasing_probability_and_box_statistics():
    random.seed(0)
    torch.manual_seed(0)
    erase = RandomErasing(p=0.25, mode='pixel')
    n, erased, areas = 2000, 0, []
    for _ in range(n):
        x = erase(torch.full((3, 32, 32), 10.0))  # 10 is far outside N(0, 1), so erased pixels are easy to find
        changed = (x != 10.0).all(dim=0)
        if changed.any():
            erased += 1
            rows, cols = changed.any(dim=1).nonzero(), changed.any(dim=0).nonzero()
            h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
            assert changed.sum() == h * w  # one solid rectangle
            areas.append(h * w / 1024)
            assert abs(float(x[:, changed].mean())) < 0.5 and 0.5 < float(x[:, changed].std()) < 1.5
    assert abs(erased / n - 0.25) < 0.04
    # target areas are uniform in [0.02, 1/3]; rounding of the sides widens that a little
    assert min(areas) >= 0.01 and max(areas) <= 0.4 and 0.12 < np.mean(areas) < 0.22


def test_random_erasing_modes():
    random.seed(1)
    x = RandomErasing(p=1.0, mode='const')(torch.full((3, 40, 40), 5.0))
    assert (x == 0).any() and set(x.unique().tolist()) == {0.0, 5.0}
    with pytest.raises(ValueError, match='pixel'):
        RandomErasing(mode='noise')


# ---- the whole pipeline --------------------------------------------------------------------------------------

def test_build_transform_train_and_eval_shapes_and_determinism():
    img = photo(500, 375)
    train = build_transform(True, 224)
    a, b, c = run_seeded(train, img, 7), run_seeded(train, img, 7), run_seeded(train, img, 8)
    assert a.shape == (3, 224, 224) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert -3 < float(a.mean()) < 3
    ev = build_transform(False, 224)
    assert torch.equal(ev(img), ev(img)) and ev(img).shape == (3, 224, 224)


def test_build_transform_small_inputs_and_switches():
    img = photo(32, 32)
    names = [type(t).__name__ for t in build_transform(True, 32).transforms]
    assert names == ['PadRandomCrop', 'RandomHorizontalFlip', 'RandAugment', 'ToNormalizedTensor', 'RandomErasing']
    assert build_transform(True, 32)(img).shape == (3, 32, 32)
    assert build_transform(False, 32)(photo(40, 40)).shape == (3, 32, 32)
    # colour jitter only without RandAugment; no erasing at reprob 0
    names = [type(t).__name__ for t in build_transform(True, 224, aa=None, reprob=0).transforms]
    assert names == ['RandomResizedCrop', 'RandomHorizontalFlip', 'ColorJitter', 'ToNormalizedTensor']
    with pytest.raises(ValueError, match='input_size'):
        build_transform(True, 0)
    with pytest.raises(ValueError, match='interpolation'):
        build_transform(True, 224, interpolation='lanczos')


# ---- RandAugment -------------------------------------------------------------------------------------------

def test_parse_config():
    assert ra.parse_config('rand-m9-mstd0.5-inc1') == dict(
        num_ops=2, magnitude=9.0, magnitude_std=0.5, magnitude_max=10.0, increasing=True)
    cfg = ra.parse_config('rand-n3-m7-mmax12-inc0-mstd101')
    assert cfg['num_ops'] == 3 and cfg['magnitude_max'] == 12 and not cfg['increasing']
    assert cfg['magnitude_std'] == float('inf')
    for bad in ['rand-m9-x3', 'augmix-m3', 'rand-mfoo', 'rand-inc2', '']:
        with pytest.raises(ValueError, match='RandAugment'):
            ra.parse_config(bad)


def test_from_config_picks_the_op_list():
    assert ra.RandAugment.from_config('rand-m9-mstd0.5-inc1').ops == ra.RAND_INCREASING_OPS
    assert ra.RandAugment.from_config('rand-m9-mstd0.5-inc0').ops == ra.RAND_OPS
    assert set(ra.RAND_OPS) | set(ra.RAND_INCREASING_OPS) <= set(ra.OPS) and len(ra.RAND_INCREASING_OPS) == 15


@pytest.mark.parametrize('name', sorted(ra.OPS))
def test_every_op_runs_and_changes_the_image(name):
    img = photo(64, 48)
    random.seed(0)
    magnitude = 3 if name == 'Solarize' else 9  # original Solarize weakens with m: at 9 only pixels >= 230 flip
    out = ra.apply_op(img, name, magnitude)
    assert out.size == img.size and out.mode == 'RGB'
    assert not np.array_equal(np.asarray(out), np.asarray(img)), f'{name} at {magnitude} left the image as it was'


def test_increasing_ops_do_nothing_at_magnitude_zero():
    img = photo(64, 48)
    # (PosterizeIncreasing is the exception: at m=0 it keeps 4 bits, as timm's does)
    for name in ['SolarizeIncreasing', 'SolarizeAdd', 'ColorIncreasing',
                 'ContrastIncreasing', 'BrightnessIncreasing', 'SharpnessIncreasing', 'Rotate', 'ShearX',
                 'TranslateYRel']:
        assert np.array_equal(np.asarray(ra.apply_op(img, name, 0)), np.asarray(img)), name


_SHIFT_ROWS, _TRANSLATE = _fast._shift_rows, _fast._translate


@pytest.mark.parametrize('shear, offset, axis', [(0.27, 0, 1), (-0.3, 0, 1), (0, 90.3, 1), (0, -0.49, 1),
                                                 (0.2, 0, 0), (0, -47.6, 0), (0.1, -3.3, 1), (0, 500, 1),
                                                 (1.5, -70.2, 1), (-2.5, 130.7, 0), (0, 0.5, 0), (0, -0.5, 1),
                                                 (0, 95.5, 1), (0, -79.5, 0), (0, 79.49, 0), (0, -96.2, 1)])
def test_fast_shear_translate_equal_pil_bicubic_affine(shear, offset, axis, monkeypatch):
    img = photo(96, 80)
    matrix = (1, shear, offset, 0, 1, 0) if axis == 1 else (1, 0, 0, shear, 1, offset)
    fast_path = []  # the fast path (rows, or a translation's slices) must be the one tested, not PIL's own warp
    monkeypatch.setattr(_fast, "_shift_rows", lambda *a: fast_path.append('rows') or _SHIFT_ROWS(*a))
    monkeypatch.setattr(_fast, "_translate", lambda *a: fast_path.append('translate') or _TRANSLATE(*a))
    ours = _fast.affine(img, matrix, ra.DEFAULT_FILL, Image.BICUBIC)
    assert fast_path == (['translate'] if shear == 0 else ['rows'])
    ref = img.transform(img.size, Image.AFFINE, matrix, resample=Image.BICUBIC, fillcolor=ra.DEFAULT_FILL)
    assert np.abs(np.asarray(ours).astype(int) - np.asarray(ref).astype(int)).max() <= 1


@pytest.mark.parametrize('width, height', [(1, 1), (1, 5), (4, 2)])
def test_fast_shear_translate_on_tiny_images(width, height):
    """The row and translation paths clamp their taps to the image; a 1-pixel row must still give PIL's pixels."""
    img = Image.fromarray(np.random.default_rng(width).integers(0, 256, (height, width, 3), np.uint8))
    for matrix in [(1, 0.3, 0.4, 0, 1, 0), (1, 0, 0, -0.3, 1, 0.6), (1, 0, -0.7, 0, 1, 0)]:
        ours = _fast.affine(img, matrix, ra.DEFAULT_FILL, Image.BICUBIC)
        ref = img.transform(img.size, Image.AFFINE, matrix, resample=Image.BICUBIC, fillcolor=ra.DEFAULT_FILL)
        assert np.abs(np.asarray(ours).astype(int) - np.asarray(ref).astype(int)).max() <= 1, matrix


@pytest.mark.parametrize('factor', [0.1, 0.55, 1.0, 1.37, 1.9])
def test_fast_sharpness_equals_pil(factor):
    for img in (photo(64, 48), Image.fromarray(np.random.default_rng(1).integers(0, 256, (9, 5, 3), np.uint8))):
        ours = np.asarray(_fast.sharpness(img, factor))
        assert np.array_equal(ours, np.asarray(ImageEnhance.Sharpness(img).enhance(factor)))


def test_magnitude_noise_is_clipped():
    random.seed(0)
    aug = ra.RandAugment(magnitude=9, magnitude_std=5.0)
    mags = np.array([aug.sample_magnitude() for _ in range(2000)])
    assert mags.min() == 0.0 and mags.max() == 10.0  # a wide noise hits both ends of [0, 10]
    assert 0.1 < (mags == 10.0).mean() < 0.5
    plain = ra.RandAugment(magnitude=9, magnitude_std=0.5)
    mags = np.array([plain.sample_magnitude() for _ in range(2000)])
    assert abs(mags.mean() - 8.98) < 0.05 and mags.max() == 10.0 and abs(mags.std() - 0.48) < 0.05
    uniform = ra.RandAugment(magnitude=9, magnitude_std=float('inf'))
    mags = np.array([uniform.sample_magnitude() for _ in range(2000)])
    assert mags.min() >= 0 and mags.max() <= 9 and abs(mags.mean() - 4.5) < 0.3


def test_rand_augment_applies_each_op_with_probability_half():
    img = photo(48, 48)
    aug = ra.RandAugment.from_config('rand-m9-mstd0.5-inc1')
    random.seed(0)
    unchanged = sum(np.array_equal(np.asarray(aug(img)), np.asarray(img)) for _ in range(400))
    assert 0.17 < unchanged / 400 < 0.33  # neither of the 2 ops applied: 0.25 (plus rare no-op draws)
    a, b = run_seeded(aug, img, 3), run_seeded(aug, img, 3)
    assert np.array_equal(np.asarray(a), np.asarray(b))
