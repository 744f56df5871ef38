"""How fast one DeiT⚗ training step runs: ``python -m minideit.benchmark train``.

``train`` times the step that ``python -m minideit.train`` runs (engine.train_one_epoch on a batch already on the
device): Mixup/CutMix, student forward + backward, teacher forward without gradients, hard DistillationLoss
(paper §4, Eq. 3), fused AdamW, per-step schedule. It also times the parts alone (student forward + backward,
teacher forward, optimiser step) and, when ``timm`` is importable, the same step with timm's models at the same
settings, side by side. (``model``, forward-only inference as in the paper's Table 1, is benchmark_model.py;
``loader`` is benchmark_loader.py; FLOP/MFU arithmetic and timers are perf.py.)

Model FLOP utilisation (MFU) = achieved FLOP/s / the device's dense bf16 peak. One multiply-accumulate (MAC) is
2 FLOPs and a backward pass costs about twice a forward, so one image costs 2·3·MACs(student) + 2·MACs(teacher).

    python -m minideit.benchmark train --model deit_tiny_distilled_patch16_224 --teacher regnety_002 --json t.json
    python -m minideit.benchmark model --model deit_small_patch16_224 deit_base_patch16_224 --json m.json

On a GPU machine, issue 6's measurements, most important first (not yet run on a GPU: expect minutes per
command, compilation included; the timm columns appear where timm is installed; results in bench/):

    mkdir -p bench
    python -m minideit.benchmark train --compile --model deit_small_distilled_patch16_224 --json bench/train_s.json
    python -m minideit.benchmark train --compile --model deit_base_distilled_patch16_224 \
        deit_tiny_distilled_patch16_224 --json bench/train_b_ti.json
    python -m minideit.benchmark loader --workers 16 --batch-size 256 --json bench/loader.json
    python -m minideit.benchmark loader --workers 16 --batch-size 256 --gpu-aug --json bench/loader_uint8.json
    python -m minideit.benchmark train --compile --channels-last --no-timm \
        --model deit_small_distilled_patch16_224 --json bench/train_s_channels_last.json
    python -m minideit.benchmark model --json bench/model.json

Goals on one H200 (issue 6): DeiT-S⚗ + RegNetY-16GF step >= 4,450 img/s and >= 1.10x timm; MFU >= 40% (B),
>= 30% (S); the loader at least as fast as the step.
"""
from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from minideit.data.mixup import Mixup
from minideit.engine import autocast, train_one_epoch
from minideit.flops import count_flops
from minideit.losses import DistillationLoss, SoftTargetCrossEntropy
from minideit.models import DEIT_CONFIGS, create_model
from minideit.optim import CosineWarmupSchedule, build_optimizer
from minideit.regnet import prepare_teacher
from minideit.tools.bench.common import (achieved_tflops, add_common_flags, check_common, device_name,
                                         flops_per_image, free_memory, largest_batch, mfu, pct, peak_memory_mb,
                                         peak_tflops_of, projected_hours, report, runs_without_oom,
                                         seconds_per_call)

STUDENTS = [f"deit_{s}_distilled_patch16_224" for s in ("tiny", "small", "base")]


# ---- the models: ours, or timm's at the same settings ------------------------------------------------------

def build_pair(family: str, student: str, teacher: str, input_size: int) -> tuple[nn.Module, nn.Module]:
    """(student with stochastic depth 0.1 as in Table 9, teacher) for 'minideit' or 'timm', both 1000 classes."""
    size = {"img_size": input_size} if student in DEIT_CONFIGS else {}
    if family == "minideit":
        return create_model(student, drop_path_rate=0.1, **size), create_model(teacher)
    timm = importlib.import_module("timm")
    s = timm.create_model(student, drop_path_rate=0.1, **size)
    if hasattr(s, "set_distilled_training"):  # timm returns the averaged logits in training unless told
        s.set_distilled_training(True)
    return s, timm.create_model(teacher)


def timm_available() -> bool:
    try:
        importlib.import_module("timm")
        return True
    except ImportError:
        return False


# ---- the training step and its parts -----------------------------------------------------------------------

@dataclass
class StepSetup:
    """Everything one training step touches, built as train.py builds it (hard distillation, Mixup, fused AdamW)."""
    student: nn.Module  # what the step calls (compiled or not)
    criterion: DistillationLoss
    optimizer: torch.optim.Optimizer
    schedule: CosineWarmupSchedule
    mixup: Mixup
    scaler: torch.amp.GradScaler | None
    device: torch.device
    amp: str
    input_size: int

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.randn(size, 3, self.input_size, self.input_size, device=self.device)
        return images, torch.randint(0, 1000, (size,), device=self.device)


def build_setup(student: nn.Module, teacher: nn.Module, device: torch.device, amp: str, input_size: int,
                channels_last: bool = False) -> StepSetup:
    student = student.to(device).train()
    teacher = prepare_teacher(teacher, device, amp, channels_last=channels_last)
    criterion = DistillationLoss(SoftTargetCrossEntropy(), teacher, "hard", alpha=0.5, tau=1.0)
    optimizer = build_optimizer(student, "adamw", lr=1e-3, weight_decay=0.05, fused=True)
    schedule = CosineWarmupSchedule(optimizer, 1e-3, total_steps=10**6, warmup_steps=10**4)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and amp == "fp16" else None
    return StepSetup(student, criterion, optimizer, schedule, Mixup(num_classes=1000), scaler, device, amp,
                     input_size)


