"""Checks of the data exercises: transforms (notebooks 00, 09), Mixup/CutMix (09), repeated augmentation (11).

Sampling functions are checked for properties any correct answer has, never for the reference's order of random
draws: each box lies inside the image with its area and shape in range, and over many draws the boxes' mean area,
aspect and position match the reference's (a sampler that draws in another order, or left before top, passes).
"""
from __future__ import annotations

import math
import random

import numpy as np
import torch
from PIL import Image

from minideit.data import mixup, samplers, transforms
from .checking import call, compare, describe, expect, seeded


def _noise_image(width: int, height: int, seed: int) -> Image.Image:
    """Random pixels: a crop one pixel off, or a wrong resize, changes almost every value."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


# ---- notebook 00: the evaluation transform ----------------------------------------------------------------------
def check_to_normalized_tensor(fn) -> None:
    default = transforms.ToNormalizedTensor()
    custom = transforms.ToNormalizedTensor(mean=(0.5, 0.4, 0.3), std=(0.25, 0.5, 1.0))
    for t, (w, h) in [(default, (5, 7)), (default, (3, 2)), (custom, (20, 12))]:
        img = _noise_image(w, h, seed=w)
        label = f"to_normalized_tensor({t}, RGB image {w}x{h})"
        got = call(fn, label, t, img)
        x = torch.from_numpy(np.asarray(img).copy()).float()  # (H, W, 3)
        mean, std = torch.tensor(t.mean), torch.tensor(t.std)
        compare(got, t(img), label, mistakes=[
            ((x.permute(2, 0, 1) - mean.view(3, 1, 1)) / std.view(3, 1, 1), "divide the pixels by 255 first"),
            (((x / 255 - mean) / std).permute(2, 1, 0), "channels first, then rows, then columns: (3, H, W)"),
        ])
        expect(got.dtype == torch.float32, f"{label}: expected float32 (the model's dtype), got {got.dtype}")


def check_resize_center_crop(fn) -> None:
    for size, crop_pct, (w, h) in [(16, 0.875, (30, 40)), (16, 0.875, (45, 30)), (16, 0.875, (18, 18)),
                                   (16, 1.0, (16, 33)), (12, 0.75, (20, 21))]:
        t = transforms.ResizeCenterCrop(size, crop_pct)
        img = _noise_image(w, h, seed=w * h)
        label = f"resize_center_crop(ResizeCenterCrop({size}, crop_pct={crop_pct}, resize_to {t.resize_to}), " \
                f"image {w}x{h})"
        got = call(fn, label, t, img)
        expect(isinstance(got, Image.Image), f"{label}: expected a PIL image, got {describe(got)}")
        expect(got.size == (size, size), f"{label}: expected a {size}x{size} image, got {got.size[0]}x{got.size[1]}")
        diff = np.abs(np.asarray(got, dtype=np.int16) - np.asarray(t(img), dtype=np.int16))
        # A different resize kernel changes values by a grey level or two; a misplaced crop by dozens.
        expect(diff.mean() < 1.0, f"{label}: pixels differ from the reference by {diff.mean():.1f} grey levels "
                                  "on average; check the resized size (shorter side = resize_to, the other "
                                  "int(resize_to * long / short)) and the crop offsets round((new - size) / 2)")


# ---- notebook 09: RandomResizedCrop and random erasing -----------------------------------------------------------
def _check_box_fits(box, label: str, width: int, height: int) -> None:
    expect(isinstance(box, (tuple, list)) and len(box) == 4 and all(isinstance(v, int) for v in box),
           f"{label}: expected 4 ints (top, left, h, w), got {describe(box)}")
    top, left, h, w = box
    expect(h > 0 and w > 0 and 0 <= top and 0 <= left and top + h <= height and left + w <= width,
           f"{label}: box (top={top}, left={left}, h={h}, w={w}) does not lie inside the {width}x{height} image")


def _draws(fn, seed: int, n: int, *args) -> list:
    """n results of a sampling function after seeding Python's and torch's generators once."""
    random.seed(seed)
    torch.manual_seed(seed)
    return [fn(*args) for _ in range(n)]


def _compare_mean(label: str, what: str, got: list[float], expected: list[float], tol: float, hint: str) -> None:
    g, e = sum(got) / len(got), sum(expected) / len(expected)
    expect(abs(g - e) <= tol, f"{label}: over {len(got)} draws the mean {what} is {g:.3f}, a correct sampler gives "
                              f"{e:.3f} +- {tol:.3f}; {hint}")


def check_rrc_box(fn) -> None:
    """Any correct sampler passes: each box is checked for its properties, and many boxes for their distribution
    (compared with the reference's), never for the reference's order of random draws."""
    width, height, scale, ratio = 100, 60, (0.08, 1.0), (3 / 4, 4 / 3)
    label = f"rrc_box({width}, {height}, scale={scale}, ratio=(0.75, 1.333))"
    boxes = call(_draws, label, fn, 0, 2000, width, height, scale, ratio)
    for box in boxes:
        _check_box_fits(box, label, width, height)
        top, left, h, w = box
        # w and h are rounded, so the area and the aspect ratio can be off by a rounding step
        expect(scale[0] * 0.85 <= w * h / (width * height) <= 1.0,
               f"{label}: box {w}x{h} covers {w * h / (width * height):.3f} of the image, outside scale {scale}")
        expect(ratio[0] * 0.9 <= w / h <= ratio[1] * 1.1, f"{label}: box {w}x{h} has aspect w/h {w / h:.3f}, "
                                                          f"outside ratio ({ratio[0]:.3f}, {ratio[1]:.3f})")
    reference = _draws(transforms.rrc_box, 1, 2000, width, height, scale, ratio)
    area = lambda bs: [b[2] * b[3] / (width * height) for b in bs]  # noqa: E731
    _compare_mean(label, "area fraction", area(boxes), area(reference), 0.04,
                  "draw the area fraction uniformly in scale (the area, not the side, is uniform) and retry "
                  "boxes that do not fit")
    log_aspect = lambda bs: [math.log(b[3] / b[2]) for b in bs]  # noqa: E731
    _compare_mean(label, "log aspect ratio log(w/h)", log_aspect(boxes), log_aspect(reference), 0.03,
                  "draw log(w/h) uniformly between log(ratio[0]) and log(ratio[1])")
    for name, i, size, side in (("top", 0, height, 2), ("left", 1, width, 3)):
        free = [(b[i], size - b[side]) for b in boxes if size - b[side] > 0]
        where = [pos / room for pos, room in free]
        expect(len(set(where)) > 10, f"{label}: the {name} offset takes {len(set(where))} distinct relative "
                                     f"values over {len(boxes)} boxes; draw it uniformly with random.randint(0, "
                                     f"{'height - h' if name == 'top' else 'width - w'})")
        _compare_mean(label, f"relative {name} offset", where,
                      [b[i] / (size - b[side]) for b in reference if size - b[side] > 0], 0.05,
                      f"the {name} offset is uniform between 0 and the free room (both ends included)")
    for w, h, scale in [(100, 10, (0.9, 1.0)), (10, 100, (0.9, 1.0)), (50, 50, (1.5, 2.0))]:
        label = f"rrc_box({w}, {h}, scale={scale}) (no box fits: the fallback)"
        compare(tuple(seeded(call, 0, fn, label, w, h, scale, ratio)), transforms.rrc_box(w, h, scale, ratio), label)


def check_erasing_box(fn) -> None:
    """Properties of each box and the distribution of many, as for rrc_box; the order of draws is free."""
    img_h, img_w = 32, 40
    for count in (1, 2):
        erase = transforms.RandomErasing(p=1.0, count=count)
        label = f"erasing_box(RandomErasing(count={count}), {img_h}, {img_w})"
        boxes = call(_draws, label, lambda *a: fn(erase, *a), 0, 1500, img_h, img_w)
        lo, hi = erase.min_area / count, erase.max_area / count
        for box in boxes:
            if box is None:
                continue
            _check_box_fits(box, label, img_w, img_h)
            top, left, h, w = box
            expect(h < img_h and w < img_w, f"{label}: box {h}x{w} must be strictly smaller than the image")
            frac = h * w / (img_h * img_w)
            expect(lo * 0.7 <= frac <= hi * 1.3, f"{label}: box {h}x{w} covers {frac:.3f} of the image, outside "
                                                  f"(min_area, max_area) / count = ({lo:.3f}, {hi:.3f})")
            lo_a, hi_a = (math.exp(a) for a in erase.log_aspect)
            expect(lo_a * 0.75 <= h / w <= hi_a * 1.35, f"{label}: box {h}x{w} has aspect h/w {h / w:.2f}, "
                                                        f"outside ({lo_a:.2f}, {hi_a:.2f})")
        reference = _draws(erase.sample_box, 1, 1500, img_h, img_w)
        misses = lambda bs: [b is None for b in bs]  # noqa: E731
        _compare_mean(label, "share of None (no box fitted in 10 tries)", misses(boxes), misses(reference), 0.03,
                      "try up to 10 boxes, each with a fresh area and aspect, before giving up")
        area = lambda bs: [b[2] * b[3] / (img_h * img_w) for b in bs if b is not None]  # noqa: E731
        _compare_mean(label, "area fraction", area(boxes), area(reference), 0.012,
                      "draw the area uniformly in (min_area, max_area) times H*W / count")
        top = lambda bs: [b[0] / (img_h - b[2]) for b in bs if b is not None]  # noqa: E731
        _compare_mean(label, "relative top offset", top(boxes), top(reference), 0.05,
                      "draw top uniformly with random.randint(0, H - h), left with random.randint(0, W - w)")
    never = transforms.RandomErasing(p=1.0, min_area=1.0, max_area=1.0)
    label = "erasing_box(RandomErasing(min_area=1, max_area=1), 10, 10) (no box fits)"
    compare(seeded(call, 0, fn, label, never, 10, 10), None, label)


# ---- notebook 09: Mixup and CutMix -------------------------------------------------------------------------------
def check_one_hot_smoothed(fn) -> None:
    for y, k, smoothing in [([0, 3, 1, 4], 5, 0.0), ([0, 3, 1, 4], 5, 0.1), ([2], 3, 0.3)]:
        labels = torch.tensor(y)
        label = f"one_hot_smoothed(y={y}, num_classes={k}, smoothing={smoothing})"
        got = call(fn, label, labels, k, smoothing)
        off = smoothing / (k - 1)
        compare(got, mixup.one_hot_smoothed(labels, k, smoothing), label, mistakes=[
            (torch.full((len(y), k), off).scatter_(1, labels.view(-1, 1), 1 - smoothing),
             "spread the smoothing over all num_classes classes, the label's included: off = smoothing / "
             "num_classes, on = 1 - smoothing + off"),
            (torch.full((len(y), k), smoothing / k).scatter_(1, labels.view(-1, 1), 1 - smoothing),
             "the label gets its share of the smoothing too: on = 1 - smoothing + smoothing / num_classes"),
        ])


def check_mix_targets(fn) -> None:
    y = torch.tensor([0, 2, 1, 4, 3, 3])
    for lam, smoothing in [(0.7, 0.1), (0.25, 0.0), (1.0, 0.1)]:
        label = f"mix_targets(y={y.tolist()}, num_classes=5, lam={lam}, smoothing={smoothing})"
        got = call(fn, label, y, 5, lam, smoothing)
        rows = mixup.one_hot_smoothed(y, 5, smoothing)
        compare(got, mixup.mix_targets(y, 5, lam, smoothing), label, mistakes=[
            (rows * lam + rows.roll(1, 0) * (1 - lam), "the partner of image i is image B-1-i: flip the batch"),
            (rows * (1 - lam) + rows.flip(0) * lam, "lam weighs the image's own labels, 1 - lam its partner's"),
        ])


def check_cutmix_box(fn) -> None:
    """Each box's properties, then the distribution of the box's centre over many draws (any order of draws)."""
    h, w = 32, 24
    for lam in (0.3, 0.75, 1.0, 0.0):
        label = f"cutmix_box({h}, {w}, lam={lam}, gen)"
        gen = torch.Generator().manual_seed(0)
        boxes = [call(fn, label, h, w, lam, gen) for _ in range(400 if 0 < lam < 1 else 20)]
        cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        for box in boxes:
            expect(isinstance(box, (tuple, list)) and len(box) == 4 and all(isinstance(v, int) for v in box),
                   f"{label}: expected 4 ints (y0, y1, x0, x1), got {describe(box)}")
            y0, y1, x0, x1 = box
            expect(0 <= y0 <= y1 <= h and 0 <= x0 <= x1 <= w and y1 - y0 <= cut_h + 1 and x1 - x0 <= cut_w + 1,
                   f"{label}: box rows {y0}:{y1}, columns {x0}:{x1} must lie in the {h}x{w} image and be at most "
                   f"{cut_h}x{cut_w} (sides int(h * sqrt(1 - lam)), int(w * sqrt(1 - lam)))")
            unclipped = cut_h // 2 <= (y0 + y1) / 2 <= h - cut_h // 2 and cut_w // 2 <= (x0 + x1) / 2 <= w - cut_w // 2
            expect(not unclipped or (y1 - y0 >= cut_h - 1 and x1 - x0 >= cut_w - 1),
                   f"{label}: box rows {y0}:{y1}, columns {x0}:{x1} lies inside the image but is smaller than "
                   f"{cut_h}x{cut_w}; only the image border may clip it")
        if not 0 < lam < 1:
            continue
        ref_gen = torch.Generator().manual_seed(1)
        reference = [mixup.cutmix_box(h, w, lam, ref_gen) for _ in range(400)]
        area = lambda bs: [(b[1] - b[0]) * (b[3] - b[2]) / (h * w) for b in bs]  # noqa: E731
        _compare_mean(label, "box area fraction", area(boxes), area(reference), 0.03,
                      "draw the centre uniformly over the whole image (cy in [0, h), cx in [0, w)) and clip the "
                      "box to the image: near the border it is cut, which is why lam is recomputed from it")
        centre = lambda bs: [(b[0] + b[1]) / 2 / h for b in bs]  # noqa: E731
        _compare_mean(label, "relative row of the box centre", centre(boxes), centre(reference), 0.05,
                      "draw cy with torch.randint(0, h, (1,), generator=gen)")


# ---- notebook 11: the repeated-augmentation sampler --------------------------------------------------------------
def check_epoch_indices(fn) -> None:
    cases = [(10, 1, 0, 3, True, 0), (10, 2, 1, 3, True, 1), (600, 4, 3, 3, True, 2), (5, 4, 2, 3, False, 0),
             (7, 3, 1, 1, True, 0), (1000, 8, 5, 3, True, 7)]
    for n, replicas, rank, repeats, shuffle, epoch in cases:
        sampler = samplers.RASampler(n, num_replicas=replicas, rank=rank, shuffle=shuffle, num_repeats=repeats)
        sampler.set_epoch(epoch)
        label = (f"epoch_indices(RASampler({n} images, num_replicas={replicas}, rank={rank}, "
                 f"num_repeats={repeats}, shuffle={shuffle}), epoch {epoch})")
        got = call(fn, label, sampler)
        expected = sampler.epoch_indices()
        expect(isinstance(got, list), f"{label}: expected a list of ints, got {type(got).__name__} "
                                      "(a tensor converts with .tolist())")
        compare(got, expected, label, mistakes=[
            (_variant(sampler, "repeat_interleave", cut=False), f"keep only the first num_selected = "
                                                                f"{sampler.num_selected} indices of this rank"),
            (_variant(sampler, "repeat", cut=True), "repeat each index in place, [a, a, a, b, b, b] "
                                                    "(repeat_interleave), so that its copies go to different ranks"),
        ])


def _variant(sampler: samplers.RASampler, repeat: str, cut: bool) -> list[int]:
    """The sampler's indices with the copies laid out by ``repeat`` and the official cut on or off."""
    if sampler.shuffle:
        g = torch.Generator().manual_seed(sampler.seed + sampler.epoch)
        order = torch.randperm(sampler.dataset_len, generator=g)
    else:
        order = torch.arange(sampler.dataset_len)
    order = getattr(order, repeat)(sampler.num_repeats)
    total = sampler.per_rank * sampler.num_replicas
    order = order.repeat(math.ceil(total / len(order)))[:total][sampler.rank::sampler.num_replicas]
    return order[:sampler.num_selected].tolist() if cut else order.tolist()
