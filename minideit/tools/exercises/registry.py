"""Every exercise of the course: its id, the notebook it belongs to, where its solution lives, and the task.

The solution of an exercise is the code between ``# BEGIN EXERCISE <id>`` and ``# END EXERCISE <id>`` inside one
function (or method) of the package; ``source`` names that function as ``module:qualname``. The id is shared by
the stub's error message, the notebook heading, the check (``check_<id>``) and the pytest marker, so a learner who
sees one can find the others. The task is one line: it is printed by ``list``, raised by the stub and shown when
the check fails.
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass

# notebook number → (slug of the workspace file, subject)
NOTEBOOKS: dict[int, tuple[str, str]] = {
    0: ("setup_data", "setup and data"),
    1: ("patches", "patches, position embedding and the class token"),
    2: ("attention", "attention and the transformer block"),
    3: ("small_data", "ViT against a convnet on little data"),
    4: ("regnety", "the RegNetY teacher"),
    5: ("soft_hard", "soft and hard distillation"),
    6: ("dist_token", "the distillation token"),
    7: ("distillation_experiments", "distillation experiments"),
    8: ("efficiency", "efficiency and FLOPs"),
    9: ("recipe", "the training recipe and its ablations"),
    10: ("resolution", "higher resolution and transfer"),
    11: ("imagenet", "full ImageNet"),
}


@dataclass(frozen=True)
class Exercise:
    id: str
    notebook: int
    source: str  # "package.module:Qualified.name" of the function holding the markers
    task: str

    @property
    def module(self) -> str:
        return self.source.split(":")[0]

    @property
    def qualname(self) -> str:
        return self.source.split(":")[1]

    @property
    def owner(self) -> str | None:
        """The class whose method this is, or None for a plain function."""
        parts = self.qualname.split(".")
        return parts[0] if len(parts) > 1 else None

    @property
    def workspace_file(self) -> str:
        return f"ex{self.notebook:02d}_{NOTEBOOKS[self.notebook][0]}.py"

    def reference(self):
        """The package's function (for a method: the plain function on the class, called with ``self`` first)."""
        obj = importlib.import_module(self.module)
        for part in self.qualname.split("."):
            obj = getattr(obj, part)
        return obj


def _ex(id: str, notebook: int, source: str, task: str) -> Exercise:
    return Exercise(id, notebook, source, task)


_V, _R, _L, _O = "minideit.vit", "minideit.regnet", "minideit.losses", "minideit.optim"
_T, _M, _S, _F = "minideit.data.transforms", "minideit.data.mixup", "minideit.data.samplers", "minideit.flops"

