"""``python -m minideit.predict``: classify images with a trained or official model, and show where it looks.

    python -m minideit.predict cat.jpg --model deit_base_distilled_patch16_224 --pretrained
    python -m minideit.predict photos/ --checkpoint runs/demo/checkpoint.pth --topk 3 --json preds.json
    python -m minideit.predict photos/ --checkpoint runs/demo/checkpoint.pth --attention attention.png

Each image goes through the model's evaluation transform (resize, centre crop, normalise: ``build_transform(False,
...)``), and the top-k classes are printed with their probabilities (softmax of the logits the model returns: for
a distilled model the mean of its two heads, paper §4 "Classification with our approach"). For a distilled model
the class head's and the distillation head's own top-1 follow, and whether they agree.

Class names: ``--class-names FILE`` (one name per line, or ``id<TAB>name``) if given; else those of the data set a
training checkpoint was trained on (its ``args``: the synthetic glyphs, CIFAR's names, the class folders of
``--data-path`` if that folder is still there); else, for 1,000 classes, the ImageNet names that ship with the
package (``minideit/data/imagenet_classes.txt``, in the official class order); else "class N".

``--attention OUT.png`` draws the class token's (and the distillation token's) attention over the patches, in the
last layer and rolled out through all layers (see :mod:`minideit.tools.attention`), and checks that the explicit
attention path that drew them computes the same logits as the fused path that made the predictions.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from importlib import resources
from pathlib import Path

import torch

from minideit.data.datasets import find_classes, find_images, load_rgb
from minideit.data.transforms import build_transform
from minideit.engine import head_logits
from minideit.models import DEIT_CONFIGS, check_model_name, create_model
from minideit.train import model_overrides
from minideit.weights import CheckpointError, adapt_pos_embed, check_compatible, read_checkpoint_file, \
    resolve_state_dict

BATCH = 16  # images per forward pass
MAX_ATTENTION_ROWS = 16  # a taller figure is unreadable; the rest are predicted but not drawn
AGREEMENT_TOL = 1e-4  # relative difference allowed between explicit and fused logits (float rounding only)
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class UsageError(ValueError):
    """Bad input; the message is the one line the user sees."""


# ----------------------------------------------------------------------------------------------------------------
# 1. Class names
# ----------------------------------------------------------------------------------------------------------------
def imagenet_names() -> list[str]:
    """The 1,000 ImageNet-1k classes in the official order (sorted WordNet ids), the first lemma of each."""
    text = resources.files("minideit.data").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    return [line.split("\t")[1].split(",")[0] for line in text.splitlines() if line]


def read_names_file(path: Path) -> list[str]:
    """One class per line; a line ``id<TAB>name`` keeps the name (the format of imagenet_classes.txt)."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [line.split("\t")[-1].strip() for line in lines]


def names_from_training_args(args: dict, num_classes: int) -> tuple[list[str] | None, str]:
    """The class names of the data set a minideit training run used, when they can still be found."""
    data_set, data_path = args.get("data_set"), args.get("data_path") or ""
    if data_set == "synthetic":
        from minideit.data.synthetic import glyph_bank
        return glyph_bank(num_classes)[0], "the synthetic data set's glyphs"
    if data_set == "cifar10" and num_classes == 10:
        return CIFAR10_NAMES, "CIFAR-10"
    if data_set in ("imagenet", "folder") and (Path(data_path) / "train").is_dir():
        names = find_classes(Path(data_path) / "train")
        if len(names) == num_classes:
            return names, f"the class folders of {Path(data_path) / 'train'}"
    return None, ""


def class_names(num_classes: int, names_file: Path | None, args: dict | None) -> tuple[list[str], str]:
    """(names, where they come from), following the order of the module docstring."""
    if names_file is not None:
        names = read_names_file(names_file)
        if len(names) != num_classes:
            raise UsageError(f"--class-names {names_file} has {len(names)} names but the model has {num_classes} "
                             f"classes; give one name per line, in class-index order")
        return names, str(names_file)
    if args:
        names, source = names_from_training_args(args, num_classes)
        if names is not None:
            return names, source
    if num_classes == 1000:
        return imagenet_names(), "ImageNet-1k"
    return [f"class {i}" for i in range(num_classes)], "none found (pass --class-names FILE)"


