"""Benchmarks from the command line: `python -m minideit.benchmark <command> ...`.

`data`: how many images per second ONE loader worker (one CPU core) can decode and augment with the DeiT
training transform (paper §6, Table 9). A GPU step needs batch images from the workers in the time it takes, so
this rate times the number of cores bounds the training speed a machine can feed.

    python -m minideit.benchmark data                       # generated ImageNet-sized JPEGs
    python -m minideit.benchmark data --data-path /data/imagenet --num-images 256 --json data.json

Each command is one `add_<name>_command(subparsers)` function plus a `run_<name>(args)`; others add theirs the
same way.
`train` (step img/s, MFU, memory) lives in step.py, `model` (inference throughput) in
model.py, `loader` (the DataLoader with N workers) in loader.py.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from minideit.data.transforms import build_transform
from minideit.tools.bench.contention import add_contention_command
from minideit.tools.bench.images import images_to_time
from minideit.tools.bench.loader import add_loader_command
from minideit.tools.bench.model import add_model_command
from minideit.tools.bench.step import add_train_command
from minideit.tools.bench.vs_timm import add_vs_timm_command

GOAL_RATIO = 0.45  # the full transform should run at >= 45% of the pure decode rate on one core


def decode(path: Path) -> Image.Image:
    with Image.open(path) as img:
        return img.convert('RGB')  # convert forces the full decode


def decode_pass(paths: list[Path]) -> float:
    """Seconds to open and fully decode every image once."""
    start = time.perf_counter()
    for p in paths:
        decode(p)
    return time.perf_counter() - start


def transform_pass(paths: list[Path], transform, step_seconds: dict[str, float]) -> float:
    """Seconds to decode and transform every image once; adds each step's share to `step_seconds`."""
    start = time.perf_counter()
    for p in paths:
        t0 = time.perf_counter()
        x = decode(p)
        t1 = time.perf_counter()
        step_seconds['decode'] += t1 - t0
        for t in transform.transforms:
            x = t(x)
            t2 = time.perf_counter()
            step_seconds[type(t).__name__] += t2 - t1
            t1 = t2
    return time.perf_counter() - start


def time_pipeline(paths: list[Path], transform, seconds: float) -> tuple[float, float, dict[str, float]]:
    """(decode img/s, decode + transform img/s, mean ms per step), each measured for at least `seconds`.

    The two measurements alternate pass by pass, so a machine whose load drifts (other jobs on the cores)
    slows both alike and their ratio stays meaningful.
    """
    step_seconds = {'decode': 0.0} | {type(t).__name__: 0.0 for t in transform.transforms}
    decode_s = train_s = 0.0
    passes = 0
    while passes == 0 or min(decode_s, train_s) < seconds:
        decode_s += decode_pass(paths)
        train_s += transform_pass(paths, transform, step_seconds)
        passes += 1
    n = passes * len(paths)
    return n / decode_s, n / train_s, {k: 1000 * v / n for k, v in step_seconds.items()}


def run_data(args: argparse.Namespace) -> dict:
    if args.num_images < 1:
        raise ValueError(f"--num-images must be >= 1, got {args.num_images}")
    if args.input_size < 1:
        raise ValueError(f"--input-size must be >= 1, got {args.input_size}")
    if args.rounds < 1:
        raise ValueError(f"--rounds must be >= 1, got {args.rounds}")
    torch.set_num_threads(1)  # one loader worker = one core
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    transform = build_transform(True, args.input_size, aa=args.aa)
    with tempfile.TemporaryDirectory() as tmp:
        paths, source = images_to_time(args.data_path, args.num_images, args.seed, Path(tmp))
        sizes = [Image.open(p).size for p in paths]
        mean_kb = float(np.mean([p.stat().st_size for p in paths])) / 1e3
        decode_pass(paths)  # warm-up: file cache, allocator, lazy imports
        rounds = [time_pipeline(paths, transform, args.seconds) for _ in range(args.rounds)]
    # One round's ratio moves by about +-0.015 from round to round on a quiet 2-core machine (the machine's speed
    # drifts and RandAugment draws different ops), so the verdict is the median of several rounds.
    round_ratios = [train / decode for decode, train, _ in rounds]
    ratio = statistics.median(round_ratios)
    decode_rate = statistics.median(r[0] for r in rounds)
    train_rate = statistics.median(r[1] for r in rounds)
    step_ms = {k: statistics.mean(r[2][k] for r in rounds) for k in rounds[0][2]}
    return {
        'source': source, 'num_images': len(paths), 'input_size': args.input_size, 'aa': args.aa,
        'mean_width': float(np.mean([s[0] for s in sizes])), 'mean_height': float(np.mean([s[1] for s in sizes])),
        'mean_file_kb': mean_kb,
        'torch_threads': torch.get_num_threads(),
        'decode_img_per_s': decode_rate, 'train_transform_img_per_s': train_rate,
        'ratio': ratio, 'round_ratios': round_ratios, 'goal_ratio': GOAL_RATIO, 'meets_goal': ratio >= GOAL_RATIO,
        'step_ms': step_ms, 'estimate_16_cores_img_per_s': 16 * train_rate,
    }


