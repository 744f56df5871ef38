"""The vision transformer of DeiT, read top to bottom in the order data flows through it.

Paper §3 recalls the ViT architecture: an image is cut into 16×16 patches, each patch becomes a token by a linear
projection, a learned class token is prepended, a learned position embedding is added, and a stack of pre-norm
transformer blocks (multi-head self-attention, then an MLP, each with a residual connection) mixes the tokens.
The class token's final state goes through a linear head.

Paper §4 adds one thing: a *distillation token*. It is a second learned token, placed right after the class token,
that takes part in attention like every other token. Its final state goes through its own head, ``head_dist``,
which is trained to reproduce the teacher's prediction. At test time the two heads' logits are averaged.

Parameter names match the official release (``cls_token``, ``dist_token``, ``pos_embed``, ``patch_embed.proj``,
``blocks.{i}.attn.qkv`` ...), so the official checkpoints load with ``load_state_dict(strict=True)``.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange


# ----------------------------------------------------------------------------------------------------------------
# 1. Patches → tokens
# ----------------------------------------------------------------------------------------------------------------
def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images into non-overlapping square patches and flatten each one (paper §3, "Vision transformer").

    (B, C, H, W) → (B, N, C·p·p) with N = (H/p)·(W/p) patches in row-major order. Within a patch the values are
    ordered channel first, then row, then column: the same order as the weights of a ``Conv2d`` kernel, which is what
    makes the linear projection of these vectors equal to a strided convolution.
    """
    # BEGIN EXERCISE patchify
    return rearrange(images, "b c (h p1) (w p2) -> b (h w) (c p1 p2)", p1=patch_size, p2=patch_size)
    # END EXERCISE patchify


class PatchEmbed(nn.Module):
    """Linear projection of flattened patches, computed as a convolution with kernel = stride = patch size.

    A p×p convolution applied with stride p sees each patch exactly once and takes a dot product of the patch with
    each of its ``dim`` kernels: that *is* a linear layer on the flattened patch. The convolution is simply the fast
    way to do it; :meth:`forward_as_linear` does the same thing the slow, explicit way.
    """

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768):
        super().__init__()
        if img_size % patch_size != 0:
            raise ValueError(f"input size {img_size} is not divisible by the patch size {patch_size}; "
                             f"pick a multiple of {patch_size}")
        self.img_size = img_size
        self.patch_size = patch_size
        self.grid_size = img_size // patch_size
        self.num_patches = self.grid_size ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, D, H/p, W/p)
        return x.flatten(2).transpose(1, 2)  # (B, N, D)

    def forward_as_linear(self, x: torch.Tensor) -> torch.Tensor:
        """The same map written as patchify + a matrix product, for teaching (equal to :meth:`forward`)."""
        # BEGIN EXERCISE patch_embed_linear
        patches = patchify(x, self.patch_size)  # (B, N, C·p·p)
        weight = self.proj.weight.flatten(1)  # (D, C·p·p): each kernel unrolled in the same order
        return patches @ weight.T + self.proj.bias  # (B, N, D)
        # END EXERCISE patch_embed_linear


