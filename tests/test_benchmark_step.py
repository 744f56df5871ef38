"""GPU-speed work that runs on a CPU: the `train`/`model`/`loader` benchmarks, MFU arithmetic, the student's
graph under torch.compile, the inference-mode teacher and the on-device augmentation of --gpu-aug."""
import json
import math
import random
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

import minideit
from minideit.data.gpu_aug import (DeviceAugment, ToUint8Tensor, build_uint8_transform, normalize_uint8,
                                   random_erase_batch, sample_erase_boxes)
from minideit.data.transforms import RandomErasing, ToNormalizedTensor, build_transform
from minideit.losses import DistillationLoss, prepare_teacher


def photo(seed: int, size=(80, 60)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


# ---- --gpu-aug: the device path gives what the CPU path gives ---------------------------------------------

def test_normalize_uint8_is_bit_identical_to_the_cpu_transform():
    img = photo(0)
    expected = ToNormalizedTensor()(img)
    got = normalize_uint8(ToUint8Tensor()(img).unsqueeze(0))[0]
    assert got.dtype == torch.float32 and torch.equal(got, expected)


@pytest.mark.parametrize('size,aa', [(48, 'rand-m9-mstd0.5-inc1'), (32, None)])
def test_uint8_transform_then_normalize_equals_the_float_transform_without_erasing(size, aa):
    """Same seeds -> same crops, flips and RandAugment: the only difference may be where normalisation runs."""
    img = photo(1, (96, 72))
    outs = []
    for make in (lambda: build_transform(True, size, aa=aa, reprob=0.0),
                 lambda: build_uint8_transform(True, size, aa=aa)):
        tf = make()
        random.seed(5)
        torch.manual_seed(5)
        outs.append([tf(img) for _ in range(4)])
    for float_x, uint8_x in zip(*outs):
        assert uint8_x.dtype == torch.uint8 and uint8_x.shape == (3, size, size)
        assert torch.equal(normalize_uint8(uint8_x.unsqueeze(0))[0], float_x)


def test_uint8_transform_refuses_float_arguments():
    with pytest.raises(ValueError, match='device'):
        build_uint8_transform(True, 32, reprob=0.25)
    with pytest.raises(ValueError, match='uint8'):
        normalize_uint8(torch.zeros(2, 3, 4, 4))


def erased_boxes_cpu(n: int, size: int, p: float):
    """(erased?, area fraction, h/w) of n CPU RandomErasing draws on zero images."""
    random.seed(0)
    torch.manual_seed(0)
    re = RandomErasing(p, mode='const')
    stats = []
    for _ in range(n):
        x = torch.full((3, size, size), 7.0)
        mask = (re(x) != 7.0)[0]
        stats.append(box_stats(mask))
    return stats


def box_stats(mask: torch.Tensor):
    if not mask.any():
        return False, 0.0, 0.0
    rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
    h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
    assert mask.sum() == h * w  # one solid axis-aligned rectangle
    return True, h * w / mask.numel(), h / w


def test_batch_erasing_matches_the_per_image_statistics_of_random_erasing():
    n, size, p = 3000, 32, 0.25
    cpu = erased_boxes_cpu(n, size, p)
    gen = torch.Generator().manual_seed(1)
    x = torch.full((n, 3, size, size), 7.0)
    out = random_erase_batch(x, p, mode='const', generator=gen)
    dev = [box_stats((out[i] != 7.0)[0]) for i in range(n)]
    for stats in (cpu, dev):
        assert abs(np.mean([s[0] for s in stats]) - p) < 0.035  # 4.5 standard errors
    rate = lambda stats, k: np.mean([s[k] for s in stats if s[0]])  # noqa: E731
    assert abs(rate(cpu, 1) - rate(dev, 1)) < 0.02  # mean erased area (about 0.17 of the image)
    assert abs(np.mean([math.log(s[2]) for s in cpu if s[0]]) - np.mean([math.log(s[2]) for s in dev if s[0]])) < 0.1
    # per image: the erased images are not all the same box
    boxes = {tuple((out[i] != 7.0)[0].nonzero()[0].tolist()) for i in range(n) if dev[i][0]}
    assert len(boxes) > 100


def test_pixel_erasing_fills_with_unit_noise_and_leaves_the_rest():
    x = torch.rand(64, 3, 40, 40) + 20.0  # far from any N(0, 1) value
    out = random_erase_batch(x, p=1.0, mode='pixel', generator=torch.Generator().manual_seed(0))
    erased = out < 10.0
    assert erased.any(dim=(1, 2, 3)).float().mean() > 0.9  # p = 1: only failed box fits escape
    assert torch.equal(out[~erased], x[~erased])
    noise = out[erased]
    assert abs(noise.mean()) < 0.05 and abs(noise.std() - 1) < 0.05
    assert torch.equal(erased[:, 0], erased[:, 1])  # every channel of the box


def test_erase_boxes_always_fit_inside():
    erase, top, left, h, w = sample_erase_boxes(5000, 7, 13, p=1.0, generator=torch.Generator().manual_seed(3))
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= 7)[erase].all() and (left + w <= 13)[erase].all()
    assert (h < 7)[erase].all() and (w < 13)[erase].all()