# ----------------------------------------------------------------------------------------------------------------
# 2. The model and its weights
# ----------------------------------------------------------------------------------------------------------------
def num_classes_in(state: dict[str, torch.Tensor]) -> int:
    for key in ("head.weight", "head.fc.weight"):  # DeiT, RegNetY
        if key in state:
            return state[key].shape[0]
    raise UsageError("the checkpoint has no classifier head (no head.weight): it cannot classify; pass a "
                     "checkpoint of a classification model")


def input_size_of(name: str, state: dict[str, torch.Tensor], args: dict | None) -> int:
    """The resolution the weights were trained at: the run's --input-size, else what ``pos_embed`` covers."""
    if args and args.get("input_size"):
        return int(args["input_size"])
    if name in DEIT_CONFIGS and "pos_embed" in state:
        cfg = DEIT_CONFIGS[name]
        patches = state["pos_embed"].shape[1] - (2 if cfg.distilled else 1)
        side = math.isqrt(patches)
        if side * side == patches:
            return side * cfg.patch_size
    return DEIT_CONFIGS[name].img_size if name in DEIT_CONFIGS else 224


def load_model(model_name: str | None, pretrained: bool, checkpoint: Path | None):
    """(model in eval mode, input size, training args or None, description of the weights)."""
    args = None
    if pretrained:
        if not model_name:
            raise UsageError("--pretrained needs --model NAME (an official model such as "
                             "deit_tiny_distilled_patch16_224)")
        check_model_name(model_name)
        state, what = resolve_state_dict(model_name), f"official weights of {model_name}"
    else:
        raw = read_checkpoint_file(checkpoint)
        if isinstance(raw, dict) and isinstance(raw.get("args"), dict):
            args = raw["args"]  # a minideit training checkpoint: it knows its model, size and data set
        state, what = resolve_state_dict(raw), str(checkpoint)
        model_name = model_name or (args or {}).get("model")
        if not model_name:
            raise UsageError(f"{checkpoint} does not say which model it is: pass --model NAME")
        check_model_name(model_name)
    size = input_size_of(model_name, state, args)
    extra = model_overrides(model_name, size, (args or {}).get("model_overrides"))
    if model_name in DEIT_CONFIGS:
        extra["img_size"] = size
    model = create_model(model_name, num_classes=num_classes_in(state), **extra)
    state = adapt_pos_embed(model, state)
    check_compatible(model, state)
    model.load_state_dict(state)
    return model.eval(), size, args, what


# ----------------------------------------------------------------------------------------------------------------
# 3. Images
# ----------------------------------------------------------------------------------------------------------------
def expand_inputs(paths: list[str]) -> list[Path]:
    """Files as given (any extension: the decoder decides) and the images under each folder, in sorted order."""
    files: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            found = find_images(path)
            if not found:
                raise UsageError(f"folder {path} holds no images (looked for .jpg .jpeg .png .bmp .webp)")
            files += [Path(f) for f in found]
        elif path.is_file():
            files.append(path)
        else:
            raise UsageError(f"{path} does not exist; pass image files or folders of images")
    return files


def batches(files: list[Path], transform, size: int = BATCH):
    """Yield (paths, tensor (B, 3, H, W)) of readable images; an unreadable one is reported on stderr and skipped."""
    paths, tensors = [], []
    for path in files:
        try:
            tensors.append(transform(load_rgb(path)))
            paths.append(path)
        except Exception as e:  # Pillow raises many types (OSError, SyntaxError, DecompressionBombError, ...)
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            print(f"{path}: unreadable, skipped ({reason})", file=sys.stderr)
            yield path, None
        if len(tensors) == size:
            yield paths, torch.stack(tensors)
            paths, tensors = [], []
    if tensors:
        yield paths, torch.stack(tensors)