# ----------------------------------------------------------------------------------------------------------------
# 2. Self-attention and the transformer block
# ----------------------------------------------------------------------------------------------------------------
def attention_weights(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """softmax(Q·Kᵀ / √d) of paper §3 (Eq. of "Multi-head Self Attention"); (B, H, N, d) ×2 → (B, H, N, N)."""
    # BEGIN EXERCISE attention_weights
    scale = q.shape[-1] ** -0.5
    return (q @ k.transpose(-2, -1) * scale).softmax(dim=-1)
    # END EXERCISE attention_weights


class Attention(nn.Module):
    """Multi-head self-attention with a fused projection to queries, keys and values.

    ``qkv`` produces, for every token, the concatenation [q | k | v], each split into ``num_heads`` contiguous
    chunks of ``head_dim`` values: that row layout is the official checkpoint's. Two paths compute the same function:
    the fast one calls ``F.scaled_dot_product_attention`` (a fused kernel where the backend has one); the explicit one
    spells out softmax(QKᵀ/√d)V and can hand back the attention maps, which the notebooks draw.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"embedding dim {dim} is not divisible by the number of heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.fused = True  # False forces the explicit path everywhere (for teaching and for checking)

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, N, D) → q, k, v each (B, H, N, d)."""
        # BEGIN EXERCISE split_heads
        qkv = self.qkv(x)  # (B, N, 3·H·d)
        q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=self.num_heads)
        return q, k, v
        # END EXERCISE split_heads

    def forward(self, x: torch.Tensor, return_attn: bool = False):
        """Paper §3, "Multi-head self-attention": softmax(Q·Kᵀ/√d)·V in each head, heads concatenated, then
        projected: (B, N, D) → (B, N, D), and with ``return_attn`` also the weights (B, H, N, N)."""
        # BEGIN EXERCISE attention_forward
        q, k, v = self.split_heads(x)  # each (B, H, N, d)
        if self.fused and not return_attn:
            out, attn = F.scaled_dot_product_attention(q, k, v), None  # the same product, in one fused kernel
        else:
            attn = attention_weights(q, k)  # (B, H, N, N)
            out = attn @ v  # (B, H, N, d): each query's weighted average of the values
        out = rearrange(out, "b h n d -> b n (h d)")  # heads side by side again, head 0 first: (B, N, D)
        out = self.proj(out)  # (B, N, D)
        return (out, attn) if return_attn else out
        # END EXERCISE attention_forward


class Mlp(nn.Module):
    """The block's feed-forward network: Linear → GELU → Linear, hidden width = mlp_ratio × dim (paper §3)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def linear_rates(max_rate: float, n: int) -> list[float]:
    """Stochastic-depth rates growing linearly from 0 (first block) to ``max_rate`` (last block)."""
    return [max_rate * i / max(n - 1, 1) for i in range(n)]


def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth (Huang et al. 2016; paper §6 and Table 9, rate 0.1): drop a whole residual branch per sample.

    Each sample's branch output is kept with probability 1 − p and then divided by 1 − p, so its expectation is
    unchanged and nothing needs rescaling at test time.
    """
    # BEGIN EXERCISE drop_path
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask_shape = (x.shape[0],) + (1,) * (x.ndim - 1)  # one draw per sample, broadcast over the rest
    mask = x.new_empty(mask_shape).bernoulli_(keep)
    # Scale the (B, 1, 1) mask, not the product: `x * mask / keep` would pass over the whole (B, N, D) tensor
    # twice forward and twice backward; on a CPU those extra passes are a visible share of a small model's step.
    return x * mask.div_(keep)
    # END EXERCISE drop_path


class DropPath(nn.Module):
    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x)), each branch under stochastic depth."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path_rate: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path_rate)

    def forward(self, x: torch.Tensor, return_attn: bool = False):
        # BEGIN EXERCISE block_forward
        if return_attn:
            y, attn = self.attn(self.norm1(x), return_attn=True)
        else:
            y, attn = self.attn(self.norm1(x)), None
        x = x + self.drop_path(y)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return (x, attn) if return_attn else x
        # END EXERCISE block_forward


