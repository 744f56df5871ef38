"""Per-image transforms of the DeiT recipe (paper §6 and Table 9).

Training on ImageNet-sized images (the official `build_transform`, which calls timm's `create_transform`):

    RandomResizedCrop(224, scale 0.08-1, ratio 3/4-4/3, bicubic) -> horizontal flip (p 0.5)
    -> RandAugment 'rand-m9-mstd0.5-inc1' (or ColorJitter 0.3 when RandAugment is off)
    -> to tensor + normalize (ImageNet mean/std) -> RandomErasing (p 0.25, per-pixel noise)

Evaluation: resize the shorter side to int(224 / 0.875) = 256 (bicubic), centre-crop 224, normalize.

For 32x32 data (CIFAR, the synthetic set) the official code swaps the crop for a 4-pixel zero pad and a random
32x32 crop and evaluates on the image as it is.

Randomness comes from Python's `random` (boxes, coin flips) and torch's global RNG (erasing noise); the data
loader seeds both per (seed, epoch, worker), see loader.py. Images stay PIL/uint8 until the final 224x224 crop, so
no float work is ever done on a full-size image.
"""
from __future__ import annotations

import math
import random
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageEnhance

from minideit.data import _fast
from minideit.data.randaugment import RandAugment

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_PIL_INTERP = {'bicubic': Image.BICUBIC, 'bilinear': Image.BILINEAR, 'nearest': Image.NEAREST}


def _check_interpolation(name: str) -> str:
    if name not in _PIL_INTERP:
        raise ValueError(f"interpolation must be one of {sorted(_PIL_INTERP)}, got {name!r}")
    return name


def resize_uint8(img: Image.Image, size: tuple[int, int], interpolation: str = 'bicubic',
                 box: tuple[int, int, int, int] | None = None) -> Image.Image:
    """Resize `img` (or its region `box` = (left, top, right, bottom)) to `size` = (height, width): PIL's
    ``img.resize((width, height), interpolation, box=box)``, computed by _fast.resize with the same pixels, about
    4x faster (this resize is the costliest step of the training transform after decoding)."""
    return _fast.resize(img, size, interpolation, box)


# ---- training geometry -------------------------------------------------------------------------------------

