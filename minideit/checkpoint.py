"""Crash-safe checkpoints and the random state that exact resume needs.

A training checkpoint (written by train.py) is a dict with the official keys
    model, optimizer, lr_scheduler, epoch, model_ema, scaler, args
plus what exact resume needs: rng (from `rng_state()`), sampler, mixup, step, best_acc1.
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch


def save_atomic(obj, path: str | os.PathLike) -> None:
    """torch.save `obj` to `path` so that a reader sees either the old file or the complete new one.

    We write a temporary file in the same directory (a rename is only atomic within one file system), flush and
    fsync it so its bytes are on disk, then os.replace it over `path`. If anything fails before the rename
    (disk full, the job killed), the temporary file is removed and the previous checkpoint is untouched.
    Missing parent directories are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # BaseException, not Exception: a Ctrl-C during the write must not leave a stray temp file either.
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def rng_state() -> dict:
    """Every global random generator the training loop draws from: python, numpy, torch CPU and CUDA."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state()` captured. CUDA states are restored for the devices present in both the
    checkpoint and this machine (a resume on a different GPU count cannot be exact anyway)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available():
        for device, s in enumerate(cuda[:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, device)


def load_training_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint written by our train.py, with one-line errors for the usual mistakes.

    Our checkpoints hold optimizer, RNG and argument objects that torch's safe loader refuses, so this uses
    torch.load(weights_only=False), which can run code embedded in the file: only resume from files you wrote
    yourself. To initialise a model from released weights, use minideit.load_checkpoint instead.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (check the --resume path)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # a truncated zip, a JPEG, a text file...: all mean "not a checkpoint we can read"
        # torch's messages run over several sentences and lines; the first sentence says enough.
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0][:100]
        raise ValueError(f"{path} is not a readable PyTorch checkpoint ({reason}); "
                         "it may be truncated or a different kind of file") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"{path} is not a minideit training checkpoint (no 'model' key); "
                         "to start from weights only, use --finetune instead of --resume")
    return ckpt
