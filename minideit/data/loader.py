"""Batches from a dataset, with every random draw a function of (seed, epoch, rank, worker).

Exact resume depends on this: if the augmentation of epoch e depends only on (seed, e), then training epochs 0 and 1
straight, or epoch 0, a checkpoint and epoch 1 in a new process, sees identical batches.
"""
from __future__ import annotations

import random

import numpy as np
import torch


def derive_seed(seed: int, epoch: int = 0, rank: int = 0, worker: int = -1) -> int:
    """One 32-bit seed per (seed, epoch, rank, worker), different for each combination."""
    return int(np.random.SeedSequence([seed, epoch, rank, worker + 1]).generate_state(1)[0])


def seed_everything(seed: int, epoch: int = 0, rank: int = 0) -> None:
    """Seed python, numpy and torch in this process for (seed, epoch, rank): drop path, and the per-image
    transforms when the loader has no workers, then draw from here."""
    s = derive_seed(seed, epoch, rank)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


class WorkerInit:
    """Seeds each loader worker from (seed, epoch, rank, worker id); a class so that it pickles for spawn."""

    def __init__(self, seed: int, epoch: int, rank: int):
        self.seed, self.epoch, self.rank = seed, epoch, rank

    def __call__(self, worker_id: int) -> None:
        s = derive_seed(self.seed, self.epoch, self.rank, worker_id)
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)
        torch.set_num_threads(1)  # workers decode and augment one image at a time; threads would only contend


def collate(batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """[(image (3, H, W), label), ...] → (images (B, 3, H, W), labels (B,) int64)."""
    images = torch.stack([b[0] for b in batch])
    labels = torch.tensor([b[1] for b in batch], dtype=torch.int64)
    return images, labels


def build_loader(dataset, batch_size: int, sampler, num_workers: int, seed: int, epoch: int, drop_last: bool,
                 pin_memory: bool = False, rank: int = 0) -> torch.utils.data.DataLoader:
    """A DataLoader for one epoch. Workers are not persistent: each epoch's workers are seeded anew."""
    if batch_size <= 0:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"number of workers must be >= 0, got {num_workers}")
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, collate_fn=collate,
        worker_init_fn=WorkerInit(seed, epoch, rank) if num_workers > 0 else None,
        drop_last=drop_last, pin_memory=pin_memory, persistent_workers=False,
        prefetch_factor=4 if num_workers > 0 else None)
