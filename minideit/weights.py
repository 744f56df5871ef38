"""Official weights: where they live, a checked download cache, and ``load_checkpoint``.

The official release stores each model as ``{'model': state_dict}`` at https://dl.fbaipublicfiles.com/deit/. The
eight hex characters in each file name are the start of the file's SHA-256 (the torch.hub convention), which is how a
download is checked. Files go to ``$MINIDEIT_CACHE`` (default ``~/.cache/minideit``); once there, everything works
offline, and a local path or a state dict can be given instead of a name. Without network, a file missing from the
cache fails within seconds with the command that fetches it elsewhere (``python -m minideit.weights NAME``).

Besides the official files (and timm's, which use the same keys), ``load_checkpoint`` reads the checkpoints of
Hugging Face transformers (``DeiTForImageClassificationWithTeacher``, ``DeiTForImageClassification``,
``ViTForImageClassification``; a ``model.safetensors`` or ``pytorch_model.bin`` file, or the folder holding one)
by renaming their keys to ours (section 3). Neither transformers nor safetensors is needed for that.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import socket
import sys
import tempfile
import threading
import urllib.parse
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


CONNECT_TIMEOUT = 5.0  # seconds to find and reach the download server before calling the machine offline


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


def check_reachable(url: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Raise OSError within about ``timeout`` seconds when the server of an http(s) ``url`` cannot be reached.

    Without this, a machine with no network spends minutes in DNS look-ups and connection attempts (name
    resolution has no time-out of its own), so we resolve in a helper thread and give up after ``timeout``, then
    open one TCP connection with the same limit. A configured proxy is what gets checked, when there is one.
    """
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    found: dict = {}

    def resolve() -> None:
        try:
            found["address"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        except (OSError, IndexError) as e:  # IndexError: an empty answer
            found["error"] = e

    thread = threading.Thread(target=resolve, daemon=True)  # daemon: a hung look-up cannot keep Python alive
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise OSError(f"no answer when looking up {host} within {timeout:.0f} s")
    if "error" in found:
        raise OSError(f"cannot look up {host}: {found['error']}")
    family, kind, proto, _, address = found["address"]
    with socket.socket(family, kind, proto) as s:
        s.settimeout(timeout)
        s.connect(address)


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
    """The local copy of ``url`` in the cache, downloaded the first time.

    Offline, this fails within seconds with one line: the missing file, the cache folder, and the command that
    fetches the file on a machine with network.
    """
    path = cache_dir() / url.rsplit("/", 1)[-1]
    if path.exists():
        return path
    try:
        if url.startswith(("http://", "https://")):
            check_reachable(url)
    except OSError as e:
        names = [name for name, known in OFFICIAL_URLS.items() if known == url]
        fetch = f"run `python -m minideit.weights {names[0]}`" if names else f"download {url}"
        raise CheckpointError(f"{path.name} is not in the cache {path.parent} (set MINIDEIT_CACHE to use another "
                              f"folder) and cannot be downloaded ({e}): on a machine with network {fetch} "
                              f"and copy {path.name} into the cache folder, or pass the file's path") from None
    return download(url, path, progress)


# ----------------------------------------------------------------------------------------------------------------
# 2. From any source to a state dict
# ----------------------------------------------------------------------------------------------------------------
SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                      "U8": torch.uint8, "BOOL": torch.bool}
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what save_pretrained writes, newest format first


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file without the safetensors package.

    The format: 8 bytes (little-endian unsigned length n), n bytes of JSON mapping each tensor name to its dtype,
    shape and [start, end) byte range, then the raw little-endian tensor bytes one after another.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + n])
        body = memoryview(data)[8 + n:]
        tensors = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            start, end = info["data_offsets"]
            if not 0 <= start <= end <= len(body):
                raise ValueError(f"{name} points outside the file")
            dtype = SAFETENSORS_DTYPES[info["dtype"]]
            raw = bytearray(body[start:end])  # a writable copy: torch.frombuffer shares memory with it
            flat = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            tensors[name] = flat.reshape(info["shape"])
    except (ValueError, KeyError, TypeError, RuntimeError) as e:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e}); "
                              f"it may be truncated") from None
    return tensors


def weights_file_in(folder: Path) -> Path:
    """The weights file of a Hugging Face model folder (what ``save_pretrained`` writes)."""
    for name in HF_WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    if any(folder.glob("*.index.json")):
        raise CheckpointError(f"{folder} holds a checkpoint split into shards; DeiT models fit one file: save it "
                              f"with save_pretrained(..., max_shard_size='2GB')")
    raise CheckpointError(f"{folder} is a folder without {' or '.join(HF_WEIGHT_FILES)}; pass a checkpoint file "
                          f"or a Hugging Face model folder")


