"""``python -m minideit.train``: DeiT's training procedure on a laptop CPU, one GPU, or many through torchrun.

With no arguments it runs the demo: the paper's recipe in miniature on synthetic data (a small RegNetY teacher, then
a small DeiT⚗ with hard distillation, then a table of every head's accuracy). ``--full-imagenet`` is Table 9.

The order of things in :func:`run` is the order of a run: check every input (before any model is built, so that a
typo costs a second, not a model build), set up processes and data, build student and teacher, optimiser, schedule,
resume, then epochs of train → evaluate → log → checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import torch
import torch.nn as nn

from . import config as config_mod
from .checkpoint import load_training_checkpoint, rng_state, save_atomic, set_rng_state
from .config import TrainConfig
from .curves import write_curves
from .distributed import DistInfo, all_gather_object, barrier, cleanup, init_distributed
from .engine import NonFiniteLossError, evaluate, train_one_epoch, unwrap
from .losses import DistillationLoss, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy, prepare_teacher
from .models import DEIT_CONFIGS, check_model_name, create_model
from .optim import CosineWarmupSchedule, ModelEma, build_optimizer, scaled_lr
from .weights import CheckpointError, adapt_pos_embed, check_compatible, resolve_state_dict


class UsageError(ValueError):
    """Bad input found before training starts; the message is the one line the user sees."""


# ----------------------------------------------------------------------------------------------------------------
# 1. Checks that run before any model is built
# ----------------------------------------------------------------------------------------------------------------
def model_overrides(name: str, input_size: int, given: dict | None = None) -> dict:
    """Extra constructor arguments: a RegNetY on small images keeps resolution in its stem."""
    extra = {"stem_stride": 1} if name.startswith("regnety") and input_size <= 64 else {}
    extra.update(given or {})
    return extra


def num_classes_of(cfg: TrainConfig) -> int:
    """The class count of the dataset, cheaply (no images decoded)."""
    from .data.datasets import check_data_path, find_classes
    check_data_path(cfg.data_set, cfg.data_path)
    if cfg.data_set == "synthetic":
        return 10
    if cfg.data_set in ("cifar10", "cifar100"):
        return int(cfg.data_set[5:])
    return len(find_classes(Path(cfg.data_path) / "train"))


def validate(cfg: TrainConfig, world_size: int) -> None:
    """Raise UsageError (one line) for anything wrong in the configuration; touches no model weights."""
    for name in filter(None, [cfg.model, cfg.teacher_model if cfg.distillation_type != "none" else ""]):
        try:
            check_model_name(name)
        except ValueError as e:
            raise UsageError(str(e)) from None
    if cfg.model in DEIT_CONFIGS and cfg.input_size % DEIT_CONFIGS[cfg.model].patch_size:
        p = DEIT_CONFIGS[cfg.model].patch_size
        raise UsageError(f"--input-size {cfg.input_size} is not divisible by the patch size {p} of {cfg.model}; "
                         f"use a multiple of {p} such as {round(cfg.input_size / p) * p or p}")
    if cfg.batch_size <= 0:
        raise UsageError(f"--batch-size must be positive, got {cfg.batch_size}")
    if cfg.epochs <= 0 and not cfg.eval:
        raise UsageError(f"--epochs must be positive, got {cfg.epochs}")
    if cfg.eval_every < 1:
        raise UsageError(f"--eval-every must be a positive number of epochs, got {cfg.eval_every}")
    if cfg.global_batch_size:
        per_step = cfg.batch_size * world_size
        if cfg.global_batch_size % per_step:
            raise UsageError(f"global batch {cfg.global_batch_size} is not divisible by batch size {cfg.batch_size} "
                             f"× {world_size} processes; pick --batch-size so that it divides "
                             f"{cfg.global_batch_size // world_size if cfg.global_batch_size % world_size == 0 else 'it'}"
                             f" (global batch = batch × processes × accumulation)")
    if cfg.mixup > 0 or cfg.cutmix > 0:
        if cfg.batch_size % 2:
            raise UsageError(f"Mixup/CutMix pairs each image with another: --batch-size must be even, "
                             f"got {cfg.batch_size}")
    if cfg.distillation_type != "none" and not cfg.teacher_path and not cfg.eval:
        raise UsageError(f"--distillation-type {cfg.distillation_type} needs a teacher: pass --teacher-path "
                         f"(a checkpoint of --teacher-model {cfg.teacher_model}, or 'regnety_160' for the official "
                         f"teacher); train one with: python -m minideit.train --model {cfg.teacher_model} ...")
    if cfg.resume and cfg.resume != "auto" and not Path(cfg.resume).is_file():
        raise UsageError(f"--resume file {cfg.resume} does not exist (use --resume auto to continue the run in "
                         f"--output-dir if there is one)")
    if cfg.eval and not (cfg.resume or cfg.pretrained or cfg.finetune):
        raise UsageError("--eval needs weights: --resume CHECKPOINT, --pretrained (official weights of --model), "
                         "or --finetune CHECKPOINT")
    try:
        num_classes_of(cfg)
    except ValueError as e:
        raise UsageError(str(e)) from None


def check_weights_file(model_name: str, source: str, num_classes: int, input_size: int, what: str,
                       overrides: dict | None = None) -> dict:
    """Load a checkpoint's state dict and check it fits ``model_name`` with ``num_classes``, on the meta device
    (no memory, no init); returns the state dict so that it is read only once."""
    try:
        state = resolve_state_dict(source)
        with torch.device("meta"):
            shell = create_model(model_name, num_classes=num_classes, img_size=input_size
                                 if model_name in DEIT_CONFIGS else None, **(overrides or {}))
        check_compatible(shell, adapt_pos_embed(shell, state))
        return state
    except CheckpointError as e:
        raise UsageError(f"{what} {source}: {e}") from None


# ----------------------------------------------------------------------------------------------------------------
# 2. Data, models, optimiser
# ----------------------------------------------------------------------------------------------------------------
def accumulation(cfg: TrainConfig, world_size: int) -> int:
    """Micro-steps per optimiser step: derived from --global-batch-size when given (validated to divide)."""
    if cfg.global_batch_size:
        return cfg.global_batch_size // (cfg.batch_size * world_size)
    return cfg.accum_steps


def build_data(cfg: TrainConfig, dist: DistInfo):
    from .data.datasets import build_dataset
    from .data.samplers import EvalSampler, RASampler
    from .data.transforms import build_transform
    synthetic = {}
    if cfg.data_set == "synthetic":
        synthetic = dict(img_size=cfg.input_size, seed=cfg.seed)
    train_kwargs = dict(synthetic, num_samples=cfg.num_samples or None) if synthetic else {}
    val_kwargs = dict(synthetic, num_samples=256 if config_mod.smoke() else None) if synthetic else {}
    # Small natively-sized data (CIFAR, synthetic) gets pad-and-crop; photos get RandomResizedCrop at any size.
    small = cfg.data_set in ("synthetic", "cifar10", "cifar100")
    if cfg.gpu_aug:  # the same per-image steps, ending at uint8: normalise + erase happen on the device
        from .data.gpu_aug import build_uint8_transform
        train_tf = build_uint8_transform(True, cfg.input_size, aa=cfg.aa or None, color_jitter=cfg.color_jitter,
                                         small_input=small)
    else:
        train_tf = build_transform(True, cfg.input_size, aa=cfg.aa or None, color_jitter=cfg.color_jitter,
                                   reprob=cfg.reprob, small_input=small)
    val_tf = build_transform(False, cfg.input_size, small_input=small)
    train_set = build_dataset(cfg.data_set, cfg.data_path, True, train_tf, **train_kwargs)
    val_set = build_dataset(cfg.data_set, cfg.data_path, False, val_tf, **val_kwargs)
    repeats = 3 if cfg.repeated_aug else 1
    train_sampler = RASampler(len(train_set), dist.world_size, dist.rank, shuffle=True, seed=cfg.seed,
                              num_repeats=repeats)
    val_sampler = EvalSampler(len(val_set), dist.world_size, dist.rank)
    return train_set, val_set, train_sampler, val_sampler


def make_loader(cfg: TrainConfig, dataset, sampler, epoch: int, train: bool, dist: DistInfo):
    """One epoch's loader; workers are seeded from (seed, epoch, rank), so the copies of an image that repeated
    augmentation sends to different ranks are augmented differently."""
    from .data.loader import build_loader
    return build_loader(dataset, cfg.batch_size if train else cfg.batch_size * 2, sampler, cfg.num_workers,
                        cfg.seed, epoch, drop_last=train, pin_memory=dist.device.type == "cuda", rank=dist.rank)


def build_student(cfg: TrainConfig, num_classes: int, device: torch.device) -> nn.Module:
    kwargs = model_overrides(cfg.model, cfg.input_size, cfg.model_overrides)
    if cfg.model in DEIT_CONFIGS:
        kwargs["img_size"] = cfg.input_size
    model = create_model(cfg.model, num_classes=num_classes, drop_path_rate=cfg.drop_path, **kwargs)
    if hasattr(model, "set_fused_attention"):
        model.set_fused_attention(cfg.fused_attn)
    if cfg.pretrained:
        load_into(model, resolve_state_dict(cfg.model), "--pretrained", allow_new_head=False)
    if cfg.finetune:
        load_into(model, resolve_state_dict(cfg.finetune), "--finetune", allow_new_head=True)
    return model.to(device)


def load_into(model: nn.Module, state: dict, what: str, allow_new_head: bool) -> None:
    """Load weights; resize pos_embed for another resolution; with ``allow_new_head`` replace heads whose class
    count differs (fine-tuning to another dataset keeps the fresh, randomly initialised heads)."""
    state = adapt_pos_embed(model, state)
    own = model.state_dict()
    if allow_new_head:
        dropped = [k for k in state if k.startswith(("head.", "head_dist.")) and k in own
                   and state[k].shape != own[k].shape]
        if dropped:
            print(f"{what}: new classifier heads for {getattr(model, 'num_classes', '?')} classes "
                  f"(dropped {', '.join(dropped)})")
        state = {k: v for k, v in state.items() if k not in dropped}
        state.update({k: own[k] for k in dropped})
    try:
        check_compatible(model, state)
    except CheckpointError as e:
        raise UsageError(f"{what}: {e}") from None
    model.load_state_dict(state)


def build_teacher(cfg: TrainConfig, num_classes: int, state: dict | None, device: torch.device) -> nn.Module | None:
    if cfg.distillation_type == "none" or state is None:
        return None
    teacher = create_model(cfg.teacher_model, num_classes=num_classes,
                           **model_overrides(cfg.teacher_model, cfg.input_size))
    teacher.load_state_dict(adapt_pos_embed(teacher, state))
    # frozen, eval; bf16 weights on CUDA with --amp bf16; compiled with the student under --compile
    return prepare_teacher(teacher, device, cfg.amp, compile=cfg.compile)


def build_criterion(cfg: TrainConfig, teacher: nn.Module | None, mixup_active: bool) -> DistillationLoss:
    if mixup_active:
        base = SoftTargetCrossEntropy()  # label smoothing is folded into the mixed soft targets
    elif cfg.smoothing > 0:
        base = LabelSmoothingCrossEntropy(cfg.smoothing)
    else:
        base = nn.CrossEntropyLoss()
    return DistillationLoss(base, teacher, cfg.distillation_type, cfg.distillation_alpha, cfg.distillation_tau,
                            cfg.kl_normalisation)


# ----------------------------------------------------------------------------------------------------------------
# 3. Checkpoints
# ----------------------------------------------------------------------------------------------------------------
def save_checkpoint(path: Path, cfg, model, optimizer, schedule, ema, scaler, mixup, epoch: int, step: int,
                    best_acc1: float, dist: DistInfo, epoch_done: bool) -> None:
    """The official keys (model, optimizer, lr_scheduler, epoch, model_ema, scaler, args) plus what exact resume
    needs: every process's random states, the Mixup generator and where in the epoch we are.

    ``epoch`` is the epoch being trained; ``epoch_done`` says whether it is finished (then ``step`` is ignored) or
    ``step`` optimiser steps into it (a mid-epoch checkpoint, ``--save-every-steps``)."""
    rngs = all_gather_object(rng_state())  # every rank's; only rank 0 writes
    if not dist.is_main:
        return
    save_atomic({
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": schedule.state_dict(),
        "epoch": epoch if epoch_done else epoch - 1,  # the last *completed* epoch, as in the official code
        "model_ema": ema.state_dict() if ema is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "args": config_mod.to_dict(cfg),
        "rng": rngs,
        "mixup": mixup.state_dict() if mixup is not None else None,
        "sampler": {"epoch": epoch, "steps_done": None if epoch_done else step},
        "best_acc1": best_acc1,
        "world_size": dist.world_size,
    }, path)


def find_resume(cfg: TrainConfig) -> str:
    if cfg.resume == "auto":
        candidate = Path(cfg.output_dir) / "checkpoint.pth"
        return str(candidate) if candidate.is_file() else ""
    return cfg.resume


def load_resume(path: str, cfg: TrainConfig) -> dict:
    try:
        ckpt = load_training_checkpoint(path)
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None
    args = ckpt.get("args") or {}
    if args.get("model", cfg.model) != cfg.model:
        raise UsageError(f"{path} is a checkpoint of {args.get('model')}, not of --model {cfg.model}; "
                         f"pass the same --model or another --output-dir")
    return ckpt


# ----------------------------------------------------------------------------------------------------------------
# 4. The run
# ----------------------------------------------------------------------------------------------------------------
def run(cfg: TrainConfig) -> dict:
    """Train (or with ``cfg.eval`` only evaluate) as configured; returns the last evaluation's figures."""
    dist = init_distributed(cfg.device)
    try:
        return _run(cfg, dist)
    finally:
        cleanup()


