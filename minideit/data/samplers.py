"""Which images each process sees in an epoch: repeated augmentation (paper §6, Table 8) and evaluation sharding.

Repeated augmentation (Hoffer et al. 2020; Berman et al. 2019) puts each image in the epoch several times (3 in
DeiT), each copy augmented differently and, with several processes, the copies sent to *different* processes.
The official sampler then cuts the epoch back to the length of an ordinary epoch, so one epoch covers about a
third of the distinct images: without repeated augmentation DeiT-B loses 5 points (Table 8: 76.5 vs 81.8).
"""
from __future__ import annotations

import math

import torch


def _check_shard(num_samples: int, num_replicas: int, rank: int, allow_empty: bool = False) -> None:
    if not isinstance(num_samples, int) or num_samples < (0 if allow_empty else 1):
        raise ValueError(f"num_samples must be a positive int (pass len(dataset)), got {num_samples!r}")
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(f"rank {rank} is outside 0..{num_replicas - 1} (num_replicas={num_replicas})")


class RASampler(torch.utils.data.Sampler):
    """Repeated-augmentation sampler with the semantics of the official DeiT `RASampler` (samplers.py).

    Per epoch (torch.Generator seeded with seed + epoch, so every process draws the same permutation):
    1. shuffle the indices and repeat each one `num_repeats` times in place: [a, a, a, b, b, b, ...];
    2. pad by wrapping around until the length divides by `num_replicas`;
    3. process r takes positions r, r + R, r + 2R, ...: consecutive copies of an index land on different
       processes (whenever R >= num_repeats);
    4. keep the first `num_selected` of them per process, the official cut
       int(math.floor(len // 256 * 256 / R)). With fewer than 256 images that formula gives 0 (the official
       code would train on nothing); we then keep ceil(len / R), one ordinary epoch (our choice, for the tiny
       synthetic sets).

    With `num_repeats=1` this is an ordinary shuffled, sharded sampler of ceil(len / R) per process (the
    official code uses DistributedSampler when repeated augmentation is off).
    Mid-epoch resume: call `set_epoch(e)` then `set_start(k)` to skip the first k samples of epoch e
    (`set_epoch` clears the start), or restore both with `load_state_dict`.
    """

    def __init__(self, num_samples: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0, num_repeats: int = 3):
        _check_shard(num_samples, num_replicas, rank)
        if num_repeats < 1:
            raise ValueError(f"num_repeats must be >= 1, got {num_repeats}")
        self.dataset_len, self.num_replicas, self.rank = num_samples, num_replicas, rank
        self.shuffle, self.seed, self.num_repeats = shuffle, seed, num_repeats
        self.epoch, self.start = 0, 0
        self.per_rank = math.ceil(num_samples * num_repeats / num_replicas)  # before the cut
        official_cut = int(math.floor(num_samples // 256 * 256 / num_replicas))
        if num_repeats > 1 and official_cut > 0:
            self.num_selected = official_cut
        else:
            self.num_selected = math.ceil(num_samples / num_replicas)

    @property
    def num_samples(self) -> int:
        """Samples this process yields per epoch (before any `set_start`)."""
        return self.num_selected

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.start = epoch, 0

    def set_start(self, k: int) -> None:
        if not 0 <= k <= self.num_selected:
            raise ValueError(f"start {k} is outside 0..{self.num_selected} (samples per epoch on this process)")
        self.start = k

    def epoch_indices(self) -> list[int]:
        """This process's indices for the current epoch, before `set_start` is applied."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.dataset_len, generator=g)
        else:
            order = torch.arange(self.dataset_len)
        # BEGIN EXERCISE epoch_indices
        order = order.repeat_interleave(self.num_repeats)  # [a, a, a, b, b, b, ...]
        total = self.per_rank * self.num_replicas
        order = order.repeat(math.ceil(total / len(order)))[:total]  # wrap around to pad (more than once if tiny)
        return order[self.rank::self.num_replicas][:self.num_selected].tolist()
        # END EXERCISE epoch_indices

    def __iter__(self):
        return iter(self.epoch_indices()[self.start:])

    def __len__(self) -> int:
        return self.num_selected - self.start

    def state_dict(self) -> dict:
        return {'epoch': self.epoch, 'start': self.start, 'seed': self.seed, 'num_samples': self.dataset_len,
                'num_replicas': self.num_replicas}

    def load_state_dict(self, state: dict) -> None:
        if state.get('num_samples', self.dataset_len) != self.dataset_len:
            raise ValueError(f"the sampler state is for {state['num_samples']} images but the dataset has "
                             f"{self.dataset_len}; resume with the same dataset")
        self.epoch, self.seed = state['epoch'], state['seed']
        # A start offset only means something with the same sharding; otherwise restart the epoch.
        same_sharding = state.get('num_replicas', self.num_replicas) == self.num_replicas
        self.start = state['start'] if same_sharding else 0


class EvalSampler(torch.utils.data.Sampler):
    """Every index exactly once across processes: process r takes r, r + R, r + 2R, ... No padding, so no image
    is counted twice; the processes' correct counts are summed, not averaged."""

    def __init__(self, num_samples: int, num_replicas: int = 1, rank: int = 0):
        _check_shard(num_samples, num_replicas, rank, allow_empty=True)
        self.dataset_len, self.num_replicas, self.rank = num_samples, num_replicas, rank

    def __iter__(self):
        return iter(range(self.rank, self.dataset_len, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.dataset_len, self.num_replicas))
