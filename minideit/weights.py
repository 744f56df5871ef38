"""Official weights: where they live, a checked download cache, and ``load_checkpoint``.

The official release stores each model as ``{'model': state_dict}`` at https://dl.fbaipublicfiles.com/deit/. The
eight hex characters in each file name are the start of the file's SHA-256 (the torch.hub convention), which is how a
download is checked. Files go to ``$MINIDEIT_CACHE`` (default ``~/.cache/minideit``); once there, everything works
offline, and a local path or a state dict can be given instead of a name.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from .vit import VisionTransformer, resize_pos_embed

BASE_URL = "https://dl.fbaipublicfiles.com/deit/"
OFFICIAL_FILES = {
    "deit_tiny_patch16_224": "deit_tiny_patch16_224-a1311bcf.pth",
    "deit_small_patch16_224": "deit_small_patch16_224-cd65a155.pth",
    "deit_base_patch16_224": "deit_base_patch16_224-b5f2ef4d.pth",
    "deit_tiny_distilled_patch16_224": "deit_tiny_distilled_patch16_224-b40b3cf7.pth",
    "deit_small_distilled_patch16_224": "deit_small_distilled_patch16_224-649709d9.pth",
    "deit_base_distilled_patch16_224": "deit_base_distilled_patch16_224-df68dfff.pth",
    "deit_base_patch16_384": "deit_base_patch16_384-8de9b5d1.pth",
    "deit_base_distilled_patch16_384": "deit_base_distilled_patch16_384-d0272ac0.pth",
    "regnety_160": "regnety_160-a5fe301d.pth",  # the RegNetY-16GF teacher of the paper
}
OFFICIAL_URLS = {name: BASE_URL + file for name, file in OFFICIAL_FILES.items()}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as asked; the message is one line that says why."""


# ----------------------------------------------------------------------------------------------------------------
# 1. The download cache
# ----------------------------------------------------------------------------------------------------------------
def cache_dir() -> Path:
    return Path(os.environ.get("MINIDEIT_CACHE", Path.home() / ".cache" / "minideit"))


def hash_prefix(filename: str) -> str | None:
    """The SHA-256 prefix in a file name like ``deit_tiny_patch16_224-a1311bcf.pth``, or None."""
    match = re.search(r"-([0-9a-f]{8,64})\.\w+$", filename)
    return match.group(1) if match else None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dst: Path, progress: bool = True) -> Path:
    """Fetch ``url`` to ``dst`` through a temporary file, check the hash prefix of its name, then rename."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0)
            from tqdm import tqdm
            with tqdm(total=total, unit="B", unit_scale=True, desc=dst.name, disable=not progress) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
        expected = hash_prefix(dst.name)
        if expected and not sha256_of(Path(tmp)).startswith(expected):
            raise CheckpointError(f"downloaded {url} but its SHA-256 does not start with {expected}: "
                                  f"the file is corrupt or was changed; delete it and try again")
        os.replace(tmp, dst)
    except OSError as e:  # network errors included (URLError is an OSError)
        raise CheckpointError(f"could not download {url} ({e}); download it by hand and pass the file's path, "
                              f"or put it in {dst.parent}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dst


def cached_file(url: str, progress: bool = True) -> Path:
    """The local copy of ``url`` in the cache, downloaded the first time."""
    path = cache_dir() / url.rsplit("/", 1)[-1]
    return path if path.exists() else download(url, path, progress)


# ----------------------------------------------------------------------------------------------------------------
# 2. From any source to a state dict
# ----------------------------------------------------------------------------------------------------------------
def read_checkpoint_file(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        pass
    try:  # our own training checkpoints also hold numpy random states; only load files you trust
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({type(e).__name__}); pass a .pth file saved "
                              f"by torch.save, e.g. an official DeiT file") from None


def resolve_state_dict(source: str | Path | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A path, an URL, an official model name or a (possibly wrapped) state dict → a plain state dict."""
    if isinstance(source, Mapping):
        obj = source
    else:
        text = str(source)
        if text in OFFICIAL_URLS:
            obj = read_checkpoint_file(cached_file(OFFICIAL_URLS[text]))
        elif text.startswith(("http://", "https://")):
            obj = read_checkpoint_file(cached_file(text))
        elif Path(text).exists():
            obj = read_checkpoint_file(text)
        else:
            raise CheckpointError(f"'{text}' is neither an existing file, an URL, nor an official model name "
                                  f"({', '.join(OFFICIAL_FILES)})")
    return state_dict_of(obj)


