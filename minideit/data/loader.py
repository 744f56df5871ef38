"""Batches from a dataset, with every random draw a function of (seed, epoch, rank, worker).

Exact resume depends on this: if the augmentation of epoch e depends only on (seed, e, rank), then training
epochs 0 and 1 straight, or epoch 0, a checkpoint and epoch 1 in a new process, sees identical batches.
The per-image transforms draw from Python's `random` and torch's global RNG (transforms.py), so those are
what we seed: in each worker from (seed, epoch, rank, worker id), or in the main process with
`seed_everything(seed, epoch, rank)` at the start of every epoch when there are no workers.

The rank matters: under repeated augmentation the copies of an image sit at the same place in the batches of
different processes; with equal worker seeds they would get the very same augmentation.
"""
from __future__ import annotations

import functools
import random

import numpy as np
import torch


def derive_seed(seed: int, epoch: int = 0, rank: int = 0, worker: int = -1) -> int:
    """One 32-bit seed per (seed, epoch, rank, worker); numpy's SeedSequence mixes them so nearby tuples give
    unrelated streams (seed + epoch would make epoch 1 of seed 0 equal epoch 0 of seed 1)."""
    if min(seed, epoch, rank, worker + 1) < 0:
        raise ValueError(f"seed, epoch and rank must be >= 0, got seed={seed}, epoch={epoch}, rank={rank}")
    return int(np.random.SeedSequence([seed, epoch, rank, worker + 1]).generate_state(1)[0])


def _seed_all(s: int) -> None:
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def seed_everything(seed: int, epoch: int = 0, rank: int = 0) -> None:
    """Seed Python, numpy and torch in this process for (seed, epoch, rank): drop path, and the per-image
    transforms when the loader has no workers, then draw from here."""
    _seed_all(derive_seed(seed, epoch, rank))


def worker_init(worker_id: int, seed: int, epoch: int, rank: int) -> None:
    """DataLoader `worker_init_fn`: seed this worker from (seed, epoch, rank, worker id)."""
    _seed_all(derive_seed(seed, epoch, rank, worker_id))
    torch.set_num_threads(1)  # a worker augments one image at a time; more threads would only contend


def collate(batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """[(image (3, H, W), label), ...] -> (images (B, 3, H, W) float, labels (B,) int64)."""
    if not isinstance(batch[0][0], torch.Tensor):
        raise ValueError(f"the dataset returned {type(batch[0][0]).__name__}, not a tensor; give it a transform "
                         f"(minideit.data.transforms.build_transform)")
    images = torch.stack([image for image, _ in batch])
    labels = torch.tensor([label for _, label in batch], dtype=torch.int64)
    return images, labels


def _default_rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


def build_loader(dataset, batch_size: int, sampler, num_workers: int, seed: int, epoch: int, drop_last: bool,
                 pin_memory: bool = False, rank: int | None = None) -> torch.utils.data.DataLoader:
    """A DataLoader for one epoch; build a new one every epoch.

    Workers are not persistent, so each epoch starts fresh workers seeded from (seed, epoch, rank, worker id).
    `rank` defaults to this process's rank in torch.distributed (0 when not distributed).
    """
    if batch_size <= 0:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"number of workers must be >= 0, got {num_workers}")
    rank = _default_rank() if rank is None else rank
    init = functools.partial(worker_init, seed=seed, epoch=epoch, rank=rank) if num_workers > 0 else None
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, collate_fn=collate,
        worker_init_fn=init, drop_last=drop_last, pin_memory=pin_memory, persistent_workers=False,
        prefetch_factor=4 if num_workers > 0 else None,
        # The loader draws its workers' base seed from this generator, not from the global RNG, so creating a
        # loader leaves the training process's random stream untouched.
        generator=torch.Generator().manual_seed(derive_seed(seed, epoch, rank)))
