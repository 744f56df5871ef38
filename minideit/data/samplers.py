"""Which images each process sees in an epoch: repeated augmentation (paper §6, Table 8) and evaluation sharding.

Repeated augmentation (Hoffer et al. 2020; Berman et al. 2019) puts each image in the epoch several times (3 in DeiT),
each copy augmented differently and, with several processes, the copies sent to *different* processes. The official
sampler then cuts the epoch so that it has the length of an ordinary epoch over about a third of the images:
without repeated augmentation DeiT-B loses 5 points (Table 8: 76.5 vs 81.8).
"""
from __future__ import annotations

import math

import torch


class RASampler(torch.utils.data.Sampler):
    """Repeated-augmentation sampler with the semantics of the official DeiT ``RASampler``.

    Per epoch (seed + epoch drives the shuffle, so every process draws the same permutation):
    1. shuffle the indices and repeat each one ``num_repeats`` times in place: [a, a, a, b, b, b, ...];
    2. pad by wrapping around so that the length divides by ``num_replicas``;
    3. process r takes positions r, r + R, r + 2R, ...: the copies of an index land on different processes;
    4. keep the first ``num_selected`` of them: floor(len // 256 · 256 / R) per process, the official cut.
       When the dataset has fewer than 256 images that formula gives 0; we then keep ceil(len / R), one
       ordinary epoch (our choice for tiny synthetic sets; the official code would train on nothing).

    With ``num_repeats=1`` this is an ordinary shuffled sampler (sharded when R > 1, without the cut).
    ``set_start(k)`` skips the first k samples of this epoch, for resuming in the middle of an epoch.
    """

    def __init__(self, num_samples: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0, num_repeats: int = 3):
        if num_samples <= 0:
            raise ValueError("the dataset is empty: nothing to sample")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside 0..{num_replicas - 1}")
        if num_repeats < 1:
            raise ValueError(f"num_repeats must be >= 1, got {num_repeats}")
        self.dataset_len, self.num_replicas, self.rank = num_samples, num_replicas, rank
        self.shuffle, self.seed, self.num_repeats = shuffle, seed, num_repeats
        self.epoch, self.start = 0, 0
        self.per_rank = math.ceil(num_samples * num_repeats / num_replicas)  # before the cut
        if num_repeats > 1:
            cut = num_samples // 256 * 256 // num_replicas
            self.num_selected = cut if cut > 0 else math.ceil(num_samples / num_replicas)
        else:
            self.num_selected = math.ceil(num_samples / num_replicas)

    @property
    def num_samples(self) -> int:
        """Samples this process yields per epoch (before any ``set_start``)."""
        return self.num_selected

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.start = 0

    def set_start(self, k: int) -> None:
        self.start = k

    def epoch_indices(self) -> list[int]:
        """This process's indices for the current epoch, before ``set_start`` is applied."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.dataset_len, generator=g)
        else:
            order = torch.arange(self.dataset_len)
        order = order.repeat_interleave(self.num_repeats).tolist()  # [a, a, a, b, b, b, ...]
        total = self.per_rank * self.num_replicas
        order += order[: total - len(order)]  # wrap around to pad
        return order[self.rank:total:self.num_replicas][: self.num_selected]

    def __iter__(self):
        return iter(self.epoch_indices()[self.start:])

    def __len__(self) -> int:
        return max(0, self.num_selected - self.start)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "start": self.start, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.start, self.seed = state["epoch"], state["start"], state["seed"]


class EvalSampler(torch.utils.data.Sampler):
    """Every index exactly once across processes: process r takes r, r + R, ... (no padding, so no duplicate
    images distort the accuracy; the processes' counts are summed, not averaged)."""

    def __init__(self, num_samples: int, num_replicas: int = 1, rank: int = 0):
        self.dataset_len, self.num_replicas, self.rank = num_samples, num_replicas, rank

    def __iter__(self):
        return iter(range(self.rank, self.dataset_len, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.dataset_len, self.num_replicas))
