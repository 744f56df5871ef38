"""Crash-safe checkpoints and the random state that exact resume needs.

A training checkpoint (written by train.py) is a dict with the official keys
    model, optimizer, lr_scheduler, epoch, model_ema, scaler, args
plus what exact resume needs: rng (from `rng_state()`), sampler, mixup, step, best_acc1, and a checksum of all of
it (`payload_checksum`), checked on load so that a damaged file is refused instead of silently resumed.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch


def save_atomic(obj, path: str | os.PathLike, dump=None) -> None:
    """torch.save `obj` (or `dump` it) to `path` so that a reader sees either the old file or the complete new one.

    We write a temporary file in the same directory (a rename is only atomic within one file system), flush and
    fsync it so its bytes are on disk, then os.replace it over `path`. If anything fails before the rename
    (disk full, the job killed), the temporary file is removed and the previous checkpoint is untouched.
    Missing parent directories are created. ``dump`` writes `obj` to an open file: ``torch.save`` when None
    (looked up at each call), ``pickle.dump`` for a plain pickle, as the reproduce suite's CIFAR-layout glyph data.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            (dump or torch.save)(obj, f)
            f.flush()
            os.fsync(f.fileno())
    _replace_via_temporary(path, write)


def _replace_via_temporary(path: Path, fill) -> None:
    """``fill(tmp)`` makes the new file under a temporary name beside `path`, which then replaces `path` in one
    rename; if anything fails first (disk full, a kill), the temporary is removed and `path` is untouched."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        fill(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        # BaseException, not Exception: a Ctrl-C during the write must not leave a stray temp file either.
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def link_atomic(source: str | os.PathLike, path: str | os.PathLike) -> None:
    """Make `path` a second name of the complete file `source`, atomically (best_checkpoint.pth).

    A hard link under a temporary name, renamed over `path`: no byte is copied, and a kill at any moment leaves
    either the previous `path` or the new one. Where the file system has no hard links, a copy takes the
    link's place under the same temporary-name-then-rename rule.
    """
    source, path = Path(source), Path(path)

    def fill(tmp: Path) -> None:
        tmp.unlink()  # mkstemp reserved a unique name; the link takes it
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
    _replace_via_temporary(path, fill)


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the `.<name>.*.tmp` files that a killed save left behind (a SIGKILL runs no cleanup); call it at
    the start of a run, before anything else writes there. Returns what was removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = [p for p in directory.glob(".*.pth.*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


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


def payload_checksum(ckpt: dict) -> str:
    """SHA-256 over every value of a checkpoint except the checksum itself, in key order.

    Tensors contribute dtype, shape and raw bytes; everything else (RNG states, arguments, numbers) its pickle.
    Computed on the objects, not the file, so it is the same before saving and after loading.
    """
    h = hashlib.sha256()

    def add(obj) -> None:
        if isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous()
            h.update(f"tensor {t.dtype} {tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(obj, dict):
            h.update(f"dict {len(obj)}".encode())
            for k, v in obj.items():
                h.update(repr(k).encode())
                add(v)
        elif isinstance(obj, (list, tuple)):
            h.update(f"{type(obj).__name__} {len(obj)}".encode())
            for v in obj:
                add(v)
        else:
            h.update(pickle.dumps(obj, protocol=4))

    add({k: v for k, v in ckpt.items() if k != "payload_checksum"})
    return h.hexdigest()


def load_training_checkpoint(path: str | os.PathLike, map_location="cpu", fallback: str = "") -> dict:
    """Load a checkpoint written by our train.py, with one-line errors for the usual mistakes; a file whose
    contents do not match its stored checksum is refused, naming ``fallback`` (e.g. best_checkpoint.pth).

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
                         "it may be truncated or a different kind of file"
                         + (f"; resume from {fallback} instead (--resume {fallback})" if fallback else "")) from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"{path} is not a minideit training checkpoint (no 'model' key); "
                         "to start from weights only, use --finetune instead of --resume")
    stored = ckpt.get("payload_checksum")
    if stored is not None and stored != payload_checksum(ckpt):
        raise ValueError(f"{path} is damaged: its contents do not match the checksum written with it; "
                         + (f"resume from {fallback} instead (--resume {fallback})" if fallback else
                            "resume from an earlier copy (best_checkpoint.pth in the same folder)"))
    return ckpt