# In notebook order; within a notebook, an exercise comes after the ones it calls.
_ALL = [
    _ex("to_normalized_tensor", 0, f"{_T}:ToNormalizedTensor.__call__",
        "turn the RGB PIL image into a float32 tensor (3, H, W) equal to (pixel / 255 - mean) / std "
        "(self.mean, self.std hold one value per channel)"),
    _ex("resize_center_crop", 0, f"{_T}:ResizeCenterCrop.__call__",
        "resize the shorter side to self.resize_to (the longer one in proportion, truncated to int) with "
        "resize_uint8, then crop the central self.size x self.size square (offsets rounded)"),
    _ex("patchify", 1, f"{_V}:patchify",
        "cut (B, C, H, W) images into p x p patches, row-major, and flatten each one in (channel, row, column) "
        "order: (B, N, C*p*p)"),
    _ex("patch_embed_linear", 1, f"{_V}:PatchEmbed.forward_as_linear",
        "compute self.proj (a p x p convolution with stride p) as patchify(x) times the flattened kernels "
        "plus the bias: (B, N, D)"),
    _ex("embed", 1, f"{_V}:VisionTransformer.embed",
        "patch-embed the images, put the class (and distillation) tokens, self.prefix_tokens(B), in front of "
        "the patch tokens and add self.pos_embed: (B, prefix + N, D)"),
    _ex("attention_weights", 2, f"{_V}:attention_weights",
        "return softmax(q k^T / sqrt(d)) over the keys: q (B, H, N, d), k (B, H, M, d) -> (B, H, N, M)"),
    _ex("split_heads", 2, f"{_V}:Attention.split_heads",
        "project x (B, N, D) with self.qkv and split it into q, k, v, each (B, H, N, d); each row of the "
        "projection is [q | k | v], each of them self.num_heads contiguous chunks of d values"),
    _ex("attention_forward", 2, f"{_V}:Attention.forward",
        "q, k, v = self.split_heads(x); attention_weights(q, k) @ v in each head; merge the heads back to "
        "(B, N, D), head 0 first; self.proj; return (out, weights) if return_attn (self.fused may be ignored)"),
    _ex("block_forward", 2, f"{_V}:Block.forward",
        "pre-norm block: x + drop_path(attn(norm1(x))), then x + drop_path(mlp(norm2(x))); with "
        "return_attn=True return (x, attention weights) using self.attn(..., return_attn=True)"),
    _ex("forward_features", 2, f"{_V}:VisionTransformer.forward_features",
        "images -> self.embed -> every block of self.blocks in order -> self.norm: (B, prefix + N, D)"),
    _ex("accuracy", 3, f"{_L}:accuracy",
        "top-k accuracy in percent for each k in topk (k clipped to the number of classes): a list of "
        "0-dim float tensors"),
    _ex("drop_path", 3, f"{_V}:drop_path",
        "when training and drop_prob > 0, zero each sample's whole tensor with probability drop_prob and "
        "divide the kept ones by 1 - drop_prob; otherwise return x unchanged"),
    _ex("quantized_widths", 4, f"{_R}:quantized_widths",
        "u_j = w0 + wa*j for j < depth, snapped to w0 * wm**round(log(u_j / w0) / log(wm)), then rounded "
        "to a multiple of q: a list of ints"),
    _ex("stages_from_widths", 4, f"{_R}:stages_from_widths",
        "group consecutive blocks of equal width into stages: return (stage widths, stage depths)"),
    _ex("squeeze_excite", 4, f"{_R}:SqueezeExcite.forward",
        "average x over H and W, pass it through self.fc1, self.act, self.fc2 and a sigmoid, and scale "
        "each channel of x by that gate"),
    _ex("label_smoothing_ce", 5, f"{_L}:LabelSmoothingCrossEntropy.forward",
        "(1 - eps) * (-log p[y]) + eps * mean_k(-log p[k]) with p = softmax(logits), eps = self.smoothing, "
        "averaged over the batch"),
    _ex("soft_target_ce", 5, f"{_L}:SoftTargetCrossEntropy.forward",
        "mean over the batch of sum_k -target[k] * log_softmax(logits)[k]"),
    _ex("hard_distillation_loss", 5, f"{_L}:hard_distillation_loss",
        "paper Eq. 3: (1 - alpha) * base_criterion(cls_logits, labels) + alpha * cross-entropy(dist_logits, "
        "the teacher's argmax)"),
    _ex("soft_term", 5, f"{_L}:DistillationLoss.soft_term",
        "tau^2 * KL(softmax(teacher/tau) || softmax(student/tau)) summed over batch and classes, divided "
        "by student.numel() if self.kl_normalisation == 'official', by the batch size if 'paper'"),
    _ex("forward_head", 6, f"{_V}:VisionTransformer.forward_head",
        "token 0 -> self.head; if self.distilled, token 1 -> self.head_dist and return both in training, "
        "their mean in eval mode"),
    _ex("distillation_forward", 7, f"{_L}:DistillationLoss.forward",
        "base loss on the class head, plus for 'soft'/'hard' the teacher term on the distillation head "
        "(the class head for one tensor), weighted (1 - alpha, alpha); set self.last_teacher_logits"),
    _ex("distillation_step", 7, "minideit.engine:distillation_step",
        "teacher in eval mode under no_grad labels the batch; student in train mode; hard_distillation_loss on "
        "its two heads; zero the gradients, backward, optimizer.step(); return the loss detached"),
    _ex("token_cosine", 7, f"{_V}:token_cosine",
        "for each state (B, T, D), the cosine similarity of token 0 and token 1 averaged over the batch: "
        "a tensor (len(states),)"),
    _ex("transformer_macs", 8, f"{_F}:transformer_macs",
        "MACs of depth blocks with N tokens of width D: qkv 3*N*D^2, attention 2*N^2*D, projection N*D^2, "
        "MLP 2*r*N*D^2; an int"),
    _ex("rrc_box", 9, f"{_T}:rrc_box",
        "up to 10 tries: area ~ U(scale) * W*H, log(w/h) ~ U(log ratio), w and h rounded, top then left by "
        "random.randint; if none fits, the centre box with the aspect ratio clamped to ratio"),
    _ex("erasing_box", 9, f"{_T}:RandomErasing.sample_box",
        "up to 10 tries: area ~ U(min_area, max_area) * H*W / count, log(h/w) ~ U(self.log_aspect); a box "
        "strictly smaller than the image at random.randint top, left; else None"),
    _ex("one_hot_smoothed", 9, f"{_M}:one_hot_smoothed",
        "(B,) labels -> (B, num_classes): smoothing / num_classes everywhere and 1 - smoothing + "
        "smoothing / num_classes at the label"),
    _ex("mix_targets", 9, f"{_M}:mix_targets",
        "lam * smoothed one-hot rows + (1 - lam) * the partner's rows, the partner of image i being B-1-i"),
    _ex("cutmix_box", 9, f"{_M}:cutmix_box",
        "box (y0, y1, x0, x1): sides int(h * sqrt(1-lam)), int(w * sqrt(1-lam)); centre cy then cx drawn "
        "with torch.randint(0, h or w, (1,), generator=gen); half a side each way, clipped to the image"),
    _ex("lr_at", 9, f"{_O}:CosineWarmupSchedule.lr_at",
        "linear from warmup_lr to base_lr over warmup_steps, then cosine from base_lr to min_lr at "
        "total_steps (held after); 'constant' keeps base_lr after the warm-up"),
    _ex("ema_update", 9, f"{_O}:ModelEma.update",
        "for each float parameter of self.module: ema = decay * ema + (1 - decay) * param; copy the other "
        "parameters and all buffers"),
    _ex("resize_pos_embed", 10, f"{_V}:resize_pos_embed",
        "keep the prefix tokens; view the rest as a D-channel image on the old grid (square unless old_grid), "
        "resize it bicubic with align_corners=False to new_grid, flatten it back"),
    _ex("epoch_indices", 11, f"{_S}:RASampler.epoch_indices",
        "repeat each index of order num_repeats times in place, wrap around to num_replicas * per_rank, "
        "take every num_replicas-th from rank, keep num_selected"),
]

EXERCISES: dict[str, Exercise] = {ex.id: ex for ex in _ALL}


def get_exercise(ex_id: str) -> Exercise:
    """The exercise with this id; ValueError with the closest ids otherwise."""
    if ex_id not in EXERCISES:
        close = difflib.get_close_matches(ex_id, EXERCISES, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ValueError(f"unknown exercise {ex_id!r}; {hint}"
                         "`python -m minideit.exercises list` shows them all")
    return EXERCISES[ex_id]
