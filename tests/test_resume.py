"""A run killed at any moment and continued with --resume auto ends bitwise equal to the run that was never
interrupted (DESIGN.md, reliability rules). Each test kills a real subprocess of the *same* length as the straight
run, with loader workers on and the default recipe's randomness: RandAugment, random erasing, Mixup/CutMix, repeated
augmentation, drop path, EMA and the default 5-epoch warm-up; then compares every tensor of model, optimizer, EMA."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # several short training processes each (seconds apiece on an idle 2-core CPU)

ROOT = Path(__file__).resolve().parents[1]

# Tiny: 16-pixel images (16 tokens), 32 of them, batch 8: 4 optimiser steps per epoch, seconds per run.
ARGS = ["--model", "deit_nano_patch4_32", "--data-set", "synthetic", "--input-size", "16", "--num-samples", "32",
        "--batch-size", "8", "--epochs", "2", "--num-workers", "1", "--distillation-type", "none",
        "--aa", "rand-m9-mstd0.5-inc1", "--reprob", "0.25", "--mixup", "0.8", "--cutmix", "1.0", "--repeated-aug",
        "--drop-path", "0.1", "--model-ema", "--model-ema-decay", "0.9", "--eval-every", "2", "--log-every", "1"]


def start(out, *extra):
    env = dict(os.environ, MINIDEIT_SMOKE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "minideit.train", *ARGS, "--output-dir", str(out), *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def checkpoint(out):
    return torch.load(Path(out) / "checkpoint.pth", weights_only=False)


def wait_for(proc, condition, what, timeout=300):
    """Poll until condition() holds; fail if the process ends first."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            if condition():
                return
        except Exception:  # a checkpoint being replaced, a log line half written: look again
            pass
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {what}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


def assert_bitwise_equal(a_dir, b_dir):
    a, b = checkpoint(a_dir), checkpoint(b_dir)
    assert a["epoch"] == b["epoch"] == 1
    for part in ("model", "model_ema"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs"
    opt_a, opt_b = a["optimizer"]["state"], b["optimizer"]["state"]
    assert opt_a.keys() == opt_b.keys() and opt_a
    for i in opt_a:
        for name in opt_a[i]:
            assert torch.equal(opt_a[i][name], opt_b[i][name]), f"optimizer state {i}.{name} differs"
    assert a["lr_scheduler"] == b["lr_scheduler"]
    log_a = [json.loads(x) for x in (Path(a_dir) / "log.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (Path(b_dir) / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log_b] == [0, 1]  # each epoch logged once
    for ra, rb in zip(log_a, log_b):  # the epoch's loss covers the whole epoch, resumed or not
        assert ra["train_loss"] == rb["train_loss"] and ra["lr"] == rb["lr"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    code, _, err = finish(start(out))
    assert code == 0, err
    return out


def resume(out):
    code, stdout, err = finish(start(out, "--resume", "auto"))
    assert code == 0, err
    return stdout


def test_sigkill_after_the_first_epoch_then_resume_is_bitwise_equal(straight, tmp_path):
    out = tmp_path / "killed"
    proc = start(out)
    wait_for(proc, lambda: checkpoint(out)["epoch"] == 0, "the first epoch's checkpoint")
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert checkpoint(out)["epoch"] == 0  # killed before the second epoch ended
    assert "resumed from" in resume(out)
    assert_bitwise_equal(straight, out)


def test_sigkill_mid_epoch_then_resume_is_bitwise_equal(straight, tmp_path):
    out = tmp_path / "killed"
    proc = start(out, "--save-every-steps", "1")
    wait_for(proc, lambda: checkpoint(out)["sampler"]["steps_done"] == 2, "a mid-epoch checkpoint")
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    where = checkpoint(out)["sampler"]
    assert where["steps_done"] and where["steps_done"] < 4  # the kill came inside an epoch
    stdout = resume(out)
    assert f"step {where['steps_done']}" in stdout
    assert_bitwise_equal(straight, out)


def test_sigterm_writes_a_checkpoint_and_the_requeued_run_continues_bitwise(straight, tmp_path):
    """What SLURM or Kubernetes does to a preempted job; SIGUSR1 (sbatch --signal) takes the same path
    (tests/test_train_failures.py sends it in-process)."""
    sig = signal.SIGTERM
    out = tmp_path / "preempted"
    proc = start(out)
    wait_for(proc, lambda: (out / "config.json").is_file(), "the run's start")
    time.sleep(0.5)
    proc.send_signal(sig)
    code, _, err = finish(proc)
    assert code == 128 + sig, err  # the conventional exit code: 143 for SIGTERM, 138 for SIGUSR1
    lines = err.strip().splitlines()
    assert lines[-1].startswith(f"stopped by {signal.Signals(sig).name}: wrote ") and "--resume auto" in lines[-1]
    assert "Traceback" not in err
    assert (out / "checkpoint.pth").is_file()
    resume(out)
    assert_bitwise_equal(straight, out)
