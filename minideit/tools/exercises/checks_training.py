"""Checks of the training exercises: accuracy (03), losses (05, 07), the distilled training step (07),
schedule and EMA (09).

Losses are compared by value and by gradient: a loss with the right value but no gradient (a ``.item()`` or a
``.detach()`` inside) would not train anything.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from minideit import engine, losses, optim, vit
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
def check_hard_distillation_loss(fn) -> None:
    torch.manual_seed(6)
    cls, dist, t = torch.randn(6, 5), torch.randn(6, 5), torch.randn(6, 5) * 3
    labels = torch.randint(0, 5, (6,))
    y_t = t.argmax(1)
    for alpha, base, name in [(0.5, F.cross_entropy, "cross_entropy"), (0.1, F.cross_entropy, "cross_entropy"),
                              (0.5, losses.LabelSmoothingCrossEntropy(0.1), "LabelSmoothingCrossEntropy(0.1)")]:
        label = f"hard_distillation_loss(cls (6, 5), dist (6, 5), labels, teacher (6, 5), alpha={alpha}, {name})"
        got, got_grad = _value_and_grad(lambda c, d: call(fn, label, c, d, labels, t, alpha, base), label,
                                        [cls, dist])
        expected, grad = _value_and_grad(lambda c, d: losses.hard_distillation_loss(c, d, labels, t, alpha, base),
                                         label, [cls, dist])
        compare(got, expected, label, mistakes=[
            ((1 - alpha) * base(cls, labels) + alpha * F.cross_entropy(dist, t.softmax(1)),
             "hard distillation uses the teacher's decision as a label: teacher_logits.argmax(dim=1), not its "
             "probabilities (that would be soft distillation)"),
            ((1 - alpha) * base(dist, labels) + alpha * F.cross_entropy(cls, y_t),
             "the class head learns from the labels, the distillation head from the teacher"),
            (alpha * base(cls, labels) + (1 - alpha) * F.cross_entropy(dist, y_t),
             "weigh the label term by 1 - alpha and the teacher term by alpha"),
            ((1 - alpha) * base(cls, labels) + alpha * base(dist, y_t),
             "the teacher term is a plain cross-entropy (no label smoothing): F.cross_entropy"),
            (base(cls, labels) + F.cross_entropy(dist, y_t), "Eq. 3 averages the two terms: weigh them"),
        ])
        compare(got_grad, grad, label + " gradient with respect to (cls, dist)")


def check_distillation_step(fn) -> None:
    def setup():
        torch.manual_seed(12)
        student = vit.VisionTransformer(img_size=8, patch_size=4, num_classes=5, embed_dim=8, depth=1,
                                        num_heads=2, distilled=True)
        # A teacher with BatchNorm and dropout: in training mode it would change its statistics and its output.
        teacher = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5), nn.BatchNorm1d(5), nn.Dropout(0.5)).train()
        for p in student.parameters():
            p.grad = torch.ones_like(p)  # stale gradients from an earlier step
        return student, teacher, torch.optim.SGD(student.parameters(), lr=0.5, momentum=0.9)
    images, labels = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    student, teacher, opt = setup()
    label = "distillation_step(student DeiT-tiny-ish, teacher with BatchNorm and Dropout, images (4, 3, 8, 8), SGD)"
    stats = teacher[2].running_mean.clone()
    weight = teacher[1].weight.detach().clone()
    got = call(fn, label, student, teacher, images, labels, opt)
    ref_student, ref_teacher, ref_opt = setup()
    expected = _engine_step(ref_student, ref_teacher, images, labels, ref_opt)
    expect(isinstance(got, torch.Tensor) and got.numel() == 1, f"{label}: return the loss, a scalar tensor; "
                                                              f"got {describe(got)}")
    expect(not got.requires_grad, f"{label}: return the loss detached (loss.detach()), so that no graph is kept")
    expect(torch.equal(teacher[2].running_mean, stats), f"{label}: the teacher's BatchNorm statistics changed; "
                                                        "put the teacher in eval mode (teacher.eval()) first")
    expect(teacher[1].weight.grad is None and torch.equal(teacher[1].weight, weight),
           f"{label}: the teacher received gradients or changed; run it under torch.no_grad() (it is frozen)")
    compare(got, expected, label + ": the loss", mistakes=[
        (_engine_step(*setup()[:2], images, labels, setup()[2], eval_teacher=False),
         "run the teacher in eval mode (its dropout and BatchNorm behave differently in training mode)")])
    got_params, stale = dict(student.named_parameters()), _stale(*setup(), images, labels)
    for name, p in ref_student.named_parameters():
        compare(got_params[name], p, f"{label}: parameter {name} after the step", mistakes=[
            (stale[name], "zero the gradients before backward (optimizer.zero_grad()): they accumulate across "
                          "steps"),
            (setup()[0].get_parameter(name), "take the optimizer step (optimizer.step()) after backward"),
        ])
    expect(student.training, f"{label}: the student is trained in training mode (student.train())")


def _engine_step(student, teacher, images, labels, optimizer, eval_teacher: bool = True) -> torch.Tensor:
    if eval_teacher:
        return engine.distillation_step(student, teacher, images, labels, optimizer)
    with torch.no_grad():
        t = teacher.train()(images)
    student.train()
    loss = losses.hard_distillation_loss(*student(images), labels, t)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach()


def _stale(student, teacher, optimizer, images, labels) -> dict:
    """Parameters after a step that forgot zero_grad (the stale gradients of setup() add to the new ones)."""
    teacher.eval()
    with torch.no_grad():
        t = teacher(images)
    loss = losses.hard_distillation_loss(*student.train()(images), labels, t)
    loss.backward()
    optimizer.step()
    return dict(student.named_parameters())


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


# ---- notebook 09: weight decay groups, schedule, EMA ------------------------------------------------------------
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