def print_data_report(r: dict) -> None:
    print(f"data pipeline on one core: {r['num_images']} images from {r['source']}, "
          f"mean size {r['mean_width']:.0f}x{r['mean_height']:.0f} ({r['mean_file_kb']:.0f} KB), output {r['input_size']}px, aa={r['aa']}")
    print(f"  {'JPEG decode (open + RGB)':<44}{r['decode_img_per_s']:>9.1f} img/s")
    print(f"  {'decode + DeiT train transform':<44}{r['train_transform_img_per_s']:>9.1f} img/s")
    print(f"  {'ratio (goal >= %.2f), median of rounds' % r['goal_ratio']:<44}{r['ratio']:>9.3f}  "
          f"{'ok' if r['meets_goal'] else 'BELOW GOAL'}  (rounds: {', '.join(f'{x:.3f}' for x in r['round_ratios'])})")
    print("  mean time per image by step:")
    for name, ms in r['step_ms'].items():
        print(f"    {name:<40}{ms:>9.3f} ms")
    print(f"On a 16-core machine, 16 loader workers could feed about 16 x {r['train_transform_img_per_s']:.0f} = "
          f"{r['estimate_16_cores_img_per_s']:.0f} img/s (an upper bound: the main process and memory bandwidth "
          f"take their share); training faster than that on the GPU would wait for data.")


def add_data_command(subparsers) -> None:
    p = subparsers.add_parser('data', help='images/s of JPEG decoding and the DeiT training transform, one core')
    p.add_argument('--data-path', default=None, help='ImageNet-layout folder (uses train/<class>/*); '
                                                     'default: generate photo-like JPEGs in a temp dir')
    p.add_argument('--num-images', type=int, default=64, help='images to cycle through (default 64)')
    p.add_argument('--input-size', type=int, default=224)
    p.add_argument('--aa', default='rand-m9-mstd0.5-inc1', help='RandAugment config, as in training')
    p.add_argument('--seconds', type=float, default=3.0, help='minimum seconds per measurement (default 3)')
    p.add_argument('--rounds', type=int, default=3, help='rounds of both measurements; the ratio is their median '
                                                         '(default 3)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--json', default=None, help='also write the results to this JSON file')
    p.set_defaults(func=_data_main)


def _data_main(args: argparse.Namespace) -> dict:
    result = run_data(args)
    print_data_report(result)
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m minideit.benchmark', description=__doc__.split('\n')[0])
    subparsers = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    add_data_command(subparsers)
    add_train_command(subparsers)  # step.py: the training step, MFU, timm side by side
    add_model_command(subparsers)  # model.py: inference throughput (paper Table 1)
    add_loader_command(subparsers)  # loader.py: img/s of the DataLoader with N workers
    add_vs_timm_command(subparsers)  # vs_timm.py: ours vs timm, interleaved in one process (CPU speed)
    add_contention_command(subparsers)  # contention.py: a step alone and beside a busy process
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
        if getattr(args, 'json', None):
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(result, indent=2) + '\n')
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