# ----------------------------------------------------------------------------------------------------------------
# 4. Predictions
# ----------------------------------------------------------------------------------------------------------------
def describe(logits: torch.Tensor, names: list[str], k: int) -> list[dict]:
    """Top-k of one image's logits (C,) as [{'index', 'name', 'prob'}], most probable first."""
    probs = logits.float().softmax(dim=-1)
    top = probs.topk(min(k, probs.numel()))
    return [{"index": int(i), "name": names[int(i)], "prob": round(float(p), 6)}
            for p, i in zip(top.values, top.indices)]


def predict_batch(model, images: torch.Tensor, names: list[str], k: int) -> list[dict]:
    """One record per image: top-k of the model's output and, for a distilled model, each head's top-1."""
    with torch.no_grad():
        heads = head_logits(model, images)  # {'joint'} or {'cls', 'dist', 'joint'}
    records = []
    for i in range(images.shape[0]):
        record = {"topk": describe(heads["joint"][i], names, k)}
        if "dist" in heads:
            cls_top, dist_top = describe(heads["cls"][i], names, 1)[0], describe(heads["dist"][i], names, 1)[0]
            record.update(cls_top1=cls_top, dist_top1=dist_top, heads_agree=cls_top["index"] == dist_top["index"])
        records.append(record)
    return records


def print_record(path: Path, record: dict) -> None:
    print(path)
    for rank, item in enumerate(record["topk"], start=1):
        print(f"  {rank}. {100 * item['prob']:6.2f}%  {item['name']}")
    if "cls_top1" in record:
        c, d = record["cls_top1"], record["dist_top1"]
        verdict = "agree" if record["heads_agree"] else "disagree"
        print(f"  class head: {c['name']} ({100 * c['prob']:.1f}%) · distillation head: {d['name']} "
              f"({100 * d['prob']:.1f}%) · {verdict}")


def write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------------------------
# 5. Attention figure
# ----------------------------------------------------------------------------------------------------------------
def attention_figure(model, images: torch.Tensor, labels: list[str], out: Path) -> float:
    """Draw the token maps of ``images`` into ``out``; returns the relative difference between the explicit path's
    logits and the fused path's (raises UsageError if they disagree beyond float rounding)."""
    from minideit.tools.attention import draw, explicit_forward, token_maps
    with torch.no_grad():
        fused = head_logits(model, images)["joint"]
    explicit, maps = explicit_forward(model, images)
    diff = ((explicit["joint"] - fused).norm() / fused.norm().clamp_min(1e-12)).item()
    if not diff <= AGREEMENT_TOL:
        raise UsageError(f"the explicit attention path gives other logits than the fused one (relative difference "
                         f"{diff:.2e} > {AGREEMENT_TOL:g}); the figure would not show this model's attention")
    draw(out, images, token_maps(maps, model.distilled), labels)
    return diff


