"""The loader's ceiling: ``python -m minideit.benchmark loader --workers N --batch-size B``.

Images per second that the training DataLoader delivers with N worker processes: JPEG decode and the full DeiT
training transform (RandomResizedCrop, flip, RandAugment, normalise, random erasing; paper Table 9) on every
image, batches collated as training collates them. ``data`` (benchmark.py) measures one core; this measures the
real thing, workers and inter-process transfer included. The GPU step can go no faster than this rate, so on a
training machine it should be at least the ``train`` benchmark's img/s.

    python -m minideit.benchmark loader --workers 2 --batch-size 64              # generated ImageNet-like JPEGs
    python -m minideit.benchmark loader --workers 16 --batch-size 256 --data-path /data/imagenet --json l.json
    python -m minideit.benchmark loader --workers 16 --batch-size 256 --gpu-aug  # workers stop at uint8

``--gpu-aug`` times the worker side of ``train --gpu-aug``: no normalisation or erasing on the workers, uint8
batches (4x fewer bytes to move); the device then does the rest (data/gpu_aug.py).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from minideit.data.datasets import load_rgb
from minideit.data.gpu_aug import build_uint8_transform
from minideit.data.loader import build_loader
from minideit.data.transforms import build_transform
from minideit.tools.bench.images import images_to_time
from minideit.tools.bench.common import report


class CycledImages(torch.utils.data.Dataset):
    """`length` samples that cycle through `paths`: (transform(image), 0), like a training set's items."""

    def __init__(self, paths: list[Path], length: int, transform):
        self.paths, self.length, self.transform = paths, length, transform

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        return self.transform(load_rgb(self.paths[i % len(self.paths)])), 0


def time_loader(loader, skip: int) -> tuple[float, int]:
    """(seconds, images) from the moment batch `skip` arrives to the last batch.

    The first batches are left out: every worker starts at once, so about one batch per worker arrives together
    after start-up; timing from there measures the steady rate the workers sustain.
    """
    images, start = 0, None
    for i, (x, _) in enumerate(loader):
        if i == skip:
            start = time.perf_counter()
        elif start is not None:
            images += x.shape[0]
    if start is None or images == 0:
        raise ValueError("too few batches to time: raise --batches")
    return time.perf_counter() - start, images


def run_loader(args: argparse.Namespace) -> dict:
    if args.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {args.workers}")
    if args.batch_size < 1 or args.num_images < 1:
        raise ValueError(f"--batch-size and --num-images must be >= 1, got {args.batch_size} and {args.num_images}")
    skip = max(1, args.workers)  # one batch per worker arrives at start-up (see time_loader)
    batches = args.batches or max(20, 4 * skip)
    if batches < skip + 2:
        raise ValueError(f"--batches must be at least {skip + 2} with {args.workers} workers, got {batches}")
    if args.gpu_aug:
        transform = build_uint8_transform(True, args.input_size, aa=args.aa)
    else:
        transform = build_transform(True, args.input_size, aa=args.aa)
    with tempfile.TemporaryDirectory() as tmp:
        paths, source = images_to_time(args.data_path, args.num_images, args.seed, Path(tmp))
        dataset = CycledImages(paths, batches * args.batch_size, transform)
        loader = build_loader(dataset, args.batch_size, range(len(dataset)), args.workers, args.seed, 0,
                              drop_last=True, pin_memory=torch.cuda.is_available())
        seconds, images = time_loader(loader, skip)
    rate = images / seconds
    return {
        'command': 'loader', 'source': source, 'num_images': len(paths), 'workers': args.workers,
        'batch_size': args.batch_size, 'batches': batches, 'timed_images': images, 'input_size': args.input_size,
        'aa': args.aa, 'gpu_aug': args.gpu_aug, 'cpu_count': os.cpu_count(), 'img_per_s': rate,
        'img_per_s_per_worker': rate / max(1, args.workers),
    }


def print_loader_report(r: dict) -> None:
    what = 'uint8 out (--gpu-aug: normalise + erasing left to the device)' if r['gpu_aug'] else 'full DeiT transform'
    print(f"DataLoader, {r['workers']} workers on {r['cpu_count']} CPUs, batch {r['batch_size']}, "
          f"{r['input_size']} px, {what}; {r['num_images']} images from {r['source']}")
    print(f"  {r['img_per_s']:.1f} img/s ({r['img_per_s_per_worker']:.1f} per worker) over {r['timed_images']} images")
    print("  a training step faster than this would wait for data: compare with `benchmark train`'s step img/s")


def add_loader_command(subparsers) -> None:
    p = subparsers.add_parser('loader', help='img/s the training DataLoader delivers with N workers')
    p.add_argument('--workers', type=int, default=os.cpu_count() or 1, help='loader processes (default: all CPUs)')
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--batches', type=int, default=None, help='batches to load (default max(20, 4 x workers))')
    p.add_argument('--data-path', default=None, help='ImageNet-layout folder (uses train/<class>/*); '
                                                     'default: generate photo-like JPEGs in a temp dir')
    p.add_argument('--num-images', type=int, default=64, help='distinct images to cycle through (default 64)')
    p.add_argument('--input-size', type=int, default=224)
    p.add_argument('--aa', default='rand-m9-mstd0.5-inc1', help='RandAugment config, as in training')
    p.add_argument('--gpu-aug', action='store_true', help='workers stop at uint8, as with train --gpu-aug')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--json', default=None, help='also write the results to this JSON file')
    p.set_defaults(func=lambda args: report(run_loader(args), print_loader_report))
