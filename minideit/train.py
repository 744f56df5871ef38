"""``python -m minideit.train``: DeiT's training procedure on a laptop CPU, one GPU, or many through torchrun.

With no arguments it runs the demo: the paper's recipe in miniature on synthetic data (a small RegNetY teacher, then
a small DeiT⚗ with hard distillation, then a table of every head's accuracy). ``--full-imagenet`` is Table 9.

The order of things in :func:`run` is the order of a run: ``check_inputs`` (every value, the data, the teacher file,
the checkpoint to resume; nothing is written and no model built before it passes, so a typo costs a second and
never damages a run), ``start_output`` (the first writes), ``build_run`` (the :class:`Run`: student, teacher,
optimiser, schedule, EMA), ``restore`` (every state of a checkpoint), then ``train``: epochs of train → evaluate →
log → checkpoint (``run_epoch``), the training step itself being ``engine.train_one_epoch``. Stop signals
(SIGTERM, SIGUSR1, Ctrl-C) end the step, write a checkpoint and leave with 128 + the signal's number.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from . import config as config_mod
from .checkpoint import (link_atomic, load_training_checkpoint, payload_checksum, remove_stale_temporaries,
                         rng_state, save_atomic, set_rng_state)
from .config import TrainConfig
from .curves import write_curves
from .data.datasets import UnreadableDataError
from .distributed import (DistInfo, all_gather_object, all_reduce_max, barrier, cleanup, init_distributed,
                          resolve_device)
from .engine import EpochTotals, NonFiniteLossError, evaluate, train_one_epoch
from .losses import DistillationLoss, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from .models import DEIT_CONFIGS, check_model_name, create_model, has_attention
from .optim import CosineWarmupSchedule, ModelEma, OfficialEpochSchedule, build_optimizer, scaled_lr
from .regnet import prepare_teacher
from .teacher_cache import RememberingTeacher
from .threads import choose_threads, set_threads
from .weights import CheckpointError, adapt_pos_embed, check_compatible, resolve_state_dict


class UsageError(ValueError):
    """Bad input found before training starts; the message is the one line the user sees."""


class RunError(RuntimeError):
    """The run cannot go on (a full disk, data that cannot be read); the message is one line."""


class RunStopped(Exception):
    """A signal stopped the run after a checkpoint was written; main exits with 128 + the signal's number."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


# ----------------------------------------------------------------------------------------------------------------
# 1. Checks that run before anything is written or any model is built
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


# (setting, lowest, highest, lowest allowed itself, highest allowed itself): the numbers a run accepts.
RANGES = [
    ("lr", 0, None, False, None), ("warmup_lr", 0, None, True, None), ("min_lr", 0, None, True, None),
    ("weight_decay", 0, None, True, None), ("momentum", 0, 1, True, True), ("clip_grad", 0, None, True, None),
    ("drop_path", 0, 1, True, False), ("smoothing", 0, 1, True, False), ("reprob", 0, 1, True, True),
    ("color_jitter", 0, None, True, None), ("mixup", 0, None, True, None), ("cutmix", 0, None, True, None),
    ("mixup_prob", 0, 1, True, True), ("mixup_switch_prob", 0, 1, True, True),
    ("model_ema_decay", 0, 1, True, True), ("distillation_alpha", 0, 1, True, True),
    ("distillation_tau", 0, None, False, None),
    ("batch_size", 1, None, True, None), ("accum_steps", 1, None, True, None), ("num_workers", 0, None, True, None),
    ("warmup_epochs", 0, None, True, None), ("log_every", 1, None, True, None), ("eval_every", 1, None, True, None),
    ("save_every_steps", 0, None, True, None), ("max_nonfinite", 0, None, True, None),
    ("global_batch_size", 0, None, True, None), ("num_samples", 0, None, True, None),
    ("val_samples", 0, None, True, None),
    ("input_size", 1, None, True, None), ("attn_init_std", 0, None, False, None), ("threads", 0, None, True, None), ("data_seed", -1, None, True, None),
]


def check_ranges(cfg: TrainConfig) -> None:
    """One line for a number outside what the recipe can use (NaN included)."""
    for name, lo, hi, lo_ok, hi_ok in RANGES:
        value, flag = getattr(cfg, name), "--" + name.replace("_", "-")
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{flag} must be a finite number, got {value}")
        below = value < lo if lo_ok else value <= lo
        above = hi is not None and (value > hi if hi_ok else value >= hi)
        if below or above:
            high = f" and {'<=' if hi_ok else '<'} {hi}" if hi is not None else ""
            raise UsageError(f"{flag} must be {'>=' if lo_ok else '>'} {lo}{high}, got {value}")
    if cfg.epochs <= 0 and not cfg.eval:
        raise UsageError(f"--epochs must be positive, got {cfg.epochs}")


