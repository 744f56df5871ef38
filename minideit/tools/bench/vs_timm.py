"""Ours against the reference implementation, same process: ``python -m minideit.benchmark vs-timm``.

Most learners train on a laptop CPU, so the comparison that matters to them is a step of our models against the
same step of timm's, on the same machine, at the same moment. Absolute img/s on a shared machine move with the load;
a ratio measured in *one* process, with the two implementations' rounds interleaved (ours, timm, timm, ours, ...)
does not, because a change of load slows both alike. The figure to read is therefore the median over rounds of
(timm's seconds / ours): above 1.00 means ours is faster.

The cases (``--case``; all fp32, on the CPU unless ``--device`` says otherwise):

- ``deit-ti-step``: DeiT-Ti⚗ training step, 224 px, batch 16, stochastic depth 0.1, AdamW, the two heads'
  cross-entropies averaged (timm's model with ``set_distilled_training(True)``).
- ``regnety-4gf-forward``: RegNetY-4GF (``regnety_040``) inference, 224 px, batch 16.
- ``nano-step`` and ``teacher-step``: DeiT-nano⚗ with 4×4 patches (32 px, 10 classes, no stochastic depth: the
  demo's student until it moved to 8×8 patches, and notebooks 06-07's) and the demo's teacher (``regnety_002`` with
  the stride-1 stem, 10 classes) training steps at 32 px, batch 64.

timm is not a dependency of minideit: where it cannot be imported, one line says so and ours run alone.

    python -m minideit.benchmark vs-timm                         # every case, 5 rounds
    python -m minideit.benchmark vs-timm --case deit-ti-step --rounds 9 --json vs_timm.json
"""
from __future__ import annotations

import argparse
import importlib
import os
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from minideit.models import create_model
from minideit.optim import build_optimizer
from minideit.tools.bench.common import report, resolve_device


@dataclass(frozen=True)
class Case:
    """One comparison: which model, trained (a full step) or forward only, at which size and batch."""
    name: str
    ours: str  # our create_model name
    train: bool
    input_size: int
    batch_size: int
    num_classes: int = 1000
    drop_path_rate: float = 0.0
    overrides: tuple = ()  # extra create_model arguments, as (key, value) pairs


CASES = {c.name: c for c in (
    Case("deit-ti-step", "deit_tiny_distilled_patch16_224", True, 224, 16, drop_path_rate=0.1),
    Case("regnety-4gf-forward", "regnety_040", False, 224, 16),
    Case("nano-step", "deit_nano_distilled_patch4_32", True, 32, 64, num_classes=10),  # as the demo: no drop path
    Case("teacher-step", "regnety_002", True, 32, 64, num_classes=10, overrides=(("stem_stride", 1),)),
)}


# ---- the two implementations of each case ------------------------------------------------------------------

def import_timm():
    """timm, or None with the reason (it is an optional comparison, never a dependency)."""
    try:
        return importlib.import_module("timm"), ""
    except ImportError as e:  # not installed, or installed without what it needs (e.g. torchvision)
        return None, str(e)


def build_ours(case: Case) -> nn.Module:
    return create_model(case.ours, num_classes=case.num_classes, drop_path_rate=case.drop_path_rate,
                        **dict(case.overrides))


def build_timm(case: Case, timm) -> nn.Module:
    """timm's model with the same configuration as ours (timm spells some of them differently)."""
    if case.ours == "deit_nano_distilled_patch4_32":  # not a timm name: the same transformer from its class
        from timm.models.deit import VisionTransformerDistilled
        model = VisionTransformerDistilled(img_size=32, patch_size=4, embed_dim=128, depth=6, num_heads=4,
                                           num_classes=case.num_classes, drop_path_rate=case.drop_path_rate)
    else:
        model = timm.create_model(case.ours, num_classes=case.num_classes, drop_path_rate=case.drop_path_rate)
    if dict(case.overrides).get("stem_stride") == 1:  # timm has no argument for it: the stem conv's stride
        model.stem.conv.stride = (1, 1)
    if hasattr(model, "set_distilled_training"):  # otherwise timm returns the averaged logits in training too
        model.set_distilled_training(True)
    return model


def make_call(model: nn.Module, case: Case, device: torch.device) -> Callable[[], None]:
    """A function that runs one training step (or one forward pass) of ``model`` on a fixed random batch."""
    model = model.to(device)
    images = torch.randn(case.batch_size, 3, case.input_size, case.input_size, device=device)
    labels = torch.randint(0, case.num_classes, (case.batch_size,), device=device)
    if not case.train:
        model.eval()

        def forward() -> None:
            with torch.inference_mode():
                model(images)
        return forward
    model.train()
    optimizer = build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.05)

    def step() -> None:
        out = model(images)
        heads = out if isinstance(out, tuple) else (out,)
        loss = sum(F.cross_entropy(h, labels) for h in heads) / len(heads)  # the two heads' CE averaged
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


