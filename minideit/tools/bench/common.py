"""Measuring speed: FLOPs to model FLOP utilisation, timers, peak memory, the largest batch that fits.

Shared by the benchmark commands (benchmark_step.py: the training step; benchmark_model.py: inference).
MFU (model FLOP utilisation) = achieved FLOP/s / the device's peak. FLOPs come from `flops.count_flops`, which
counts multiply-accumulates (MACs): one MAC is 2 FLOPs, and a backward pass costs about twice a forward, so an
image costs 2·3·MACs for a model being trained and 2·MACs for one only run forward (the frozen teacher).
"""
from __future__ import annotations

import argparse
import gc
import resource
import time
from typing import Callable

import torch

from minideit.distributed import resolve_device  # the trainer's, so both commands accept the same names
from minideit.models import check_model_name

IMAGENET_TRAIN_IMAGES = 1_281_167  # repeated augmentation (x3) keeps the epoch at this many samples
PAPER_EPOCHS = 300
# Dense (no sparsity) bf16 tensor-core peaks from the vendor's data sheets, matched against the device name.
PEAK_BF16_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0))


# ---- arithmetic: FLOPs, MFU, time to train -----------------------------------------------------------------

def flops_per_image(student_macs: float, teacher_macs: float = 0.0, train: bool = True) -> float:
    """FLOPs one image costs: 2 per MAC; a trained student 3 passes (forward + backward ≈ 2 forwards)."""
    return 2.0 * ((3.0 if train else 1.0) * student_macs + teacher_macs)


def achieved_tflops(img_per_s: float, student_macs: float, teacher_macs: float = 0.0, train: bool = True) -> float:
    return img_per_s * flops_per_image(student_macs, teacher_macs, train) / 1e12


def mfu(img_per_s: float, student_macs: float, teacher_macs: float, peak_tflops: float | None,
        train: bool = True) -> float | None:
    """Model FLOP utilisation in [0, 1] (None when the peak is unknown, e.g. on a CPU)."""
    if not peak_tflops:
        return None
    return achieved_tflops(img_per_s, student_macs, teacher_macs, train) / peak_tflops


def peak_tflops_of(device: torch.device, override: float | None = None) -> float | None:
    """--peak-tflops if given, else the dense bf16 peak of a known CUDA device, else None."""
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


def projected_hours(img_per_s: float, epochs: int = PAPER_EPOCHS, images: int = IMAGENET_TRAIN_IMAGES) -> float:
    """Hours for `epochs` ImageNet epochs at this rate on this one device (divide by the number of GPUs)."""
    return epochs * images / img_per_s / 3600


# ---- timing and memory -------------------------------------------------------------------------------------

def seconds_per_call(fn: Callable[[], object], steps: int, warmup: int, device: torch.device) -> float:
    """Mean seconds of fn() over `steps` calls after `warmup` untimed ones. On CUDA, events on the stream time
    the GPU's work (the host only queues it); elsewhere the wall clock does."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000 / steps
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    else:
        try:  # Linux: writing 5 resets the process's peak resident set size (VmHWM)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass  # then the peak is the whole process's so far


def peak_memory_mb(device: torch.device) -> float:
    """Peak tensor memory on CUDA (max_memory_allocated); peak resident memory of the process elsewhere."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def runs_without_oom(attempt: Callable[[], object], cleanup: Callable[[], None]) -> bool:
    """Whether ``attempt()`` runs without the device running out of memory; any other error is raised.
    ``cleanup`` runs either way, so that the next, smaller attempt starts with the memory free."""
    try:
        attempt()
        return True
    except RuntimeError as e:
        if not is_oom(e):
            raise
        return False
    finally:
        cleanup()


def largest_batch(fits: Callable[[int], bool], start: int = 64, limit: int = 4096, multiple: int = 8) -> int:
    """The largest multiple of `multiple` (<= limit) for which fits(b) is True: double from `start` until it
    fails, then bisect between the last size that fitted and the first that did not. 0 if none fits."""
    lo, hi, b = 0, None, start
    while hi is None and b <= limit:
        if fits(b):
            lo, b = b, b * 2
        else:
            hi = b
    if hi is None:
        return lo
    while hi - lo > multiple:
        mid = (lo + hi) // 2 // multiple * multiple
        if mid <= lo:
            break
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


# ---- command-line pieces the benchmark commands share ------------------------------------------------------

def check_common(args, names: list[str]) -> torch.device:
    """One-line errors for bad sizes and names, before any model is built; returns the device."""
    for name in names:
        check_model_name(name)
    for flag in ("steps", "input_size"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.batch_size is not None and (args.batch_size < 2 or args.batch_size % 2):
        raise ValueError(f"--batch-size must be even and >= 2 (Mixup pairs images), got {args.batch_size}")
    device = resolve_device(args.device)
    args.steps = args.steps or (20 if device.type == "cuda" else 3)
    if args.warmup is None:
        args.warmup = 5 if device.type == "cuda" else 1
    if args.compile:
        args.warmup = max(args.warmup, 2)  # the first call compiles, the second may specialise again
    return device


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def add_common_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--amp", choices=["bf16", "fp16", "off"], default="bf16", help="autocast dtype on CUDA")
    p.add_argument("--compile", action="store_true", help="torch.compile the models")
    p.add_argument("--batch-size", type=int, default=None,
                   help="default: the largest that fits on CUDA (searched), 8 on a CPU")
    p.add_argument("--max-batch-size", type=int, default=1024,
                   help="upper end of the batch-size search (default 1024, which keeps the search short)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 20 on CUDA, 3 on a CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5 on CUDA, 1 on a CPU)")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak FLOP/s for MFU (default: known GPUs)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")


def report(result: dict, printer: Callable[[dict], None]) -> dict:
    printer(result)
    return result
