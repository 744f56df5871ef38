"""Checks of the training exercises: metrics (notebooks 03, 07), losses (05, 07), optimiser and EMA (09, 11).

Losses are compared by value and by gradient: a loss with the right value but no gradient (a ``.item()`` or a
``.detach()`` inside) would not train anything.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from minideit import losses, optim, vit
from .checking import call, compare, describe, expect


def _value_and_grad(loss_of, label: str, logits: list[torch.Tensor]) -> tuple[torch.Tensor, list]:
    """``loss_of(*copies)`` on fresh leaf copies of ``logits``: its value and the gradients of the copies."""
    leaves = [t.detach().clone().requires_grad_(True) for t in logits]
    value = loss_of(*leaves)
    expect(isinstance(value, torch.Tensor) and value.numel() == 1,
           f"{label}: expected a scalar tensor, got {describe(value)}")
    expect(value.requires_grad, f"{label}: the loss carries no gradient back to the logits (no .item(), "
                                ".detach() or .data inside a loss)")
    value.backward()
    return value.detach().reshape(()), [t.grad for t in leaves]


# ---- notebook 03: top-k accuracy -------------------------------------------------------------------------------
def check_accuracy(fn) -> None:
    torch.manual_seed(0)
    for batch, classes, topk in [(20, 10, (1, 5)), (20, 10, (1,)), (12, 3, (1, 5)), (16, 6, (2, 3))]:
        logits, target = torch.randn(batch, classes), torch.randint(0, classes, (batch,))
        label = f"accuracy(logits ({batch}, {classes}), labels ({batch},), topk={topk})"
        got = call(fn, label, logits, target, topk)
        expected = losses.accuracy(logits, target, topk)
        compare(got, expected, label, mistakes=[([e / 100 for e in expected], "return percentages (x 100)")])


# ---- notebook 05: label smoothing, soft targets, the soft distillation term --------------------------------------
def check_label_smoothing_ce(fn) -> None:
    for smoothing in (0.0, 0.1, 0.3):
        crit = losses.LabelSmoothingCrossEntropy(smoothing)
        logits, target = torch.randn(8, 5) * 2, torch.randint(0, 5, (8,))
        label = f"label_smoothing_ce(LabelSmoothingCrossEntropy({smoothing}), logits (8, 5), labels (8,))"
        got, got_grad = _value_and_grad(lambda x: call(fn, label, crit, x, target), label, [logits])
        expected, grad = _value_and_grad(lambda x: crit(x, target), label, [logits])
        compare(got, expected, label, mistakes=[(F.cross_entropy(logits, target),
                                                 "mix in eps times the cross-entropy against the uniform "
                                                 "distribution, mean_k(-log p[k])")])
        compare(got_grad, grad, label + " gradient")


def check_soft_target_ce(fn) -> None:
    crit = losses.SoftTargetCrossEntropy()
    logits, target = torch.randn(6, 4) * 2, torch.randn(6, 4).softmax(-1)
    label = "soft_target_ce(logits (6, 4), target rows summing to 1)"
    got, got_grad = _value_and_grad(lambda x: call(fn, label, crit, x, target), label, [logits])
    expected, grad = _value_and_grad(lambda x: crit(x, target), label, [logits])
    compare(got, expected, label, mistakes=[
        (expected * 6, "average over the batch, don't sum"),
        (expected / 4, "sum over the classes (it is a cross-entropy), average only over the batch"),
        ((-target * logits.softmax(-1)).sum(-1).mean(), "use log_softmax of the logits, not softmax"),
    ])
    compare(got_grad, grad, label + " gradient")


def _distillation(kind: str, alpha: float = 0.5, tau: float = 1.0, norm: str = "official", teacher=None):
    teacher = teacher if teacher is not None else nn.Identity()
    return losses.DistillationLoss(nn.CrossEntropyLoss(), teacher, kind, alpha, tau, kl_normalisation=norm)


def check_soft_term(fn) -> None:
    student, teacher = torch.randn(4, 6) * 2, torch.randn(4, 6) * 2
    for tau, norm in [(1.0, "official"), (3.0, "official"), (3.0, "paper"), (2.0, "paper")]:
        loss = _distillation("soft", tau=tau, norm=norm)
        label = f"soft_term(DistillationLoss(tau={tau}, kl_normalisation={norm!r}), student (4, 6), teacher (4, 6))"
        got, got_grad = _value_and_grad(lambda s: call(fn, label, loss, s, teacher), label, [student])
        expected, grad = _value_and_grad(lambda s: loss.soft_term(s, teacher), label, [student])
        log_s, log_t = F.log_softmax(student / tau, 1), F.log_softmax(teacher / tau, 1)
        kl_sum = F.kl_div(log_s, log_t, reduction="sum", log_target=True)
        reverse = F.kl_div(log_t, log_s, reduction="sum", log_target=True)  # KL(student || teacher)
        denom, other = (student.numel(), 4) if norm == "official" else (4, student.numel())
        compare(got, expected, label, mistakes=[
            (expected / tau ** 2, "multiply by tau^2, which keeps the gradients' scale independent of tau"),
            (kl_sum * tau ** 2 / other, "'official' divides the summed KL by student.numel() = B*K, 'paper' by "
                                        "the batch size B"),
            (reverse * tau ** 2 / denom, "the teacher's distribution is the target: KL(teacher || student), i.e. "
                                         "F.kl_div(log_softmax(student / tau), log_softmax(teacher / tau), ...)"),
        ])
        compare(got_grad, grad, label + " gradient")


# ---- notebook 07: the distillation loss, agreement ---------------------------------------------------------------
def check_distillation_forward(fn) -> None:
    torch.manual_seed(7)
    teacher = nn.Linear(6, 5)
    inputs, labels = torch.randn(4, 6), torch.randint(0, 5, (4,))
    cls, dist = torch.randn(4, 5), torch.randn(4, 5)
    t_logits = teacher(inputs).detach()
    for kind in ("none", "soft", "hard"):
        for outputs in ([cls, dist], [cls]):
            loss = _distillation(kind, alpha=0.3, tau=2.0, teacher=teacher)
            shape = "(cls, dist)" if len(outputs) == 2 else "one tensor"
            label = f"distillation_forward(DistillationLoss({kind!r}, alpha=0.3, tau=2.0), outputs {shape})"
            loss.last_teacher_logits = None
            pack = lambda *o: o[0] if len(o) == 1 else o  # noqa: E731  (cls, dist) or one tensor
            got, got_grad = _value_and_grad(lambda *o: call(fn, label, loss, inputs, pack(*o), labels), label,
                                            outputs)
            expected, grad = _value_and_grad(lambda *o: loss(inputs, pack(*o), labels), label, outputs)
            s = outputs[-1]
            base = F.cross_entropy(cls, labels)
            teacher_term = (expected - 0.7 * base) / 0.3
            mistakes = [] if kind == "none" else [
                (0.3 * base + 0.7 * teacher_term, "weigh the base loss by 1 - alpha, the teacher term by alpha"),
                (0.7 * base + 0.3 * F.cross_entropy(cls, t_logits.argmax(1)),
                 "the teacher term goes to the distillation head, outputs[1]"),
            ]
            if kind == "hard":
                mistakes.append((0.7 * base + 0.3 * F.cross_entropy(s, t_logits.softmax(1)),
                                 "hard distillation takes the teacher's top class as the label: teacher.argmax(1)"))
            compare(got, expected, label, mistakes=mistakes)
            compare(got_grad, grad, label + " gradient with respect to the outputs")
            if kind != "none":
                compare(loss.last_teacher_logits, t_logits, label + ": self.last_teacher_logits (set it to the "
                                                                    "teacher's logits of this batch, detached)")


def check_agreement(fn) -> None:
    torch.manual_seed(8)
    a = torch.randn(30, 7)
    for b, what in [(a + torch.randn(30, 7), "a noisy copy"), (a.clone(), "the same logits"),
                    (-a, "negated logits")]:
        label = f"agreement(logits (30, 7), {what})"
        expected = losses.agreement(a, b)
        compare(call(fn, label, a, b), expected, label, mistakes=[(1 - expected, "return the agreement, not the "
                                                                               "disagreement")])


# ---- notebook 09: weight decay groups, schedule, EMA ------------------------------------------------------------
def check_wants_weight_decay(fn) -> None:
    torch.manual_seed(9)
    model = vit.VisionTransformer(img_size=8, patch_size=4, num_classes=3, embed_dim=8, depth=1, num_heads=2,
                                  distilled=True)
    skip = optim.no_weight_decay_names(model)  # the model's own no_weight_decay() names
    cases = [(name, p, skip) for name, p in model.named_parameters()]
    cases += [("module.pos_embed", torch.zeros(1, 5, 8), skip),
              ("encoder.gamma", torch.zeros(4, 4), ("gamma",)), ("encoder.weight", torch.zeros(4, 4), ("gamma",))]
    wrong = []
    for name, p, skip in cases:
        label = f"wants_weight_decay({name!r}, parameter {tuple(p.shape)}, skip_names={skip})"
        got = call(fn, label, name, p, skip)
        expected = optim.wants_weight_decay(name, p, skip)
        expect(isinstance(got, bool), f"{label}: expected a bool, got {describe(got)}")
        if got != expected:
            wrong.append(f"{name} {tuple(p.shape)}: expected {expected}, got {got}")
    expect(not wrong, f"wants_weight_decay is wrong for {len(wrong)} of {len(cases)} parameters: "
                      + "; ".join(wrong[:4]) + ("; ..." if len(wrong) > 4 else ""))


def check_lr_at(fn) -> None:
    settings = [dict(base_lr=1e-3, total_steps=50, warmup_steps=10, warmup_lr=1e-6, min_lr=1e-5),
                dict(base_lr=5e-4, total_steps=20, warmup_steps=0, warmup_lr=1e-6, min_lr=1e-5),
                dict(base_lr=5e-6, total_steps=30, warmup_steps=5, warmup_lr=1e-7, min_lr=1e-6, sched="constant")]
    for kwargs in settings:
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        schedule = optim.CosineWarmupSchedule(opt, **kwargs)
        for step in range(kwargs["total_steps"] + 5):
            label = f"lr_at(step={step}) of CosineWarmupSchedule({', '.join(f'{k}={v}' for k, v in kwargs.items())})"
            compare(call(fn, label, schedule, step), schedule.lr_at(step), label, atol=1e-12, rtol=1e-6)


def check_ema_update(fn) -> None:
    torch.manual_seed(10)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    ema = optim.ModelEma(model, decay=0.9)
    reference = copy.deepcopy(ema)
    for update in (1, 2):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model(torch.randn(8, 4))  # moves the BatchNorm statistics (buffers)
        before = {name: t.clone() for name, t in ema.module.state_dict().items()}
        call(fn, f"ema_update(ModelEma(decay=0.9), model), update {update}", ema, model)
        reference.update(model)
        live = model.state_dict()
        got = dict(ema.module.named_parameters())
        for name, expected in reference.module.named_parameters():
            compare(got[name], expected, f"after update {update}, the EMA parameter {name}", mistakes=[
                (before[name], "self.module did not change: update its tensors in place (e.g. with lerp_ or "
                               "mul_ and add_)"),
                (live[name], "copied from the model, not averaged: ema = decay * ema + (1 - decay) * param"),
                (0.1 * before[name] + 0.9 * live[name], "decay weighs the old average: "
                                                        "ema = decay * ema + (1 - decay) * param"),
            ])
        got = dict(ema.module.named_buffers())
        for name, expected in reference.module.named_buffers():
            compare(got[name], expected, f"after update {update}, the EMA buffer {name}", mistakes=[
                (before[name], "copy the model's buffers (BatchNorm statistics) into self.module as they are")])


# ---- notebook 11: the linear scaling rule ---------------------------------------------------------------------
def check_scaled_lr(fn) -> None:
    for base, batch in [(5e-4, 1024), (5e-4, 512), (1e-3, 256), (5e-4, 4096)]:
        label = f"scaled_lr(base_lr={base}, global_batch={batch})"
        expected = optim.scaled_lr(base, batch)
        compare(call(fn, label, base, batch), expected, label, atol=1e-15, rtol=1e-9,
                mistakes=[(base * 512 / batch, "the learning rate grows with the batch: base_lr * batch / 512")])