def rrc_box(width: int, height: int, scale: Sequence[float] = (0.08, 1.0),
            ratio: Sequence[float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """Sample the RandomResizedCrop box (top, left, h, w) for a width x height image (Inception-style crop).

    Area fraction uniform in `scale`, aspect ratio w/h log-uniform in `ratio`; up to 10 tries for a box that
    fits, else the whole image centre-cropped to the nearest allowed aspect ratio (torchvision/timm behaviour).
    """
    # BEGIN EXERCISE rrc_box
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * random.uniform(scale[0], scale[1])
        aspect = math.exp(random.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = random.randint(0, height - h)
            left = random.randint(0, width - w)
            return top, left, h, w
    # Fallback: clamp the image's own aspect ratio into `ratio` and take the centre.
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w
    # END EXERCISE rrc_box


class RandomResizedCrop:
    """Crop a random box (see `rrc_box`) and resize it to size x size."""

    def __init__(self, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), interpolation: str = 'bicubic'):
        self.size, self.scale, self.ratio = size, tuple(scale), tuple(ratio)
        self.interpolation = _check_interpolation(interpolation)

    def __call__(self, img: Image.Image) -> Image.Image:
        top, left, h, w = rrc_box(img.width, img.height, self.scale, self.ratio)
        return resize_uint8(img, (self.size, self.size), self.interpolation, box=(left, top, left + w, top + h))

    def __repr__(self) -> str:
        return f"RandomResizedCrop({self.size}, scale={self.scale}, ratio={self.ratio}, {self.interpolation})"


class PadRandomCrop:
    """Pad by `padding` pixels on each side, then take a random size x size crop (the 32x32 recipe).

    `fill='zero'` pads with black, as the official code (torchvision RandomCrop(32, padding=4)) does;
    `fill='reflect'` mirrors the border instead. An image that is not size x size is first resized to it
    (bicubic), so small-input training also accepts data stored at another resolution.
    """

    def __init__(self, size: int, padding: int = 4, fill: str = 'zero', interpolation: str = 'bicubic'):
        if fill not in ('zero', 'reflect'):
            raise ValueError(f"fill must be 'zero' or 'reflect', got {fill!r}")
        self.size, self.padding, self.fill = size, padding, fill
        self.interpolation = _check_interpolation(interpolation)

    def __call__(self, img: Image.Image) -> Image.Image:
        p = self.padding
        if img.size != (self.size, self.size):
            img = resize_uint8(img, (self.size, self.size), self.interpolation)
        arr = np.asarray(img)
        arr = np.pad(arr, ((p, p), (p, p), (0, 0)), mode='constant' if self.fill == 'zero' else 'reflect')
        top = random.randint(0, arr.shape[0] - self.size)
        left = random.randint(0, arr.shape[1] - self.size)
        return Image.fromarray(np.ascontiguousarray(arr[top:top + self.size, left:left + self.size]))

    def __repr__(self) -> str:
        return f"PadRandomCrop({self.size}, padding={self.padding}, fill={self.fill!r})"


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, img: Image.Image) -> Image.Image:
        return img.transpose(Image.FLIP_LEFT_RIGHT) if random.random() < self.p else img

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class ColorJitter:
    """Brightness, contrast and saturation factors each uniform in [1 - s, 1 + s], applied in random order.

    Only used when RandAugment is off (official: `color_jitter` is ignored whenever `aa` is set).
    """

    def __init__(self, brightness: float = 0.3, contrast: float = 0.3, saturation: float = 0.3):
        self.strengths = {ImageEnhance.Brightness: brightness, ImageEnhance.Contrast: contrast,
                          ImageEnhance.Color: saturation}

    def __call__(self, img: Image.Image) -> Image.Image:
        ops = [(enh, s) for enh, s in self.strengths.items() if s > 0]
        random.shuffle(ops)
        for enhancer, s in ops:
            img = enhancer(img).enhance(random.uniform(max(0.0, 1 - s), 1 + s))
        return img

    def __repr__(self) -> str:
        return f"ColorJitter({tuple(self.strengths.values())})"


# ---- evaluation geometry -----------------------------------------------------------------------------------

class ResizeCenterCrop:
    """Resize the shorter side to int(size / crop_pct), then take the central size x size crop (eval)."""

    def __init__(self, size: int, crop_pct: float = 0.875, interpolation: str = 'bicubic'):
        if not 0 < crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
        self.size, self.crop_pct = size, crop_pct
        self.resize_to = int(size / crop_pct)
        self.interpolation = _check_interpolation(interpolation)

    def __call__(self, img: Image.Image) -> Image.Image:
        # BEGIN EXERCISE resize_center_crop
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(self.resize_to * long / short)  # truncation, as torchvision's Resize(int)
        new_h, new_w = (new_long, self.resize_to) if w <= h else (self.resize_to, new_long)
        if (new_h, new_w) != (h, w):
            img = resize_uint8(img, (new_h, new_w), self.interpolation)
        top = int(round((new_h - self.size) / 2.0))
        left = int(round((new_w - self.size) / 2.0))
        return img.crop((left, top, left + self.size, top + self.size))
        # END EXERCISE resize_center_crop

    def __repr__(self) -> str:
        return f"ResizeCenterCrop({self.size}, resize_to={self.resize_to}, {self.interpolation})"


class Resize:
    """Resize to exactly size x size (eval of small inputs whose size differs from the model's)."""

    def __init__(self, size: int, interpolation: str = 'bicubic'):
        self.size, self.interpolation = size, _check_interpolation(interpolation)

    def __call__(self, img: Image.Image) -> Image.Image:
        if img.size == (self.size, self.size):
            return img
        return resize_uint8(img, (self.size, self.size), self.interpolation)


# ---- tensor stage: normalize, erase ------------------------------------------------------------------------

class ToNormalizedTensor:
    """PIL RGB (H, W) uint8 -> float tensor (3, H, W) equal to (x / 255 - mean) / std, in one fused pass."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.mean, self.std = tuple(mean), tuple(std)
        # (x/255 - m)/s == x * (1/(255 s)) - m/s: one multiply and one subtract per element.
        self.scale = torch.tensor([1 / (255 * s) for s in std]).view(3, 1, 1)
        self.shift = torch.tensor([m / s for m, s in zip(mean, std)]).view(3, 1, 1)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        if img.mode != 'RGB':
            raise ValueError(f"expected an RGB image, got mode {img.mode!r}; decode with .convert('RGB')")
        # BEGIN EXERCISE to_normalized_tensor
        # numpy transposes uint8 (H, W, 3) -> (3, H, W) faster than torch does.
        x = torch.from_numpy(np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1)))  # (3, H, W) uint8
        return x.float().mul_(self.scale).sub_(self.shift)
        # END EXERCISE to_normalized_tensor

    def __repr__(self) -> str:
        return f"ToNormalizedTensor(mean={self.mean}, std={self.std})"


class RandomErasing:
    """Random Erasing (Zhong et al. 2017) on a normalized (3, H, W) tensor, in place, as timm does.

    With probability p, erase `count` boxes; each has area uniform in [min_area, max_area] of the image (divided
    by count) and aspect ratio h/w log-uniform in [min_aspect, 1/min_aspect]; 10 tries to fit each box.
    mode 'pixel': per-pixel N(0, 1) values (the DeiT setting: noise in normalized units), 'rand': one N(0, 1)
    colour per box, 'const': zeros (the mean colour).
    """

    def __init__(self, p: float = 0.25, mode: str = 'pixel', min_area: float = 0.02, max_area: float = 1 / 3,
                 min_aspect: float = 0.3, count: int = 1):
        if mode not in ('pixel', 'rand', 'const'):
            raise ValueError(f"random erasing mode must be 'pixel', 'rand' or 'const', got {mode!r}")
        self.p, self.mode, self.count = p, mode, count
        self.min_area, self.max_area = min_area, max_area
        self.log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))

    def sample_box(self, img_h: int, img_w: int) -> tuple[int, int, int, int] | None:
        """(top, left, h, w) of one box, or None when 10 tries found none that fits."""
        # BEGIN EXERCISE erasing_box
        for _ in range(10):
            target_area = random.uniform(self.min_area, self.max_area) * img_h * img_w / self.count
            aspect = math.exp(random.uniform(*self.log_aspect))
            h = int(round(math.sqrt(target_area * aspect)))
            w = int(round(math.sqrt(target_area / aspect)))
            if w < img_w and h < img_h:
                return random.randint(0, img_h - h), random.randint(0, img_w - w), h, w
        return None
        # END EXERCISE erasing_box

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if random.random() > self.p:
            return x
        chans, img_h, img_w = x.shape
        for _ in range(self.count):
            box = self.sample_box(img_h, img_w)
            if box is None:
                continue
            top, left, h, w = box
            if self.mode == 'pixel':
                fill = torch.empty((chans, h, w), dtype=x.dtype).normal_()
            elif self.mode == 'rand':
                fill = torch.empty((chans, 1, 1), dtype=x.dtype).normal_()
            else:
                fill = torch.zeros((chans, 1, 1), dtype=x.dtype)
            x[:, top:top + h, left:left + w] = fill
        return x

    def __repr__(self) -> str:
        return f"RandomErasing(p={self.p}, mode={self.mode!r}, count={self.count})"


class Compose:
    def __init__(self, transforms: list[Callable]):
        self.transforms = transforms

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img

    def __repr__(self) -> str:
        return 'Compose(\n' + ''.join(f'    {t!r},\n' for t in self.transforms) + ')'


def build_transform(is_train: bool, input_size: int, *, aa: str | None = 'rand-m9-mstd0.5-inc1',
                    color_jitter: float | None = 0.3, reprob: float = 0.25, remode: str = 'pixel',
                    interpolation: str = 'bicubic', crop_pct: float = 0.875,
                    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                    small_input: bool | None = None) -> Compose:
    """The DeiT train/eval transform: PIL RGB image -> float tensor (3, input_size, input_size).

    `small_input` (default: input_size <= 64) swaps RandomResizedCrop for pad-4-and-crop and evaluates on the
    image as it is (resized only if its size differs), as the official code does for 32x32 inputs.
    """
    if not isinstance(input_size, int) or input_size <= 0:
        raise ValueError(f"input_size must be a positive int, got {input_size!r}")
    if not 0 <= reprob <= 1:
        raise ValueError(f"reprob must be in [0, 1], got {reprob}")
    _check_interpolation(interpolation)
    small = input_size <= 64 if small_input is None else small_input
    if not is_train:
        first = Resize(input_size, interpolation) if small else ResizeCenterCrop(input_size, crop_pct, interpolation)
        return Compose([first, ToNormalizedTensor(mean, std)])

    steps: list[Callable] = [PadRandomCrop(input_size, interpolation=interpolation) if small
                             else RandomResizedCrop(input_size, interpolation=interpolation)]
    steps.append(RandomHorizontalFlip(0.5))
    if aa:
        fill = tuple(min(255, round(255 * m)) for m in mean)  # timm's img_mean: the fill colour of affine ops
        steps.append(RandAugment.from_config(aa, fill=fill, interpolation=interpolation))
    elif color_jitter:
        steps.append(ColorJitter(color_jitter, color_jitter, color_jitter))
    steps.append(ToNormalizedTensor(mean, std))
    if reprob > 0:
        steps.append(RandomErasing(reprob, mode=remode))
    return Compose(steps)
