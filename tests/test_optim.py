"""Parameter groups, optimiser choice, the learning-rate schedule and EMA."""

import pytest
import torch
import torch.nn as nn

from minideit import create_model
from minideit.optim import (CosineWarmupSchedule, ModelEma, OfficialEpochSchedule, build_optimizer,
                            no_weight_decay_names, param_groups_weight_decay, scaled_lr, unwrap)


class TinyDeiT(nn.Module):
    """Parameter names shaped like a distilled DeiT's, plus a BatchNorm for buffers."""

    def __init__(self, dim=4, classes=3):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 3, dim))
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.bn = nn.BatchNorm1d(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        return self.head(self.norm(self.bn(self.proj(x)) + self.cls_token[0, 0]))

    def no_weight_decay(self):  # the model says which of its parameters escape weight decay, as DeiT's does
        return {"pos_embed", "cls_token", "dist_token"}


def names_in(group, model):
    by_id = {id(p): n for n, p in model.named_parameters()}
    return {by_id[id(p)] for p in group["params"]}


def test_param_groups_split_by_name_and_ndim():
    m = TinyDeiT()
    m.head.bias.requires_grad_(False)  # frozen parameters are left out entirely
    decay, no_decay = param_groups_weight_decay(m, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert names_in(decay, m) == {"proj.weight", "head.weight"}
    assert names_in(no_decay, m) == {"cls_token", "dist_token", "pos_embed", "proj.bias", "norm.weight",
                                     "norm.bias", "bn.weight", "bn.bias"}


def test_build_optimizer_kinds_and_errors():
    m = TinyDeiT()
    adamw = build_optimizer(m, "adamw", lr=1e-3, weight_decay=0.05)
    assert isinstance(adamw, torch.optim.AdamW)
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.05, 0.0]
    assert adamw.param_groups[0]["foreach"] is True  # CPU parameters: the foreach path, not fused
    sgd = build_optimizer(m, "sgd", lr=0.1, weight_decay=1e-4)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["nesterov"]
    assert sgd.param_groups[0]["momentum"] == 0.9
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        build_optimizer(m, "lamb", lr=1e-3)


def test_adamw_does_not_decay_no_decay_params():
    m = TinyDeiT()
    with torch.no_grad():
        m.pos_embed.fill_(1.0)
        m.proj.weight.fill_(1.0)
    opt = build_optimizer(m, lr=0.1, weight_decay=0.5)
    for p in m.parameters():
        p.grad = torch.zeros_like(p)  # zero gradient: only decoupled weight decay can move a weight
    opt.step()
    assert torch.all(m.pos_embed == 1.0)
    assert torch.allclose(m.proj.weight, torch.full_like(m.proj.weight, 1.0 - 0.1 * 0.5))


def test_scaled_lr_linear_rule():
    assert scaled_lr(5e-4, 1024) == pytest.approx(1e-3)
    assert scaled_lr(5e-4, 128) == pytest.approx(1.25e-4)
    with pytest.raises(ValueError):
        scaled_lr(5e-4, 0)


def make_schedule(**kw):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=123.0)
    args = dict(base_lr=1e-3, total_steps=100, warmup_steps=10, warmup_lr=1e-6, min_lr=1e-5)
    args.update(kw)
    return opt, CosineWarmupSchedule(opt, **args)


def test_schedule_shape():
    opt, s = make_schedule()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-6)  # set at construction
    assert s.lr_at(0) == pytest.approx(1e-6)
    assert s.lr_at(5) == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5)
    assert s.lr_at(10) == pytest.approx(1e-3)
    assert s.lr_at(55) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5)  # half way through the cosine
    assert s.lr_at(100) == pytest.approx(1e-5)
    assert s.lr_at(150) == pytest.approx(1e-5)  # held at min_lr
    warm = [s.lr_at(i) for i in range(11)]
    decay = [s.lr_at(i) for i in range(10, 101)]
    assert all(a < b for a, b in zip(warm, warm[1:]))
    assert all(a > b for a, b in zip(decay, decay[1:]))
    for i in range(1, 37):
        s.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(s.lr_at(i))
    assert s.get_last_lr() == [opt.param_groups[0]["lr"]]


def test_schedule_constant_and_lr_scale():
    p1, p2 = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [p1]}, {"params": [p2], "lr_scale": 0.1}], lr=1.0)
    s = CosineWarmupSchedule(opt, base_lr=5e-6, total_steps=30, warmup_steps=0, sched="constant")
    for _ in range(30):
        s.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(5e-6)
        assert opt.param_groups[1]["lr"] == pytest.approx(5e-7)
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        CosineWarmupSchedule(opt, 1e-3, 10, 0, sched="step")
    with pytest.raises(ValueError, match="warmup_steps"):
        CosineWarmupSchedule(opt, 1e-3, 10, -1)