def _run(cfg: TrainConfig, dist: DistInfo) -> dict:
    validate(cfg, dist.world_size)
    num_classes = num_classes_of(cfg)
    teacher_state = None
    if cfg.distillation_type != "none" and cfg.teacher_path:
        teacher_state = check_weights_file(cfg.teacher_model, cfg.teacher_path, num_classes, cfg.input_size,
                                           "--teacher-path", model_overrides(cfg.teacher_model, cfg.input_size))
    resume_path = find_resume(cfg)
    ckpt = load_resume(resume_path, cfg) if resume_path else None

    device = dist.device
    accum = accumulation(cfg, dist.world_size)
    global_batch = cfg.batch_size * dist.world_size * accum
    lr = cfg.lr if cfg.unscale_lr else scaled_lr(cfg.lr, global_batch)
    out = Path(cfg.output_dir)
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        resolved = dict(config_mod.to_dict(cfg), resolved_lr=lr, global_batch=global_batch, accum_steps=accum,
                        world_size=dist.world_size, device=str(device), num_classes=num_classes)
        print("configuration: " + json.dumps(resolved, sort_keys=True))
        (out / "config.json").write_text(json.dumps(resolved, indent=2, sort_keys=True) + "\n")

    torch.manual_seed(cfg.seed)  # model initialisation is a function of the seed
    try:  # library checks (a bad --aa string, an unreadable dataset file) say what is wrong in one line
        train_set, val_set, train_sampler, val_sampler = build_data(cfg, dist)
        model = build_student(cfg, num_classes, device)
        teacher = build_teacher(cfg, num_classes, teacher_state, device)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if ckpt is not None:
        unwrap(model).load_state_dict(ckpt["model"])

    if cfg.eval:
        loader = make_loader(cfg, val_set, val_sampler, 0, False, dist)
        stats = evaluate(model, loader, device, teacher, cfg.amp)
        if dist.is_main:
            print_table({cfg.model: stats})
        return stats

    from .data.mixup import Mixup
    mixup = None
    if cfg.mixup > 0 or cfg.cutmix > 0:
        mixup = Mixup(cfg.mixup, cfg.cutmix, cfg.mixup_prob, cfg.mixup_switch_prob, cfg.smoothing, num_classes,
                      seed=cfg.seed + dist.rank)
    criterion = build_criterion(cfg, teacher, mixup is not None)
    optimizer = build_optimizer(model, cfg.opt, lr=lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                                fused=True)
    steps_per_epoch = max(1, train_sampler.num_samples // cfg.batch_size // accum)
    schedule = CosineWarmupSchedule(optimizer, lr, cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch,
                                    cfg.warmup_lr, cfg.min_lr, cfg.sched)
    ema = ModelEma(model, cfg.model_ema_decay) if cfg.model_ema else None
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and cfg.amp == "fp16" else None

    start_epoch, start_step, best_acc1 = 0, 0, 0.0
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["lr_scheduler"])
        if ema is not None and ckpt.get("model_ema"):
            ema.load_state_dict(ckpt["model_ema"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        if mixup is not None and ckpt.get("mixup"):
            mixup.load_state_dict(ckpt["mixup"])
        start_epoch = ckpt["epoch"] + 1
        position = ckpt.get("sampler") or {}
        if position.get("steps_done"):  # a mid-epoch checkpoint: continue inside that epoch
            start_epoch, start_step = position["epoch"], position["steps_done"]
        best_acc1 = ckpt.get("best_acc1", 0.0)
        rngs = ckpt.get("rng") or []
        if len(rngs) == dist.world_size:
            set_rng_state(rngs[dist.rank])
        if dist.is_main:
            print(f"resumed from {resume_path} at epoch {start_epoch}" + (f", step {start_step}" if start_step else ""))

    if dist.distributed:
        unused = getattr(model, "distilled", False) and cfg.distillation_type == "none"
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                    else None, find_unused_parameters=unused)
    train_model = torch.compile(model) if cfg.compile else model

    stats: dict = {}
    val_loader = make_loader(cfg, val_set, val_sampler, 0, False, dist)
    for epoch in range(start_epoch, cfg.epochs):
        stats = run_epoch(cfg, dist, epoch, start_step if epoch == start_epoch else 0, train_model, model, teacher,
                          criterion, optimizer, schedule, ema, scaler, mixup, train_set, train_sampler, val_loader,
                          best_acc1)
        best_acc1 = max(best_acc1, stats.get("test_acc1", best_acc1))
    if not stats:  # nothing left to train (a finished run resumed): report its evaluation
        stats = evaluate(model, val_loader, device, teacher, cfg.amp)
        stats = {"epoch": start_epoch - 1, **{f"test_{k}": v for k, v in stats.items()}}
    return stats


def run_epoch(cfg, dist, epoch, start_step, train_model, model, teacher, criterion, optimizer, schedule, ema,
              scaler, mixup, train_set, train_sampler, val_loader, best_acc1) -> dict:
    from tqdm import tqdm
    from .data.loader import seed_everything
    out = Path(cfg.output_dir)
    device = dist.device
    train_sampler.set_epoch(epoch)
    accum = accumulation(cfg, dist.world_size)
    train_sampler.set_start(start_step * cfg.batch_size * accum)  # skip what a mid-epoch checkpoint already did
    seed_everything(cfg.seed, epoch, dist.rank)  # everything random in epoch e is a function of (seed, e, rank)
    if hasattr(train_set, "reset_failures"):
        train_set.reset_failures()
    loader = make_loader(cfg, train_set, train_sampler, epoch, True, dist)
    progress = tqdm(total=len(loader), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not dist.is_main,
                    dynamic_ncols=True, leave=False)

    def on_step(step: int) -> None:
        if cfg.save_every_steps and step % cfg.save_every_steps == 0:
            save_checkpoint(out / "checkpoint.pth", cfg, model, optimizer, schedule, ema, scaler, mixup, epoch,
                            step, best_acc1, dist, epoch_done=False)

    batch_aug = mixup
    if cfg.gpu_aug:  # uint8 batches: normalise, erase each image, then Mixup, all on the device
        from .data.gpu_aug import DeviceAugment
        batch_aug = DeviceAugment(cfg.reprob, mixup=mixup)
    try:
        train_stats = train_one_epoch(train_model, criterion, loader, optimizer, schedule, device=device,
                                      mixup=batch_aug,
                                      ema=ema, scaler=scaler, amp=cfg.amp, accum_steps=accum,
                                      clip_grad=cfg.clip_grad, log_every=cfg.log_every,
                                      max_nonfinite=cfg.max_nonfinite, progress=progress, on_step=on_step,
                                      start_step=start_step)
    finally:
        progress.close()
    log = {"epoch": epoch, **train_stats}
    evaluated = (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs
    if evaluated:  # --eval-every N skips the evaluation of other epochs (a few-minute run needs only the last)
        test = evaluate(model, val_loader, device, teacher, cfg.amp)
        log.update({f"test_{k}": v for k, v in test.items()})
        if ema is not None:
            ema_stats = evaluate(ema.module, val_loader, device, None, cfg.amp)
            log.update({f"ema_{k}": v for k, v in ema_stats.items() if k in ("acc1", "acc5")})
    if hasattr(train_set, "num_failures"):
        log["bad_images"] = int(train_set.num_failures())
    best_now = max(best_acc1, log.get("test_acc1", best_acc1))
    save_checkpoint(out / "checkpoint.pth", cfg, model, optimizer, schedule, ema, scaler, mixup, epoch, 0,
                    best_now, dist, epoch_done=True)
    if dist.is_main:
        if evaluated and log["test_acc1"] >= best_acc1:
            shutil.copyfile(out / "checkpoint.pth", out / "best_checkpoint.pth")
        with open(out / "log.jsonl", "a") as f:
            f.write(json.dumps(log) + "\n")
        if evaluated:
            write_curves(out)  # curves.png beside log.jsonl; prints a warning instead of raising
        print(epoch_line(log))
    barrier()
    return log


def epoch_line(log: dict) -> str:
    parts = [f"epoch {log['epoch']}", f"loss {log['train_loss']:.4f}", f"lr {log['lr']:.2e}"]
    if "test_acc1" in log:  # absent in the epochs --eval-every skips
        parts += [f"acc1 {log['test_acc1']:.2f}", f"acc5 {log['test_acc5']:.2f}"]
    for key, label in (("test_cls_acc1", "cls"), ("test_dist_acc1", "dist"), ("test_teacher_acc1", "teacher"),
                       ("test_agreement", "agree"), ("ema_acc1", "ema")):
        if key in log:
            parts.append(f"{label} {log[key]:.2f}")
    parts.append(f"{log['train_img_per_s']:.0f} img/s")
    if log.get("nonfinite_steps"):
        parts.append(f"skipped {log['nonfinite_steps']} non-finite steps")
    if log.get("bad_images"):
        parts.append(f"{log['bad_images']} unreadable images")
    return " | ".join(parts)


def print_table(rows: dict[str, dict]) -> None:
    """A small Markdown table of top-1 accuracies: one row per classifier."""
    print("| classifier | top-1 | top-5 |")
    print("|---|---|---|")
    for name, s in rows.items():
        print(f"| {name} | {s.get('acc1', float('nan')):.2f} | {s.get('acc5', float('nan')):.2f} |")


# ----------------------------------------------------------------------------------------------------------------
# 5. The demo: teacher, then student, then the table (paper §4–5 in miniature)
# ----------------------------------------------------------------------------------------------------------------
DEMO_TEACHER = dict(epochs=12, lr=2e-3, batch_size=64, warmup_epochs=1, weight_decay=0.05)
# The settings that decide whether a cached run is the run asked for (see trained_with).
REUSE_KEYS = ("model", "epochs", "seed", "num_samples", "batch_size", "data_set", "input_size", "lr")


def trained_with(path: str | Path, cfg: TrainConfig, keys: tuple[str, ...] = REUSE_KEYS,
                 finished: bool = False) -> bool:
    """True if `path` is a training checkpoint whose run had `cfg`'s values for `keys` (and, with `finished`, has
    completed all its epochs): a cached model, such as the demo's teacher or a notebook's shared model, that can be
    reused instead of trained again. A missing file is False."""
    path = Path(path)
    if not path.is_file():
        return False
    ckpt = load_training_checkpoint(path)
    args = ckpt.get("args") or {}
    same = all(args.get(k) == getattr(cfg, k) for k in keys)
    return same and (not finished or ckpt.get("epoch") == args.get("epochs", 0) - 1)


def run_demo(cfg: TrainConfig) -> dict:
    out = Path(cfg.output_dir)
    teacher_cfg = dataclasses.replace(cfg, model=cfg.teacher_model, distillation_type="none", teacher_path="",
                                      output_dir=str(out / "teacher"), resume="auto", **DEMO_TEACHER)
    if config_mod.smoke():
        teacher_cfg.epochs = cfg.epochs
    previous = out / "teacher" / "checkpoint.pth"
    if previous.is_file():  # an unfinished teacher with the same settings is resumed by resume="auto"
        same = trained_with(previous, teacher_cfg)
        print("demo: reusing the teacher in " + str(out / "teacher") if same else
              "demo: the cached teacher was trained with other settings; training a new one")
        if not same:
            previous.unlink()
    print(f"demo 1/2: training the teacher {teacher_cfg.model} on {cfg.data_set} data")
    teacher_stats = run(teacher_cfg)
    print(f"demo 2/2: training the student {cfg.model} with {cfg.distillation_type} distillation")
    student_cfg = dataclasses.replace(cfg, teacher_path=str(previous))
    student = run(student_cfg)
    rows = {f"teacher ({teacher_cfg.model})": {"acc1": teacher_stats["test_acc1"], "acc5": teacher_stats["test_acc5"]}}
    for head, label in (("cls", "class head"), ("dist", "distillation head"), ("", "joint (cls+dist)/2")):
        key = f"test_{head}_" if head else "test_"
        if f"{key}acc1" in student:
            rows[f"student {label}"] = {"acc1": student[f"{key}acc1"], "acc5": student[f"{key}acc5"]}
    print(f"\ndemo results on {student.get('test_num_images', '?')} validation images (chance = 10%):")
    print_table(rows)
    return student


# ----------------------------------------------------------------------------------------------------------------
# 6. Command line
# ----------------------------------------------------------------------------------------------------------------
def apply_smoke(cfg: TrainConfig) -> None:
    """MINIDEIT_SMOKE=1: tiny data and one or two epochs, so CI can run every mode in seconds."""
    if config_mod.smoke():
        cfg.epochs = min(cfg.epochs, 2)
        cfg.warmup_epochs = min(cfg.warmup_epochs, 1)
        if cfg.data_set == "synthetic":
            cfg.num_samples = min(cfg.num_samples or 256, 256)
        cfg.batch_size = min(cfg.batch_size, 32)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg = config_mod.resolve(argv)
    apply_smoke(cfg)
    try:
        if cfg.preset == "demo" and cfg.distillation_type != "none" and not cfg.teacher_path:
            run_demo(cfg)
        else:
            run(cfg)
    except (UsageError, CheckpointError, NonFiniteLossError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last complete checkpoint is in the output directory (--resume auto continues)",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
