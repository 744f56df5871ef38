"""python -m minideit.train end to end on tiny data: presets, exact resume, two processes, NaN, bad input, demo."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minideit import create_model
from minideit.engine import NonFiniteLossError, train_one_epoch
from minideit.optim import CosineWarmupSchedule, build_optimizer
from minideit.train import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def smoke(monkeypatch):
    monkeypatch.setenv("MINIDEIT_SMOKE", "1")  # tiny validation sets, at most 2 epochs


def synthetic_args(out, *extra):
    return ["--model", "deit_nano_distilled_patch4_32", "--data-set", "synthetic", "--input-size", "32",
            "--num-samples", "128", "--batch-size", "32", "--epochs", "2", "--warmup-epochs", "1",
            "--num-workers", "0", "--output-dir", str(out), *extra]


def read_log(out):
    return [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def save_teacher(path, name="regnety_002", num_classes=10, **overrides):
    torch.manual_seed(1)
    torch.save({"model": create_model(name, num_classes=num_classes, **overrides).state_dict()}, path)
    return path


# ---------------------------------------------------------------------------------------------------------------
def test_plain_run_writes_config_log_and_checkpoints(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli(synthetic_args(out, "--distillation-type", "none"), capsys)
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "deit_nano_distilled_patch4_32" and config["global_batch"] == 32
    assert abs(config["resolved_lr"] - 5e-4 * 32 / 512) < 1e-12  # the linear scaling rule
    log = read_log(out)
    assert [r["epoch"] for r in log] == [0, 1]
    for key in ("train_loss", "lr", "test_acc1", "test_acc5", "test_cls_acc1", "test_dist_acc1"):
        assert all(key in r for r in log), key
    assert all(0 <= r["test_acc1"] <= 100 and r["train_loss"] > 0 for r in log)
    ckpt = torch.load(out / "checkpoint.pth", weights_only=False)
    for key in ("model", "optimizer", "lr_scheduler", "epoch", "model_ema", "scaler", "args", "rng", "mixup"):
        assert key in ckpt
    assert ckpt["epoch"] == 1 and (out / "best_checkpoint.pth").is_file()
    assert "cls_token" in ckpt["model"] and "head_dist.weight" in ckpt["model"]  # official key names


def test_eval_every_skips_the_evaluation_of_other_epochs_but_never_the_last(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli(synthetic_args(out, "--distillation-type", "none", "--eval-every", "2",
                                               "--model", "deit_nano_patch4_32"), capsys)
    assert code == 0, err
    first, last = read_log(out)
    assert "test_acc1" not in first and "train_loss" in first  # epoch 0: trained, not evaluated
    assert 0 <= last["test_acc1"] <= 100
    code, _, err = run_cli(synthetic_args(tmp_path / "bad", "--eval-every", "0"), capsys)
    assert code == 2 and "--eval-every" in err


# Exact resume is tested by killing real runs of the same length: tests/test_resume.py.


def test_hard_distillation_from_a_teacher_file_logs_teacher_figures(tmp_path, capsys):
    teacher = save_teacher(tmp_path / "teacher.pth", stem_stride=1)
    out = tmp_path / "run"
    code, stdout, err = run_cli(synthetic_args(out, "--distillation-type", "hard", "--teacher-model", "regnety_002",
                                               "--teacher-path", teacher, "--epochs", "1"), capsys)
    assert code == 0, err
    log = read_log(out)[-1]
    for key in ("test_teacher_acc1", "test_agreement", "test_cls_acc1", "test_dist_acc1"):
        assert key in log
    assert "agree" in stdout


def test_class_head_only_hard_distillation_and_soft_distillation_run(tmp_path, capsys):
    teacher = save_teacher(tmp_path / "teacher.pth", stem_stride=1)
    for name, kind in (("deit_nano_patch4_32", "hard"), ("deit_nano_distilled_patch4_32", "soft")):
        out = tmp_path / f"{name}-{kind}"
        args = synthetic_args(out, "--model", name, "--distillation-type", kind, "--teacher-model", "regnety_002",
                              "--teacher-path", teacher, "--epochs", "1")
        code, _, err = run_cli(args, capsys)
        assert code == 0, err
        assert "test_teacher_acc1" in read_log(out)[-1]


def make_fake_imagenet(root, classes=3):
    sys.path.insert(0, str(ROOT / "data_scripts"))
    try:
        from make_fake_imagenet import make_fake_imagenet as make
    finally:
        sys.path.pop(0)
    make(root, classes=classes, train_per_class=6, val_per_class=2, size=72, seed=0, broken=True)
    return root


def test_full_imagenet_preset_with_tiny_overrides_runs_end_to_end(tmp_path, capsys):
    data = make_fake_imagenet(tmp_path / "imagenet")
    teacher = save_teacher(tmp_path / "teacher.pth", num_classes=3)
    out = tmp_path / "full"
    args = ["--full-imagenet", "--data-path", data, "--model", "deit_tiny_distilled_patch16_224",
            "--input-size", "64", "--batch-size", "4", "--global-batch-size", "8", "--epochs", "1",
            "--num-workers", "0", "--teacher-model", "regnety_002", "--teacher-path", teacher,
            "--output-dir", out]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["accum_steps"] == 2 and config["mixup"] == 0.8 and config["aa"] == "rand-m9-mstd0.5-inc1"
    assert config["model_ema"] and config["distillation_type"] == "hard"
    log = read_log(out)[-1]
    assert "ema_acc1" in log and "bad_images" in log

    # --finetune to a larger resolution from that run (position embeddings resized), then --eval of the result
    tuned = tmp_path / "tuned"
    args = ["--preset", "finetune-384", "--data-path", data, "--model", "deit_tiny_distilled_patch16_224",
            "--input-size", "96", "--finetune", out / "checkpoint.pth", "--batch-size", "4",
            "--global-batch-size", "4", "--epochs", "1", "--num-workers", "0", "--teacher-model", "regnety_002",
            "--teacher-path", teacher, "--output-dir", tuned]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    assert torch.load(tuned / "checkpoint.pth", weights_only=False)["model"]["pos_embed"].shape == (1, 2 + 36, 192)
    code, stdout, err = run_cli(["--eval", "--resume", tuned / "checkpoint.pth", "--data-set", "imagenet",
                                 "--data-path", data, "--model", "deit_tiny_distilled_patch16_224",
                                 "--input-size", "96", "--num-workers", "0"], capsys)
    assert code == 0, err
    assert "| deit_tiny_distilled_patch16_224 |" in stdout


def test_regnet_trains_as_a_plain_classifier(tmp_path, capsys):
    out = tmp_path / "teacher"
    code, _, err = run_cli(synthetic_args(out, "--model", "regnety_002", "--epochs", "1"), capsys)
    assert code == 0, err
    assert "s1.b1.conv1.conv.weight" in torch.load(out / "checkpoint.pth", weights_only=False)["model"]


def test_demo_in_smoke_mode_trains_teacher_then_student(tmp_path, capsys):
    code, stdout, err = run_cli(["--demo", "--output-dir", tmp_path / "demo"], capsys)
    assert code == 0, err
    assert (tmp_path / "demo" / "teacher" / "checkpoint.pth").is_file()
    assert (tmp_path / "demo" / "checkpoint.pth").is_file()
    for row in ("teacher (regnety_002)", "student class head", "student distillation head", "student joint"):
        assert row in stdout
    assert "teacher answers: " in stdout and (tmp_path / "demo" / "teacher" / "answers.pt").is_file()
    # the student's q/k/v start at the demo's 0.05 (development.md, run 42); the teacher, a convnet, at the default
    args = {who: torch.load(tmp_path / "demo" / where / "checkpoint.pth", weights_only=False)["args"]
            for who, where in (("student", "."), ("teacher", "teacher"))}
    assert (args["student"]["attn_init_std"], args["teacher"]["attn_init_std"]) == (0.05, 0.02)
    first = read_log(tmp_path / "demo")
    code, stdout, err = run_cli(["--demo", "--output-dir", tmp_path / "demo"], capsys)  # the teacher is reused
    assert code == 0 and "reusing the teacher" in stdout
    # ... and so are its answers: the same seed draws the same batches, so none goes through the teacher again,
    # and the student learns exactly what it learnt from the teacher itself
    assert re.search(r"teacher answers: (\d+) of \1 batches read", stdout), stdout
    again = read_log(tmp_path / "demo")
    assert [e["train_loss"] for e in again[-len(first):]] == [e["train_loss"] for e in first], (first, again)


def test_demo_refuses_a_bad_thread_count_with_one_line(tmp_path, capsys):
    code, _, err = run_cli(["--demo", "--threads", "-1", "--output-dir", tmp_path / "demo"], capsys)
    assert code == 2 and err.strip().splitlines() == ["error: --threads must be >= 0, got -1"], err
    assert not (tmp_path / "demo" / "teacher" / "checkpoint.pth").exists()


def test_demo_teacher_worker_changes_nothing_but_speed(tmp_path, capsys):
    """run_demo gives the teacher one loader worker for speed; the weights must be those of a run without it."""
    weights = {}
    for workers in ("0", "1"):
        out = tmp_path / f"w{workers}"
        code, _, err = run_cli(synthetic_args(out, "--model", "regnety_002", "--distillation-type", "none",
                                              "--epochs", "1", "--num-workers", workers, "--threads", "1"), capsys)
        assert code == 0, err
        weights[workers] = torch.load(out / "checkpoint.pth", weights_only=False)["model"]
    assert weights["0"].keys() == weights["1"].keys()
    assert all(torch.equal(weights["0"][k], weights["1"][k]) for k in weights["0"])


def test_two_processes_with_gloo(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "minideit.train", *synthetic_args(out, "--epochs", "1", "--distillation-type", "none", "--device", "cpu")]
    env = dict(os.environ, MINIDEIT_SMOKE="1", OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2 and config["global_batch"] == 64
    log = read_log(out)
    assert len(log) == 1  # only rank 0 writes
    assert log[0]["test_num_images"] == 256  # the evaluation covered every image once across both ranks


# ---------------------------------------------------------------------------------------------------------------
class NaNOnSomeBatches(torch.nn.Module):
    """A model whose loss is NaN on chosen batches (the batch's first label says which)."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x):
        out = self.linear(x)
        return torch.where(x[:, :1] < 0, torch.full_like(out, float("nan")), out)


def nan_loader(pattern):
    batches = []
    for bad in pattern:
        x = torch.randn(4, 4).abs()
        if bad:
            x[:, 0] = -1
        batches.append((x, torch.randint(0, 3, (4,))))
    return batches


def criterion(inputs, outputs, labels):
    return torch.nn.functional.cross_entropy(outputs, labels)


OPTIMIZERS = {
    "fused AdamW": lambda m: build_optimizer(m, "adamw", lr=0.1, fused=True),
    "foreach AdamW": lambda m: build_optimizer(m, "adamw", lr=0.1, fused=False),  # the CPU default
    "foreach SGD": lambda m: build_optimizer(m, "sgd", lr=0.1, weight_decay=1e-4, fused=False),
    "for-loop AdamW": lambda m: torch.optim.AdamW(m.parameters(), lr=0.1, foreach=False),
}


@pytest.mark.parametrize("make", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_injected_nan_steps_are_skipped_and_counted(make):
    model = NaNOnSomeBatches()
    optimizer = make(model)
    schedule = CosineWarmupSchedule(optimizer, 0.1, 10, 0)
    before = model.linear.weight.clone()
    stats = train_one_epoch(model, criterion, nan_loader([1, 1, 0, 1, 0]), optimizer, schedule,
                            device=torch.device("cpu"), log_every=1, max_nonfinite=3)
    assert stats["nonfinite_steps"] == 3
    assert torch.isfinite(model.linear.weight).all() and not torch.equal(model.linear.weight, before)
    state = optimizer.state[model.linear.weight]
    if "step" in state:
        assert state["step"].item() == 2  # only the good steps moved Adam


@pytest.mark.parametrize("make", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_a_nan_step_leaves_weights_and_moments_untouched(make):
    model = NaNOnSomeBatches()
    optimizer = make(model)
    schedule = CosineWarmupSchedule(optimizer, 0.1, 10, 0)
    run = dict(device=torch.device("cpu"), log_every=1, max_nonfinite=0)
    train_one_epoch(model, criterion, nan_loader([0, 0]), optimizer, schedule, **run)  # moments exist now
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    moments = {id(p): {k: v.clone() for k, v in st.items()} for p, st in optimizer.state.items()}
    stats = train_one_epoch(model, criterion, nan_loader([1]), optimizer, schedule, **run)
    assert stats["nonfinite_steps"] == 1
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    for p, st in optimizer.state.items():
        for k, v in st.items():
            assert torch.equal(v, moments[id(p)][k]), k


def test_a_nan_first_step_leaves_no_optimizer_state_behind():
    """The first step creates the state (SGD's momentum buffer): after a NaN first step it must be as if fresh."""
    for make in (OPTIMIZERS["foreach SGD"], OPTIMIZERS["foreach AdamW"]):
        torch.manual_seed(0)
        a, b = NaNOnSomeBatches(), NaNOnSomeBatches()
        b.load_state_dict(a.state_dict())
        opt_a, opt_b = make(a), make(b)
        run = dict(device=torch.device("cpu"), log_every=1, max_nonfinite=0)
        torch.manual_seed(1)
        batches = nan_loader([0, 0])
        train_one_epoch(a, criterion, [nan_loader([1])[0], *batches], opt_a, CosineWarmupSchedule(opt_a, .1, 9, 0, sched="constant"),
                        **run)
        train_one_epoch(b, criterion, batches, opt_b, CosineWarmupSchedule(opt_b, .1, 9, 0, sched="constant"), **run)
        assert torch.allclose(a.linear.weight, b.linear.weight, atol=1e-6)


def test_several_nan_steps_in_a_row_stop_the_run():
    model = NaNOnSomeBatches()
    optimizer = build_optimizer(model, lr=0.1, fused=True)
    schedule = CosineWarmupSchedule(optimizer, 0.1, 10, 0)
    with pytest.raises(NonFiniteLossError, match="3 optimiser steps in a row"):
        train_one_epoch(model, criterion, nan_loader([0, 1, 1, 1, 0, 0]), optimizer, schedule,
                        device=torch.device("cpu"), log_every=10, max_nonfinite=3)


# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fake_imagenet(tmp_path_factory):
    return make_fake_imagenet(tmp_path_factory.mktemp("data") / "imagenet", classes=3)


def bad_input_cases(tmp, fake):
    empty = tmp / "empty"
    empty.mkdir(exist_ok=True)
    junk = tmp / "junk.pth"
    junk.write_text("not a checkpoint")
    wrong_arch = tmp / "deit_as_teacher.pth"
    torch.save({"model": create_model("deit_nano_patch4_32", num_classes=10).state_dict()}, wrong_arch)
    wrong_classes = save_teacher(tmp / "teacher100.pth", num_classes=100, stem_stride=1)
    base = ["--data-set", "synthetic", "--input-size", "32", "--model", "deit_nano_patch4_32", "--output-dir",
            tmp / "out", "--num-workers", "0"]
    distil = ["--distillation-type", "hard", "--teacher-model", "regnety_002"]
    return {
        "missing data path": (["--data-set", "imagenet", "--data-path", tmp / "nowhere", "--output-dir", tmp],
                              "make_fake_imagenet|prepare_imagenet"),
        "empty data path": (["--data-set", "folder", "--data-path", empty, "--output-dir", tmp], "train"),
        "unknown model": ([*base, "--model", "deit_tiny_patch16_244"], "deit_tiny_patch16_224"),
        "patch size": ([*base, "--model", "deit_tiny_patch16_224", "--input-size", "100"], "divisible"),
        "teacher missing": ([*base, *distil, "--teacher-path", tmp / "absent.pth"], "absent.pth"),
        "teacher not given": ([*base, *distil], "--teacher-path"),
        "teacher architecture": ([*base, *distil, "--teacher-path", wrong_arch], "DeiT"),
        "teacher classes": ([*base, *distil, "--teacher-path", wrong_classes], "100 classes"),
        "batch size": ([*base, "--batch-size", "0"], "--batch-size"),
        "global batch": ([*base, "--batch-size", "4", "--global-batch-size", "10"], "not divisible"),
        "resume missing": ([*base, "--resume", tmp / "nope.pth"], "does not exist"),
        "resume junk": ([*base, "--resume", junk], "checkpoint"),
        "attention init": ([*base, "--attn-init-std", "0"], "--attn-init-std must be > 0"),
        "attention init of a convnet": ([*base, "--model", "regnety_002", "--attn-init-std", "0.05"], "has none"),
        "unknown teacher": ([*base, "--distillation-type", "hard", "--teacher-model", "regnet_160",
                             "--teacher-path", junk], "regnety_160"),
    }


def test_every_bad_input_gives_one_line_and_exit_2(tmp_path, fake_imagenet, capsys):
    for name, (args, expected) in bad_input_cases(tmp_path, fake_imagenet).items():
        code, stdout, err = run_cli(args, capsys)
        assert code == 2, f"{name}: exit {code}, stderr {err!r}"
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{name}: {err!r}"
        assert "Traceback" not in err
        assert re.search(expected, lines[0]), f"{name}: {lines[0]!r} lacks {expected!r}"
        assert not (tmp_path / "out" / "checkpoint.pth").exists()


def test_bad_input_from_the_shell_has_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "minideit.train", "--model", "deit_nope", "--data-set",
                             "synthetic", "--output-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "unknown model 'deit_nope'" in result.stderr


def test_trained_with_reuses_only_a_run_with_the_same_settings(tmp_path):
    from minideit.config import PRESETS, TrainConfig
    from minideit.train import trained_with
    cfg = TrainConfig(**PRESETS["demo"])
    path = tmp_path / "checkpoint.pth"
    assert not trained_with(path, cfg)  # no file yet
    args = {k: getattr(cfg, k) for k in ("model", "epochs", "seed", "num_samples", "batch_size", "data_set",
                                         "input_size", "lr", "attn_init_std")}
    torch.save({"model": {}, "args": args, "epoch": cfg.epochs - 2}, path)
    assert trained_with(path, cfg)
    assert not trained_with(path, cfg, finished=True)  # one epoch short
    torch.save({"model": {}, "args": args, "epoch": cfg.epochs - 1}, path)
    assert trained_with(path, cfg, finished=True)
    other = TrainConfig(**{**PRESETS["demo"], "batch_size": cfg.batch_size * 2})
    assert not trained_with(path, other)
    assert trained_with(path, other, keys=("model", "epochs"))
    # a teacher drawn from other synthetic images is not the one asked for (the checkpoint above predates the
    # two settings, so it counts as the defaults: standard images drawn from --seed), nor a student whose q/k/v
    # started at another std
    for change in ({"synthetic_style": "clear"}, {"data_seed": 7}, {"attn_init_std": 0.02}):
        assert not trained_with(path, TrainConfig(**{**PRESETS["demo"], **change})), change
