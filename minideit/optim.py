"""Optimiser, learning-rate schedule and weight EMA of the DeiT recipe (paper Table 9, Table 8's ablations).

Order of use in a training step: `build_optimizer` once (parameters split by `param_groups_weight_decay`), then
per iteration `optimizer.step()`, `schedule.step()`, `ema.update(model)`.

Which parameters escape weight decay is a fact about the model, so it lives there: `VisionTransformer.no_weight_decay()`
(as in timm and the official code), read here.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn

def unwrap(model: nn.Module) -> nn.Module:
    """The plain model under DistributedDataParallel (``.module``) and/or torch.compile (``._orig_mod``).

    The one place that knows the wrappers: state dicts, EMA copies and evaluation all want the bare model, whose
    parameter names are the official ones (no ``module.`` or ``_orig_mod.`` prefix).
    """
    model = getattr(model, "_orig_mod", model)  # torch.compile(DDP(model)) as well as DDP(torch.compile(model))
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    return getattr(model, "_orig_mod", model)


def no_weight_decay_names(model: nn.Module, decay_dist_token: bool = False) -> tuple[str, ...]:
    """The model's own ``no_weight_decay()`` set (empty for a model without one, e.g. the RegNetY teacher).

    ``decay_dist_token=True`` is what the official run did: timm 0.3.2's ``no_weight_decay`` names only
    ``pos_embed`` and ``cls_token``, and the official distilled model does not extend it, so ``dist_token`` is
    decayed there (book chapter 12).
    """
    model = unwrap(model)
    names = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    if decay_dist_token:
        names.discard("dist_token")
    return tuple(sorted(names))


def wants_weight_decay(name: str, param: torch.Tensor, skip_names=()) -> bool:
    """True for weight matrices/kernels; False for norms and biases (ndim <= 1) and the skip names.

    A skip name matches the last component of the dotted parameter name, so `module.pos_embed` counts too.
    """
    return param.ndim > 1 and name.rsplit(".", 1)[-1] not in skip_names


def param_groups_weight_decay(model: nn.Module, weight_decay: float, skip_names=None,
                              decay_dist_token: bool = False) -> list[dict]:
    """Two optimiser groups: [decayed weights, everything else with weight_decay 0] (Table 9: wd 0.05, none on
    norms, biases, pos_embed and the tokens). Frozen parameters (requires_grad False) are left out. Both groups
    are always returned, even if one is empty, so an optimizer's state_dict has the same layout for every model.
    ``skip_names=None`` asks the model (:func:`no_weight_decay_names`).
    """
    if skip_names is None:
        skip_names = no_weight_decay_names(model, decay_dist_token)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if wants_weight_decay(name, param, skip_names) else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def scaled_lr(base_lr: float = 5e-4, global_batch: int = 512) -> float:
    """Linear scaling rule of the paper (Table 9): lr = base_lr * global_batch / 512, e.g. 1e-3 for batch 1024."""
    if global_batch <= 0:
        raise ValueError(f"global batch size must be positive, got {global_batch}")
    return base_lr * global_batch / 512


def build_optimizer(model: nn.Module, name: str = "adamw", *, lr: float, weight_decay: float = 0.05,
                    momentum: float = 0.9, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                    nesterov: bool = True, fused: bool | None = None,
                    decay_dist_token: bool = False) -> torch.optim.Optimizer:
    """AdamW (the recipe) or SGD (Table 8's ablation, 74.5 vs 81.8 for DeiT-B) over the two weight-decay groups.

    'sgd' means SGD with Nesterov momentum, as the name does in timm, which the official code uses; pass
    nesterov=False for plain momentum. For SGD, weight decay is the coupled L2 term of torch.optim.SGD.
    fused=None picks the fused AdamW kernel when every parameter is on CUDA (one kernel launch for all tensors)
    and the multi-tensor `foreach` path otherwise.
    """
    if name not in ("adamw", "sgd"):
        raise ValueError(f"unknown optimizer {name!r}: choose 'adamw' or 'sgd'")
    if not lr > 0 or not math.isfinite(lr):
        raise ValueError(f"learning rate must be a positive number, got {lr}")
    groups = param_groups_weight_decay(model, weight_decay, decay_dist_token=decay_dist_token)
    params = [p for g in groups for p in g["params"]]
    if not params:
        raise ValueError("the model has no trainable parameters to optimise")
    if fused is None:
        fused = all(p.is_cuda for p in params)
    # fused and foreach are alternative kernels: asking for both is an error in torch.
    kernel = {"fused": True} if fused else {"foreach": True}
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **kernel)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov, **kernel)


class CosineWarmupSchedule:
    """Per-iteration learning rate: linear warm-up, then cosine decay (Table 9: warm-up lr 1e-6, min lr 1e-5).

        step < W:        lr = warmup_lr + (base_lr - warmup_lr) * step / W
        W <= step <= T:  lr = min_lr + (base_lr - min_lr) * (1 + cos(pi * (step - W) / (T - W))) / 2

    so lr_at(0) = warmup_lr, lr_at(W) = base_lr and lr_at(T) = min_lr (held there after T). sched='constant'
    keeps base_lr after the warm-up (the 384 fine-tune: lr 5e-6 constant; pass warmup_steps=0 for no warm-up).
    A run shorter than its warm-up (W > T, e.g. ``--epochs 2`` with the default 5 warm-up epochs) is allowed, as
    in the official code: the warm-up simply never finishes.

    The official code uses timm's scheduler stepped once per epoch, whose cosine also spans the warm-up epochs;
    we update every iteration (smoother, and independent of epoch length) and start the cosine where the
    warm-up ends. The difference is negligible over 300 epochs. :class:`OfficialEpochSchedule` is the official
    per-epoch schedule, one-epoch lag included (``--sched-update epoch``; book chapter 12).

    Usage: construct (sets lr_at(0) on the optimizer), then call `step()` after each `optimizer.step()`.
    Every param group gets lr_at(step) times its own 'lr_scale' (1 if absent), for layer-wise fine-tuning.
    state_dict() holds only the step count: the shape of the schedule comes from the constructor arguments.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float, total_steps: int, warmup_steps: int,
                 warmup_lr: float = 1e-6, min_lr: float = 1e-5, sched: str = "cosine"):
        if sched not in ("cosine", "constant"):
            raise ValueError(f"unknown schedule {sched!r}: choose 'cosine' or 'constant'")
        if total_steps <= 0 or warmup_steps < 0:
            raise ValueError(f"need warmup_steps >= 0 and total_steps > 0, "
                             f"got warmup_steps={warmup_steps}, total_steps={total_steps}")
        self.optimizer = optimizer
        self.base_lr, self.warmup_lr, self.min_lr = base_lr, warmup_lr, min_lr
        self.total_steps, self.warmup_steps, self.sched = total_steps, warmup_steps, sched
        self.step_count = 0
        self._apply()

    def lr_at(self, step: int) -> float:
        """The learning rate after `step` optimiser steps (a pure function of step and the constructor args)."""
        # BEGIN EXERCISE lr_at
        if step < self.warmup_steps:
            return self.warmup_lr + (self.base_lr - self.warmup_lr) * step / self.warmup_steps
        if self.sched == "constant":
            return self.base_lr
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
        # END EXERCISE lr_at

    def _apply(self) -> None:
        lr = self.lr_at(self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self._apply()


class OfficialEpochSchedule(CosineWarmupSchedule):
    """The learning rate of the official run: timm 0.3.2's ``CosineLRScheduler`` as DeiT's main.py steps it.

    timm computes one value per epoch t (warm-up t < W: warmup_lr + t (base_lr - warmup_lr) / W; after it the
    cosine min_lr + (base_lr - min_lr)(1 + cos(pi t / E)) / 2 over all E epochs, warm-up included, since
    ``warmup_prefix`` is off). main.py calls ``lr_scheduler.step(epoch)`` *after* epoch ``epoch``, which sets the
    value for ``epoch`` again, so epoch e >= 1 trains at value(e - 1): epochs 0 and 1 both at warmup_lr, and the
    peak first reached in epoch W + 1. Stepped per iteration like its parent (same interface and state), it
    changes only at epoch boundaries.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float, total_steps: int, warmup_steps: int,
                 warmup_lr: float = 1e-6, min_lr: float = 1e-5, sched: str = "cosine", steps_per_epoch: int = 1):
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.steps_per_epoch = steps_per_epoch
        super().__init__(optimizer, base_lr, total_steps, warmup_steps, warmup_lr, min_lr, sched)

    def epoch_value(self, t: int) -> float:
        """timm's value for epoch t."""
        epochs, warmup = self.total_steps / self.steps_per_epoch, self.warmup_steps / self.steps_per_epoch
        if t < warmup:
            return self.warmup_lr + t * (self.base_lr - self.warmup_lr) / warmup
        if self.sched == "constant":
            return self.base_lr
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * min(t / epochs, 1.0)))

    def lr_at(self, step: int) -> float:
        epoch = step // self.steps_per_epoch
        return self.epoch_value(max(epoch - 1, 0))  # the one-epoch lag of step(epoch) after the epoch


