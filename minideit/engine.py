"""One training epoch and one evaluation pass: the inner loops of ``python -m minideit.train``.

The training step follows DESIGN.md's data flow: batch → device → Mixup/CutMix → student forward (cls, dist) and
teacher forward on the same batch (inside ``DistillationLoss``) → backward → optimiser step → per-iteration learning
rate → EMA. Values are read back to the host only every ``log_every`` steps: a ``.item()`` per step would make the
CPU wait for the GPU and starve it.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import torch
import torch.nn as nn

from .distributed import all_reduce_sum
from .losses import accuracy, hard_distillation_loss


class NonFiniteLossError(RuntimeError):
    """Raised when too many optimiser steps in a row had a NaN or infinite loss."""


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model under DistributedDataParallel (``.module``) and/or torch.compile (``._orig_mod``)."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def autocast(device: torch.device, amp: str):
    """bf16 (default) or fp16 autocast on CUDA; full precision elsewhere."""
    if device.type != "cuda" or amp == "off":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


@dataclass
class StepState:
    """Counters kept on the device so that the loop never waits for them; read when logging."""
    loss_sum: torch.Tensor
    steps: torch.Tensor
    nonfinite: torch.Tensor
    run: torch.Tensor  # current run of consecutive non-finite steps
    longest_run: torch.Tensor

    @classmethod
    def zeros(cls, device: torch.device) -> "StepState":
        return cls(*(torch.zeros((), device=device) for _ in range(5)))

    def record(self, loss: torch.Tensor, bad: torch.Tensor) -> None:
        bad = bad.float()
        self.loss_sum += torch.where(bad > 0, torch.zeros_like(loss), loss.detach().float())
        self.steps += 1 - bad
        self.nonfinite += bad
        self.run.mul_(bad).add_(bad)  # +1 while bad, back to 0 on a good step
        torch.maximum(self.longest_run, self.run, out=self.longest_run)


def train_one_epoch(model, criterion, loader, optimizer, schedule, *, device, mixup=None, ema=None, scaler=None,
                    amp="bf16", accum_steps=1, clip_grad=0.0, log_every=20, max_nonfinite=5, progress=None,
                    on_step=None, start_step=0) -> dict:
    """Train for one pass over ``loader``; returns the epoch's mean loss, last lr and step counters.

    ``start_step`` is the number of optimiser steps of this epoch already done before a mid-epoch resume;
    ``on_step(step)`` is called after every optimiser step (the trainer saves step checkpoints there).

    A step whose loss is not finite is skipped without a host sync: the fused optimiser receives a ``found_inf``
    flag (the mechanism GradScaler uses) and leaves weights and moments untouched when it is set. The number of such
    steps is counted, and ``max_nonfinite`` of them in a row stop the run with :class:`NonFiniteLossError`.
    """
    model.train()
    state = StepState.zeros(device)
    images_seen, t0 = 0, time.perf_counter()
    bad = torch.zeros((), dtype=torch.bool, device=device)
    optimizer.zero_grad(set_to_none=True)
    num_batches = len(loader)
    for i, (images, targets) in enumerate(loader):
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if mixup is not None:
            images, targets = mixup(images, targets)
        last_micro_step = (i + 1) % accum_steps == 0
        # Under DDP, gradients are averaged across processes only on the last micro-step of an accumulation.
        sync = contextlib.nullcontext() if last_micro_step or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast(device, amp):
                outputs = model(images)
                loss = criterion(images, outputs, targets)
            bad = bad | ~torch.isfinite(loss)
            scaled = loss / accum_steps
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        images_seen += images.shape[0]
        if progress is not None:
            progress.update(1)
        if not last_micro_step:
            continue

        optimizer_step(model, optimizer, scaler, bad, clip_grad)
        schedule.step()
        if ema is not None:
            ema.update(model)
        state.record(loss, bad)
        bad = torch.zeros_like(bad)
        step = start_step + (i + 1) // accum_steps  # optimiser steps done in this epoch
        if step % log_every == 0 or (i + 1) == num_batches:
            check_nonfinite(state, max_nonfinite)
            if progress is not None:
                rate = images_seen / max(time.perf_counter() - t0, 1e-9)
                progress.set_postfix(loss=f"{loss.item():.4f}", lr=f"{schedule.get_last_lr()[0]:.2e}",
                                     img_s=f"{rate:.0f}")
        if on_step is not None:
            on_step(step)
    check_nonfinite(state, max_nonfinite)
    elapsed = time.perf_counter() - t0
    totals = all_reduce_sum(torch.stack([state.loss_sum, state.steps, state.nonfinite]).float())
    return {
        "train_loss": (totals[0] / totals[1].clamp(min=1)).item(),
        "lr": schedule.get_last_lr()[0],
        "nonfinite_steps": int(totals[2].item()),
        "train_img_per_s": images_seen / max(elapsed, 1e-9),
        "epoch_time_s": elapsed,
    }


def optimizer_step(model, optimizer, scaler, bad: torch.Tensor, clip_grad: float) -> None:
    """Clip (optionally), then step unless ``bad``; always clears the gradients."""
    if scaler is not None:  # fp16: the scaler finds inf/NaN gradients and skips the step itself
        if clip_grad:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        scaler.step(optimizer)
        scaler.update()
    else:
        if clip_grad:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        optimizer.found_inf = bad.float()  # read by the fused AdamW/SGD kernels: 1 → no update at all
        optimizer.step()
        optimizer.found_inf = None
    optimizer.zero_grad(set_to_none=True)


def check_nonfinite(state: StepState, limit: int) -> None:
    longest = int(state.longest_run.item())
    if limit and longest >= limit:
        raise NonFiniteLossError(
            f"the loss was NaN or infinite for {longest} optimiser steps in a row (limit {limit}); lower --lr, "
            f"add --clip-grad 1.0, or check the data and the teacher")


# ----------------------------------------------------------------------------------------------------------------
# Evaluation: top-1/top-5 of every head, the teacher, and their agreement (paper Tables 3 and 4)
# ----------------------------------------------------------------------------------------------------------------
def head_logits(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """{'joint': ..., and for a distilled DeiT 'cls' and 'dist'}: every classifier the paper reports."""
    model = unwrap(model)
    if not getattr(model, "distilled", False):
        return {"joint": model(images)}
    tokens = model.forward_features(images)
    cls_logits, dist_logits = model.head(tokens[:, 0]), model.head_dist(tokens[:, 1])
    return {"cls": cls_logits, "dist": dist_logits, "joint": (cls_logits + dist_logits) / 2}


@torch.no_grad()
def evaluate(model, loader, device, teacher=None, amp="bf16") -> dict:
    """Accuracy of each head (and of the teacher) on ``loader``, summed over all processes.

    Keys: ``acc1``/``acc5``/``loss`` of the joint prediction (the model's own output for a plain model),
    ``cls_acc1``..., ``dist_acc1``... for a distilled model, ``teacher_acc1``/``teacher_acc5`` and ``agreement``
    (% of images where the student's joint prediction equals the teacher's) when a teacher is given.
    """
    unwrap(model).eval()
    sums: dict[str, torch.Tensor] = {}

    def add(key: str, value: torch.Tensor) -> None:
        sums[key] = sums.get(key, torch.zeros((), device=device, dtype=torch.float64)) + value.double()

    for images, targets in loader:
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        n = images.shape[0]
        with autocast(device, amp):
            heads = head_logits(model, images)
            teacher_logits = teacher(images) if teacher is not None else None
        add("n", torch.tensor(float(n), device=device))
        add("loss", nn.functional.cross_entropy(heads["joint"].float(), targets, reduction="sum"))
        if teacher_logits is not None:
            heads["teacher"] = teacher_logits
            add("agree", (heads["joint"].argmax(1) == teacher_logits.argmax(1)).sum())
        for name, logits in heads.items():
            top1, top5 = accuracy(logits.float(), targets, topk=(1, 5))
            add(f"{name}_1", top1 * n / 100)
            add(f"{name}_5", top5 * n / 100)
    keys = sorted(sums)
    totals = dict(zip(keys, all_reduce_sum(torch.stack([sums[k] for k in keys])).tolist()))
    n = max(totals.pop("n", 0.0), 1.0)
    result = {"acc1": 100 * totals["joint_1"] / n, "acc5": 100 * totals["joint_5"] / n, "loss": totals["loss"] / n,
              "num_images": int(n)}
    for name in ("cls", "dist", "teacher"):
        if f"{name}_1" in totals:
            result[f"{name}_acc1"] = 100 * totals[f"{name}_1"] / n
            result[f"{name}_acc5"] = 100 * totals[f"{name}_5"] / n
    if "agree" in totals:
        result["agreement"] = 100 * totals["agree"] / n
    return {k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v) for k, v in result.items()}


def distillation_step(student: nn.Module, teacher: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """One optimiser step of a distilled student with a frozen teacher, stripped to its ideas (paper §4, Eq. 3).

    The teacher only labels the batch: eval mode (BatchNorm uses its running statistics) and no autograd graph.
    The student in training mode returns both heads; the class head learns from ``labels`` and the distillation
    head from the teacher's decision (``hard_distillation_loss``); then backward and one optimiser step.
    ``train_one_epoch`` does the same with Mixup, mixed precision, accumulation and EMA around it.
    Returns the loss, detached.
    """
    # BEGIN EXERCISE distillation_step
    teacher.eval()
    with torch.no_grad():
        teacher_logits = teacher(images)  # (B, K), no graph: the teacher is never trained
    student.train()
    cls_logits, dist_logits = student(images)  # (B, K) each
    loss = hard_distillation_loss(cls_logits, dist_logits, labels, teacher_logits)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()
    # END EXERCISE distillation_step
