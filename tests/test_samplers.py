"""Repeated-augmentation and evaluation samplers, and seeded loaders (minideit/data/samplers.py, loader.py)."""
import random
from collections import Counter

import numpy as np
import pytest
import torch

from minideit.data.loader import build_loader, collate, derive_seed, seed_everything
from minideit.data.samplers import EvalSampler, RASampler


def uncut_indices(n, world, rank, epoch=0, seed=0, repeats=3):
    """A rank's indices before the official cut (num_selected lifted to the padded length)."""
    s = RASampler(n, world, rank, seed=seed, num_repeats=repeats)
    s.num_selected = s.per_rank
    s.set_epoch(epoch)
    return list(s)


@pytest.mark.parametrize('n, world', [(1000, 1), (1000, 4), (999, 4), (512, 8), (10, 3)])
def test_each_index_three_times_across_ranks_before_the_cut(n, world):
    per_rank = [uncut_indices(n, world, r) for r in range(world)]
    counts = Counter(i for idx in per_rank for i in idx)
    assert set(counts) == set(range(n))
    padding = sum(len(idx) for idx in per_rank) - 3 * n
    assert 0 <= padding < world  # padded only up to a multiple of the world size
    assert sum(c - 3 for c in counts.values()) == padding and min(counts.values()) == 3
    assert len({len(idx) for idx in per_rank}) == 1  # every rank the same length


def test_copies_of_an_index_land_on_different_ranks():
    world, n = 4, 400
    owners: dict[int, list[int]] = {}
    for r in range(world):
        for i in uncut_indices(n, world, r)[: (3 * n) // world]:  # ignore the wrap-around padding
            owners.setdefault(i, []).append(r)
    assert all(len(set(rs)) == len(rs) for rs in owners.values())


def test_official_epoch_cut_and_tiny_dataset_fallback():
    assert len(RASampler(1_281_167, 8, 0)) == 1_281_167 // 256 * 256 // 8 == 160_128
    assert len(RASampler(1000, 1, 0)) == 768  # floor(1000 // 256 * 256 / 1)
    assert len(RASampler(1000, 3, 0)) == 256
    # fewer than 256 images: the official formula gives 0, we keep one ordinary epoch per rank
    assert len(RASampler(100, 1, 0)) == 100 and len(RASampler(100, 3, 2)) == 34
    assert len(RASampler(100, 1, 0, num_repeats=1)) == 100


def test_epochs_shuffle_differently_and_reproducibly():
    s = RASampler(1000, 2, 1, seed=5)
    s.set_epoch(3)
    a = list(s)
    s.set_epoch(4)
    b = list(s)
    again = RASampler(1000, 2, 1, seed=5)
    again.set_epoch(3)
    assert a == list(again) and a != b and len(a) == len(b) == 384
    other_seed = RASampler(1000, 2, 1, seed=6)
    other_seed.set_epoch(3)
    assert list(other_seed) != a


def test_set_start_skips_and_state_dict_restores_it():
    s = RASampler(1000, 1, 0, seed=1)
    s.set_epoch(2)
    full = list(s)
    s.set_start(100)
    assert list(s) == full[100:] and len(s) == len(full) - 100
    resumed = RASampler(1000, 1, 0, seed=1)
    resumed.load_state_dict(s.state_dict())
    assert list(resumed) == full[100:]
    s.set_epoch(3)  # a new epoch starts from its beginning
    assert len(s) == len(full)
    with pytest.raises(ValueError, match='start'):
        s.set_start(len(full) + 1)
    with pytest.raises(ValueError, match='dataset'):
        RASampler(999, 1, 0).load_state_dict(resumed.state_dict())


def test_sampler_argument_errors():
    with pytest.raises(ValueError, match='len\\(dataset\\)'):
        RASampler(0)
    with pytest.raises(ValueError, match='rank'):
        RASampler(10, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match='num_repeats'):
        RASampler(10, num_repeats=0)


@pytest.mark.parametrize('n, world', [(10, 1), (10, 3), (7, 8), (0, 2)])
def test_eval_sampler_covers_every_index_once(n, world):
    parts = [list(EvalSampler(n, world, r)) for r in range(world)]
    assert sorted(i for p in parts for i in p) == list(range(n))
    assert [len(EvalSampler(n, world, r)) for r in range(world)] == [len(p) for p in parts]


# ---- loader -------------------------------------------------------------------------------------------------

class RandomDataset(torch.utils.data.Dataset):
    """Each item's 'augmentation' draws from Python's random and torch's global RNG, like the transforms."""

    def __len__(self):
        return 32

    def __getitem__(self, i):
        return torch.full((3, 2, 2), random.random()) + torch.rand(3, 2, 2), i % 5


def load_all(seed, epoch, workers, rank=0):
    sampler = RASampler(32, 1, 0, seed=seed)
    sampler.set_epoch(epoch)
    loader = build_loader(RandomDataset(), 4, sampler, workers, seed, epoch, drop_last=True, rank=rank)
    return [b for b in loader]


def test_loader_with_two_workers_is_a_function_of_seed_and_epoch():
    a, b = load_all(0, 1, 2), load_all(0, 1, 2)
    assert len(a) == 8 and a[0][0].shape == (4, 3, 2, 2) and a[0][1].dtype == torch.int64
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    assert not torch.equal(a[0][0], load_all(0, 2, 2)[0][0])  # another epoch, other augmentations
    assert not torch.equal(a[0][0], load_all(0, 1, 2, rank=1)[0][0])  # another rank, other augmentations


def test_main_process_loading_is_seeded_by_seed_everything():
    seed_everything(3, epoch=1)
    a = load_all(3, 1, 0)
    seed_everything(3, epoch=1)
    b = load_all(3, 1, 0)
    assert all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(a, b))
    state = torch.get_rng_state()
    build_loader(RandomDataset(), 4, None, 0, 0, 0, drop_last=False)
    assert torch.equal(state, torch.get_rng_state())  # building a loader draws nothing from the global RNG


