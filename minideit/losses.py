"""Losses of DeiT training (paper §4) and two small metrics.

Data flow of one step: the base criterion compares the class head with the (mixed) labels; the teacher sees the
same mixed images; `DistillationLoss` adds the teacher term on the distillation head. Everything here is written
out with `log_softmax` so the formula in each docstring is the code below it.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

DISTILLATION_TYPES = ("none", "soft", "hard")
KL_NORMALISATIONS = ("official", "paper")


class LabelSmoothingCrossEntropy(nn.Module):
    """Cross-entropy against a label-smoothed target (Table 9: smoothing 0.1).

    With K classes, eps = smoothing and p = softmax(x), the target puts 1 - eps on the true class and spreads eps
    evenly over all K classes, so per sample

        loss = (1 - eps) * (-log p[y]) + eps * mean_k(-log p[k])

    averaged over the batch. Used for evaluation-style integer labels; under Mixup the smoothing is already inside
    the soft targets and `SoftTargetCrossEntropy` is used instead.
    """

    def __init__(self, smoothing: float = 0.1):
        super().__init__()
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # BEGIN EXERCISE label_smoothing_ce
        logp = F.log_softmax(logits, dim=-1)  # (B, K)
        nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (B,)
        uniform = -logp.mean(dim=-1)  # (B,) cross-entropy against the uniform distribution
        return ((1.0 - self.smoothing) * nll + self.smoothing * uniform).mean()
        # END EXERCISE label_smoothing_ce


class SoftTargetCrossEntropy(nn.Module):
    """Cross-entropy against a full target distribution q (Mixup/CutMix targets, already label-smoothed).

        loss = mean_b sum_k -q[b, k] * log softmax(x)[b, k]
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # BEGIN EXERCISE soft_target_ce
        return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()
        # END EXERCISE soft_target_ce


def hard_distillation_loss(cls_logits: torch.Tensor, dist_logits: torch.Tensor, labels: torch.Tensor,
                           teacher_logits: torch.Tensor, alpha: float = 0.5, base_criterion=F.cross_entropy
                           ) -> torch.Tensor:
    """Hard-label distillation, paper Eq. 3: the teacher's decision y_t = argmax_c Z_t(c) is a second true label.

        L = (1 - alpha) * base(Z_cls, y) + alpha * CE(Z_dist, y_t)

    With alpha = 1/2 and cross-entropy as the base this is Eq. 3, 1/2 CE(ψ(Z_s), y) + 1/2 CE(ψ(Z_s), y_t), the
    class head learning from the labels and the distillation head from the teacher (§4, "Distillation token").
    ``labels`` may be Mixup soft targets if ``base_criterion`` takes them; the teacher term has no smoothing.
    """
    # BEGIN EXERCISE hard_distillation_loss
    teacher_labels = teacher_logits.argmax(dim=1)  # (B,): the teacher's decision, a hard label
    base = base_criterion(cls_logits, labels)
    return (1.0 - alpha) * base + alpha * F.cross_entropy(dist_logits, teacher_labels)
    # END EXERCISE hard_distillation_loss


