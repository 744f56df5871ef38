"""Atomic checkpoints, RNG capture, checkpoint loading errors, and the distributed helpers (single process and a
real 2-process gloo group)."""
import os
import random
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from minideit import checkpoint, distributed
from minideit.checkpoint import load_training_checkpoint, rng_state, save_atomic, set_rng_state

REPO = Path(__file__).resolve().parents[1]


def test_save_atomic_round_trip_leaves_no_temp_files(tmp_path):
    path = tmp_path / "run" / "checkpoint.pth"  # parent created on demand
    save_atomic({"model": {"w": torch.arange(3)}, "epoch": 1}, path)
    save_atomic({"model": {"w": torch.arange(4)}, "epoch": 2}, path)  # overwrite
    assert os.listdir(path.parent) == ["checkpoint.pth"]
    ckpt = torch.load(path, weights_only=False)
    assert ckpt["epoch"] == 2 and torch.equal(ckpt["model"]["w"], torch.arange(4))


def test_interrupted_save_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pth"
    save_atomic({"model": {}, "epoch": 1}, path)
    before = path.read_bytes()

    def half_written_then_crash(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial bytes")
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", half_written_then_crash)
    with pytest.raises(OSError, match="No space left"):
        save_atomic({"model": {}, "epoch": 2}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["checkpoint.pth"]


def draws():
    return random.random(), float(np.random.rand()), torch.rand(3)


def test_rng_round_trip_through_a_file(tmp_path):
    random.seed(1); np.random.seed(2); torch.manual_seed(3)
    draws()  # move away from the seeded start so we do not just test seeding
    save_atomic({"rng": rng_state()}, tmp_path / "rng.pth")
    first = draws()
    draws()  # advance further
    set_rng_state(torch.load(tmp_path / "rng.pth", weights_only=False)["rng"])
    again = draws()
    assert first[0] == again[0] and first[1] == again[1]
    assert torch.equal(first[2], again[2])


def test_load_training_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_training_checkpoint(tmp_path / "missing.pth")

    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint\n")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint") as e:
        load_training_checkpoint(junk)
    assert "\n" not in str(e.value)

    good = tmp_path / "good.pth"
    save_atomic({"model": {"w": torch.ones(1000)}, "epoch": 3}, good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load_training_checkpoint(truncated)

    weights_only = tmp_path / "weights.pth"
    save_atomic({"w": torch.ones(2)}, weights_only)
    with pytest.raises(ValueError, match="no 'model' key"):
        load_training_checkpoint(weights_only)

    assert load_training_checkpoint(good)["epoch"] == 3


# ----- distributed.py -----

def test_single_process_is_a_no_op(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = distributed.init_distributed("cpu")
    assert (info.rank, info.world_size, info.local_rank, info.is_main) == (0, 1, 0, True)
    assert info.device == torch.device("cpu") and not info.distributed
    t = torch.tensor([2.0])
    assert distributed.all_reduce_sum(t) is t and t.item() == 2.0
    assert distributed.is_main() and distributed.all_gather_object(5) == [5]
    distributed.barrier()
    distributed.cleanup()


def test_bad_environment_and_device_messages(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two' is not an integer"):
        distributed.init_distributed("cpu")
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        distributed.init_distributed("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="none is visible"):
            distributed.init_distributed("cuda")


WORKER = textwrap.dedent("""
    import sys, torch
    from minideit import distributed
    info = distributed.init_distributed("cpu")
    t = distributed.all_reduce_sum(torch.tensor([float(info.rank + 1)]))
    ranks = distributed.all_gather_object(info.rank)
    distributed.barrier()
    distributed.print_main("main says hi")
    print(f"rank={info.rank} world={info.world_size} main={info.is_main} sum={t.item()} ranks={ranks}")
    distributed.cleanup()
""")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_all_reduce(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = str(free_port())
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=port, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("2-process gloo group did not finish in 60 s")
        outs.append(out)
        assert p.returncode == 0, out
    assert "rank=0 world=2 main=True sum=3.0 ranks=[0, 1]" in outs[0]
    assert "rank=1 world=2 main=False sum=3.0 ranks=[0, 1]" in outs[1]
    assert "main says hi" in outs[0] and "main says hi" not in outs[1]
