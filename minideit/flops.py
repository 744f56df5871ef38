"""Counting the FLOPs of a model, the way the paper reports them (Table 1: 1.3 / 4.6 / 17.6 GFLOPs for Ti / S / B).

The paper's "FLOPs" are multiply-accumulates (MACs): one multiply plus one add counts once, as in fvcore and most
vision papers. We count only the products of matrices, where nearly all the work is:

* convolutions: output elements × (input channels / groups) × kernel height × kernel width;
* linear layers: output elements × input features;
* attention: Q·Kᵀ and A·V, each B·H·N·N·d = B·N·N·D.

Norms, activations, softmax and additions are left out (they are a fraction of a percent here). The counter runs
one forward pass on zeros with hooks on the layers, so it follows whatever the model actually computes.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .vit import Attention


def conv_macs(module: nn.Conv2d, inputs: tuple, output: torch.Tensor) -> int:
    kh, kw = module.kernel_size
    return output.numel() * (module.in_channels // module.groups) * kh * kw


def linear_macs(module: nn.Linear, inputs: tuple, output: torch.Tensor) -> int:
    return output.numel() * module.in_features


def attention_macs(module: Attention, inputs: tuple, output: torch.Tensor) -> int:
    """Q·Kᵀ and A·V; the qkv and output projections are linear layers and are counted there."""
    batch, tokens, dim = inputs[0].shape
    return 2 * batch * tokens * tokens * dim


COUNTERS = {nn.Conv2d: conv_macs, nn.Linear: linear_macs, Attention: attention_macs}


@torch.no_grad()
def count_flops(model: nn.Module, input_size: int | tuple[int, ...] = 224, per_module: bool = False):
    """Multiply-accumulates of one forward pass on one image of ``input_size`` (an int for square RGB images, or
    ``(C, H, W)``). Returns an int, or with ``per_module=True`` a dict ``{module name: MACs}`` as well."""
    shape = (3, input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    counts: dict[str, int] = {}
    handles = []
    for name, module in model.named_modules():
        counter = next((fn for cls, fn in COUNTERS.items() if isinstance(module, cls)), None)
        if counter is not None:
            def hook(mod, inputs, output, name=name, counter=counter):
                counts[name] = counts.get(name, 0) + counter(mod, inputs, output)
            handles.append(module.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        param = next(model.parameters())
        model(torch.zeros(1, *shape, dtype=param.dtype, device=param.device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    total = sum(counts.values())
    return (total, counts) if per_module else total


def transformer_macs(num_tokens: int, dim: int, depth: int, mlp_ratio: float = 4.0) -> int:
    """The same count for a ViT's blocks by formula (a learner exercise): per block, with N tokens of width D,
    qkv 3·N·D², attention 2·N²·D, projection N·D², MLP 2·r·N·D²."""
    # BEGIN EXERCISE transformer_macs
    per_block = 3 * num_tokens * dim**2 + 2 * num_tokens**2 * dim + num_tokens * dim**2 + 2 * mlp_ratio * num_tokens * dim**2
    return int(depth * per_block)
    # END EXERCISE transformer_macs
