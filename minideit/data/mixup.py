"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) per batch, as DeiT trains with them (paper §6, Table 9).

For every batch: draw lambda ~ Beta(alpha, alpha); with both alphas > 0, use CutMix with probability
`switch_prob` (0.5) and Mixup otherwise (never both on one batch). The partner of image i is image B-1-i, the
batch flipped along dim 0 (official behaviour, so no extra permutation is stored), which needs an even batch.

    Mixup:   x = lambda * x + (1 - lambda) * x_flipped
    CutMix:  paste a box of x_flipped into x; lambda := 1 - box area / image area (the true kept fraction)
    targets: lambda * onehot_smooth(y) + (1 - lambda) * onehot_smooth(y_flipped)

Label smoothing is folded into the targets: off = smoothing / C, on = 1 - smoothing + off, so each row sums to 1.
All randomness comes from the object's own CPU `torch.Generator`, so `state_dict()` resumes a run exactly and the
images may live on any device.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def one_hot_smoothed(y: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """(B,) int labels -> (B, num_classes) rows with `on` at the label and `off` elsewhere."""
    # BEGIN EXERCISE one_hot_smoothed
    off = smoothing / num_classes
    on = 1.0 - smoothing + off
    targets = torch.full((y.shape[0], num_classes), off, device=y.device)
    return targets.scatter_(1, y.view(-1, 1), on)
    # END EXERCISE one_hot_smoothed


def mix_targets(y: torch.Tensor, num_classes: int, lam: float, smoothing: float = 0.0) -> torch.Tensor:
    """lambda * y + (1 - lambda) * y_partner as smoothed one-hot rows; the partner of image i is image B-1-i."""
    # BEGIN EXERCISE mix_targets
    targets = one_hot_smoothed(y, num_classes, smoothing)
    return targets * lam + targets.flip(0) * (1.0 - lam)
    # END EXERCISE mix_targets


def cutmix_box(h: int, w: int, lam: float, gen: torch.Generator) -> tuple[int, int, int, int]:
    """Box (y0, y1, x0, x1) covering about 1 - lam of an h x w image, centred at a uniform random pixel.

    Sides are h * sqrt(1 - lam) and w * sqrt(1 - lam), then clipped at the image border (so a box near the
    edge is smaller; the caller recomputes lambda from the real area).
    """
    # BEGIN EXERCISE cutmix_box
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(h * cut), int(w * cut)
    cy = int(torch.randint(0, h, (1,), generator=gen))
    cx = int(torch.randint(0, w, (1,), generator=gen))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    return y0, y1, x0, x1
    # END EXERCISE cutmix_box


class Mixup:
    """Mix a batch and its labels: `x_mixed, soft_targets = mixup(x, y)`."""

    def __init__(self, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0, prob: float = 1.0,
                 switch_prob: float = 0.5, label_smoothing: float = 0.1, num_classes: int = 1000, seed: int = 0):
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError(f"mixup_alpha and cutmix_alpha must be >= 0, got {mixup_alpha} and {cutmix_alpha}")
        if not 0 <= prob <= 1 or not 0 <= switch_prob <= 1:
            raise ValueError(f"prob and switch_prob must be in [0, 1], got {prob} and {switch_prob}")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob = prob, switch_prob
        self.label_smoothing, self.num_classes = label_smoothing, num_classes
        self.gen = torch.Generator().manual_seed(seed)

    def _uniform(self) -> float:
        return float(torch.rand((), generator=self.gen))

    def _beta(self, alpha: float) -> float:
        # torch's Beta sampler takes no generator; numpy's takes a seed, which we draw from ours.
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=self.gen))
        return float(np.random.default_rng(seed).beta(alpha, alpha))

    def draw(self) -> tuple[float, bool]:
        """(lambda, use_cutmix) for the next batch; lambda = 1.0 means "leave the batch as it is"."""
        if self._uniform() >= self.prob or (self.mixup_alpha == 0 and self.cutmix_alpha == 0):
            return 1.0, False
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = self._uniform() < self.switch_prob
        else:
            use_cutmix = self.cutmix_alpha > 0
        return self._beta(self.cutmix_alpha if use_cutmix else self.mixup_alpha), use_cutmix

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, H, W) float, y (B,) int64 -> mixed x (a new tensor) and soft targets (B, num_classes)."""
        if x.shape[0] % 2 != 0:
            raise ValueError(f"Mixup/CutMix pairs image i with image B-1-i and needs an even batch size, got "
                             f"{x.shape[0]}; use an even batch size and drop_last=True")
        lam, use_cutmix = self.draw()
        if lam < 1.0 and use_cutmix:
            y0, y1, x0, x1 = cutmix_box(x.shape[-2], x.shape[-1], lam, self.gen)
            x = x.clone()
            x[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
            lam = 1.0 - (y1 - y0) * (x1 - x0) / (x.shape[-2] * x.shape[-1])  # the fraction really kept
        elif lam < 1.0:
            x = x * lam + x.flip(0) * (1.0 - lam)
        return x, mix_targets(y, self.num_classes, lam, self.label_smoothing)

    def state_dict(self) -> dict:
        return {'generator': self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.gen.set_state(state['generator'])

    def __repr__(self) -> str:
        return (f"Mixup(mixup_alpha={self.mixup_alpha}, cutmix_alpha={self.cutmix_alpha}, prob={self.prob}, "
                f"switch_prob={self.switch_prob}, label_smoothing={self.label_smoothing}, "
                f"num_classes={self.num_classes})")
