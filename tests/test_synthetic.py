"""The synthetic glyph dataset: deterministic, balanced, noisy train labels only, glyphs drawn where they should be."""
import numpy as np
import pytest
import torch
from PIL import Image

from minideit.data import synthetic as S
from minideit.data.synthetic import SyntheticShapes


def test_same_arguments_same_images_and_splits_differ():
    a = SyntheticShapes("train", num_samples=200, seed=3)
    S._generate.cache_clear()  # regenerate from scratch, not from the cache
    b = SyntheticShapes("train", num_samples=200, seed=3)
    assert np.array_equal(a.data, b.data) and np.array_equal(a.targets, b.targets)
    other_seed = SyntheticShapes("train", num_samples=200, seed=4)
    val = SyntheticShapes("val", num_samples=200, seed=3)
    assert not np.array_equal(a.data, other_seed.data)
    assert not np.array_equal(a.data, val.data)


def test_shapes_types_and_balanced_classes():
    ds = SyntheticShapes("val", num_samples=300, img_size=48)
    assert ds.data.shape == (300, 48, 48, 3) and ds.data.dtype == np.uint8
    assert len(ds) == 300 and ds.num_classes == 10 and len(ds.classes) == 10
    assert np.bincount(ds.clean_targets, minlength=10).tolist() == [30] * 10
    image, label = ds[0]
    assert isinstance(image, Image.Image) and image.size == (48, 48) and label == ds.targets[0]
    with_tf = SyntheticShapes("val", num_samples=300, img_size=48, transform=lambda im: np.asarray(im).sum())
    assert with_tf[5][0] == int(ds.data[5].astype(np.int64).sum())
    assert ds.data.flags.writeable is False  # the cached arrays cannot be changed by accident


def test_changed_settings_give_new_images_not_cached_ones(monkeypatch):
    before = SyntheticShapes("val", num_samples=50).data
    monkeypatch.setitem(S.SETTINGS, "noise", 0.0)
    after = SyntheticShapes("val", num_samples=50).data
    assert not np.array_equal(before, after)


def test_label_noise_on_train_only():
    train = SyntheticShapes("train", num_samples=4000)
    val = SyntheticShapes("val", num_samples=1000)
    assert np.array_equal(val.targets, val.clean_targets)
    wrong = (train.targets != train.clean_targets).mean()
    expected = S.SETTINGS["label_noise"] * 0.9  # a random relabel hits the right class 1 time in 10
    assert abs(wrong - expected) < 0.025, wrong


def test_glyphs_are_symmetric_and_distinct():
    names, bank = S.glyph_bank(16)  # 10 named glyphs and 6 generated ones
    assert len(names) == 16 and len(set(names)) == 16 and bank.shape == (16, 5, 5)
    assert np.array_equal(bank, bank[:, :, ::-1]), "a horizontal flip must not change any class"
    differences = (bank[:, None] != bank[None]).sum((2, 3)) + 25 * np.eye(16, dtype=int)
    assert differences.min() >= 4


def test_paint_clips_at_the_borders():
    img = np.zeros((2, 6, 6, 3), np.float32)
    mask = np.ones((2, 3, 3), bool)
    S.paint(img, mask, np.array([-1, 4]), np.array([-1, 4]), np.array([[1, 0, 0], [0, 1, 0]], np.float32))
    assert img[0, :2, :2, 0].all() and img[0, :, :, 0].sum() == 4  # the 2×2 corner that is inside
    assert img[1, 4:, 4:, 1].all() and img[1, :, :, 1].sum() == 4


def test_the_drawn_glyph_is_the_class_stencil():
    """With no clutter and no noise, the pixels that differ from the smooth background, sampled at each stencil
    cell's centre, spell the class's stencil."""
    knobs = dict(S.SETTINGS, scale=(4.0, 4.0))  # exactly 4 pixels per cell: a 20-pixel glyph
    rng = np.random.default_rng(0)
    n, size = 20, 32
    _, bank = S.glyph_bank(10)
    labels = np.arange(n) % 10
    img = np.full((n, size, size, 3), 0.2, np.float32)
    S.add_glyphs(rng, img, labels, bank, knobs)
    painted = np.abs(img - 0.2).sum(-1) > 1e-6  # (n, 32, 32)
    for i in range(n):
        ys, xs = np.nonzero(painted[i])
        top, left = ys.min(), xs.min()
        stencil = bank[labels[i]]
        # the stencil's first painted row/column may not be row/column 0
        top -= 4 * np.nonzero(stencil.any(1))[0][0]
        left -= 4 * np.nonzero(stencil.any(0))[0][0]
        centres = top + 4 * np.arange(5) + 2, left + 4 * np.arange(5) + 2
        assert np.array_equal(painted[i][np.ix_(*centres)], stencil), f"image {i} (class {labels[i]})"


@pytest.mark.parametrize("kwargs, message", [
    (dict(split="test"), "split must be 'train' or 'val'"),
    (dict(img_size=8), r"at least 16 pixels .*--input-size.*got 8"),
    (dict(num_classes=1), "num_classes must be at least 2"),
    (dict(num_samples=0), "num_samples must be positive"),
])
def test_bad_arguments_say_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SyntheticShapes(**kwargs)