class DistillationLoss(nn.Module):
    """Base loss plus the teacher term of paper §4; called as `loss(inputs, outputs, labels)` like the official code.

    `outputs` is the student's output in train mode: a tuple (cls_logits, dist_logits) for a model with a
    distillation token, or one tensor for a plain DeiT. `labels` go to `base_criterion` (integer labels or Mixup
    soft targets). The teacher is run on `inputs`, the same mixed batch the student saw, in eval mode and without
    gradients. Below, base = base_criterion(cls_logits, labels), s = dist_logits, t = teacher logits, a = alpha.

    - 'none':  base (the distillation head, if any, gets no loss).
    - 'soft':  (1 - a) * base + a * tau^2 * KL(softmax(t / tau) || softmax(s / tau)).
      kl_normalisation='official' (default) divides the KL summed over batch and classes by s.numel() = B * K,
      as the official code does; 'paper' divides by the batch size B only (the usual "batchmean" KL). The two
      differ by exactly the factor K, so 'official' makes the teacher term K times weaker for the same alpha.
      Paper values: tau = 3, alpha = 0.1; the official defaults are tau = 1, alpha = 0.5.
    - 'hard':  (1 - a) * base + a * CE(s, argmax t), with no label smoothing on the teacher term. The official code
      has exactly this form; with its default alpha = 0.5 it is paper Eq. 3, 1/2 CE(cls, y) + 1/2 CE(dist, y_t).
      (With smoothing in base_criterion the first half is smoothed, as in the official runs.)

    Without a distillation token (plain tensor outputs) and type 'soft' or 'hard', both terms are applied to the
    class head, i.e. s = cls_logits: this is Table 3's "hard distillation, class token only" row. The official
    code refuses this combination; we allow it because the paper reports it.

    After each call with a teacher, `self.last_teacher_logits` holds the (detached) teacher logits of that batch,
    so the training loop can measure student/teacher agreement without a second teacher forward.
    The teacher's parameters are frozen (`requires_grad_(False)`) at construction.
    """

    def __init__(self, base_criterion: nn.Module, teacher: nn.Module | None, distillation_type: str,
                 alpha: float, tau: float, kl_normalisation: str = "official"):
        super().__init__()
        if distillation_type not in DISTILLATION_TYPES:
            raise ValueError(f"unknown distillation type {distillation_type!r}: choose one of "
                             f"{', '.join(DISTILLATION_TYPES)}")
        if kl_normalisation not in KL_NORMALISATIONS:
            raise ValueError(f"unknown kl_normalisation {kl_normalisation!r}: choose 'official' or 'paper'")
        if distillation_type != "none" and teacher is None:
            raise ValueError(f"distillation type {distillation_type!r} needs a teacher model; "
                             "pass one (--teacher-model) or use distillation type 'none'")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"distillation alpha must be in [0, 1], got {alpha}")
        if tau <= 0:
            raise ValueError(f"distillation tau must be > 0, got {tau}")
        self.base_criterion = base_criterion
        self.teacher = teacher
        if teacher is not None:
            teacher.requires_grad_(False)
            teacher.eval()
        self.distillation_type = distillation_type
        self.alpha = alpha
        self.tau = tau
        self.kl_normalisation = kl_normalisation
        self.last_teacher_logits: torch.Tensor | None = None

    def teacher_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """Teacher forward on the student's (mixed) batch: eval mode, no autograd graph, float32 logits.

        ``inference_mode`` rather than ``no_grad``: it also skips autograd's version counters and view tracking,
        a little cheaper per op. The logits it returns are "inference tensors"; the loss only reads them through
        out-of-place ops (argmax, division), whose results are ordinary tensors, so the backward pass never needs
        them. Inputs are cast to the teacher's parameter dtype, so a teacher put in bf16 by `regnet.prepare_teacher`
        works with or without autocast.
        """
        # Re-checked every call because model.train() on a parent module would flip the teacher back.
        if self.teacher.training:
            self.teacher.eval()
        with torch.inference_mode():
            weight = next(self.teacher.parameters(), None)
            if weight is not None and inputs.is_floating_point() and inputs.dtype != weight.dtype:
                inputs = inputs.to(weight.dtype)
            return self.teacher(inputs).float()  # .float() is free for an fp32 teacher (no copy)

    def soft_term(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """tau^2 * KL(softmax(t/tau) || softmax(s/tau)), normalised as set by kl_normalisation."""
        # BEGIN EXERCISE soft_term
        tau = self.tau
        # log_target=True: both arguments are log-probabilities, which is exact for peaked teachers.
        kl_sum = F.kl_div(F.log_softmax(student / tau, dim=1), F.log_softmax(teacher / tau, dim=1),
                          reduction="sum", log_target=True)
        denom = student.numel() if self.kl_normalisation == "official" else student.shape[0]
        return kl_sum * (tau * tau) / denom
        # END EXERCISE soft_term

    def forward(self, inputs: torch.Tensor, outputs, labels: torch.Tensor) -> torch.Tensor:
        # BEGIN EXERCISE distillation_forward
        if isinstance(outputs, torch.Tensor):
            cls_logits, dist_logits = outputs, outputs  # class-head-only distillation (Table 3, row 3)
        else:
            cls_logits, dist_logits = outputs
        if self.distillation_type == "none":
            return self.base_criterion(cls_logits, labels)

        teacher = self.teacher_logits(inputs)
        self.last_teacher_logits = teacher.detach()
        if self.distillation_type == "hard":
            return hard_distillation_loss(cls_logits, dist_logits, labels, teacher, self.alpha,
                                          self.base_criterion)
        base = self.base_criterion(cls_logits, labels)
        return (1.0 - self.alpha) * base + self.alpha * self.soft_term(dist_logits, teacher)
        # END EXERCISE distillation_forward


def accuracy(output: torch.Tensor, target: torch.Tensor, topk: tuple[int, ...] = (1, 5)) -> list[torch.Tensor]:
    """Top-k accuracy in percent for each k, as 0-dim float tensors (kept on the device: no sync per batch).

    A sample counts for top-k if its integer label is among the k largest logits. k larger than the number of
    classes is clipped to it (top-5 of a 3-class problem is top-3, i.e. 100%).
    """
    if target.ndim != 1:
        raise ValueError(f"accuracy needs integer labels of shape (B,), got shape {tuple(target.shape)}; "
                         "compute it on evaluation batches, not Mixup soft targets")
    # BEGIN EXERCISE accuracy
    maxk = min(max(topk), output.shape[1])
    pred = output.topk(maxk, dim=1).indices  # (B, maxk), best first
    hit = pred.eq(target.unsqueeze(1))  # (B, maxk), at most one True per row
    return [hit[:, :min(k, maxk)].any(dim=1).float().mean() * 100.0 for k in topk]
    # END EXERCISE accuracy


def agreement(a_logits: torch.Tensor, b_logits: torch.Tensor) -> torch.Tensor:
    """Fraction in [0, 1] of samples on which two classifiers predict the same class (paper Table 4 reports
    1 - agreement as "disagreement"). Returns a 0-dim float tensor."""
    if a_logits.shape != b_logits.shape:
        raise ValueError(f"agreement needs logits of the same shape, got {tuple(a_logits.shape)} "
                         f"and {tuple(b_logits.shape)}")
    return (a_logits.argmax(dim=1) == b_logits.argmax(dim=1)).float().mean()
