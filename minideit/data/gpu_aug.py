"""The last steps of the training transform moved onto the GPU (``python -m minideit.train --gpu-aug``).

On the loader workers the DeiT transform ends with two steps that touch every pixel as float32: normalisation and
random erasing (transforms.py). With ``--gpu-aug`` the workers stop one step earlier and hand over uint8 images,
so each image costs the workers less and the batch that crosses to the GPU is 4x smaller; the device then does

    uint8 (B, 3, H, W) -> normalise -> random erasing, per image -> Mixup/CutMix, per batch

in the order of the official pipeline: erasing is part of the per-image transform and so comes before the batch
is mixed (erasing after Mixup would erase a region of both partners at once). Each image still draws its own
erasing decision and box, from the same distributions as ``RandomErasing``; the draws come from torch's RNG on
the device, so the boxes are not the ones the CPU path would draw for the same seed, only equal in distribution.
Everything here is vectorised over the batch and never reads a value back to the host.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from minideit.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ToNormalizedTensor, build_transform


# ---- on the loader workers: stop at uint8 ------------------------------------------------------------------

class ToUint8Tensor:
    """PIL RGB (H, W) -> uint8 tensor (3, H, W): the values ``ToNormalizedTensor`` would start from."""

    def __call__(self, img: Image.Image) -> torch.Tensor:
        if img.mode != 'RGB':
            raise ValueError(f"expected an RGB image, got mode {img.mode!r}; decode with .convert('RGB')")
        return torch.from_numpy(np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1)))  # (3, H, W) uint8

    def __repr__(self) -> str:
        return 'ToUint8Tensor()'


def build_uint8_transform(is_train: bool, input_size: int, **kwargs):
    """``build_transform`` without its float steps: the same crops, flips and RandAugment, then uint8 out.

    Takes the keyword arguments of ``build_transform`` except ``reprob`` and ``mean``/``std``, which move to
    :class:`DeviceAugment`. With the same random state it yields exactly the pixels that the float transform
    normalises (tests/test_benchmark_step.py checks this).
    """
    for key in ('reprob', 'mean', 'std'):
        if key in kwargs:
            raise ValueError(f"{key} is applied on the device with --gpu-aug; pass it to DeviceAugment instead")
    transform = build_transform(is_train, input_size, reprob=0.0, **kwargs)
    if not isinstance(transform.transforms[-1], ToNormalizedTensor):
        raise ValueError(f"expected build_transform to end with ToNormalizedTensor, got {transform.transforms[-1]!r}")
    transform.transforms[-1] = ToUint8Tensor()
    return transform


# ---- on the device: normalise, erase -----------------------------------------------------------------------

def normalize_uint8(x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 (x / 255 - mean) / std, with the very arithmetic of ``ToNormalizedTensor``
    (one multiply by 1 / (255 std), one subtract of mean / std), so both paths give the same bits."""
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise ValueError(f"expected a uint8 batch (B, 3, H, W), got {x.dtype} of shape {tuple(x.shape)}; "
                         "with --gpu-aug the loader must produce uint8 images (build_uint8_transform)")
    scale = torch.tensor([1 / (255 * s) for s in std], device=x.device).view(1, 3, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(mean, std)], device=x.device).view(1, 3, 1, 1)
    return (x * scale).sub_(shift)  # the multiply also converts to float32