def test_derive_seed_and_collate():
    seeds = {derive_seed(0, e, r, w) for e in range(3) for r in range(3) for w in range(-1, 3)}
    assert len(seeds) == 36
    assert derive_seed(0, 1) != derive_seed(1, 0)
    images, labels = collate([(torch.zeros(3, 4, 4), 1), (torch.ones(3, 4, 4), 2)])
    assert images.shape == (2, 3, 4, 4) and labels.tolist() == [1, 2] and labels.dtype == torch.int64
    with pytest.raises(ValueError, match='transform'):
        collate([(np.zeros((4, 4, 3)), 1)])
    with pytest.raises(ValueError, match='batch size'):
        build_loader(RandomDataset(), 0, None, 0, 0, 0, drop_last=False)


def test_seeded_dataset_gives_each_image_its_own_draws_and_puts_the_generators_back():
    """A batch is loaded in one call (one save/restore of the generators, for speed), yet each image's augmentation
    is a function of its own seed only, and the training process's random streams are left where they were."""
    import random

    import numpy as np

    from minideit.train import SeededDataset

    class Draws:
        def __len__(self):
            return 4

        def __getitem__(self, index):
            return index, random.random(), float(np.random.rand()), torch.rand(1).item()

    data = SeededDataset(Draws())
    items = [(0, 11), (1, 12), (2, 11)]
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    before = (random.random(), float(np.random.rand()), torch.rand(1).item())
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    batch = data.__getitems__(items)
    after = (random.random(), float(np.random.rand()), torch.rand(1).item())
    assert after == before  # the streams the step draws from (drop path) did not move
    assert batch == [data[item] for item in items]  # one by one gives the same images
    assert batch[0][1:] == batch[2][1:] and batch[0][1:] != batch[1][1:]  # same seed, same draws
