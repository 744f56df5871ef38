"""Inference throughput of models: ``python -m minideit.benchmark model`` (the paper's Table 1 throughput column).

For each model: parameters, multiply-accumulates per image (flops.count_flops), and images per second of a
forward pass in eval mode under ``torch.inference_mode`` and autocast, at the largest batch that fits on CUDA (the
paper measured the largest batch on one V100, in fp32) or a small batch on a CPU. The paper's V100 figure is shown
for reference; it is not comparable to a bf16 figure on a newer GPU.

    python -m minideit.benchmark model                        # the 8 official DeiT names and regnety_160
    python -m minideit.benchmark model --model deit_small_patch16_224 --amp off --json m.json
"""
from __future__ import annotations

import argparse
from typing import Callable

import torch

from minideit.engine import autocast
from minideit.flops import count_flops
from minideit.models import DEIT_CONFIGS, create_model
from minideit.tools.bench.common import (add_common_flags, check_common, device_name, free_memory, largest_batch,
                                         mfu, pct, peak_memory_mb, peak_tflops_of, report, runs_without_oom,
                                         seconds_per_call)

INFERENCE_MODELS = [f"deit_{s}{d}_patch16_224" for d in ("", "_distilled") for s in ("tiny", "small", "base")] + [
    "deit_base_patch16_384", "deit_base_distilled_patch16_384", "regnety_160"]
# Paper Table 1 (V100, fp32, largest batch); regnety_160's figure is not in book/paper_facts.md.
PAPER_V100_IMG_S = {"deit_tiny_patch16_224": 2536, "deit_small_patch16_224": 940, "deit_base_patch16_224": 292,
                    "deit_tiny_distilled_patch16_224": 2529, "deit_small_distilled_patch16_224": 936,
                    "deit_base_distilled_patch16_224": 291, "deit_base_patch16_384": 85.9,
                    "deit_base_distilled_patch16_384": 85.8}


def measure_inference(name: str, args, device: torch.device, peak: float | None) -> dict:
    free_memory(device)
    size = args.input_size or (DEIT_CONFIGS[name].img_size if name in DEIT_CONFIGS else 224)
    model = create_model(name, img_size=size) if name in DEIT_CONFIGS else create_model(name)
    params = sum(p.numel() for p in model.parameters())
    macs = count_flops(model, size)
    model = model.to(device).eval()
    run = torch.compile(model) if args.compile else model

    def forward(b: int) -> Callable[[], object]:
        images = torch.randn(b, 3, size, size, device=device)

        def call():
            with torch.inference_mode(), autocast(device, args.amp):
                return run(images)
        return call

    def fits(b: int) -> bool:
        return runs_without_oom(forward(b), lambda: free_memory(device))

    batch = args.batch_size or (largest_batch(fits, start=64, limit=args.max_batch_size) if device.type == "cuda"
                                else 8)
    if batch == 0:
        raise ValueError(f"{name} does not fit in memory even at batch 8")
    free_memory(device)
    img_s = batch / seconds_per_call(forward(batch), args.steps, args.warmup, device)
    row = {"model": name, "params": params, "gmacs": macs / 1e9, "input_size": size, "batch_size": batch,
           "img_per_s": img_s, "mfu": mfu(img_s, macs, 0, peak, train=False),
           "paper_v100_img_per_s": PAPER_V100_IMG_S.get(name), "peak_memory_mb": peak_memory_mb(device)}
    del model, run
    free_memory(device)
    return row


def run_model(args: argparse.Namespace) -> dict:
    names = args.model or INFERENCE_MODELS
    device = check_common(args, names)
    peak = peak_tflops_of(device, args.peak_tflops)
    return {"command": "model", "device": device_name(device), "amp": args.amp if device.type == "cuda" else "off",
            "compile": args.compile, "steps": args.steps, "warmup": args.warmup, "peak_tflops": peak,
            "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__,
            "results": [measure_inference(n, args, device, peak) for n in names]}


def print_model_report(r: dict) -> None:
    compiled = "on" if r["compile"] else "off"
    print(f"inference on {r['device']}: amp {r['amp']}, compile {compiled}, {r['steps']} timed batches "
          f"after {r['warmup']}")
    print(f"{'model':<34}{'params':>12}{'GMACs':>8}{'size':>6}{'batch':>7}{'img/s':>10}{'MFU':>7}"
          f"{'paper V100':>11}{'mem MB':>9}")
    for row in r["results"]:
        paper = row["paper_v100_img_per_s"]
        print(f"{row['model']:<34}{row['params']:>12,}{row['gmacs']:>8.2f}{row['input_size']:>6}"
              f"{row['batch_size']:>7}{row['img_per_s']:>10.1f}{pct(row['mfu']):>7}"
              f"{'-' if paper is None else f'{paper:g}':>11}{row['peak_memory_mb']:>9.0f}")
    print("paper V100: Table 1 of the paper (fp32 inference, largest batch), for reference only")


def add_model_command(subparsers) -> None:
    p = subparsers.add_parser("model", help="inference img/s of models (paper Table 1's throughput column)")
    p.add_argument("--model", nargs="+", default=None, metavar="NAME",
                   help="models (default: the 8 official DeiT names and regnety_160)")
    p.add_argument("--input-size", type=int, default=None, help="default: each model's own resolution")
    add_common_flags(p)
    p.set_defaults(func=lambda args: report(run_model(args), print_model_report))
