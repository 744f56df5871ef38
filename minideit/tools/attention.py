"""Where the class and distillation tokens look: attention maps and attention rollout (paper §4, made visible).

Paper §4 adds a distillation token that "interacts with the class and patch tokens through the self-attention
layers". Looking at the attention of the two tokens over the patches shows how they differ. Two views:

* **last layer**: the attention weights of the last block, averaged over heads, from the token's row. It is what
  the token reads just before its head, but it ignores everything the earlier layers mixed into each patch token.
* **attention rollout** (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers", §3): follow the
  attention through every layer. Average each layer's heads, add the identity (the residual connection carries the
  token itself forward), renormalise the rows to sum to one, and multiply the layers' matrices from the first to the
  last. Row t of the product says how much of token t's final state comes from each input token.

Both are taken from the *explicit* attention path (``Attention`` with ``return_attn=True``: softmax(QKᵀ/√d)V
spelled out), the only one that has the weights; :func:`explicit_forward` also returns the logits of that pass, so
a caller can check that they equal the fused path's (``F.scaled_dot_product_attention``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from minideit.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from minideit.vit import VisionTransformer


@torch.no_grad()
def explicit_forward(model: VisionTransformer, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """One forward pass through the explicit attention path: ({'joint', and 'cls'/'dist' if distilled}, maps).

    ``maps`` holds every block's attention weights, ``depth`` tensors (B, H, T, T) with T = prefix tokens + patches.
    """
    tokens = model.embed(x)  # (B, T, D)
    maps = []
    for block in model.blocks:
        tokens, attn = block(tokens, return_attn=True)  # attn: (B, H, T, T), rows sum to one
        maps.append(attn)
    tokens = model.norm(tokens)
    if not model.distilled:
        return {"joint": model.head(tokens[:, 0])}, maps
    cls_logits, dist_logits = model.head(tokens[:, 0]), model.head_dist(tokens[:, 1])
    return {"cls": cls_logits, "dist": dist_logits, "joint": (cls_logits + dist_logits) / 2}, maps


def rollout(maps: list[torch.Tensor]) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020): (B, H, T, T) per layer → (B, T, T), rows summing to one."""
    result = None
    for attn in maps:
        a = attn.mean(dim=1)  # (B, T, T): heads averaged
        a = a + torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)  # the residual path keeps the token itself
        a = a / a.sum(dim=-1, keepdim=True)  # rows sum to one again
        result = a if result is None else a @ result  # later layers act on what earlier layers produced
    return result


def patch_map(rows: torch.Tensor, prefix: int) -> torch.Tensor:
    """One token's attention row(s) (B, T) → its distribution over the patch grid (B, g, g), summing to one.

    The prefix tokens' own share is dropped and the rest renormalised, so that maps of different images and tokens
    are comparable (the share itself is what a map cannot show: a token that mostly reads the other prefix token).
    """
    patches = rows[:, prefix:]  # (B, g·g)
    patches = patches / patches.sum(dim=-1, keepdim=True)
    side = int(round(patches.shape[-1] ** 0.5))
    return patches.reshape(-1, side, side)  # (B, g, g), row-major like the patches


def token_maps(maps: list[torch.Tensor], distilled: bool) -> dict[str, torch.Tensor]:
    """{'cls_last', 'cls_rollout' and for a distilled model 'dist_last', 'dist_rollout'}: each (B, g, g)."""
    prefix = 2 if distilled else 1
    last = maps[-1].mean(dim=1)  # (B, T, T): the last layer, heads averaged
    rolled = rollout(maps)
    out = {"cls_last": patch_map(last[:, 0], prefix), "cls_rollout": patch_map(rolled[:, 0], prefix)}
    if distilled:  # the distillation token is token 1
        out.update(dist_last=patch_map(last[:, 1], prefix), dist_rollout=patch_map(rolled[:, 1], prefix))
    return out


COLUMNS = {"cls_last": "class token\nlast layer", "cls_rollout": "class token\nrollout",
           "dist_last": "distillation token\nlast layer", "dist_rollout": "distillation token\nrollout"}


def to_image(x: torch.Tensor) -> np.ndarray:
    """A normalised input (3, H, W) → the H×W×3 picture in [0, 1] that the model saw."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x.cpu() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def draw(path: Path, images: torch.Tensor, maps: dict[str, torch.Tensor], labels: list[str]) -> Path:
    """One row per image: the input, then each token map overlaid on it; written atomically to ``path``."""
    # Figure + Agg canvas, not pyplot: no global backend switch (a notebook keeps its own)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = [c for c in COLUMNS if c in maps]
    fig = Figure(figsize=(2.1 * (1 + len(columns)), 2.3 * len(images)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(images), 1 + len(columns), squeeze=False)
    for i, (x, label) in enumerate(zip(images, labels)):
        picture = to_image(x)
        h, w = picture.shape[:2]
        axes[i, 0].imshow(picture, interpolation="nearest")
        axes[i, 0].set_title(label, fontsize=8)
        for j, column in enumerate(columns, start=1):
            axes[i, j].imshow(picture, interpolation="nearest")
            axes[i, j].imshow(maps[column][i].cpu().numpy(), cmap="inferno", alpha=0.6, extent=(0, w, h, 0),
                              interpolation="bilinear")
            if i == 0:
                axes[i, j].set_title(COLUMNS[column], fontsize=9)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fig.savefig(tmp, dpi=100, format="png", metadata={"Software": None})
        with Image.open(tmp) as img:  # a 256-colour palette: a fraction of the bytes, no visible loss here
            img.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
                tmp, format="png", optimize=True)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