def state_dict_of(obj: Any) -> dict[str, torch.Tensor]:
    """``{'model': sd}`` → sd (the official format; also 'state_dict'); strips a DistributedDataParallel prefix."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"the checkpoint holds a {type(obj).__name__}, not a state dict")
    for key in ("model", "state_dict"):
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError("the checkpoint holds no state dict of tensors (expected {'model': state_dict})")
    return {k.removeprefix("module."): v for k, v in obj.items()}


# ----------------------------------------------------------------------------------------------------------------
# 3. Loading into a model, with position-embedding resize and clear refusals
# ----------------------------------------------------------------------------------------------------------------
def adapt_pos_embed(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Resize the checkpoint's ``pos_embed`` to the model's patch grid when only the grid differs (224 → 384)."""
    if not isinstance(model, VisionTransformer) or "pos_embed" not in state_dict:
        return state_dict
    src, dst = state_dict["pos_embed"], model.pos_embed
    if src.shape == dst.shape or src.shape[-1] != dst.shape[-1]:
        return state_dict  # identical, or a different width: the mismatch check will name it
    prefix = model.num_prefix_tokens
    if prefix != (2 if "dist_token" in state_dict else 1):
        return state_dict  # a different architecture: the mismatch check will say so
    state_dict = dict(state_dict)
    state_dict["pos_embed"] = resize_pos_embed(src, model.patch_embed.grid_size, num_prefix_tokens=prefix)
    return state_dict


def _family(keys) -> str:
    keys = set(keys)
    if "cls_token" in keys:
        return "a distilled DeiT" if "dist_token" in keys else "a DeiT without distillation token"
    if any(k.startswith("s1.") for k in keys):
        return "a RegNet"
    return "an unknown architecture"


def _short(names: list[str], n: int = 4) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def check_compatible(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Raise a one-line CheckpointError naming the missing, unexpected or mis-shaped keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    misshaped = [k for k in expected if k in state_dict and state_dict[k].shape != expected[k].shape]
    if not (missing or unexpected or misshaped):
        return
    ours, theirs = _family(expected), _family(state_dict)
    if ours != theirs:
        raise CheckpointError(f"the checkpoint is {theirs} but the model is {ours} (missing {len(missing)} keys, "
                              f"e.g. {_short(missing, 2)}): pick the model the checkpoint was trained as")
    heads = {"head.weight", "head_dist.weight", "head.fc.weight"}
    if misshaped and set(misshaped) <= heads | {k.replace("weight", "bias") for k in heads} and not missing:
        got, want = state_dict[misshaped[0]].shape[0], expected[misshaped[0]].shape[0]
        raise CheckpointError(f"the checkpoint has {got} classes but the model has {want}: create the model with "
                              f"num_classes={got}, or fine-tune (--finetune) to replace the head")
    parts = []
    if missing:
        parts.append(f"missing keys: {_short(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {_short(unexpected)}")
    if misshaped:
        parts.append("mis-shaped keys: " + _short(
            [f"{k} {tuple(state_dict[k].shape)} vs {tuple(expected[k].shape)}" for k in misshaped]))
    raise CheckpointError("checkpoint does not fit the model: " + "; ".join(parts))


def load_checkpoint(model: nn.Module, source: str | Path | Mapping[str, Any], strict: bool = True) -> nn.Module:
    """Load weights from a path, an URL, an official model name or a state dict into ``model`` (returned).

    ``{'model': ...}`` is unwrapped; a ``pos_embed`` for another resolution is resized (bicubic, prefix tokens kept);
    any other mismatch is refused with a message naming the keys, unless ``strict=False``.
    """
    state_dict = adapt_pos_embed(model, resolve_state_dict(source))
    if strict:
        check_compatible(model, state_dict)
    model.load_state_dict(state_dict, strict=strict)
    return model


def main(argv: list[str] | None = None) -> int:
    """``python -m minideit.weights [NAME ...]``: download official files into the cache (all of them by default)."""
    names = (argv if argv is not None else sys.argv[1:]) or list(OFFICIAL_FILES)
    for name in names:
        if name not in OFFICIAL_URLS:
            print(f"error: no official weights named '{name}'; choose from {', '.join(OFFICIAL_FILES)}",
                  file=sys.stderr)
            return 2
        try:
            print(f"{name}: {cached_file(OFFICIAL_URLS[name])}")
        except CheckpointError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
