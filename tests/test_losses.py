"""Losses and metrics against values computed independently with numpy and explicit loops."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from minideit.losses import (DistillationLoss, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy, accuracy,
                             agreement)


def np_log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


class FixedTeacher(nn.Module):
    """Returns fixed logits whatever the input; records its mode and whether grad was enabled when called."""

    def __init__(self, logits):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))  # a parameter, so we can check it gets no gradient
        self.logits = torch.as_tensor(logits, dtype=torch.float32)
        self.calls = []

    def forward(self, x):
        self.calls.append((self.training, torch.is_grad_enabled(), x.clone()))
        return self.logits * self.w


CLS = [[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]]
DIST = [[0.3, 1.5, -0.2], [1.0, -1.0, 0.5]]
TEACH = [[0.0, 3.0, 1.0], [2.0, 0.0, 1.0]]  # argmax: 1, 0
LABELS = [0, 2]


def student():
    return (torch.tensor(CLS, requires_grad=True), torch.tensor(DIST, requires_grad=True))


def np_ce(logits, labels):
    lp = np_log_softmax(logits)
    return float(np.mean([-lp[i, y] for i, y in enumerate(labels)]))


def test_label_smoothing_matches_explicit_loop():
    eps = 0.1
    got = LabelSmoothingCrossEntropy(eps)(torch.tensor(CLS), torch.tensor(LABELS)).item()
    lp = np_log_softmax(CLS)
    k = lp.shape[1]
    total = 0.0
    for i, y in enumerate(LABELS):
        for c in range(k):
            q = (1 - eps) * (c == y) + eps / k  # the smoothed target distribution
            total += -q * lp[i, c]
    assert got == pytest.approx(total / len(LABELS), rel=1e-6)
    # smoothing 0 is plain cross-entropy
    assert LabelSmoothingCrossEntropy(0.0)(torch.tensor(CLS), torch.tensor(LABELS)).item() == pytest.approx(
        np_ce(CLS, LABELS), rel=1e-6)


def test_soft_target_cross_entropy():
    q = np.array([[0.7, 0.2, 0.1], [0.0, 0.5, 0.5]])
    got = SoftTargetCrossEntropy()(torch.tensor(CLS), torch.tensor(q, dtype=torch.float32)).item()
    want = float(np.mean(np.sum(-q * np_log_softmax(CLS), axis=1)))
    assert got == pytest.approx(want, rel=1e-6)


def test_none_is_base_on_class_head_and_needs_no_teacher():
    crit = DistillationLoss(nn.CrossEntropyLoss(), None, "none", alpha=0.5, tau=1.0)
    got = crit(torch.zeros(2, 3), student(), torch.tensor(LABELS)).item()
    assert got == pytest.approx(np_ce(CLS, LABELS), rel=1e-6)


@pytest.mark.parametrize("norm", ["official", "paper"])
def test_soft_matches_hand_computed_kl(norm):
    alpha, tau = 0.3, 2.0
    crit = DistillationLoss(nn.CrossEntropyLoss(), FixedTeacher(TEACH), "soft", alpha, tau, kl_normalisation=norm)
    got = crit(torch.zeros(2, 3), student(), torch.tensor(LABELS)).item()
    ls = np_log_softmax(np.array(DIST) / tau)
    lt = np_log_softmax(np.array(TEACH) / tau)
    kl = 0.0
    for i in range(2):
        for c in range(3):
            kl += math.exp(lt[i, c]) * (lt[i, c] - ls[i, c])  # KL(teacher || student), summed
    denom = 2 * 3 if norm == "official" else 2
    want = (1 - alpha) * np_ce(CLS, LABELS) + alpha * tau * tau * kl / denom
    assert got == pytest.approx(want, rel=1e-5)


def test_soft_official_vs_paper_ratio_is_num_classes():
    k = 7
    torch.manual_seed(0)
    s, t, x = torch.randn(4, k), torch.randn(4, k), torch.zeros(4, 1)
    terms = {}
    for norm in ("official", "paper"):
        crit = DistillationLoss(nn.CrossEntropyLoss(), FixedTeacher(t), "soft", 1.0, 3.0, kl_normalisation=norm)
        terms[norm] = crit(x, (s, s.clone()), torch.zeros(4, dtype=torch.long)).item()  # alpha=1: teacher term only
    assert terms["paper"] / terms["official"] == pytest.approx(k, rel=1e-5)


def test_hard_uses_teacher_argmax_without_smoothing():
    alpha = 0.5
    crit = DistillationLoss(LabelSmoothingCrossEntropy(0.1), FixedTeacher(TEACH), "hard", alpha, tau=1.0)
    got = crit(torch.zeros(2, 3), student(), torch.tensor(LABELS)).item()
    lp_c, lp_d = np_log_softmax(CLS), np_log_softmax(DIST)
    base = np.mean([-(0.9 * lp_c[i, y] + 0.1 * lp_c[i].mean()) for i, y in enumerate(LABELS)])
    teacher_labels = [1, 0]  # argmax of TEACH rows, by inspection
    distill = np.mean([-lp_d[i, y] for i, y in enumerate(teacher_labels)])  # plain CE: no smoothing
    assert got == pytest.approx((1 - alpha) * base + alpha * distill, rel=1e-6)


def test_hard_class_head_only_applies_both_terms_to_class_logits():
    alpha = 0.5
    crit = DistillationLoss(nn.CrossEntropyLoss(), FixedTeacher(TEACH), "hard", alpha, tau=1.0)
    got = crit(torch.zeros(2, 3), torch.tensor(CLS), torch.tensor(LABELS)).item()
    want = 0.5 * np_ce(CLS, LABELS) + 0.5 * np_ce(CLS, [1, 0])
    assert got == pytest.approx(want, rel=1e-6)


def test_teacher_runs_in_eval_without_grad_on_same_inputs():
    teacher = FixedTeacher(TEACH)
    teacher.train()
    crit = DistillationLoss(nn.CrossEntropyLoss(), teacher, "soft", 0.5, 1.0)
    teacher.train()  # someone flips it back after construction: the loss must still use eval mode
    x = torch.randn(2, 3)
    s = student()
    loss = crit(x, s, torch.tensor(LABELS))
    loss.backward()
    training, grad_enabled, seen = teacher.calls[-1]
    assert not training and not grad_enabled
    assert torch.equal(seen, x)
    assert teacher.w.grad is None and not teacher.w.requires_grad
    assert s[0].grad is not None and s[1].grad is not None  # the student does get gradients
    assert torch.equal(crit.last_teacher_logits, torch.tensor(TEACH))


def test_invalid_arguments_have_clear_messages():
    with pytest.raises(ValueError, match="unknown distillation type 'medium'.*none, soft, hard"):
        DistillationLoss(nn.CrossEntropyLoss(), FixedTeacher(TEACH), "medium", 0.5, 1.0)
    with pytest.raises(ValueError, match="needs a teacher"):
        DistillationLoss(nn.CrossEntropyLoss(), None, "hard", 0.5, 1.0)
    with pytest.raises(ValueError, match="kl_normalisation"):
        DistillationLoss(nn.CrossEntropyLoss(), FixedTeacher(TEACH), "soft", 0.5, 1.0, kl_normalisation="mean")


def test_accuracy_topk_in_percent():
    out = torch.tensor([[0.1, 0.9, 0.0, 0.0],   # top1 = 1, top2 = {1, 0}
                        [0.5, 0.1, 0.3, 0.2],   # top1 = 0, top2 = {0, 2}
                        [0.0, 0.1, 0.2, 0.7],   # top1 = 3, top2 = {3, 2}
                        [0.4, 0.3, 0.2, 0.1]])  # top1 = 0, top2 = {0, 1}, top3 = {0, 1, 2}
    target = torch.tensor([1, 2, 0, 2])
    top1, top2, top3, top9 = accuracy(out, target, topk=(1, 2, 3, 9))
    assert top1.item() == pytest.approx(25.0)
    assert top2.item() == pytest.approx(50.0)
    assert top3.item() == pytest.approx(75.0)
    assert top9.item() == pytest.approx(100.0)  # k clipped to the 4 classes
    with pytest.raises(ValueError, match="integer labels"):
        accuracy(out, torch.zeros(4, 4))


def test_agreement_is_fraction_of_equal_argmax():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[5.0, 1.0], [2.0, 1.0], [0.0, 3.0], [0.0, 1.0]])
    assert agreement(a, b).item() == pytest.approx(0.5)
    assert agreement(a, a).item() == pytest.approx(1.0)