def run_steps(setup: StepSetup, batch: tuple[torch.Tensor, torch.Tensor], n: int) -> None:
    """n full training steps through the training loop itself (it reads the loss back only at the end)."""
    train_one_epoch(setup.student, setup.criterion, [batch] * n, setup.optimizer, setup.schedule,
                    device=setup.device, mixup=setup.mixup, scaler=setup.scaler, amp=setup.amp,
                    log_every=10**9, max_nonfinite=0)


def step_fits(setup: StepSetup, size: int) -> bool:
    """Whether two full steps at batch `size` run without running out of memory."""
    def cleanup() -> None:
        setup.optimizer.zero_grad(set_to_none=True)
        setup.optimizer.found_inf = None  # the loop sets it before each step; an OOM may have left it behind
        free_memory(setup.device)
    return runs_without_oom(lambda: run_steps(setup, setup.batch(size), 2), cleanup)


def time_full_step(setup: StepSetup, batch, steps: int, warmup: int) -> float:
    """Seconds per full step; one train_one_epoch call of `steps` batches, after one of `warmup` batches."""
    if warmup:
        run_steps(setup, batch, warmup)
    return seconds_per_call(lambda: run_steps(setup, batch, steps), 1, 0, setup.device) / steps


def time_parts(setup: StepSetup, batch, steps: int, warmup: int) -> dict[str, float]:
    """Seconds per call of each part alone: student forward + backward, teacher forward, optimiser step."""
    images, labels = batch
    soft_targets = setup.mixup(images, labels)[1]
    teacher_labels = torch.randint(0, 1000, labels.shape, device=setup.device)
    base = SoftTargetCrossEntropy()

    def student_fwd_bwd():
        with autocast(setup.device, setup.amp):
            out = setup.student(images)
            cls_logits, dist_logits = out if isinstance(out, tuple) else (out, out)
            loss = 0.5 * base(cls_logits, soft_targets) + 0.5 * F.cross_entropy(dist_logits, teacher_labels)
        loss.backward()

    def teacher_fwd():
        with autocast(setup.device, setup.amp):
            setup.criterion.teacher_logits(images)

    def optimizer_step():
        setup.optimizer.step()
        setup.schedule.step()

    def student_fresh_grads():
        student_fwd_bwd()
        setup.optimizer.zero_grad(set_to_none=True)  # as in the real step: gradients are new tensors each time

    times = {"student_fwd_bwd": seconds_per_call(student_fresh_grads, steps, warmup, setup.device),
             "teacher_fwd": seconds_per_call(teacher_fwd, steps, warmup, setup.device)}
    student_fwd_bwd()  # leaves gradients for the optimiser to apply
    times["optimizer_step"] = seconds_per_call(optimizer_step, steps, warmup, setup.device)
    setup.optimizer.zero_grad(set_to_none=True)
    return times


def measure_train(family: str, student_name: str, teacher_name: str, args, device: torch.device,
                  batch_size: int | None, macs: tuple[int, int], peak: float | None) -> dict:
    """One row of the `train` table: full-step and per-part rates, MFU, memory, 300-epoch time."""
    free_memory(device)
    student, teacher = build_pair(family, student_name, teacher_name, args.input_size)
    setup = build_setup(student, teacher, device, args.amp, args.input_size, args.channels_last)
    if batch_size is None:  # the largest that fits, searched in eager mode (compiled code needs no more memory)
        batch_size = largest_batch(lambda b: step_fits(setup, b), start=64, limit=args.max_batch_size)
        if batch_size == 0:
            raise ValueError(f"{student_name} + {teacher_name} do not fit in memory even at batch 8")
    if args.compile:
        setup.student = torch.compile(setup.student)
        setup.criterion.teacher = torch.compile(setup.criterion.teacher)
    free_memory(device)
    batch = setup.batch(batch_size)
    step_s = time_full_step(setup, batch, args.steps, args.warmup)
    parts = time_parts(setup, batch, args.steps, args.warmup)
    img_s = batch_size / step_s
    s_macs, t_macs = macs
    row = {
        "family": family, "student": student_name, "teacher": teacher_name, "batch_size": batch_size,
        "step_ms": 1000 * step_s, "step_img_per_s": img_s,
        "student_fwd_bwd_img_per_s": batch_size / parts["student_fwd_bwd"],
        "teacher_fwd_img_per_s": batch_size / parts["teacher_fwd"],
        "optimizer_step_ms": 1000 * parts["optimizer_step"],
        "achieved_tflops": achieved_tflops(img_s, s_macs, t_macs),
        "mfu": mfu(img_s, s_macs, t_macs, peak),
        "student_mfu": mfu(batch_size / parts["student_fwd_bwd"], s_macs, 0, peak),
        "teacher_mfu": mfu(batch_size / parts["teacher_fwd"], 0, t_macs, peak),
        "peak_memory_mb": peak_memory_mb(device),
        "hours_300_epochs": projected_hours(img_s),
    }
    del setup, student, teacher, batch
    free_memory(device)
    return row