class ModelEma:
    """Exponential moving average of the weights (Table 8: +EMA gives 81.9 vs 81.8; off in the default recipe).

    After every optimiser step: ema = decay * ema + (1 - decay) * param for floating-point parameters; buffers
    (e.g. BatchNorm statistics) and non-float tensors are copied as they are. The copy lives in eval mode, never
    receives gradients, and can sit on another device (device='cpu' saves GPU memory). Evaluate `ema.module`.
    """

    def __init__(self, model: nn.Module, decay: float = 0.99996, device: torch.device | str | None = None):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.module = copy.deepcopy(unwrap(model)).eval()
        self.module.requires_grad_(False)
        if device is not None:
            self.module.to(device)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        model = unwrap(model)
        # BEGIN EXERCISE ema_update
        ema_float, new_float = [], []
        for (name, e), (name2, p) in zip(self.module.named_parameters(), model.named_parameters()):
            if name != name2:
                raise ValueError(f"EMA and model parameters differ ({name} vs {name2}): build ModelEma from "
                                 "the same architecture")
            p = p.detach().to(e.device)
            if e.is_floating_point():
                ema_float.append(e)
                new_float.append(p)
            else:
                e.copy_(p)
        # One multi-tensor kernel instead of a Python loop over ~150 tensors: e += (1 - decay) * (p - e).
        if ema_float:
            torch._foreach_lerp_(ema_float, new_float, 1.0 - self.decay)
        for e, b in zip(self.module.buffers(), model.buffers()):
            e.copy_(b.detach().to(e.device))
        # END EXERCISE ema_update

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