# ---- interleaved timing ------------------------------------------------------------------------------------

def timed(call: Callable[[], None], calls: int, device: torch.device) -> float:
    """Seconds for ``calls`` calls (synchronised on CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def interleaved(calls: dict[str, Callable[[], None]], rounds: int, steps: int, warmup: int,
                device: torch.device) -> dict[str, list[float]]:
    """Seconds per call of each implementation, per round; the order alternates round by round, so neither
    always runs first (warm caches, a load that drifts up or down during the round)."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    names = list(calls)
    seconds = {n: [] for n in names}
    for r in range(rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            seconds[n].append(timed(calls[n], steps, device) / steps)
    return seconds


def measure_case(case: Case, timm, args, device: torch.device) -> dict:
    calls = {"minideit": make_call(build_ours(case), case, device)}
    if timm is not None:
        calls["timm"] = make_call(build_timm(case, timm), case, device)
    seconds = interleaved(calls, args.rounds, args.steps, args.warmup, device)
    row = {"case": case.name, "model": case.ours, "train": case.train, "input_size": case.input_size,
           "batch_size": case.batch_size,
           "img_per_s": {n: case.batch_size / statistics.median(s) for n, s in seconds.items()}}
    if timm is not None:
        ratios = [t / o for o, t in zip(seconds["minideit"], seconds["timm"])]
        row["ours_over_timm"] = {"median": statistics.median(ratios), "rounds": ratios}
    return row


def load_average() -> list[float] | None:
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def run_vs_timm(args: argparse.Namespace) -> dict:
    for flag in ("rounds", "steps"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    if args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cases = [CASES[c] for c in (args.case or CASES)]
    if args.batch_size is not None:  # smoke runs and experiments; the cases' own batches are the comparison
        cases = [Case(**{**c.__dict__, "batch_size": args.batch_size}) for c in cases]
    timm, why = (None, "skipped (--no-timm)") if args.no_timm else import_timm()
    if timm is None:
        print(f"timm is not available ({why}): timing minideit alone; pip install timm to compare")
    torch.manual_seed(0)
    load_before = load_average()
    rows = [measure_case(c, timm, args, device) for c in cases]
    return {"command": "vs-timm", "device": str(device), "torch_threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"), "torch_version": torch.__version__,
            "timm_version": getattr(timm, "__version__", None), "rounds": args.rounds, "steps": args.steps,
            "warmup": args.warmup, "load_average_before": load_before, "load_average_after": load_average(),
            "results": rows}


def print_vs_timm_report(r: dict) -> None:
    load = r["load_average_before"]
    print(f"ours vs timm on {r['device']}: {r['torch_threads']} threads, OMP_WAIT_POLICY {r['omp_wait_policy']}, "
          f"{r['rounds']} interleaved rounds of {r['steps']} calls, torch {r['torch_version']}, "
          f"timm {r['timm_version'] or 'absent'}" + (f"; load average {load[0]:.2f} before" if load else ""))
    print(f"{'case':<22}{'model':<34}{'size':>5}{'batch':>6}{'ours img/s':>12}{'timm img/s':>12}{'ours/timm':>11}"
          f"  rounds")
    for row in r["results"]:
        timm_rate = row["img_per_s"].get("timm")
        q = row.get("ours_over_timm")
        ratio = "-" if q is None else f"{q['median']:.2f}x"
        print(f"{row['case']:<22}{row['model']:<34}{row['input_size']:>5}{row['batch_size']:>6}"
              f"{row['img_per_s']['minideit']:>12.1f}{'-' if timm_rate is None else f'{timm_rate:.1f}':>12}"
              f"{ratio:>11}"
              f"  {'' if q is None else ' '.join(f'{x:.2f}' for x in q['rounds'])}")
    if r["load_average_after"]:
        print(f"load average after: {r['load_average_after'][0]:.2f} (img/s move with it; the ratio is the figure)")


def add_vs_timm_command(subparsers) -> None:
    p = subparsers.add_parser("vs-timm", help="ours vs timm in one process, interleaved rounds: median speed ratio")
    p.add_argument("--case", nargs="+", choices=list(CASES), default=None, help="default: every case")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5); the median is reported")
    p.add_argument("--steps", type=int, default=2, help="calls per implementation per round (default 2)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls of each first (default 1)")
    p.add_argument("--batch-size", type=int, default=None, help="override every case's batch (smoke runs)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: as set now)")
    p.add_argument("--no-timm", action="store_true", help="time ours alone even if timm is importable")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.set_defaults(func=lambda args: report(run_vs_timm(args), print_vs_timm_report))