def test_device_augment_erases_each_image_before_mixing():
    """Order of the official pipeline: normalise -> erase (per image) -> Mixup (per batch)."""
    from minideit.data.mixup import Mixup
    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    y = torch.tensor([0, 1, 2, 3])
    torch.manual_seed(9)
    got, targets = DeviceAugment(0.5, 'pixel', Mixup(0.8, 0.0, num_classes=4, seed=3))(x, y)
    torch.manual_seed(9)
    erased = random_erase_batch(normalize_uint8(x), 0.5, 'pixel')
    expected, expected_targets = Mixup(0.8, 0.0, num_classes=4, seed=3)(erased, y)
    assert torch.equal(got, expected) and torch.equal(targets, expected_targets)
    plain, same_y = DeviceAugment(0.0)(x, y)
    assert torch.equal(plain, normalize_uint8(x)) and same_y is y


@pytest.mark.slow  # three one-epoch runs of the nano model on synthetic data
def test_train_with_gpu_aug_equals_the_cpu_path_without_erasing_and_runs_with_it(tmp_path, monkeypatch, capsys):
    from minideit.train import main as train_main
    monkeypatch.setenv('MINIDEIT_SMOKE', '1')
    seen = []
    original = DeviceAugment.__call__

    def spy(self, x, y):
        seen.append(x.dtype)
        return original(self, x, y)
    monkeypatch.setattr(DeviceAugment, '__call__', spy)

    def run(name, *extra):
        args = ['--model', 'deit_nano_distilled_patch4_32', '--data-set', 'synthetic', '--input-size', '32',
                '--num-samples', '64', '--batch-size', '16', '--epochs', '1', '--warmup-epochs', '1',
                '--num-workers', '0', '--output-dir', str(tmp_path / name), *extra]
        assert train_main(args) == 0, capsys.readouterr().err
        return torch.load(tmp_path / name / 'checkpoint.pth', weights_only=False)['model']

    no_erase = ('--reprob', '0', '--mixup', '0', '--cutmix', '0')
    cpu = run('cpu', *no_erase)
    assert seen == []
    gpu = run('gpu', '--gpu-aug', *no_erase)
    assert seen and set(seen) == {torch.uint8}  # the loader handed over uint8 batches
    for key in cpu:  # same per-image randomness, bit-identical normalisation: the very same training
        assert torch.equal(cpu[key], gpu[key]), key
    full = run('gpu-full', '--gpu-aug')  # erasing and Mixup/CutMix on the device
    assert any(not torch.equal(full[k], gpu[k]) for k in gpu)
    log = json.loads((tmp_path / 'gpu-full' / 'log.jsonl').read_text().splitlines()[-1])
    assert math.isfinite(log['train_loss']) and log['nonfinite_steps'] == 0