def check_output_dir(cfg: TrainConfig) -> None:
    """The output folder must be a folder we can write to (it need not exist yet)."""
    out = Path(cfg.output_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output-dir {out} is a file, not a folder; pass a folder (it is created if needed)")
    existing = next(p for p in [out, *out.parents] if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--output-dir {out} cannot be written ({existing} is read-only or not yours); "
                         f"pass a folder on a writable disk")


def validate(cfg: TrainConfig, world_size: int) -> None:
    """Raise UsageError (one line) for anything wrong in the configuration; touches no model weights."""
    check_ranges(cfg)
    for name in filter(None, [cfg.model, cfg.teacher_model if cfg.distillation_type != "none" else ""]):
        try:
            check_model_name(name)
        except ValueError as e:
            raise UsageError(str(e)) from None
    if cfg.model in DEIT_CONFIGS and cfg.input_size % DEIT_CONFIGS[cfg.model].patch_size:
        p = DEIT_CONFIGS[cfg.model].patch_size
        raise UsageError(f"--input-size {cfg.input_size} is not divisible by the patch size {p} of {cfg.model}; "
                         f"use a multiple of {p} such as {round(cfg.input_size / p) * p or p}")
    if cfg.attn_init_std != TrainConfig.attn_init_std and not has_attention(cfg.model):
        raise UsageError(f"--attn-init-std sets a DeiT's attention at initialisation; {cfg.model} has none "
                         f"(leave it at {TrainConfig.attn_init_std} or pick a deit_* --model)")
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
    from .data.synthetic import STYLES
    if cfg.synthetic_style not in STYLES:  # a config file or --set can name any string; the flag has choices
        raise UsageError(f"--synthetic-style {cfg.synthetic_style!r} is not one of {', '.join(STYLES)}")
    check_output_dir(cfg)
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


def check_data(cfg: TrainConfig, train_set, train_sampler, accum: int) -> None:
    """The data can feed at least one optimiser step per epoch, and some of its images can be read."""
    per_step = cfg.batch_size * accum
    if train_sampler.num_samples < per_step:
        raise UsageError(f"an epoch has {train_sampler.num_samples} training images per process but one optimiser "
                         f"step needs {per_step} (--batch-size {cfg.batch_size} × {accum} accumulation steps); "
                         f"lower --batch-size (or --accum-steps / --global-batch-size)")
    if hasattr(train_set, "load"):  # files on disk: try a few, spread over the set, before building anything
        n = len(train_set)
        tried, reasons = sorted({i * n // 8 for i in range(8)}), []
        for i in tried:
            try:
                train_set.load(i)
                return
            except Exception as e:
                reason = (str(e).strip().splitlines() or [""])[0][:100]
                reasons.append(f"{train_set.samples[i][0]} ({type(e).__name__}{': ' + reason if reason else ''})")
        raise UsageError(f"none of the {len(tried)} training images tried in {train_set.root} could be read "
                         f"(first: {reasons[0]}); the data is damaged or not images: re-run the data_scripts "
                         f"preparation")


def check_resume(ckpt: dict, path: str, cfg: TrainConfig, num_classes: int) -> None:
    """A resumed run must be the same network: same model, input size and class count (--finetune changes them)."""
    args = ckpt.get("args") or {}
    if args.get("model", cfg.model) != cfg.model:
        raise UsageError(f"{path} is a checkpoint of {args.get('model')}, not of --model {cfg.model}; "
                         f"pass the same --model or another --output-dir")
    differences = []
    if args.get("input_size", cfg.input_size) != cfg.input_size:
        differences.append(f"input size {args['input_size']} (this run: --input-size {cfg.input_size})")
    head = next((ckpt["model"][k] for k in ("head.weight", "head.fc.weight") if k in ckpt["model"]), None)
    if head is not None and head.shape[0] != num_classes:
        differences.append(f"{head.shape[0]} classes (this run's data: {num_classes})")
    if differences:
        raise UsageError(f"{path} was trained with {' and '.join(differences)}; --resume continues a run unchanged; "
                         f"to train on from it with another input size or class count, start a new --output-dir "
                         f"with --finetune {path}")


def find_resume(cfg: TrainConfig) -> str:
    if cfg.resume == "auto":
        candidate = Path(cfg.output_dir) / "checkpoint.pth"
        return str(candidate) if candidate.is_file() else ""
    return cfg.resume


def load_resume(path: str, cfg: TrainConfig) -> dict:
    best = Path(path).with_name("best_checkpoint.pth")
    fallback = str(best) if best.is_file() and Path(path).name != best.name else ""
    try:
        return load_training_checkpoint(path, fallback=fallback)
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None


@dataclass
class Plan:
    """What the checks found out, handed to the build so that nothing is read twice."""
    num_classes: int
    accum: int
    global_batch: int
    lr: float
    data: tuple  # train_set, val_set, train_sampler, val_sampler
    teacher_state: dict | None = None
    ckpt: dict | None = None
    resume_path: str = ""


def check_inputs(cfg: TrainConfig, dist: DistInfo) -> Plan:
    """Every check, in the order a user would fix things; raises UsageError. Writes nothing, builds no model."""
    validate(cfg, dist.world_size)
    num_classes = num_classes_of(cfg)
    accum = accumulation(cfg, dist.world_size)
    global_batch = cfg.batch_size * dist.world_size * accum
    try:  # library checks (a bad --aa string, an unreadable dataset file) say what is wrong in one line
        data = build_data(cfg, dist)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not cfg.eval:
        check_data(cfg, data[0], data[2], accum)
    lr = cfg.lr if cfg.unscale_lr else scaled_lr(cfg.lr, global_batch)
    plan = Plan(num_classes, accum, global_batch, lr, data)
    if cfg.distillation_type != "none" and cfg.teacher_path:
        plan.teacher_state = check_weights_file(cfg.teacher_model, cfg.teacher_path, num_classes, cfg.input_size,
                                                "--teacher-path", model_overrides(cfg.teacher_model, cfg.input_size))
    plan.resume_path = find_resume(cfg)
    if plan.resume_path:
        plan.ckpt = load_resume(plan.resume_path, cfg)
        check_resume(plan.ckpt, plan.resume_path, cfg, num_classes)
    return plan


# ----------------------------------------------------------------------------------------------------------------
# 2. Data, models, optimiser
# ----------------------------------------------------------------------------------------------------------------
def accumulation(cfg: TrainConfig, world_size: int) -> int:
    """Micro-steps per optimiser step: derived from --global-batch-size when given (validated to divide)."""
    if cfg.global_batch_size:
        return cfg.global_batch_size // (cfg.batch_size * world_size)
    return cfg.accum_steps


def synthetic_seed(cfg: TrainConfig) -> int:
    """The seed the synthetic images are drawn from: --data-seed, or --seed when it is -1."""
    return cfg.data_seed if cfg.data_seed >= 0 else cfg.seed


def build_data(cfg: TrainConfig, dist: DistInfo):
    from .data.datasets import build_dataset
    from .data.samplers import EvalSampler, RASampler
    from .data.transforms import build_transform
    synthetic = {}
    if cfg.data_set == "synthetic":
        synthetic = dict(img_size=cfg.input_size, seed=synthetic_seed(cfg), style=cfg.synthetic_style)
    train_kwargs = dict(synthetic, num_samples=cfg.num_samples or None) if synthetic else {}
    val_size = 256 if config_mod.smoke() else cfg.val_samples or None  # None: the generator's default, 1,000
    val_kwargs = dict(synthetic, num_samples=val_size) if synthetic else {}
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


def sample_seed(seed: int, epoch: int, rank: int, position: int) -> int:
    """The seed of the `position`-th sample of an epoch on process `rank` (the trailing 1 keeps these streams
    apart from the loader's per-worker seeds, which have four entries)."""
    return int(np.random.SeedSequence([seed, epoch, rank, position, 1]).generate_state(1)[0])


class SeededSampler(torch.utils.data.Sampler):
    """Wraps the training sampler to yield (index, seed): every image's augmentation is a function of
    (seed, epoch, rank, position in the epoch) alone, not of which loader worker happens to load it or what that
    worker loaded before. This is what makes a resume in the middle of an epoch exact, with any --num-workers."""

    def __init__(self, sampler, seed: int, rank: int):
        self.sampler, self.seed, self.rank = sampler, seed, rank

    def __iter__(self):
        for position, index in enumerate(self.sampler, self.sampler.start):
            yield index, sample_seed(self.seed, self.sampler.epoch, self.rank, position)

    def __len__(self) -> int:
        return len(self.sampler)


class SeededDataset(torch.utils.data.Dataset):
    """Loads ``dataset[index]`` with Python's, numpy's and torch's CPU generators seeded from the sampler's seed.

    In the training process itself (--num-workers 0) the generators are put back afterwards, so drop path draws
    the same numbers whatever the number of workers. In a loader worker the stop signals are ignored: the main
    process decides when to stop, and a worker killed by SIGTERM would abort the step it is finishing.
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        return self.__getitems__([item])[0]

    def __getitems__(self, items: list[tuple[int, int]]) -> list:
        """A whole batch (the DataLoader calls this when it exists). Why not image by image: saving and restoring
        the three generators costs ~0.2 ms, which per image was ~8% of a demo teacher's epoch; per batch the
        draws are the same, because nothing else draws between two images of one batch."""
        in_worker = torch.utils.data.get_worker_info() is not None
        if in_worker:
            ignore_stop_signals()
        saved = None if in_worker else (random.getstate(), np.random.get_state(), torch.get_rng_state())
        try:
            return [self.seeded(index, seed) for index, seed in items]
        finally:
            if saved is not None:
                random.setstate(saved[0])
                np.random.set_state(saved[1])
                torch.set_rng_state(saved[2])

    def seeded(self, index: int, seed: int):
        random.seed(seed)
        np.random.seed(seed)
        torch.random.default_generator.manual_seed(seed)  # the CPU generator only: CUDA's serves drop path
        return self.dataset[index]


def make_loader(cfg: TrainConfig, dataset, sampler, epoch: int, train: bool, dist: DistInfo):
    """One epoch's loader. Training images are seeded one by one (SeededSampler/SeededDataset); the workers' own
    seeds, from (seed, epoch, rank, worker), then only matter to a transform that draws from elsewhere."""
    from .data.loader import build_loader
    if train:
        dataset, sampler = SeededDataset(dataset), SeededSampler(sampler, cfg.seed, dist.rank)
    return build_loader(dataset, cfg.batch_size if train else cfg.batch_size * 2, sampler, cfg.num_workers,
                        cfg.seed, epoch, drop_last=train, pin_memory=dist.device.type == "cuda", rank=dist.rank)


def build_student(cfg: TrainConfig, num_classes: int, device: torch.device) -> nn.Module:
    kwargs = model_overrides(cfg.model, cfg.input_size, cfg.model_overrides)
    if cfg.model in DEIT_CONFIGS:
        kwargs["img_size"] = cfg.input_size
        kwargs.setdefault("attn_init_std", cfg.attn_init_std)
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


def build_teacher(cfg: TrainConfig, num_classes: int, state: dict | None, device: torch.device, rank: int = 0,
                  world_size: int = 1) -> nn.Module | None:
    if cfg.distillation_type == "none" or state is None:
        return None
    teacher = create_model(cfg.teacher_model, num_classes=num_classes,
                           **model_overrides(cfg.teacher_model, cfg.input_size))
    teacher.load_state_dict(adapt_pos_embed(teacher, state))
    # frozen, eval; bf16 weights on CUDA with --amp bf16; compiled with the student under --compile
    teacher = prepare_teacher(teacher, device, cfg.amp, compile=cfg.compile)
    if cfg.teacher_cache:  # speed only: students of the same batches share the teacher's answers
        # each process of a multi-process run sees its own share of the batches, so it keeps its own file
        path = cfg.teacher_cache + (f".rank{rank}" if world_size > 1 else "")
        teacher = RememberingTeacher(teacher, path)
    return teacher


def build_criterion(cfg: TrainConfig, teacher: nn.Module | None, mixup_active: bool) -> DistillationLoss:
    if mixup_active:
        base = SoftTargetCrossEntropy()  # label smoothing is folded into the mixed soft targets
    elif cfg.smoothing > 0:
        base = LabelSmoothingCrossEntropy(cfg.smoothing)
    else:
        base = nn.CrossEntropyLoss()
    return DistillationLoss(base, teacher, cfg.distillation_type, cfg.distillation_alpha, cfg.distillation_tau,
                            cfg.kl_normalisation)


def build_schedule(cfg: TrainConfig, optimizer, lr: float, steps_per_epoch: int) -> CosineWarmupSchedule:
    """Per-iteration warm-up + cosine (default), or the official per-epoch one with its lag (--sched-update epoch)."""
    total, warmup = cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch
    if cfg.sched_update == "epoch":
        return OfficialEpochSchedule(optimizer, lr, total, warmup, cfg.warmup_lr, cfg.min_lr, cfg.sched,
                                     steps_per_epoch=steps_per_epoch)
    return CosineWarmupSchedule(optimizer, lr, total, warmup, cfg.warmup_lr, cfg.min_lr, cfg.sched)


@dataclass
class Run:
    """The parts of one training run, built once by :func:`build_run` and handed whole to each epoch."""
    cfg: TrainConfig
    dist: DistInfo
    plan: Plan
    model: nn.Module  # the plain student: state dicts, evaluation, EMA
    train_model: nn.Module  # the same student under DDP and/or torch.compile: what the training step calls
    teacher: nn.Module | None
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: CosineWarmupSchedule
    ema: ModelEma | None
    scaler: torch.amp.GradScaler | None
    mixup: object | None  # Mixup/CutMix, whose generator state a checkpoint keeps
    batch_aug: object | None  # what the step applies to a batch: mixup, or with --gpu-aug erasing + mixup
    val_loader: object
    signals: "StopSignals"
    best_acc1: float = 0.0
    curves_drawn_at: float = -math.inf  # time.monotonic() of the last curves.png (see draw_curves_now)

    @property
    def out(self) -> Path:
        return Path(self.cfg.output_dir)


CURVES_EVERY_S = 30.0


def draw_curves_now(r: Run, last: bool) -> bool:
    """Redraw curves.png after the first evaluation, the last epoch's, and otherwise at most every
    ``CURVES_EVERY_S`` seconds: drawing takes ~1.5 s, which after every epoch of the demo's 2-second-a-side
    evaluations was ~7% of its time."""
    now = time.monotonic()
    if last or now - r.curves_drawn_at >= CURVES_EVERY_S:
        r.curves_drawn_at = now
        return True
    return False


def build_run(cfg: TrainConfig, dist: DistInfo, plan: Plan, signals: "StopSignals") -> Run:
    """Student (seeded: its initialisation is a function of --seed), teacher, loss, optimiser, schedule, EMA."""
    from .data.mixup import Mixup
    device = dist.device
    torch.manual_seed(cfg.seed)
    try:
        model = build_student(cfg, plan.num_classes, device)
        teacher = build_teacher(cfg, plan.num_classes, plan.teacher_state, device, dist.rank, dist.world_size)
    except ValueError as e:
        raise UsageError(str(e)) from None
    mixup = None
    if cfg.mixup > 0 or cfg.cutmix > 0:
        mixup = Mixup(cfg.mixup, cfg.cutmix, cfg.mixup_prob, cfg.mixup_switch_prob, cfg.smoothing,
                      plan.num_classes, seed=cfg.seed + dist.rank)
    batch_aug = mixup
    if cfg.gpu_aug:  # uint8 batches: normalise, erase each image, then Mixup, all on the device
        from .data.gpu_aug import DeviceAugment
        batch_aug = DeviceAugment(cfg.reprob, mixup=mixup)
    optimizer = build_optimizer(model, cfg.opt, lr=plan.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                                fused=True, decay_dist_token=cfg.decay_dist_token)
    steps_per_epoch = max(1, plan.data[2].num_samples // cfg.batch_size // plan.accum)  # >= 1 checked unless --eval
    schedule = build_schedule(cfg, optimizer, plan.lr, steps_per_epoch)
    ema = ModelEma(model, cfg.model_ema_decay) if cfg.model_ema else None
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and cfg.amp == "fp16" else None
    train_model = model
    if dist.distributed:
        unused = getattr(model, "distilled", False) and cfg.distillation_type == "none"
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                          else None, find_unused_parameters=unused)
    if cfg.compile:
        train_model = torch.compile(train_model)
    val_loader = make_loader(cfg, plan.data[1], plan.data[3], 0, False, dist)
    return Run(cfg, dist, plan, model, train_model, teacher, build_criterion(cfg, teacher, mixup is not None),
               optimizer, schedule, ema, scaler, mixup, batch_aug, val_loader, signals)


# ----------------------------------------------------------------------------------------------------------------
# 3. Checkpoints, and where a run starts
# ----------------------------------------------------------------------------------------------------------------
def save_checkpoint(r: Run, path: Path, epoch: int, step: int | None, totals: EpochTotals | None = None) -> None:
    """The official keys (model, optimizer, lr_scheduler, epoch, model_ema, scaler, args) plus what exact resume
    needs: every process's random states, the Mixup generator, where in the epoch we are and the epoch's sums so
    far; and a checksum of all of it.

    ``step=None``: epoch ``epoch`` is finished. Otherwise ``step`` optimiser steps into it (``--save-every-steps``
    or a stop signal), with ``totals`` the epoch's counters so far."""
    rngs = all_gather_object(rng_state())  # every rank's; only rank 0 writes
    partial = all_gather_object(totals.state_dict() if totals is not None else None)
    if not r.dist.is_main:
        return
    ckpt = {
        "model": r.model.state_dict(),
        "optimizer": r.optimizer.state_dict(),
        "lr_scheduler": r.schedule.state_dict(),
        "epoch": epoch if step is None else epoch - 1,  # the last *completed* epoch, as in the official code
        "model_ema": r.ema.state_dict() if r.ema is not None else None,
        "scaler": r.scaler.state_dict() if r.scaler is not None else None,
        "args": config_mod.to_dict(r.cfg),
        "rng": rngs,
        "mixup": r.mixup.state_dict() if r.mixup is not None else None,
        "sampler": {"epoch": epoch, "steps_done": step},
        "epoch_totals": partial if step is not None else None,
        "best_acc1": r.best_acc1,
        "world_size": r.dist.world_size,
    }
    ckpt["payload_checksum"] = payload_checksum(ckpt)
    try:
        save_atomic(ckpt, path)
    except OSError as e:
        raise RunError(f"could not write {path}: {e.strerror or e}; the previous checkpoint is intact; free some "
                       f"space (or pass another --output-dir) and continue with --resume auto") from None


def promote_best(r: Run) -> None:
    """best_checkpoint.pth becomes a second name of the checkpoint just written (atomic; no copy)."""
    try:
        link_atomic(r.out / "checkpoint.pth", r.out / "best_checkpoint.pth")
    except OSError as e:
        raise RunError(f"could not write {r.out / 'best_checkpoint.pth'}: {e.strerror or e}; the previous best is "
                       f"intact; free some space and continue with --resume auto") from None


@dataclass
class Position:
    """Where training starts: the epoch, optimiser steps already done in it, and its counters so far."""
    epoch: int = 0
    step: int = 0
    totals: EpochTotals | None = None


def restore(r: Run, ckpt: dict) -> Position:
    """Load every state a checkpoint holds into the run's parts; the position to continue from."""
    r.model.load_state_dict(ckpt["model"])
    r.optimizer.load_state_dict(ckpt["optimizer"])
    r.schedule.load_state_dict(ckpt["lr_scheduler"])
    if r.ema is not None and ckpt.get("model_ema"):
        r.ema.load_state_dict(ckpt["model_ema"])
    if r.scaler is not None and ckpt.get("scaler"):
        r.scaler.load_state_dict(ckpt["scaler"])
    if r.mixup is not None and ckpt.get("mixup"):
        r.mixup.load_state_dict(ckpt["mixup"])
    r.best_acc1 = ckpt.get("best_acc1", 0.0)
    rank, world = r.dist.rank, r.dist.world_size
    rngs = ckpt.get("rng") or []
    if len(rngs) == world:  # another process count cannot continue exactly anyway
        set_rng_state(rngs[rank])
    where = ckpt.get("sampler") or {}
    if where.get("steps_done"):  # a mid-epoch checkpoint: continue inside that epoch
        partial = ckpt.get("epoch_totals") or []
        totals = EpochTotals.from_state(partial[rank], r.dist.device) if len(partial) == world else None
        return Position(where["epoch"], where["steps_done"], totals)
    return Position(ckpt["epoch"] + 1)


def trim_log(path: Path, last_epoch: int) -> None:
    """Drop log lines of epochs after the checkpoint (a kill between the log line and the checkpoint): the resumed
    run writes them again, so each epoch appears once."""
    if not path.is_file():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if json.loads(line).get("epoch", -1) <= last_epoch]
    if len(kept) != len(lines):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------------------------
# 4. Stop signals: a preempted job stops cleanly and continues exactly
# ----------------------------------------------------------------------------------------------------------------
STOP_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")


def ignore_stop_signals() -> None:
    for name in STOP_SIGNALS:
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, signal.SIG_IGN)


class StopSignals:
    """SIGTERM (SLURM or Kubernetes preempting the job), SIGUSR1 (``sbatch --signal=USR1@120``) and SIGINT (Ctrl-C)
    ask the run to stop. The handler only notes the signal; the loop finishes the step it is in, writes a
    checkpoint and leaves with 128 + the signal's number (143, 138, 130). A second Ctrl-C stops at once."""

    def __init__(self):
        self.received: int | None = None
        self.previous: dict = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for name in STOP_SIGNALS:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self.previous[sig] = signal.signal(sig, self._note)
        return self

    def _note(self, signum: int, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def requested(self, dist: DistInfo, step: int, every: int) -> bool:
        """Whether to stop now. Processes must stop at the same step, so under DDP they agree every ``every``
        steps (a tiny all-reduce where the loop already reads values back)."""
        if not dist.distributed:
            return self.received is not None
        if step % every:
            return False
        flag = torch.tensor(float(self.received or 0), device=dist.device)
        return all_reduce_max(flag).item() > 0

    def stopped(self, where: str) -> RunStopped:
        signum = self.received or signal.SIGTERM  # under DDP another process may have received it
        return RunStopped(signum, f"stopped by {signal.Signals(signum).name}: {where}; continue with --resume auto")


# ----------------------------------------------------------------------------------------------------------------
# 5. The run
# ----------------------------------------------------------------------------------------------------------------
def run(cfg: TrainConfig) -> dict:
    """Train (or with ``cfg.eval`` only evaluate) as configured; returns the last evaluation's figures."""
    try:
        dist = init_distributed(cfg.device)
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:
        return _run(cfg, dist)
    finally:
        cleanup()


def _run(cfg: TrainConfig, dist: DistInfo) -> dict:
    plan = check_inputs(cfg, dist)  # nothing is written before this passes
    threads = set_threads(cfg.threads or None, cfg.num_workers)  # why fewer than the cores: minideit/threads.py
    if dist.device.type == "cpu":
        say(dist, f"CPU threads: {threads} (--threads N to change)")
    with StopSignals() as signals:  # from the first write on, a signal stops the run cleanly
        start_output(cfg, dist, plan)
        r = build_run(cfg, dist, plan, signals)
        try:
            if cfg.eval:
                if plan.ckpt is not None:
                    r.model.load_state_dict(plan.ckpt["model"])
                return evaluate_only(r)
            start = Position()
            if plan.ckpt is not None:
                start = restore(r, plan.ckpt)
                say(dist, f"resumed from {plan.resume_path} at epoch {start.epoch}"
                    + (f", step {start.step}" if start.step else ""))
            return train(r, start)
        finally:
            if isinstance(r.teacher, RememberingTeacher):  # --teacher-cache: keep the answers, also of a stopped run
                r.teacher.save()
                say(dist, r.teacher.summary())


def say(dist: DistInfo, message: str) -> None:
    if dist.is_main:
        print(message)


def in_notebook() -> bool:
    """True inside a Jupyter kernel, where a configuration dump and a text progress bar would flood the cell."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def effective_config(cfg: TrainConfig, dist: DistInfo, plan: Plan) -> dict:
    """The configuration as it takes effect: resolved lr, batch, accumulation, and amp only where it applies."""
    amp = cfg.amp if dist.device.type == "cuda" else f"off ({dist.device.type.upper()})"
    return dict(config_mod.to_dict(cfg), amp=amp, resolved_lr=plan.lr, global_batch=plan.global_batch,
                accum_steps=plan.accum, world_size=dist.world_size, device=str(dist.device),
                num_classes=plan.num_classes)


def start_output(cfg: TrainConfig, dist: DistInfo, plan: Plan) -> None:
    """The first writes of a run, after every check: the folder, stale temporaries gone, config.json, and a log
    that ends at the checkpoint being resumed. In a notebook, one short line instead of the configuration."""
    if not dist.is_main:
        return
    out = Path(cfg.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for stale in remove_stale_temporaries(out):
            print(f"removed {stale.name}, left by an interrupted save")
        resolved = effective_config(cfg, dist, plan)
        if in_notebook():
            print(f"{'evaluating' if cfg.eval else 'training'} {cfg.model} on {cfg.data_set}"
                  + ("" if cfg.eval else f" for {cfg.epochs} epochs (settings in {out / 'config.json'})"))
        else:
            print("configuration: " + json.dumps(resolved, sort_keys=True))
        if not cfg.eval:
            tmp = out / ".config.json.tmp"
            tmp.write_text(json.dumps(resolved, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, out / "config.json")
            if plan.ckpt is not None:
                trim_log(out / "log.jsonl", plan.ckpt["epoch"])
    except OSError as e:
        raise RunError(f"could not write to --output-dir {out}: {e.strerror or e}") from None


def evaluate_only(r: Run) -> dict:
    stats = evaluate(r.model, r.val_loader, r.dist.device, r.teacher, r.cfg.amp)
    if r.dist.is_main:
        print_table({r.cfg.model: stats})
    return stats


def train(r: Run, start: Position) -> dict:
    """Epochs from ``start`` to the end: train → evaluate → log → checkpoint each."""
    stats: dict = {}
    for epoch in range(start.epoch, r.cfg.epochs):
        here = epoch == start.epoch
        stats = run_epoch(r, epoch, start.step if here else 0, start.totals if here else None)
        if r.signals.received is not None:  # it came during evaluation or the save: that checkpoint is complete
            raise r.signals.stopped(f"wrote {r.out / 'checkpoint.pth'} at the end of epoch {epoch}")
    if not stats:  # nothing left to train (a finished run resumed): report its evaluation
        stats = evaluate(r.model, r.val_loader, r.dist.device, r.teacher, r.cfg.amp)
        stats = {"epoch": start.epoch - 1, **{f"test_{k}": v for k, v in stats.items()}}
    return stats


def progress_bar(r: Run, total: int, epoch: int):
    """One bar per epoch that disappears when done (leave=False); in a notebook only where ipywidgets can draw it
    (a text bar there would leave one line per update in the saved notebook)."""
    from tqdm.auto import tqdm
    quiet = not r.dist.is_main or (in_notebook() and importlib.util.find_spec("ipywidgets") is None)
    return tqdm(total=total, desc=f"epoch {epoch + 1}/{r.cfg.epochs}", disable=quiet, dynamic_ncols=True,
                leave=False)


def run_epoch(r: Run, epoch: int, start_step: int = 0, totals: EpochTotals | None = None) -> dict:
    """One epoch: train from ``start_step`` (after a mid-epoch resume), evaluate, log, checkpoint."""
    from .data.loader import seed_everything
    cfg, dist = r.cfg, r.dist
    train_set, sampler = r.plan.data[0], r.plan.data[2]
    sampler.set_epoch(epoch)
    sampler.set_start(start_step * cfg.batch_size * r.plan.accum)  # skip what a mid-epoch checkpoint already did
    if start_step == 0:  # drop path in epoch e draws from (seed, e, rank); a mid-epoch resume restored its state
        seed_everything(cfg.seed, epoch, dist.rank)
    if hasattr(train_set, "reset_failures"):
        train_set.reset_failures()
    loader = make_loader(cfg, train_set, sampler, epoch, True, dist)
    progress = progress_bar(r, len(loader), epoch)

    def after_step(step: int, totals: EpochTotals) -> bool:
        """Step checkpoints, and the stop a signal asked for (True), with this step's checkpoint written."""
        saved = bool(cfg.save_every_steps) and step % cfg.save_every_steps == 0
        if saved:
            save_checkpoint(r, r.out / "checkpoint.pth", epoch, step, totals)
        if r.signals.requested(dist, step, cfg.log_every):  # also a signal that came during that save
            if not saved:
                save_checkpoint(r, r.out / "checkpoint.pth", epoch, step, totals)
            return True
        return False

    try:
        log = train_one_epoch(r.train_model, r.criterion, loader, r.optimizer, r.schedule, device=dist.device,
                              mixup=r.batch_aug, ema=r.ema, scaler=r.scaler, amp=cfg.amp, accum_steps=r.plan.accum,
                              clip_grad=cfg.clip_grad, log_every=cfg.log_every, max_nonfinite=cfg.max_nonfinite,
                              progress=progress, after_step=after_step, start_step=start_step, totals=totals)
    except UnreadableDataError as e:  # re-raised from a worker, whose traceback DataLoader puts in the message
        raise RunError(last_line(e)) from None
    finally:
        progress.close()
    if "stopped_at_step" in log:
        raise r.signals.stopped(f"wrote {r.out / 'checkpoint.pth'} at epoch {epoch}, step {log['stopped_at_step']}")

    log = {"epoch": epoch, **log}
    evaluated = (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs
    if evaluated:  # --eval-every N skips the evaluation of other epochs (a few-minute run needs only the last)
        test = evaluate(r.model, r.val_loader, dist.device, r.teacher, cfg.amp)
        log.update({f"test_{k}": v for k, v in test.items()})
        if r.ema is not None:
            ema_stats = evaluate(r.ema.module, r.val_loader, dist.device, None, cfg.amp)
            log.update({f"ema_{k}": v for k, v in ema_stats.items() if k in ("acc1", "acc5")})
    if hasattr(train_set, "num_failures"):
        log["bad_images"] = int(train_set.num_failures())
    is_best = evaluated and log["test_acc1"] >= r.best_acc1
    r.best_acc1 = max(r.best_acc1, log.get("test_acc1", r.best_acc1))
    if dist.is_main:  # the log line first: a kill before the checkpoint repeats the epoch, and trim_log drops it
        with open(r.out / "log.jsonl", "a") as f:
            f.write(json.dumps(log) + "\n")
        if evaluated and draw_curves_now(r, last=epoch + 1 == cfg.epochs):
            write_curves(r.out)  # curves.png beside log.jsonl; prints a warning instead of raising
    save_checkpoint(r, r.out / "checkpoint.pth", epoch, None)
    if dist.is_main:
        if is_best:
            promote_best(r)
        print(epoch_line(log))
    barrier()
    return log


def last_line(e: BaseException) -> str:
    """An exception's own message, without the worker traceback DataLoader puts in front of it."""
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    text = lines[-1] if lines else type(e).__name__
    return text.split(": ", 1)[1] if text.startswith(type(e).__name__ + ":") else text


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
# 6. The demo: teacher, then student, then the table (paper §4–5 in miniature)
# ----------------------------------------------------------------------------------------------------------------
# The demo's teacher: its own training settings over the demo preset's. attn_init_std goes back to the default because
# the preset's 0.05 is a DeiT setting (q/k/v) and a RegNetY has no attention to start wider.
DEMO_TEACHER = dict(epochs=12, lr=2e-3, batch_size=64, warmup_epochs=1, weight_decay=0.05,
                    attn_init_std=TrainConfig.attn_init_std)
# The settings that decide whether a cached run is the run asked for (see trained_with).
REUSE_KEYS = ("model", "epochs", "seed", "num_samples", "batch_size", "data_set", "input_size", "lr",
              "synthetic_style", "data_seed", "attn_init_std")


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
    # A key the checkpoint lacks was written before the setting existed: its run had the setting's default.
    same = all(args.get(k, TrainConfig.__dataclass_fields__[k].default) == getattr(cfg, k) for k in keys)
    return same and (not finished or ckpt.get("epoch") == args.get("epochs", 0) - 1)


def run_demo(cfg: TrainConfig) -> dict:
    out = Path(cfg.output_dir)
    teacher_cfg = dataclasses.replace(cfg, model=cfg.teacher_model, distillation_type="none", teacher_path="",
                                      output_dir=str(out / "teacher"), resume="auto", **DEMO_TEACHER)
    if config_mod.smoke():
        teacher_cfg.epochs = cfg.epochs
    # Speed only, the same teacher: regnety_002's small grouped convolutions leave the cores idle part of each step,
    # and one loader worker preparing the next batch beside the threads a run without workers would use fills that
    # time (2-core CPU: a teacher epoch as a whole process 0.92x the time, median of three interleaved pairs;
    # book/results/development.md, run 40). The loader's draws depend on the seed, epoch and image, not on the
    # worker count, so the weights are those of a run without the worker (the notebooks train it without one).
    # (A bad --threads is passed on as it is, for run()'s checks to refuse with one line.)
    teacher_cfg.num_workers, teacher_cfg.threads = 1, cfg.threads or choose_threads(None, num_workers=0)
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
    # Speed only, the same student: on a CPU the teacher's answers are kept by batch (teacher_cache.py), so the
    # validation images, the same every epoch, go through the teacher once instead of ten times (the teacher reads
    # 1,000 images in a second or two), and a second demo with this teacher reads every training batch's answers back
    # too. Not on a GPU: there each batch would be copied to the host to be hashed, a sync a step, to save a forward
    # pass that costs little. (The teacher's run above has already checked --device.)
    on_cpu = resolve_device(cfg.device).type == "cpu"
    answers = cfg.teacher_cache or (str(out / "teacher" / "answers.pt") if on_cpu else "")
    student_cfg = dataclasses.replace(cfg, teacher_path=str(previous), teacher_cache=answers)
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
# 7. Command line
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
    """The command line: 0 when the run finished, 2 with one ``error:`` line for bad input or a run that cannot go
    on, 128 + N after signal N stopped the run with a checkpoint written (130 Ctrl-C, 138 SIGUSR1, 143 SIGTERM)."""
    argv = sys.argv[1:] if argv is None else argv
    cfg = config_mod.resolve(argv)
    apply_smoke(cfg)
    try:
        if cfg.preset == "demo" and cfg.distillation_type != "none" and not cfg.teacher_path:
            run_demo(cfg)
        else:
            run(cfg)
    except (UsageError, RunError, CheckpointError, NonFiniteLossError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunStopped as e:
        print(str(e), file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("interrupted: the last complete checkpoint is in the output directory (--resume auto continues)",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
