"""One training epoch and one evaluation pass: the inner loops of ``python -m minideit.train``.

The training step follows DESIGN.md's data flow: batch → device → Mixup/CutMix → student forward (cls, dist) and
teacher forward on the same batch (inside ``DistillationLoss``) → backward → optimiser step → per-iteration learning
rate → EMA. Values are read back to the host only every ``log_every`` steps: a ``.item()`` per step would make the
CPU wait for the GPU and starve it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass

import torch
import torch.nn as nn

from .distributed import all_reduce_sum
from .losses import accuracy, hard_distillation_loss
from .optim import unwrap


class NonFiniteLossError(RuntimeError):
    """Raised when too many optimiser steps in a row had a NaN or infinite loss."""


def autocast(device: torch.device, amp: str):
    """bf16 (default) or fp16 autocast on CUDA; full precision elsewhere."""
    if device.type != "cuda" or amp == "off":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


# ----------------------------------------------------------------------------------------------------------------
# The training step
# ----------------------------------------------------------------------------------------------------------------
def train_one_epoch(model, criterion, loader, optimizer, schedule, *, device, mixup=None, ema=None, scaler=None,
                    amp="bf16", accum_steps=1, clip_grad=0.0, log_every=20, max_nonfinite=5, progress=None,
                    after_step=None, start_step=0, totals=None) -> dict:
    """Train for one pass over ``loader``; returns the epoch's mean loss, last lr and step counters.

    One optimiser step is ``accum_steps`` micro-batches: forward and loss under autocast, backward of
    loss / accum_steps; then clip, step (skipped if any micro-batch's loss was not finite), schedule, EMA.
    Everything else (counters, progress, checkpoints) is bookkeeping around that, outside the step.

    ``start_step`` optimiser steps of this epoch were done before a mid-epoch resume, and ``totals`` holds their
    sums, so the epoch's logged loss covers the whole epoch. ``after_step(step, totals)`` runs after every
    optimiser step (the trainer saves step checkpoints there); if it returns True the epoch stops early (a
    signal asked the run to stop) and the result has ``stopped_at_step``.
    """
    model.train()
    totals = totals if totals is not None else EpochTotals.zeros(device)
    clock = Throughput()
    step, stopped = start_step, False
    bad = torch.zeros((), dtype=torch.bool, device=device)  # any non-finite loss in this step, kept on device
    optimizer.zero_grad(set_to_none=True)
    for i, (images, targets) in enumerate(loader):
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        if mixup is not None:
            images, targets = mixup(images, targets)  # Mixup/CutMix (Table 9) mix the whole batch
        last_micro = (i + 1) % accum_steps == 0
        with no_sync_unless(model, last_micro):  # under DDP, gradients are averaged on the last micro-step only
            with autocast(device, amp):
                loss = criterion(images, model(images), targets)  # student forward; the teacher runs inside
            bad = bad | ~torch.isfinite(loss)
            backward(loss / accum_steps, scaler)
        clock.add(images.shape[0], progress)
        if not last_micro:
            continue
        clip_and_step(model, optimizer, scaler, bad, clip_grad)  # weights and moments untouched when bad
        schedule.step()
        if ema is not None:
            ema.update(model)

        totals.record(loss, bad)  # bookkeeping from here on
        bad = torch.zeros_like(bad)
        step += 1
        if step % log_every == 0:
            check_nonfinite(totals, max_nonfinite)
            clock.show(progress, loss, schedule)
        if after_step is not None and after_step(step, totals):
            stopped = True
            break
    check_nonfinite(totals, max_nonfinite)
    return {**totals.summary(), "lr": schedule.get_last_lr()[0], **clock.summary(),
            **({"stopped_at_step": step} if stopped else {})}


def no_sync_unless(model: nn.Module, sync: bool):
    """DDP's ``no_sync()`` (skip the gradient all-reduce) unless ``sync``; nothing for a plain model."""
    if sync or not hasattr(model, "no_sync"):
        return contextlib.nullcontext()
    return model.no_sync()


def backward(loss: torch.Tensor, scaler) -> None:
    """loss.backward(), through the fp16 GradScaler when there is one."""
    (scaler.scale(loss) if scaler is not None else loss).backward()


def clip_and_step(model: nn.Module, optimizer: torch.optim.Optimizer, scaler, bad: torch.Tensor,
                  clip_grad: float) -> None:
    """Clip the gradient norm (optionally), step unless ``bad``, and clear the gradients.

    ``bad`` (a 0-dim bool tensor on the device) is never read on the host, so the GPU never waits for it:
    * fp16: GradScaler finds the inf/NaN gradients itself and skips the step;
    * fused AdamW/SGD: the kernel reads a ``found_inf`` tensor (the mechanism GradScaler uses) and, when it is 1,
      leaves weights and moments as they are;
    * any other optimiser (``foreach``, the default on a CPU, or the for-loop one): :func:`step_unless`.
    """
    if scaler is not None:
        if clip_grad:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        scaler.step(optimizer)
        scaler.update()
    else:
        if clip_grad:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        if optimizer.defaults.get("fused"):
            optimizer.found_inf = bad.float()
            optimizer.step()
            optimizer.found_inf = None
        else:
            step_unless(optimizer, bad)
    optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def step_unless(optimizer: torch.optim.Optimizer, bad: torch.Tensor) -> None:
    """``optimizer.step()``, then undo it where ``bad`` is set, without reading ``bad`` on the host.

    Non-fused optimisers refuse ``found_inf``, so we keep a copy of every parameter and state tensor (Adam's
    moments and step count, SGD's momentum), step, and select old or new with ``torch.where`` (NaN-safe, unlike
    a 0/1 multiply). State created by this very step (the first one) counts as zeros before it, which is what
    AdamW and SGD would have started from. Costs one copy of weights and state per step; the trainer uses the
    fused kernels, which need none.
    """
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    before = [(p.clone(), {k: v.clone() for k, v in optimizer.state.get(p, {}).items() if torch.is_tensor(v)})
              for p in params]
    optimizer.step()
    for p, (old_p, old_state) in zip(params, before):
        p.copy_(torch.where(bad, old_p, p))
        for name, value in optimizer.state[p].items():
            if torch.is_tensor(value):
                old = old_state.get(name, torch.zeros_like(value))
                value.copy_(torch.where(bad, old, value))


# ----------------------------------------------------------------------------------------------------------------
# Bookkeeping: counters on the device, throughput, the non-finite limit
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class EpochTotals:
    """Counters kept on the device so that the loop never waits for them; read when logging.

    They are part of a mid-epoch checkpoint (``state_dict``), so after a resume the epoch's mean loss still
    covers every step of the epoch.
    """
    loss_sum: torch.Tensor
    steps: torch.Tensor
    nonfinite: torch.Tensor
    run: torch.Tensor  # current run of consecutive non-finite steps
    longest_run: torch.Tensor

    @classmethod
    def zeros(cls, device: torch.device) -> "EpochTotals":
        return cls(*(torch.zeros((), device=device) for _ in range(5)))

    def record(self, loss: torch.Tensor, bad: torch.Tensor) -> None:
        bad = bad.float()
        self.loss_sum += torch.where(bad > 0, torch.zeros_like(loss), loss.detach().float())
        self.steps += 1 - bad
        self.nonfinite += bad
        self.run.mul_(bad).add_(bad)  # +1 while bad, back to 0 on a good step
        torch.maximum(self.longest_run, self.run, out=self.longest_run)

    def summary(self) -> dict:
        """Mean loss over the good steps and the number of skipped ones, summed over all processes."""
        totals = all_reduce_sum(torch.stack([self.loss_sum, self.steps, self.nonfinite]).float())
        return {"train_loss": (totals[0] / totals[1].clamp(min=1)).item(), "nonfinite_steps": int(totals[2].item())}

    def state_dict(self) -> dict:
        return {k: v.detach().cpu().clone() for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_state(cls, state: dict, device: torch.device) -> "EpochTotals":
        return cls(**{k: v.to(device) for k, v in state.items()})


class Throughput:
    """Images per second of this pass, and the progress bar's postfix."""

    def __init__(self):
        self.images, self.t0 = 0, time.perf_counter()

    def add(self, n: int, progress) -> None:
        self.images += n
        if progress is not None:
            progress.update(1)

    def show(self, progress, loss: torch.Tensor, schedule) -> None:
        if progress is not None:
            rate = self.images / max(time.perf_counter() - self.t0, 1e-9)
            progress.set_postfix(loss=f"{loss.item():.4f}", lr=f"{schedule.get_last_lr()[0]:.2e}", img_s=f"{rate:.0f}")

    def summary(self) -> dict:
        elapsed = time.perf_counter() - self.t0
        return {"train_img_per_s": self.images / max(elapsed, 1e-9), "epoch_time_s": elapsed}


def check_nonfinite(totals: EpochTotals, limit: int) -> None:
    """Stop the run once ``limit`` optimiser steps in a row had a non-finite loss (0: never)."""
    longest = int(totals.longest_run.item())
    if limit and longest >= limit:
        raise NonFiniteLossError(
            f"the loss was NaN or infinite for {longest} optimiser steps in a row (limit {limit}, "
            f"--max-nonfinite); lower --lr, add --clip-grad 1.0, or check the data and the teacher")


# ----------------------------------------------------------------------------------------------------------------
# Evaluation: top-1/top-5 of every head, the teacher, and their agreement (paper Tables 3 and 4)
# ----------------------------------------------------------------------------------------------------------------
def head_logits(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """{'joint': ..., and for a distilled DeiT 'cls' and 'dist'}: every classifier the paper reports, as the model
    computes them (``VisionTransformer.head_logits``); a model without heads (the RegNet teacher) has only 'joint'."""
    model = unwrap(model)
    if not hasattr(model, "head_logits"):
        return {"joint": model(images)}
    return model.head_logits(model.forward_features(images))


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
