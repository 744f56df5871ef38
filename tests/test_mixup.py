"""Mixup / CutMix on a batch (minideit/data/mixup.py)."""
import math

import pytest
import torch

from minideit.data.mixup import Mixup, cutmix_box, mix_targets, one_hot_smoothed


def batch(b=8, classes=10, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g), torch.randint(0, classes, (b,), generator=g)


def test_label_smoothing_values():
    t = one_hot_smoothed(torch.tensor([2, 0]), num_classes=5, smoothing=0.1)
    assert torch.allclose(t[0], torch.tensor([0.02, 0.02, 0.92, 0.02, 0.02]))
    assert torch.allclose(t.sum(1), torch.ones(2))
    assert torch.equal(one_hot_smoothed(torch.tensor([1]), 3, 0.0), torch.tensor([[0.0, 1.0, 0.0]]))


def test_targets_mix_with_the_flipped_batch():
    y = torch.tensor([0, 1, 2, 3])
    t = mix_targets(y, 4, lam=0.7, smoothing=0.0)
    assert torch.allclose(t[0], torch.tensor([0.7, 0.0, 0.0, 0.3]))  # image 0's partner is image 3
    assert torch.allclose(t.sum(1), torch.ones(4))


def test_cutmix_box_area_and_bounds():
    g = torch.Generator().manual_seed(0)
    for lam in [0.0, 0.3, 0.5, 0.9, 0.999]:
        for _ in range(50):
            y0, y1, x0, x1 = cutmix_box(32, 48, lam, g)
            assert 0 <= y0 <= y1 <= 32 and 0 <= x0 <= x1 <= 48
            # never larger than the unclipped box of side sqrt(1 - lam)
            assert (y1 - y0) <= int(32 * math.sqrt(1 - lam)) and (x1 - x0) <= int(48 * math.sqrt(1 - lam))


def test_mixup_blends_images_and_targets():
    x, y = batch()
    m = Mixup(mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.0, num_classes=10, seed=1)
    g = Mixup(mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.0, num_classes=10, seed=1)
    lam, use_cutmix = g.draw()  # the same draw the real call will make
    xm, t = m(x, y)
    assert not use_cutmix and 0 < lam < 1
    assert torch.allclose(xm, lam * x + (1 - lam) * x.flip(0), atol=1e-6)
    assert torch.allclose(t, mix_targets(y, 10, lam, 0.0)) and torch.allclose(t.sum(1), torch.ones(8))


def test_cutmix_pastes_a_box_and_lambda_is_the_true_kept_area():
    x, y = batch(b=6, size=20)
    m = Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=10, seed=3)
    twin = Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=10, seed=3)
    for _ in range(20):
        xm, t = m(x, y)
        lam, use_cutmix = twin.draw()  # replay the same draws to know the box
        y0, y1, x0, x1 = cutmix_box(20, 20, lam, twin.gen)
        assert use_cutmix
        inside = torch.zeros(20, 20, dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        assert torch.equal(xm[..., inside], x.flip(0)[..., inside]) and torch.equal(xm[..., ~inside], x[..., ~inside])
        kept = 1 - inside.float().mean().item()
        assert torch.allclose(t, mix_targets(y, 10, kept, 0.1))
        assert torch.allclose(t.sum(1), torch.ones(6))
    assert torch.equal(x, batch(b=6, size=20)[0])  # the input batch itself is never written to


def test_switch_between_mixup_and_cutmix_and_prob():
    m = Mixup(seed=0)
    draws = [m.draw() for _ in range(2000)]
    cut = sum(c for _, c in draws) / len(draws)
    assert 0.45 < cut < 0.55
    never = Mixup(prob=0.0, seed=0)
    x, y = batch()
    xm, t = never(x, y)
    assert torch.equal(xm, x) and torch.allclose(t, one_hot_smoothed(y, 1000, 0.1))


def test_state_dict_round_trip_reproduces_the_next_batch():
    x, y = batch()
    m = Mixup(num_classes=10, seed=7)
    for _ in range(3):
        m(x, y)
    state = m.state_dict()
    expected = [m(x, y) for _ in range(4)]
    fresh = Mixup(num_classes=10, seed=123)
    fresh.load_state_dict(state)
    for xe, te in expected:
        xr, tr = fresh(x, y)
        assert torch.equal(xr, xe) and torch.equal(tr, te)


def test_same_seed_same_batches_different_seed_different():
    x, y = batch()
    a, b, c = Mixup(num_classes=10, seed=1), Mixup(num_classes=10, seed=1), Mixup(num_classes=10, seed=2)
    ra, rb, rc = [m(x, y)[1] for m in (a, b, c)]
    assert torch.equal(ra, rb) and not torch.equal(ra, rc)


def test_odd_batch_and_bad_settings_raise_clear_errors():
    x, y = batch(b=7)
    with pytest.raises(ValueError, match='even batch size'):
        Mixup(num_classes=10)(x, y)
    with pytest.raises(ValueError, match='alpha'):
        Mixup(mixup_alpha=-1)
    with pytest.raises(ValueError, match='label_smoothing'):
        Mixup(label_smoothing=1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')
def test_works_on_cuda_with_cpu_randomness():
    x, y = batch()
    m, ref = Mixup(num_classes=10, seed=5), Mixup(num_classes=10, seed=5)
    xg, tg = m(x.cuda(), y.cuda())
    xc, tc = ref(x, y)
    assert xg.is_cuda and tg.is_cuda
    assert torch.allclose(xg.cpu(), xc, atol=1e-6) and torch.allclose(tg.cpu(), tc)