def test_a_run_shorter_than_its_warmup_ends_inside_the_warmup():
    # --epochs 2 with the default 5 warm-up epochs: the official code trains it, the warm-up never finishes.
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.0)
    s = CosineWarmupSchedule(opt, base_lr=1e-3, total_steps=20, warmup_steps=50, warmup_lr=1e-6)
    lrs = [s.lr_at(i) for i in range(21)]
    assert lrs == sorted(lrs) and lrs[0] == 1e-6 and lrs[-1] < 1e-3 * 20 / 50 + 1e-6


def test_schedule_state_dict_round_trip():
    opt, s = make_schedule()
    for _ in range(42):
        s.step()
    opt2, s2 = make_schedule()
    s2.load_state_dict(s.state_dict())
    assert s2.step_count == 42
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
    s.step(); s2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])


def test_ema_update_math_and_buffers():
    torch.manual_seed(0)
    model = TinyDeiT()
    ema = ModelEma(model, decay=0.9)
    assert not ema.module.training
    assert not any(p.requires_grad for p in ema.module.parameters())
    old = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
        model.bn.running_mean.fill_(3.0)
        model.bn.num_batches_tracked.fill_(7)
    ema.update(model)
    new = ema.state_dict()
    cur = model.state_dict()
    for name, _ in model.named_parameters():
        want = 0.9 * old[name] + 0.1 * cur[name]
        assert torch.allclose(new[name], want, atol=1e-6), name
    assert torch.equal(new["bn.running_mean"], torch.full((4,), 3.0))  # buffers copied, not averaged
    assert new["bn.num_batches_tracked"].item() == 7
    # the EMA is a separate copy: changing it does not touch the model
    with torch.no_grad():
        ema.module.proj.weight.zero_()
    assert not torch.all(model.proj.weight == 0)


def test_ema_state_dict_round_trip():
    model = TinyDeiT()
    ema = ModelEma(model, decay=0.5)
    with torch.no_grad():
        model.proj.weight.add_(1.0)
    ema.update(model)
    other = ModelEma(TinyDeiT(), decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(other.state_dict().values(), ema.state_dict().values()))


def test_no_weight_decay_names_come_from_the_model():
    deit = create_model("deit_nano_distilled_patch4_32", num_classes=10)
    assert no_weight_decay_names(deit) == ("cls_token", "dist_token", "pos_embed")
    # the official run: timm 0.3.2's no_weight_decay() has no dist_token, so it was decayed
    assert no_weight_decay_names(deit, decay_dist_token=True) == ("cls_token", "pos_embed")
    decay, no_decay = param_groups_weight_decay(deit, 0.05, decay_dist_token=True)
    assert any(p is deit.dist_token for p in decay["params"])
    assert not any(p is deit.dist_token for p in param_groups_weight_decay(deit, 0.05)[0]["params"])
    assert no_weight_decay_names(create_model("regnety_002", num_classes=10)) == ()  # a model without the method


def test_unwrap_removes_compile_and_ddp_wrappers():
    m = TinyDeiT()
    assert unwrap(m) is m
    compiled = torch.compile(m)
    assert unwrap(compiled) is m


def official_lrs(epochs, warmup, steps_per_epoch, base=1e-3, warmup_lr=1e-6, min_lr=1e-5):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.0)
    s = OfficialEpochSchedule(opt, base, epochs * steps_per_epoch, warmup * steps_per_epoch, warmup_lr, min_lr,
                              steps_per_epoch=steps_per_epoch)
    per_epoch = []
    for _ in range(epochs):
        per_epoch.append({s.get_last_lr()[0]} | {s.lr_at(s.step_count + i) for i in range(steps_per_epoch)})
        for _ in range(steps_per_epoch):
            s.step()
    return per_epoch


def test_official_epoch_schedule_lags_one_epoch():
    """main.py calls lr_scheduler.step(epoch) after epoch `epoch`: epoch e >= 1 trains at timm's value for e - 1."""
    import math
    per_epoch = official_lrs(epochs=300, warmup=5, steps_per_epoch=2)
    assert all(len(lrs) == 1 for lrs in per_epoch)  # constant within an epoch
    lrs = [lrs.pop() for lrs in per_epoch]
    timm = [1e-6 + t * (1e-3 - 1e-6) / 5 if t < 5 else 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * t / 300))
            for t in range(300)]  # timm 0.3.2's per-epoch values (its cosine spans the warm-up: no warmup_prefix)
    assert lrs[0] == lrs[1] == pytest.approx(1e-6)  # epochs 0 and 1 both at the warm-up's start
    assert lrs[1:] == pytest.approx(timm[:-1])
    assert max(lrs) == lrs[6] == pytest.approx(timm[5])  # the peak is first reached in epoch 6
