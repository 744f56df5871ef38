"""Mixup and CutMix on a batch, with label smoothing folded into the soft targets (paper §6, Tables 8 and 9).

Mixup (Zhang et al. 2018) blends two images, x = λ·a + (1 − λ)·b; CutMix (Yun et al. 2019) pastes a box of b into
a. Either way the target is the same blend of the two one-hot labels, with λ the share of a. DeiT applies one of
the two to every batch (switch probability 0.5), Mixup α = 0.8, CutMix α = 1.0; without them DeiT-B drops from
81.8 to 75.8 (Table 8). As in the official code, each image's partner is the image at the mirrored position of
the batch (``x.flip(0)``), so no random permutation is needed.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def one_hot_smoothed(target: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """(B,) labels → (B, K): the true class gets 1 − ε + ε/K, every other class ε/K."""
    off = smoothing / num_classes
    out = torch.full((target.shape[0], num_classes), off, device=target.device)
    return out.scatter_(1, target.unsqueeze(1), 1.0 - smoothing + off)


def mix_targets(target: torch.Tensor, num_classes: int, lam: float, smoothing: float) -> torch.Tensor:
    """λ·y + (1 − λ)·y_partner, where the partner of image i is image B − 1 − i."""
    y = one_hot_smoothed(target, num_classes, smoothing)
    return y * lam + y.flip(0) * (1.0 - lam)


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A box of area ≈ (1 − λ)·H·W with a uniformly random centre, clipped to the image: (y0, y1, x0, x1).

    Side lengths are √(1 − λ) of the image's; clipping at the border can make the box smaller, which is why the
    caller recomputes λ from the area actually pasted.
    """
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return y0, y1, x0, x1


class Mixup:
    """``mixup(x, y) -> (x_mixed, soft_targets)`` for a whole batch (the official "batch" mode).

    Randomness comes from the object's own numpy generator (λ ~ Beta(α, α) as in the official code), so
    ``state_dict``/``load_state_dict`` make resume exact and the images may live on any device.
    """

    def __init__(self, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0, prob: float = 1.0,
                 switch_prob: float = 0.5, label_smoothing: float = 0.1, num_classes: int = 1000, seed: int = 0):
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError(f"mixup and cutmix alphas must be >= 0, got {mixup_alpha} and {cutmix_alpha}")
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob = prob, switch_prob
        self.label_smoothing, self.num_classes = label_smoothing, num_classes
        self.rng = np.random.default_rng(seed)

    def _uniform(self) -> float:
        return float(self.rng.random())

    def draw(self) -> tuple[float, bool]:
        """λ for this batch and whether to use CutMix (λ = 1 means: leave the batch as it is)."""
        if self._uniform() >= self.prob:
            return 1.0, False
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha == 0 or self._uniform() < self.switch_prob)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        return (float(self.rng.beta(alpha, alpha)) if alpha > 0 else 1.0), use_cutmix

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[0] % 2:
            raise ValueError(f"Mixup/CutMix needs an even batch size (each image is paired with its mirror), "
                             f"got {x.shape[0]}")
        lam, use_cutmix = self.draw()
        if lam < 1.0:
            if use_cutmix:
                y0, y1, x0, x1 = cutmix_box(x.shape[-2], x.shape[-1], lam, self.rng)
                x[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
                lam = 1.0 - (y1 - y0) * (x1 - x0) / (x.shape[-2] * x.shape[-1])  # the area really pasted
            else:
                x = x * lam + x.flip(0) * (1.0 - lam)
        return x, mix_targets(target, self.num_classes, lam, self.label_smoothing)

    def state_dict(self) -> dict:
        return {"bit_generator": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["bit_generator"]