# ----------------------------------------------------------------------------------------------------------------
# 3. The whole model, with or without the distillation token
# ----------------------------------------------------------------------------------------------------------------
class VisionTransformer(nn.Module):
    """DeiT = ViT with the training recipe of the paper, and optionally the distillation token of §4.

    Token order is [cls, dist, patches]; ``pos_embed`` covers all of them. In training mode a distilled model returns
    ``(cls_logits, dist_logits)`` so that the loss can treat the heads separately; in eval mode it returns their mean,
    as the official code does (the paper's text speaks of adding the softmax outputs; the official code averages
    logits, and so do we).
    """

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, num_classes: int = 1000,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, distilled: bool = False, drop_path_rate: float = 0.0,
                 attn_init_std: float = 0.02):
        super().__init__()
        self.attn_init_std = attn_init_std  # std of the q/k/v projections at initialisation (see init_weights)
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.distilled = distilled
        self.num_prefix_tokens = 2 if distilled else 1
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        num_tokens = self.patch_embed.num_patches + self.num_prefix_tokens

        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if distilled else None
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, embed_dim))
        # Stochastic depth grows linearly with depth, from 0 at the first block to drop_path_rate at the last.
        rates = linear_rates(drop_path_rate, depth)
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, qkv_bias, r) for r in rates])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if distilled:
            self.head_dist = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        """Truncated normal, std 0.02, for the tokens, position embedding and linear layers; zeros for biases.

        The official code calls timm's ``trunc_normal_(std=.02)``, whose cut-off is ±2 in *absolute* value, i.e.
        100 standard deviations: in effect a plain normal. We follow it. LayerNorms start at weight 1, bias 0; the
        patch convolution keeps PyTorch's default initialisation, as in the official code.

        ``attn_init_std`` (default 0.02, the official value) sets the std of the q/k/v projections alone. Why it is
        there: an attention logit is a q·k product, so its spread at initialisation grows with the square of that std
        times the width: with 0.02, DeiT-B's logits start with a std of about 0.3, a width-128 DeiT-nano's about 0.05,
        so uniform that its class token can average all patches for many epochs before it learns where to look
        (book/results/development.md, runs 41–42). 0.05 gives DeiT-nano DeiT-B's starting spread. Every other draw is
        the same, in the same order, whatever this value.
        """
        for p in (self.pos_embed, self.cls_token, self.dist_token):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02, a=-2.0, b=2.0)
        qkv = {id(block.attn.qkv) for block in self.blocks}
        for m in self.modules():
            if isinstance(m, nn.Linear):
                std = self.attn_init_std if id(m) in qkv else 0.02
                nn.init.trunc_normal_(m.weight, std=std, a=-2.0, b=2.0)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def prefix_tokens(self, batch_size: int) -> torch.Tensor:
        """The learned class (and distillation) tokens, repeated for the batch: (B, 1 or 2, D)."""
        tokens = [self.cls_token] if self.dist_token is None else [self.cls_token, self.dist_token]
        return torch.cat(tokens, dim=1).expand(batch_size, -1, -1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) → input tokens with position embedding (B, prefix + N, D)."""
        # BEGIN EXERCISE embed
        x = self.patch_embed(x)  # (B, N, D)
        x = torch.cat([self.prefix_tokens(x.shape[0]), x], dim=1)  # (B, prefix + N, D)
        return x + self.pos_embed
        # END EXERCISE embed

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens after the last block and the final norm: (B, prefix + N, D) (paper §3: patches → tokens →
        transformer blocks → LayerNorm)."""
        # BEGIN EXERCISE forward_features
        x = self.embed(x)  # (B, prefix + N, D)
        for block in self.blocks:
            x = block(x)  # same shape: every block maps a sequence of tokens to one of the same length
        return self.norm(x)
        # END EXERCISE forward_features

    def forward_head(self, x: torch.Tensor):
        # BEGIN EXERCISE forward_head
        cls_logits = self.head(x[:, 0])  # the class token's state
        if not self.distilled:
            return cls_logits
        dist_logits = self.head_dist(x[:, 1])  # the distillation token's state
        if self.training:
            return cls_logits, dist_logits
        return (cls_logits + dist_logits) / 2  # the joint classifier of §4 ("Classification with our approach")
        # END EXERCISE forward_head

    def forward(self, x: torch.Tensor):
        return self.forward_head(self.forward_features(x))

    def head_logits(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every classifier the paper reports (Tables 3 and 4) from the final tokens (B, T, D), in eval mode:
        'joint' is what ``forward_head`` predicts, and a distilled model adds its two heads on their own."""
        if self.training:
            raise RuntimeError("head_logits is for evaluation: call model.eval() first")
        logits = {"cls": self.head(x[:, 0]), "dist": self.head_dist(x[:, 1])} if self.distilled else {}
        logits["joint"] = self.forward_head(x)
        return logits

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every block's attention weights, through the explicit path: a list of ``depth`` tensors (B, H, T, T)."""
        x = self.embed(x)
        maps = []
        for block in self.blocks:
            x, attn = block(x, return_attn=True)
            maps.append(attn)
        return maps

    @torch.no_grad()
    def token_states(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The tokens at the input and after each block (the last one also after the final norm): depth + 1 tensors.

        Used to follow how similar the class and distillation tokens become through the layers (paper §4).
        """
        x = self.embed(x)
        states = [x]
        for i, block in enumerate(self.blocks):
            x = block(x)
            states.append(self.norm(x) if i == len(self.blocks) - 1 else x)
        return states

    def set_fused_attention(self, enabled: bool) -> None:
        """Choose the attention path of every block (both give the same result up to float rounding)."""
        for block in self.blocks:
            block.attn.fused = enabled

    def no_weight_decay(self) -> set[str]:
        """Parameters that the official recipe keeps out of weight decay, besides norms and biases."""
        return {"pos_embed", "cls_token", "dist_token"}


def token_cosine(states: list[torch.Tensor]) -> torch.Tensor:
    """Cosine similarity of the class and distillation tokens at each depth, averaged over the batch (paper §4).

    ``states`` is what :meth:`VisionTransformer.token_states` returns: tensors (B, T, D) with the class token at
    position 0 and the distillation token at position 1. Returns one value per state, shape (len(states),). The paper
    measures 0.06 at the input and 0.93 after the last layer: the two tokens converge but stay distinct.
    """
    # BEGIN EXERCISE token_cosine
    sims = [F.cosine_similarity(s[:, 0], s[:, 1], dim=-1).mean() for s in states]  # a (B,) mean per depth
    return torch.stack(sims)
    # END EXERCISE token_cosine


# ----------------------------------------------------------------------------------------------------------------
# 4. Position embeddings at another resolution (paper §6, "Fine-tuning at different resolution")
# ----------------------------------------------------------------------------------------------------------------
def resize_pos_embed(pos_embed: torch.Tensor, new_grid: int | tuple[int, int], num_prefix_tokens: int = 1,
                     old_grid: tuple[int, int] | None = None) -> torch.Tensor:
    """Resample a learned position embedding to a new patch grid, keeping the prefix tokens as they are.

    The patch part is viewed as an image of ``dim`` channels on the old grid and resized with bicubic interpolation,
    ``align_corners=False`` (the official fine-tuning code; the paper §6 says bicubic). The class and distillation
    tokens have no position on the grid, so their embeddings are copied unchanged.
    (1, prefix + h·w, D) → (1, prefix + H·W, D).
    """
    # BEGIN EXERCISE resize_pos_embed
    new_h, new_w = (new_grid, new_grid) if isinstance(new_grid, int) else new_grid
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    if old_grid is None:
        side = math.isqrt(grid.shape[1])
        if side * side != grid.shape[1]:
            raise ValueError(f"cannot infer a square grid from {grid.shape[1]} position embeddings; pass old_grid")
        old_grid = (side, side)
    if tuple(old_grid) == (new_h, new_w):
        return pos_embed
    grid = rearrange(grid, "1 (h w) d -> 1 d h w", h=old_grid[0], w=old_grid[1])  # as an image with D channels
    dtype = grid.dtype
    grid = F.interpolate(grid.float(), size=(new_h, new_w), mode="bicubic", align_corners=False).to(dtype)
    grid = rearrange(grid, "1 d h w -> 1 (h w) d")  # (1, H·W, D)
    return torch.cat([prefix, grid], dim=1)
    # END EXERCISE resize_pos_embed