def sample_erase_boxes(batch: int, height: int, width: int, p: float = 0.25, min_area: float = 0.02,
                       max_area: float = 1 / 3, min_aspect: float = 0.3, tries: int = 10,
                       device: torch.device | str = 'cpu', generator: torch.Generator | None = None):
    """One erasing decision and box per image, drawn as ``RandomErasing`` draws them, for a whole batch at once.

    Per image: erase with probability p; the box area is uniform in [min_area, max_area] of the image and its
    aspect h/w log-uniform in [min_aspect, 1/min_aspect]; of ``tries`` candidates the first that fits strictly
    inside is taken (none fits: no erasing); its corner is uniform over the positions that keep it inside.
    Instead of a Python loop, all candidates are drawn up front and the first fitting one is picked by argmax.
    Returns (erase (B,) bool, top, left, h, w (B,) int64).
    """
    def uniform(*shape):
        return torch.rand(shape, device=device, generator=generator)

    area = (min_area + (max_area - min_area) * uniform(batch, tries)) * height * width  # (B, tries)
    log_lo, log_hi = math.log(min_aspect), math.log(1 / min_aspect)
    aspect = torch.exp(log_lo + (log_hi - log_lo) * uniform(batch, tries))
    h = torch.round(torch.sqrt(area * aspect)).long()  # round half to even, like Python's round()
    w = torch.round(torch.sqrt(area / aspect)).long()
    fits = (h < height) & (w < width)  # (B, tries)
    first = fits.int().argmax(dim=1, keepdim=True)  # index of the first fitting candidate (0 if none fits)
    h, w = h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1)  # (B,)
    erase = (uniform(batch) < p) & fits.any(dim=1)
    # randint(0, H - h) inclusive, as a floor of a uniform; the clamp guards the float edge u -> 1.
    top = torch.minimum((uniform(batch) * (height - h + 1)).long(), height - h)
    left = torch.minimum((uniform(batch) * (width - w + 1)).long(), width - w)
    return erase, top, left, h, w


def random_erase_batch(x: torch.Tensor, p: float = 0.25, mode: str = 'pixel', min_area: float = 0.02,
                       max_area: float = 1 / 3, min_aspect: float = 0.3,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Random Erasing on a normalised batch (B, C, H, W): each image independently, as ``RandomErasing`` does.

    mode 'pixel' fills the box with per-pixel N(0, 1) noise (the DeiT setting), 'rand' with one N(0, 1) colour
    per box, 'const' with zeros (the mean colour). Returns a new tensor.
    """
    if mode not in ('pixel', 'rand', 'const'):
        raise ValueError(f"random erasing mode must be 'pixel', 'rand' or 'const', got {mode!r}")
    if p <= 0:
        return x
    batch, chans, height, width = x.shape
    erase, top, left, h, w = sample_erase_boxes(batch, height, width, p, min_area, max_area, min_aspect,
                                                device=x.device, generator=generator)
    rows = torch.arange(height, device=x.device).view(1, height, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, width)
    top, left, h, w, erase = (t.view(batch, 1, 1) for t in (top, left, h, w, erase))
    inside = erase & (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)  # (B, H, W)
    if mode == 'pixel':
        fill = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    elif mode == 'rand':
        fill = torch.randn((batch, chans, 1, 1), device=x.device, dtype=x.dtype, generator=generator)
    else:
        fill = torch.zeros((), device=x.device, dtype=x.dtype)
    return torch.where(inside.unsqueeze(1), fill, x)  # (B, C, H, W)


class DeviceAugment:
    """What the training loop calls on each batch in place of Mixup: normalise, erase, then Mixup/CutMix.

    ``DeviceAugment(reprob, remode, mixup)(x_uint8, y)`` -> (x float32, targets), where targets are Mixup's soft
    targets, or ``y`` unchanged without Mixup. Holds no random state of its own (erasing draws from the device's
    torch RNG, which the trainer seeds per epoch; Mixup keeps its own generator, saved in checkpoints).
    """

    def __init__(self, reprob: float = 0.25, remode: str = 'pixel', mixup=None,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        if not 0 <= reprob <= 1:
            raise ValueError(f"reprob must be in [0, 1], got {reprob}")
        if remode not in ('pixel', 'rand', 'const'):
            raise ValueError(f"random erasing mode must be 'pixel', 'rand' or 'const', got {remode!r}")
        self.reprob, self.remode, self.mixup = reprob, remode, mixup
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = normalize_uint8(x, self.mean, self.std)
        x = random_erase_batch(x, self.reprob, self.remode)  # per image, before the batch is mixed
        if self.mixup is not None:
            x, y = self.mixup(x, y)
        return x, y

    def __repr__(self) -> str:
        return f"DeviceAugment(reprob={self.reprob}, remode={self.remode!r}, mixup={self.mixup!r})"