def read_checkpoint_file(path: str | Path) -> Any:
    """A ``.pth``/``.bin`` file (torch.save), a ``.safetensors`` file or a Hugging Face model folder → its content."""
    path = Path(path)
    if path.is_dir():
        path = weights_file_in(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    if path.suffix == ".safetensors":
        return read_safetensors(path)
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
    """A path, a folder, an URL, an official model name or a (possibly wrapped) state dict → a plain state dict
    with our key names (a Hugging Face checkpoint is renamed by :func:`from_transformers`)."""
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
    state_dict = state_dict_of(obj)
    return from_transformers(state_dict) if is_transformers(state_dict) else state_dict


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
# 3. Hugging Face transformers checkpoints → our keys
# ----------------------------------------------------------------------------------------------------------------
# The same weights under other names. transformers keeps q, k and v as three Linear layers where we (and the
# official release) have one fused ``qkv`` whose rows are [q | k | v]; everything else is a rename. Patterns apply to
# the key without its "deit." / "vit." prefix. Files on the Hub use the first spelling of each block key
# ("encoder.layer.3.attention.attention.query"); transformers ≥ 5 renamed its modules ("layers.3.attention.q_proj"),
# so a state_dict() taken from a live model uses the second.
_BLOCK = r"(?:encoder\.layer|layers)\.(\d+)\."
HF_RENAMES = [
    (r"embeddings\.cls_token", "cls_token"),
    (r"embeddings\.distillation_token", "dist_token"),
    (r"embeddings\.position_embeddings", "pos_embed"),
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (_BLOCK + r"layernorm_before\.(weight|bias)", r"blocks.\1.norm1.\2"),
    (_BLOCK + r"layernorm_after\.(weight|bias)", r"blocks.\1.norm2.\2"),
    (_BLOCK + r"attention\.(?:output\.dense|o_proj)\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (_BLOCK + r"(?:intermediate\.dense|mlp\.fc1)\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    (_BLOCK + r"(?:output\.dense|mlp\.fc2)\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
    (r"layernorm\.(weight|bias)", r"norm.\1"),
    (r"cls_classifier\.(weight|bias)", r"head.\1"),  # DeiTForImageClassificationWithTeacher
    (r"distillation_classifier\.(weight|bias)", r"head_dist.\1"),
    (r"classifier\.(weight|bias)", r"head.\1"),  # DeiTForImageClassification, ViTForImageClassification
]
HF_QKV = re.compile(_BLOCK + r"attention\.(?:attention\.(query|key|value)|([qkv])_proj)\.(weight|bias)")


def is_transformers(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True for a Hugging Face DeiT/ViT state dict (its tokens live under ``embeddings.``)."""
    return any(k.endswith("embeddings.cls_token") for k in state_dict)


def from_transformers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a transformers ``DeiT*``/``ViT*`` state dict to our keys and fuse each block's q, k, v into ``qkv``.

    Keys that match no rule keep their name (e.g. ``vit.pooler.dense.weight``), so the strict check of
    :func:`load_checkpoint` names them. The result holds the same tensors: the same model computes the same logits.
    """
    ours: dict[str, torch.Tensor] = {}
    parts: dict[tuple[str, str], dict[str, torch.Tensor]] = {}  # (block, weight|bias) → {q, k, v}
    for key, value in state_dict.items():
        short = re.sub(r"^(deit|vit)\.", "", key)
        qkv = HF_QKV.fullmatch(short)
        if qkv:
            block, long_name, letter, kind = qkv.groups()
            parts.setdefault((block, kind), {})[letter or long_name[0]] = value
            continue
        for pattern, target in HF_RENAMES:
            if re.fullmatch(pattern, short):
                ours[re.sub(pattern, target, short)] = value
                break
        else:
            ours[key] = value
    for (block, kind), qkv in sorted(parts.items()):
        if set(qkv) != {"q", "k", "v"}:
            absent = ", ".join(n for n in ("query", "key", "value") if n[0] not in qkv)
            raise CheckpointError(f"the Hugging Face checkpoint's block {block} has no attention {absent} {kind}")
        ours[f"blocks.{block}.attn.qkv.{kind}"] = torch.cat([qkv["q"], qkv["k"], qkv["v"]], dim=0)  # rows q | k | v
    return ours


# ----------------------------------------------------------------------------------------------------------------
# 4. Loading into a model, with position-embedding resize and clear refusals
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
    if sorted(missing) == ["head_dist.bias", "head_dist.weight"] and not unexpected and not misshaped:
        raise CheckpointError("the checkpoint has a distillation token but no distillation head (a Hugging Face "
                              "DeiTForImageClassification classifies from the class token alone): fine-tune it "
                              "(--finetune), or load it with strict=False and read model.head on the class token")
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m minideit.weights",
        description="Download official DeiT/RegNetY weights into the cache, to use them later without network.",
        epilog=f"The cache is $MINIDEIT_CACHE (now {cache_dir()}). On a machine without network, fetch the files "
               f"elsewhere with this command and copy them into the same folder.")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help=f"official model names (default: all of them): {', '.join(OFFICIAL_FILES)}")
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m minideit.weights [NAME ...]``: download official files into the cache (all of them by default)."""
    names = build_parser().parse_args(argv).names or list(OFFICIAL_FILES)
    unknown = [name for name in names if name not in OFFICIAL_URLS]
    if unknown:
        print(f"error: no official weights named {', '.join(unknown)}; choose from {', '.join(OFFICIAL_FILES)}",
              file=sys.stderr)
        return 2
    for name in names:
        try:
            print(f"{name}: {cached_file(OFFICIAL_URLS[name])}")
        except CheckpointError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