def test_a_small_convnet_learns_it():
    """The classes are learnable by a convnet from few images in seconds: the premise the demo relies on."""
    torch.manual_seed(0)
    train = SyntheticShapes("train", num_samples=1000, seed=1)
    val = SyntheticShapes("val", num_samples=300, seed=1)

    def tensors(ds):
        x = torch.from_numpy(np.array(ds.data)).permute(0, 3, 1, 2).float() / 255 - 0.5
        return x, torch.from_numpy(np.array(ds.targets)).long()

    (x, y), (xv, yv) = tensors(train), tensors(val)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.BatchNorm2d(64), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.BatchNorm2d(64), torch.nn.ReLU(),
        torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, 10))
    opt = torch.optim.AdamW(net.parameters(), 3e-3)
    for _ in range(4):
        for idx in torch.randperm(len(x)).split(50):
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        accuracy = (net(xv).argmax(1) == yv).float().mean().item()
    assert accuracy > 0.5, f"val accuracy {accuracy:.2f}; chance is 0.10"


def test_the_clear_style_draws_stronger_glyphs_on_cleaner_images():
    """`style="clear"` changes only the drawing knobs STYLES names: the same labels (the label noise is
    unchanged), but no pixel noise, so two images of one seed differ between the styles; an unknown style is a
    ValueError that names the choices."""
    standard = S.SyntheticShapes("train", num_samples=200, seed=3)
    clear = S.SyntheticShapes("train", num_samples=200, seed=3, style="clear")
    assert (standard.clean_targets == clear.clean_targets).all()
    assert not np.array_equal(standard.data, clear.data)
    # pixel noise: neighbouring pixels of the smooth background differ far less without it
    roughness = lambda d: np.abs(np.diff(d.data.astype(np.float32), axis=2)).mean()
    assert roughness(clear) < 0.6 * roughness(standard)
    with pytest.raises(ValueError, match="choose one of standard, clear"):
        S.SyntheticShapes("train", num_samples=10, style="blurry")


def test_the_training_flag_offers_every_style_and_reaches_the_images():
    """`--synthetic-style` lists exactly STYLES, and the run's datasets (train and val) are drawn in its style."""
    import torch
    from minideit import config
    from minideit.distributed import DistInfo
    from minideit.train import build_data
    flag = next(a for a in config.build_parser()._actions if a.dest == "synthetic_style")
    assert list(flag.choices) == list(S.STYLES)
    cfg = config.resolve(["--data-set", "synthetic", "--synthetic-style", "clear", "--input-size", "32",
                          "--num-samples", "64"])
    train_set, val_set, _, _ = build_data(cfg, DistInfo(0, 1, 0, torch.device("cpu"), True))
    clear = S.SyntheticShapes("train", num_samples=64, seed=cfg.seed, style="clear")
    assert np.array_equal(train_set.data, clear.data)
    assert np.array_equal(val_set.data, S.SyntheticShapes("val", seed=cfg.seed, style="clear").data)


SMALL = (1.0, 1.5)  # the "fine" style's smallest glyphs: pixels per stencil cell at 32 px


def smooth_glyph_coverage(size: int, label: int, monkeypatch, n: int = 40) -> np.ndarray:
    """(n, size, size) the coverage `add_smooth_glyphs` gives `n` small glyphs (SMALL) of one class: drawn in white
    on a black image, each pixel's value is the share of it the glyph covers."""
    monkeypatch.setattr(S, "glyph_colour", lambda rng, background, knobs: np.ones((len(background), 3), np.float32))
    img = np.zeros((n, size, size, 3), np.float32)
    _, bank = S.glyph_bank(10)
    knobs = {**S.SETTINGS, **S.STYLES["fine"], "scale": SMALL}
    S.add_smooth_glyphs(np.random.default_rng(0), img, np.full(n, label), bank, knobs)
    return img[..., 0]


def test_the_fine_style_blurs_at_32_pixels_what_64_pixels_show(monkeypatch):
    """The "fine" style is the resolution experiment's: its glyphs are drawn on a sub-pixel grid and averaged, so a
    pixel holds the share of it the glyph covers. The ink is conserved (the coverage adds up to the stencil's
    painted area, on average over glyphs), and a small checker glyph, whose cells are 1-1.5 px at 32 px, is almost all
    partly covered (grey) pixels there, while at 64 px a third of its pixels are wholly glyph: the detail a higher
    resolution recovers (Table 10)."""
    checker = list(S.GLYPHS).index("checker")
    painted_cells = S.glyph_bank(10)[1][checker].sum()
    solid = {}
    for size in (32, 64):
        a = smooth_glyph_coverage(size, checker, monkeypatch)
        rng = np.random.default_rng(0)  # the cell sizes the drawing drew, in the same order
        cell = rng.uniform(*SMALL, len(a)) * size / 32
        # each glyph's ink is its painted area to within the sub-pixel grid (a quarter pixel a side), and on average
        # exactly so
        assert abs(a.sum((1, 2)).mean() / (painted_cells * cell ** 2).mean() - 1) < 0.03
        solid[size] = (a[a > 0] > 0.9).mean()  # the share of the glyph's pixels that are (almost) wholly glyph
    assert solid[64] > 3 * solid[32] and solid[32] < 0.15, solid
    # the other styles draw hard edges: every glyph pixel is fully glyph or fully background
    img = np.zeros((5, 32, 32, 3), np.float32)
    S.add_glyphs(np.random.default_rng(0), img, np.full(5, checker), S.glyph_bank(10)[1],
                 {**S.SETTINGS, **S.STYLES["clear"]})
    assert set(np.unique(img[..., 0])) <= {0.0, 1.0}
