"""Checks of the model exercises: the transformer (notebooks 01, 02, 03, 06, 07, 10), RegNetY (04), FLOPs (08).

Each ``check_<id>(fn)`` builds small inputs, runs the learner's ``fn`` and the package's reference on them, and
raises AssertionError saying which input gave what. A method exercise's ``fn`` takes ``self`` first; the check
passes it a real, small module, so ``self.qkv`` or ``self.head`` are the package's own layers.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from minideit import flops, regnet, vit
from .checking import call, compare, describe, expect, seeded


def _tiny_vit(distilled: bool, seed: int = 0) -> vit.VisionTransformer:
    torch.manual_seed(seed)
    return vit.VisionTransformer(img_size=8, patch_size=4, num_classes=5, embed_dim=8, depth=1, num_heads=2,
                                 distilled=distilled)


# ---- notebook 01: patches, position embedding, class token ----------------------------------------------------
def check_patchify(fn) -> None:
    for shape, p in [((2, 3, 8, 12), 4), ((1, 1, 6, 6), 3), ((2, 3, 4, 4), 1)]:
        x = torch.randn(shape)
        label = f"patchify(images {shape}, patch_size={p})"
        got = call(fn, label, x, p)
        pattern = "b c (h p1) (w p2) -> b {} {}"
        wrong = lambda tokens, values: rearrange(x, pattern.format(tokens, values), p1=p, p2=p)  # noqa: E731
        compare(got, vit.patchify(x, p), label, mistakes=[
            (wrong("(h w)", "(p1 p2 c)"), "flatten each patch channel first, then row, then column (the order of "
                                          "a Conv2d kernel's weights); yours puts the channel last"),
            (wrong("(w h)", "(c p1 p2)"), "take the patches row by row (left to right, then top to bottom); "
                                          "yours go column by column"),
            (wrong("(h w)", "(c p2 p1)"), "inside a patch, flatten rows before columns"),
            (x.reshape(shape[0], -1, shape[1] * p * p),
             "a plain reshape mixes pixels of different patches: split H and W into (grid, p) and permute"),
        ])


def check_patch_embed_linear(fn) -> None:
    for img, p, chans in [(8, 4, 3), (6, 2, 1)]:
        torch.manual_seed(img)
        embed = vit.PatchEmbed(img_size=img, patch_size=p, in_chans=chans, embed_dim=6)
        x = torch.randn(2, chans, img, img)
        label = f"patch_embed_linear(PatchEmbed(patch {p}, {chans} channels, dim 6), images {tuple(x.shape)})"
        got = call(fn, label, embed, x)
        no_bias = vit.patchify(x, p) @ embed.proj.weight.flatten(1).T
        compare(got, embed(x), label, mistakes=[(no_bias, "add self.proj.bias")])


def check_embed(fn) -> None:
    for distilled in (False, True):
        model = _tiny_vit(distilled)
        x = torch.randn(2, 3, 8, 8)
        label = f"embed(VisionTransformer(distilled={distilled}), images (2, 3, 8, 8))"
        got = call(fn, label, model, x)
        patches, prefix = model.patch_embed(x), model.prefix_tokens(2)
        n = model.num_prefix_tokens
        compare(got, model.embed(x), label, mistakes=[
            (torch.cat([prefix, patches], 1), "add self.pos_embed to the tokens"),
            (torch.cat([patches, prefix], 1) + model.pos_embed, "the prefix tokens go in front of the patches"),
            (torch.cat([prefix, patches + model.pos_embed[:, n:]], 1),
             "pos_embed covers the prefix tokens too: concatenate first, then add it"),
        ])
        expect(got.requires_grad, f"{label}: the output does not depend on the parameters through autograd; "
                                  "use the parameters themselves (no .data, .detach() or torch.no_grad())")


# ---- notebook 02: attention and the block -----------------------------------------------------------------------
def check_attention_weights(fn) -> None:
    for q_shape, k_shape in [((2, 3, 5, 4), (2, 3, 5, 4)), ((1, 2, 4, 8), (1, 2, 7, 8))]:
        q, k = torch.randn(q_shape) * 2, torch.randn(k_shape) * 2
        label = f"attention_weights(q {q_shape}, k {k_shape})"
        got = call(fn, label, q, k)
        scores = q @ k.transpose(-2, -1)
        compare(got, vit.attention_weights(q, k), label, mistakes=[
            (scores.softmax(-1), "divide the scores by sqrt(d) = sqrt(q.shape[-1]) before the softmax"),
            ((scores / q.shape[-1]).softmax(-1), "divide by sqrt(d), not by d"),
            ((scores * q.shape[-1] ** -0.5).softmax(-2),
             "take the softmax over the last dimension (the keys), so that each row sums to 1"),
        ])


def check_split_heads(fn) -> None:
    torch.manual_seed(1)
    attn = vit.Attention(dim=12, num_heads=3)
    x = torch.randn(2, 5, 12)
    label = "split_heads(Attention(dim=12, num_heads=3), x (2, 5, 12))"
    got = call(fn, label, attn, x)
    qkv = attn.qkv(x)
    wrong = lambda pattern: tuple(rearrange(qkv, pattern, three=3, h=3))  # noqa: E731
    compare(got, attn.split_heads(x), label, mistakes=[
        (wrong("b n (three d h) -> three b h n d"), "each head's d values are contiguous: split the last "
                                                    "dimension as (3, H, d), not (3, d, H)"),
        (wrong("b n (h three d) -> three b h n d"), "a row of qkv is [q | k | v]: split it as (3, H, d), the 3 first"),
        (wrong("b n (three h d) -> three b n h d"), "put the head axis before the token axis: (B, H, N, d)"),
    ])


def check_attention_forward(fn) -> None:
    torch.manual_seed(3)
    attn = vit.Attention(dim=12, num_heads=3)
    x = torch.randn(2, 5, 12)
    q, k, v = attn.split_heads(x)
    weights = vit.attention_weights(q, k)
    heads = weights @ v  # (B, H, N, d)
    wrong = lambda pattern: attn.proj(rearrange(heads, pattern))  # noqa: E731
    for fused in (True, False):
        attn.fused = fused
        label = f"attention_forward(Attention(dim=12, num_heads=3, fused={fused}), x (2, 5, 12))"
        got = call(fn, label, attn, x)
        compare(got, attn(x), label, mistakes=[
            (wrong("b h n d -> b n (d h)"), "merge the heads back as (h d): head 0's d values first, then head "
                                            "1's (the layout self.proj's weights expect)"),
            (rearrange(heads, "b h n d -> b n (h d)"), "apply the output projection self.proj after merging"),
            (attn.proj(rearrange(weights.transpose(-2, -1) @ v, "b h n d -> b n (h d)")),
             "multiply the weights by the values as weights @ v: row i of the weights belongs to query i"),
            (attn.proj(heads.reshape(2, 5, 12)), "a plain reshape of (B, H, N, d) mixes tokens and heads: "
                                                 "move the head axis next to d first (rearrange or transpose)"),
        ])
        expect(got.requires_grad, f"{label}: the output must stay connected to the parameters")
    label = "attention_forward(Attention(dim=12, num_heads=3), x (2, 5, 12), return_attn=True)"
    compare(call(fn, label, attn, x, return_attn=True), attn(x, return_attn=True), label,
            mistakes=[((attn(x), None), "with return_attn=True also return the attention weights (B, H, N, N)")])


def check_block_forward(fn) -> None:
    torch.manual_seed(2)
    block = vit.Block(dim=8, num_heads=2).eval()
    x = torch.randn(2, 5, 8)
    label = "block_forward(Block(dim=8, num_heads=2), x (2, 5, 8))"
    got = call(fn, label, block, x)
    post = block.norm1(x + block.attn(x))
    post_norm = block.norm2(post + block.mlp(post))
    no_residual = block.mlp(block.norm2(block.attn(block.norm1(x))))
    parallel = x + block.attn(block.norm1(x)) + block.mlp(block.norm2(x))
    compare(got, block(x), label, mistakes=[
        (post_norm, "pre-norm: normalise each branch's input (self.norm1(x), self.norm2(x)), not the sum"),
        (no_residual, "add each branch's output to x (the residual connections)"),
        (parallel, "the MLP branch takes x after the attention update, not the block's input"),
    ])
    label = "block_forward(Block(dim=8, num_heads=2), x (2, 5, 8), return_attn=True)"
    compare(call(fn, label, block, x, return_attn=True), block(x, return_attn=True), label)

    torch.manual_seed(3)
    block = vit.Block(dim=8, num_heads=2, drop_path_rate=0.5).train()
    x = torch.randn(16, 5, 8)
    label = ("block_forward(Block(dim=8, num_heads=2, drop_path_rate=0.5) in training mode, x (16, 5, 8)) "
             "with the reference's torch seed")
    got = seeded(call, 4, fn, label, block, x)
    undropped = block.eval()(x)
    compare(got, seeded(block.train(), 4, x), label, mistakes=[
        (undropped, "apply self.drop_path to each branch's output before adding it to x")])


def check_forward_features(fn) -> None:
    torch.manual_seed(4)
    model = vit.VisionTransformer(img_size=8, patch_size=4, num_classes=5, embed_dim=8, depth=3, num_heads=2,
                                  distilled=True).eval()
    x = torch.randn(2, 3, 8, 8)
    label = "forward_features(VisionTransformer(depth=3, distilled=True), images (2, 3, 8, 8))"
    got = call(fn, label, model, x)
    tokens = model.embed(x)
    run = lambda t, blocks: [t := b(t) for b in blocks][-1]  # noqa: E731
    compare(got, model.forward_features(x), label, mistakes=[
        (run(tokens, model.blocks), "apply the final norm self.norm after the last block"),
        (model.norm(model.blocks[-1](tokens)), "run every block in order, each on the previous one's output"),
        (run(model.norm(tokens), model.blocks), "the final norm comes after the blocks, not before"),
        (model.norm(model.blocks[0](tokens)), "loop over all of self.blocks"),
    ])
    expect(got.requires_grad, f"{label}: the output must stay connected to the parameters")


# ---- notebook 03: stochastic depth ------------------------------------------------------------------------------
def check_drop_path(fn) -> None:
    x = torch.randn(8, 3, 4)
    for p, training in [(0.5, False), (0.0, True)]:
        label = f"drop_path(x (8, 3, 4), drop_prob={p}, training={training})"
        compare(call(fn, label, x.clone(), p, training), x, label + " must return x unchanged")
    for shape in [(4000, 3, 2), (4000, 5), (1000, 2, 3, 3)]:
        p = 0.25
        label = f"drop_path(ones {shape}, drop_prob={p}, training=True)"
        got = seeded(call, 0, fn, label, torch.ones(shape), p, True)
        expect(isinstance(got, torch.Tensor) and got.shape == shape,
               f"{label}: expected a tensor of shape {shape}, got {describe(got)}")
        per_sample = got.reshape(shape[0], -1)
        partial = (per_sample != per_sample[:, :1]).any(dim=1)
        if partial.any():
            raise AssertionError(f"{label}: sample {int(partial.nonzero()[0])} is dropped in part only; keep or "
                                 "drop each sample's whole tensor (one random draw per sample)")
        values = set(per_sample[:, 0].tolist())
        expect(all(v == 0 or abs(v - 1 / (1 - p)) < 1e-5 for v in values),
               f"{label}: values {sorted(values)[:4]}; kept samples must be divided by 1 - drop_prob "
               f"(1 / {1 - p} = {1 / (1 - p):.4f}) so that the expectation is unchanged")
        dropped = (per_sample[:, 0] == 0).float().mean().item()
        expect(abs(dropped - p) < 0.04, f"{label}: dropped {dropped:.1%} of the samples, expected about {p:.0%}")


# ---- notebook 04: RegNetY -----------------------------------------------------------------------------------------
def check_quantized_widths(fn) -> None:
    cases = [(name, cfg.w0, cfg.wa, cfg.wm, cfg.depth, 8) for name, cfg in regnet.REGNETY_CONFIGS.items()]
    cases.append(("q=16", 48, 20.71, 2.65, 10, 16))
    for name, w0, wa, wm, depth, q in cases:
        label = f"quantized_widths(w0={w0}, wa={wa}, wm={wm}, depth={depth}, q={q}) [{name}]"
        got = call(fn, label, w0, wa, wm, depth, q)
        expect(isinstance(got, (list, tuple)), f"{label}: expected a list of ints, got {type(got).__name__} "
                                               "(a numpy array converts with .tolist())")
        u = torch.tensor([w0 + wa * j for j in range(depth)], dtype=torch.float64)
        snapped = w0 * wm ** torch.round(torch.log(u / w0) / torch.log(torch.tensor(wm, dtype=torch.float64)))
        compare(list(got), regnet.quantized_widths(w0, wa, wm, depth, q), label, mistakes=[
            ([int(round(w)) for w in snapped.tolist()], "then round each width to a multiple of q"),
            ([int(w) for w in u.tolist()], "snap u_j to the ladder w0 * wm**k before rounding to q"),
        ])


def check_stages_from_widths(fn) -> None:
    cfg = regnet.REGNETY_CONFIGS["regnety_160"]
    for widths in [[8, 8, 16, 16, 16, 32], [24], [], [8, 16, 8],
                   regnet.quantized_widths(cfg.w0, cfg.wa, cfg.wm, cfg.depth)]:
        label = f"stages_from_widths({widths})"
        got = call(fn, label, list(widths))
        compare(got, regnet.stages_from_widths(widths), label,
                mistakes=[(([8, 16], [2, 1]), "group consecutive blocks only: [8, 16, 8] is three stages")])


def check_squeeze_excite(fn) -> None:
    torch.manual_seed(5)
    se = regnet.SqueezeExcite(6, 2)
    x = torch.randn(2, 6, 5, 4)
    label = "squeeze_excite(SqueezeExcite(6 channels, 2 reduced), x (2, 6, 5, 4))"
    got = call(fn, label, se, x)
    gate = se.fc2(se.act(se.fc1(x.mean(dim=(2, 3), keepdim=True))))
    compare(got, se(x), label, mistakes=[
        (x * gate, "squash the gate into (0, 1) with a sigmoid"),
        (x * se.fc2(se.act(se.fc1(x.amax(dim=(2, 3), keepdim=True)))).sigmoid(), "squeeze by averaging, not max"),
        (gate.sigmoid().expand_as(x), "multiply x by the gate"),
    ])


# ---- notebook 06: the distillation token --------------------------------------------------------------------------
def check_forward_head(fn) -> None:
    for distilled in (False, True):
        for training in (True, False):
            model = _tiny_vit(distilled).train(training)
            feats = torch.randn(3, 4 + model.num_prefix_tokens, 8)
            label = f"forward_head(VisionTransformer(distilled={distilled}) in {'train' if training else 'eval'} " \
                    f"mode, tokens (3, {feats.shape[1]}, 8))"
            got = call(fn, label, model, feats)
            cls = model.head(feats[:, 0])
            mistakes = [(model.head(feats.mean(1)), "classify token 0 (the class token), not the mean of tokens")]
            if distilled:
                dist = model.head_dist(feats[:, 1])
                mistakes += [(cls, "a distilled model also uses its distillation token (token 1) and head_dist"),
                             ((cls + dist) / 2, "in training mode return both logits: (cls_logits, dist_logits)"),
                             ((cls, dist), "in eval mode return the mean of the two heads' logits")]
            compare(got, model.forward_head(feats), label, mistakes=mistakes)


# ---- notebook 07: class and distillation tokens through the layers -----------------------------------------------
def check_token_cosine(fn) -> None:
    states = [torch.randn(4, 6, 8) for _ in range(3)]
    aligned = torch.randn(2, 5, 8)
    aligned[:, 1] = 3 * aligned[:, 0]
    states.append(aligned)
    label = "token_cosine(3 random states (4, 6, 8) and one (2, 5, 8) where token 1 = 3 * token 0)"
    got = call(fn, label, states)
    compare(got, vit.token_cosine(states), label, mistakes=[
        (torch.stack([F.cosine_similarity(s[:, 0], s[:, -1], dim=-1).mean() for s in states]),
         "compare token 0 with token 1 (the distillation token), not the last token"),
        (torch.stack([(s[:, 0] * s[:, 1]).sum(-1).mean() for s in states]),
         "divide the dot product by both norms (cosine, not dot product)"),
    ])


# ---- notebook 08: FLOPs -------------------------------------------------------------------------------------------
def check_transformer_macs(fn) -> None:
    for n, d, depth, r in [(197, 768, 12, 4.0), (198, 192, 12, 4.0), (65, 128, 6, 4.0), (50, 64, 2, 2.0)]:
        label = f"transformer_macs(num_tokens={n}, dim={d}, depth={depth}, mlp_ratio={r})"
        got = call(fn, label, n, d, depth, r)
        expected = flops.transformer_macs(n, d, depth, r)
        compare(got, expected, label, mistakes=[
            (expected - depth * 2 * n * n * d, "count the attention products Q.K^T and A.V: 2*N^2*D per block"),
            (expected - depth * n * d * d, "count the output projection: N*D^2 per block"),
            (2 * expected, "count multiply-accumulates (the paper's FLOPs), not multiplies plus adds"),
        ])


# ---- notebook 10: position embeddings at another resolution ------------------------------------------------------
def check_resize_pos_embed(fn) -> None:
    cases = [((1, 1 + 16, 6), 6, 1, None), ((1, 2 + 9, 4), (5, 7), 2, None), ((1, 1 + 6, 4), 4, 1, (2, 3)),
             ((1, 1 + 16, 6), 4, 1, None)]
    for shape, new_grid, prefix, old_grid in cases:
        pos = torch.randn(shape)
        label = f"resize_pos_embed(pos_embed {shape}, new_grid={new_grid}, num_prefix_tokens={prefix}, " \
                f"old_grid={old_grid})"
        got = call(fn, label, pos, new_grid, prefix, old_grid)
        expected = vit.resize_pos_embed(pos, new_grid, prefix, old_grid)
        size = (new_grid, new_grid) if isinstance(new_grid, int) else new_grid
        h, w = old_grid or (int((shape[1] - prefix) ** 0.5),) * 2
        grid = rearrange(pos[:, prefix:], "1 (h w) d -> 1 d h w", h=h, w=w)

        def variant(**kw):
            out = F.interpolate(grid, size=size, **kw)
            return torch.cat([pos[:, :prefix], rearrange(out, "1 d h w -> 1 (h w) d")], 1)
        compare(got, expected, label, mistakes=[] if tuple(size) == (h, w) else [
            (variant(mode="bilinear", align_corners=False), "use bicubic interpolation (paper §6), not bilinear"),
            (variant(mode="bicubic", align_corners=True), "use align_corners=False, as the official code does"),
        ])
