"""Model names → configurations: ``create_model`` and ``list_models``.

The official DeiT names (paper Table 1) and the RegNetY family (paper Table 2) build exactly the architectures of the
official release, so their checkpoints load unchanged. Four small variants for 32×32 inputs serve the notebooks and
the built-in demo, where a laptop CPU must train them in minutes:

| name | dim | depth | heads | patch | params (10 classes) |
|---|---|---|---|---|---|
| deit_tiny_patch4_32 | 192 | 12 | 3 | 4 | 5,362,762 |
| deit_tiny_distilled_patch4_32 | 192 | 12 | 3 | 4 | 5,365,076 |
| deit_nano_patch4_32 | 128 | 6 | 4 | 4 | 1,205,898 |
| deit_nano_distilled_patch4_32 | 128 | 6 | 4 | 4 | 1,207,444 |
| deit_nano_patch8_32 | 128 | 6 | 4 | 8 | 1,218,186 |
| deit_nano_distilled_patch8_32 | 128 | 6 | 4 | 8 | 1,219,732 |

(``tests/test_models.py`` checks this table.) DeiT-Ti at 32×32 with 4×4 patches has 64 patch tokens, like ViT on
CIFAR in the small-data literature; "nano" halves the depth and narrows the width so the demo runs in minutes.
DeiT-nano with 8×8 patches sees 4×4 = 16 tokens: a transformer with even less of a convnet's locality, 3× cheaper
to train, which ``python -m minideit.reproduce`` uses to put the paper's small-data regime on a CPU
(book/results/development.md).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import torch.nn as nn

from .regnet import REGNETY_CONFIGS, RegNet
from .vit import VisionTransformer


@dataclass(frozen=True)
class DeiTConfig:
    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int = 16
    img_size: int = 224
    distilled: bool = False
    extra: dict = field(default_factory=dict)


def _deit_family() -> dict[str, DeiTConfig]:
    sizes = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12)}
    names: dict[str, DeiTConfig] = {}
    for size, (dim, depth, heads) in sizes.items():
        for distilled in (False, True):
            infix = "_distilled" if distilled else ""
            names[f"deit_{size}{infix}_patch16_224"] = DeiTConfig(dim, depth, heads, 16, 224, distilled)
    for distilled in (False, True):
        infix = "_distilled" if distilled else ""
        names[f"deit_base{infix}_patch16_384"] = DeiTConfig(768, 12, 12, 16, 384, distilled)
    # Small-input variants (not in the paper): 32×32 images, 4×4 patches (and 8×8 for nano).
    for size, (dim, depth, heads), patches in [("tiny", (192, 12, 3), (4,)), ("nano", (128, 6, 4), (4, 8))]:
        for patch in patches:
            for distilled in (False, True):
                infix = "_distilled" if distilled else ""
                names[f"deit_{size}{infix}_patch{patch}_32"] = DeiTConfig(dim, depth, heads, patch, 32, distilled)
    return names


DEIT_CONFIGS: dict[str, DeiTConfig] = _deit_family()


def list_models(pattern: str = "") -> list[str]:
    """All model names, sorted; with ``pattern``, those that contain it (e.g. ``list_models("distilled")``)."""
    return sorted(n for n in (*DEIT_CONFIGS, *REGNETY_CONFIGS) if pattern in n)


def check_model_name(name: str) -> None:
    """Raise a one-line ValueError for an unknown name, listing the closest known names."""
    if name in DEIT_CONFIGS or name in REGNETY_CONFIGS:
        return
    close = difflib.get_close_matches(name, list_models(), n=4, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "see minideit.list_models() for the names"
    raise ValueError(f"unknown model '{name}': {hint}")


def create_model(name: str, num_classes: int = 1000, img_size: int | None = None, drop_path_rate: float = 0.0,
                 pretrained: bool = False, **overrides) -> nn.Module:
    """Build a model by name.

    ``img_size`` changes the input resolution of a DeiT (the position embedding follows); ``drop_path_rate`` is the
    stochastic depth of the last block (paper Table 9: 0.1). ``overrides`` set any other constructor argument
    (e.g. ``depth=6`` for a DeiT, ``stem_stride=1`` for a RegNetY on 32×32 images). ``pretrained=True`` loads the
    official weights (downloaded once into the cache; see :mod:`minideit.weights`).
    """
    check_model_name(name)
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0 (0 removes the head), got {num_classes}")
    if name in DEIT_CONFIGS:
        cfg = DEIT_CONFIGS[name]
        args = dict(img_size=img_size or cfg.img_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim,
                    depth=cfg.depth, num_heads=cfg.num_heads, distilled=cfg.distilled, num_classes=num_classes,
                    drop_path_rate=drop_path_rate)
        args.update(overrides)
        model = VisionTransformer(**args)
    else:
        if img_size is not None and img_size < 8:
            raise ValueError(f"input size {img_size} is too small for a RegNetY")
        model = RegNet(REGNETY_CONFIGS[name], num_classes=num_classes, drop_path_rate=drop_path_rate, **overrides)
    model.model_name = name
    if pretrained:
        from .weights import load_checkpoint  # imported here: weights.py imports this module
        load_checkpoint(model, name)
    return model


def has_attention(name: str) -> bool:
    """True for a DeiT name: a model whose q/k/v projections ``--attn-init-std`` can start wider (a RegNetY has none).

    The one place that answers the question for ``config.resolve``, ``train.validate`` and the reproduce suite.
    """
    return name in DEIT_CONFIGS


def is_distilled(model: nn.Module) -> bool:
    """True for a DeiT with a distillation token (it returns two logits in training mode)."""
    return bool(getattr(model, "distilled", False))