# ---- `benchmark train` -------------------------------------------------------------------------------------

def run_train(args: argparse.Namespace) -> dict:
    students = args.model or STUDENTS
    device = check_common(args, [*students, args.teacher])
    for name in students:
        if name in DEIT_CONFIGS and args.input_size % DEIT_CONFIGS[name].patch_size:
            raise ValueError(f"--input-size {args.input_size} is not a multiple of the patch size of {name}")
    batch_size = args.batch_size or (None if device.type == "cuda" else 8)
    peak = peak_tflops_of(device, args.peak_tflops)
    families = ["minideit"] + (["timm"] if not args.no_timm and timm_available() else [])
    results = []
    for name in students:
        size = {"img_size": args.input_size} if name in DEIT_CONFIGS else {}
        macs = (count_flops(create_model(name, **size), args.input_size),
                count_flops(create_model(args.teacher), args.input_size))
        rows = [measure_train(f, name, args.teacher, args, device, batch_size, macs, peak) for f in families]
        entry = {"student": name, "student_gmacs": macs[0] / 1e9, "teacher_gmacs": macs[1] / 1e9, "rows": rows}
        if len(rows) == 2:
            entry["ours_over_timm"] = {k: rows[0][k] / rows[1][k] for k in (
                "step_img_per_s", "student_fwd_bwd_img_per_s", "teacher_fwd_img_per_s")}
        results.append(entry)
    return {
        "command": "train", "device": device_name(device), "amp": args.amp if device.type == "cuda" else "off",
        "compile": "student+teacher" if args.compile else "off", "channels_last_teacher": args.channels_last,
        "input_size": args.input_size, "teacher": args.teacher, "steps": args.steps, "warmup": args.warmup,
        "peak_tflops": peak, "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__,
        "timm": "compared" if "timm" in families else "not installed" if not args.no_timm else "skipped",
        "results": results,
    }


def print_train_report(r: dict) -> None:
    peak = f"{r['peak_tflops']:.0f} TFLOP/s" if r["peak_tflops"] else "unknown (MFU n/a; pass --peak-tflops)"
    print(f"training step on {r['device']}: amp {r['amp']}, compile {r['compile']}, teacher {r['teacher']}, "
          f"{r['input_size']} px, {r['steps']} timed steps after {r['warmup']}; peak {peak}; timm {r['timm']}")
    head = (f"{'student':<34}{'impl':<9}{'batch':>6}{'step img/s':>11}{'stud f+b':>10}{'teach fwd':>10}"
            f"{'opt ms':>8}{'TFLOP/s':>9}{'MFU':>7}{'mem MB':>9}{'300 ep h':>9}")
    print(head)
    for entry in r["results"]:
        for row in entry["rows"]:
            print(f"{entry['student']:<34}{row['family']:<9}{row['batch_size']:>6}{row['step_img_per_s']:>11.1f}"
                  f"{row['student_fwd_bwd_img_per_s']:>10.1f}{row['teacher_fwd_img_per_s']:>10.1f}"
                  f"{row['optimizer_step_ms']:>8.2f}{row['achieved_tflops']:>9.3f}{pct(row['mfu']):>7}"
                  f"{row['peak_memory_mb']:>9.0f}{row['hours_300_epochs']:>9.1f}")
        if "ours_over_timm" in entry:
            q = entry["ours_over_timm"]
            print(f"{'':<34}{'ours/timm':<15}{q['step_img_per_s']:>11.2f}x{q['student_fwd_bwd_img_per_s']:>9.2f}x"
                  f"{q['teacher_fwd_img_per_s']:>9.2f}x")
        print(f"  ({entry['student_gmacs']:.2f} + {entry['teacher_gmacs']:.2f} GMACs per image, student + teacher; "
              f"one image of a step = {flops_per_image(entry['student_gmacs'], entry['teacher_gmacs']):.1f} GFLOP)")
    print("300 ep h: 300 epochs of 1,281,167 images at this rate on this one device (repeated augmentation keeps "
          "the epoch length); mem: " + ("torch.cuda.max_memory_allocated" if r["device"] != "cpu" else
                                        "peak resident memory of the process"))


def add_train_command(subparsers) -> None:
    p = subparsers.add_parser("train", help="img/s, MFU and memory of a DeiT⚗ distillation training step")
    p.add_argument("--model", nargs="+", default=None, metavar="NAME", help=f"students (default: {' '.join(STUDENTS)})")
    p.add_argument("--teacher", default="regnety_160")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--channels-last", action="store_true",
                   help="teacher in channels_last layout (off by default: measure before turning it on)")
    p.add_argument("--no-timm", action="store_true", help="skip the timm comparison even if timm is installed")
    add_common_flags(p)
    p.set_defaults(func=lambda args: report(run_train(args), print_train_report))