# ----------------------------------------------------------------------------------------------------------------
# 6. Command line
# ----------------------------------------------------------------------------------------------------------------
class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one ``error:`` line and exit status 2 (no usage block)."""

    def error(self, message: str):
        print(f"error: {message} (see python -m minideit.predict --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    summary, examples = __doc__.split("\n\n")[:2]
    p = OneLineParser(prog="python -m minideit.predict", description=summary.split(": ", 1)[1].capitalize(),
                      epilog="examples:\n" + examples, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files, or folders (searched "
                   "recursively for .jpg .jpeg .png .bmp .webp)")
    p.add_argument("--model", default=None, help="model name (read from a minideit training checkpoint if omitted)")
    weights = p.add_mutually_exclusive_group(required=True)
    weights.add_argument("--pretrained", action="store_true", help="the official weights of --model (cached)")
    weights.add_argument("--checkpoint", type=Path, help="a minideit, official, timm or Hugging Face checkpoint "
                         "(file or model folder)")
    p.add_argument("--topk", type=int, default=5, help="classes to print per image (default 5)")
    p.add_argument("--json", type=Path, default=None, help="also write every prediction to this JSON file")
    p.add_argument("--attention", type=Path, default=None, metavar="OUT.png",
                   help="draw the class/distillation token attention of each image (a transformer only)")
    p.add_argument("--class-names", type=Path, default=None, metavar="FILE",
                   help="class names, one per line in class-index order")
    return p


def check_output(path: Path | None, flag: str, suffix: str) -> None:
    if path is None:
        return
    if path.suffix.lower() != suffix:
        raise UsageError(f"{flag} {path} should end in {suffix}")
    if not path.parent.is_dir():
        raise UsageError(f"{flag} {path}: folder {path.parent} does not exist")


def run(args: argparse.Namespace) -> int:
    if args.topk < 1:
        raise UsageError(f"--topk must be at least 1, got {args.topk}")
    if args.checkpoint is not None and not args.checkpoint.exists():
        raise UsageError(f"--checkpoint {args.checkpoint} does not exist")
    if args.class_names is not None and not args.class_names.is_file():
        raise UsageError(f"--class-names {args.class_names} does not exist")
    check_output(args.json, "--json", ".json")
    check_output(args.attention, "--attention", ".png")
    if args.model is not None:
        check_model_name(args.model)
    if args.attention is not None and args.model is not None and args.model not in DEIT_CONFIGS:
        raise UsageError(f"--attention needs a transformer; {args.model} has no attention layers")
    files = expand_inputs(args.inputs)

    model, size, train_args, what = load_model(args.model, args.pretrained, args.checkpoint)
    name = getattr(model, "model_name", args.model)
    if args.attention is not None and name not in DEIT_CONFIGS:
        raise UsageError(f"--attention needs a transformer; {name} has no attention layers")
    names, names_from = class_names(model.num_classes, args.class_names, train_args)
    small = bool(train_args and train_args.get("data_set") in ("synthetic", "cifar10", "cifar100"))
    transform = build_transform(False, size, small_input=small or None)
    print(f"model {name} ({what}) at {size}×{size} · class names: {names_from}")

    results, unreadable, drawn, labels = [], [], [], []
    for paths, images in batches(files, transform):
        if images is None:
            unreadable.append(str(paths))
            continue
        for path, record in zip(paths, predict_batch(model, images, names, args.topk)):
            print_record(path, record)
            results.append({"path": str(path), **record})
        if args.attention is not None and len(drawn) < MAX_ATTENTION_ROWS:
            keep = images[:MAX_ATTENTION_ROWS - len(drawn)]
            drawn += list(keep)
            labels += [f"{p.name}: {r['topk'][0]['name']}" for p, r in zip(paths, results[-len(paths):])][:len(keep)]
    if unreadable:
        print(f"{len(unreadable)} of {len(files)} files unreadable (listed above)", file=sys.stderr)
    if not results:
        raise UsageError(f"none of the {len(files)} files could be read as an image")
    if args.json is not None:
        write_json_atomic(args.json, {"model": name, "weights": what, "input_size": size, "class_names": names_from,
                                      "predictions": results, "unreadable": unreadable})
        print(f"wrote {args.json}")
    if args.attention is not None:
        diff = attention_figure(model, torch.stack(drawn), labels, args.attention)
        more = f" (the first {MAX_ATTENTION_ROWS} of {len(results)} images)" if len(results) > len(drawn) else ""
        print(f"wrote {args.attention}{more}; explicit and fused attention paths agree "
              f"(relative difference of logits {diff:.1e})")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a bad argument (2, its error line already printed)
        return int(e.code or 0)
    try:
        return run(args)
    except (UsageError, CheckpointError, ValueError) as e:  # ValueError: an unknown model name, a bad size
        print(f"error: {e}", file=sys.stderr)
        return 2
