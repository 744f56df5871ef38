"""``synthetic``: a procedurally generated 10-class image set on which the paper's premise shows in minutes.

Why this design (paper §1, §5.2: a convnet's inductive bias is what a transformer lacks with little data)
-----------------------------------------------------------------------------------------------------------
Each class is a *glyph*, a 5×5 binary stencil (a plus, a ring, bars, ...). An image shows its class's glyph once,
drawn with 3-4 pixels per stencil cell (15-20 px on a 32×32 image) in one colour, at a random pixel position on a
smooth coloured background, with a few random discs as clutter and some pixel noise. A person reads every image
at a glance.

* A convnet is built for this: its filters detect bars and corners anywhere (translation equivariance) and global
  pooling forgets where they were. regnety_002 reaches 80-90% from 3,000 images in 12 epochs.
* A ViT with 4×4 patches is not: the glyph lands on the patch grid at any of 16 sub-patch offsets and spans 4-5
  patches a side, so the transformer has to learn from data that a bar is a bar at every offset and how patches
  combine into a shape. From the same 3,000 images it is far behind (~45% in 10 epochs with clean labels): the
  regime in which the paper's distillation from a convnet teacher pays.
* The training labels are noisy (30% of the training images get a random label, as hurried annotators' labels
  are; the validation labels are clean). A convnet trained briefly fits the majority, clean signal before
  it memorises the noise, so its predictions are cleaner than the labels. Hard distillation (paper §4) hands the
  student those cleaner labels: one concrete reason a teacher's labels can beat the ground truth's, the same
  argument as the paper's about crops in which the labelled object is missing. Measured with the demo's settings
  (``python -m minideit.train``, 10 student epochs): teacher 79.9%, hard-distilled DeiT-nano 44.0%. The same
  DeiT-nano without a teacher is erratic on these labels: 8.1% in 10 epochs (it never left chance), but 40.2% in 8
  and 38.2% in 12, so one run says little about distillation's gain; ``python -m minideit.reproduce`` averages
  seeds. With 10% label noise instead, the teacher reaches 86.3% but the undistilled student (47.7%) edges out the
  distilled one (43.4%): the teacher's labels are then no cleaner than the ground truth's.

Every glyph is left-right symmetric, so a horizontal flip (part of the training recipe) never changes a class.
Everything is drawn from ``numpy.random.default_rng`` seeded by (seed, split): the same arguments always give
the same images, train and val never share a random stream, and 3,000 images take about a second.
"""
from __future__ import annotations

import functools
from typing import Callable

import numpy as np
from PIL import Image

# 5×5 stencils; '#' is painted. Each one is left-right symmetric (a flipped image keeps its class) and differs
# from every other in at least 4 cells.
GLYPHS: dict[str, tuple[str, ...]] = {
    "plus": ("..#..", "..#..", "#####", "..#..", "..#.."),
    "cross": ("#...#", ".#.#.", "..#..", ".#.#.", "#...#"),
    "ring": ("#####", "#...#", "#...#", "#...#", "#####"),
    "bars": ("#####", ".....", "#####", ".....", "#####"),
    "columns": ("#.#.#", "#.#.#", "#.#.#", "#.#.#", "#.#.#"),
    "checker": ("#.#.#", ".#.#.", "#.#.#", ".#.#.", "#.#.#"),
    "tee": ("#####", "..#..", "..#..", "..#..", "..#.."),
    "aitch": ("#...#", "#...#", "#####", "#...#", "#...#"),
    "vee": ("#...#", "#...#", ".#.#.", ".#.#.", "..#.."),
    "diamond": ("..#..", ".#.#.", "#...#", ".#.#.", "..#.."),
}
GLYPH = 5  # stencil side, in cells

# The difficulty knobs, tuned so that (at 32×32, 3,000 training images) regnety_002 is far ahead of a DeiT-nano
# and its decisions are cleaner than the noisy labels (the figures are in the docstring above). Change them
# freely: they are part of the cache key of `generate`, so new values give new images.
SETTINGS = dict(
    copies=(1, 1),        # glyphs per image (min, max)
    scale=(3.0, 4.0),     # pixels per stencil cell at 32×32 (scaled with img_size): a glyph is 15-20 px
    blobs=(1, 3),         # clutter discs per image
    blob_radius=(1.0, 3.0),
    contrast=(0.35, 0.7),  # how far the glyph colour is from the background's
    noise=0.08,           # std of the per-pixel Gaussian noise, in [0, 1] units
    label_noise=0.30,     # fraction of training images whose label is replaced by a random class
)
# Named variants of SETTINGS (only the knobs that differ). "standard" is the demo's; "clear" draws glyphs a person
# cannot miss (strong contrast, no pixel noise, at most one clutter disc), so that with few images the task is
# limited by how much a model can learn from them and not by how hard each image is to read: the regime of
# `python -m minideit.reproduce` (book/results/development.md, run 15). The label noise is the same in all three.
# "fine" is "clear" with glyphs of many sizes (1-4 px a stencil cell at 32×32: 5-20 px), drawn on a grid
# `supersample` times finer than the pixels and averaged (each pixel gets the share of it the glyph covers), at
# sub-pixel positions. At 32×32 the smallest glyphs' cells are 1-1.5 px, too few for a pattern of 2-cell period
# (checker, bars, columns) to be told from a grey patch; at 64×64 the same glyph is drawn at 2-3 px a cell and is
# sharp. Photos have this property (more pixels show more detail), and Table 10's gain from a higher fine-tuning
# resolution needs it; the blocky glyphs of the other styles look the same at any size. Glyphs of 5-7.5 px only
# left the student at chance (book/results/development.md, run 46).
STYLES: dict[str, dict] = {
    "standard": {},
    "clear": dict(contrast=(0.7, 1.0), noise=0.0, blobs=(0, 1)),
    "fine": dict(contrast=(0.7, 1.0), noise=0.0, blobs=(0, 1), scale=(1.0, 4.0), supersample=4),
}
SPLITS = ("train", "val")
DEFAULT_SIZES = {"train": 3000, "val": 1000}


def glyph_bank(num_classes: int) -> tuple[list[str], np.ndarray]:
    """Class names and stencils (num_classes, 5, 5) bool. Past the 10 named glyphs, extra classes are random
    symmetric stencils (from a fixed seed) that differ from every earlier one in at least 5 cells."""
    names = list(GLYPHS)[:num_classes]
    bank = [np.array([[c == "#" for c in row] for row in GLYPHS[n]]) for n in names]
    rng = np.random.default_rng(2021)
    while len(bank) < num_classes:
        left = rng.random((GLYPH, 3)) < 0.5                       # columns 0, 1, 2
        stencil = np.concatenate([left, left[:, 1::-1]], axis=1)  # mirror columns 1, 0 to make 3, 4
        if stencil.sum() >= 7 and min((stencil != b).sum() for b in bank) >= 5:
            names.append(f"glyph{len(bank)}")
            bank.append(stencil)
    return names, np.stack(bank)


def split_rng(split: str, seed: int) -> np.random.Generator:
    """One independent random stream per (seed, split)."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split)]))


def smooth_background(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """(n, size, size, 3) float32 in [0, 1]: a random colour plus a gentle colour gradient (a 3×3 grid of random
    colours, bilinearly upsampled)."""
    grid = rng.random((n, 3, 3, 3), dtype=np.float32)
    t = np.linspace(0, 2, size, dtype=np.float32)
    weights = np.clip(1 - np.abs(t[:, None] - np.arange(3, dtype=np.float32)), 0, 1)  # (size, 3) hat functions
    gradient = np.einsum("yi,nijc,xj->nyxc", weights, grid, weights)  # (n, size, size, 3)
    base = rng.random((n, 1, 1, 3), dtype=np.float32)
    return 0.6 * base + 0.4 * gradient


def paint(img: np.ndarray, mask: np.ndarray, top: np.ndarray, left: np.ndarray, colour: np.ndarray) -> None:
    """In place: img[i] gets colour[i] where mask[i] is True, mask[i]'s corner at (top[i], left[i]); whatever
    falls outside the image is dropped. img (n, S, S, 3), mask (n, h, w) bool, top/left (n,), colour (n, 3).
    It is `blend` with a coverage of 1 where the mask is set (exactly the colour there) and 0 elsewhere."""
    blend(img, mask.astype(np.float32), top, left, colour)


def blend(img: np.ndarray, alpha: np.ndarray, top: np.ndarray, left: np.ndarray, colour: np.ndarray) -> None:
    """In place: each pixel under alpha[i] (n, h, w, coverage in [0, 1]), whose corner is at (top[i], left[i]),
    becomes (1 - alpha) · itself + alpha · colour[i]; whatever falls outside the image is dropped."""
    n, size = img.shape[:2]
    rows = top[:, None] + np.arange(alpha.shape[1])   # (n, h)
    cols = left[:, None] + np.arange(alpha.shape[2])  # (n, w)
    inside = ((rows >= 0) & (rows < size))[:, :, None] & ((cols >= 0) & (cols < size))[:, None, :]
    i, y, x = np.nonzero((alpha > 0) & inside)
    a = alpha[i, y, x][:, None]                       # (k, 1)
    img[i, rows[i, y], cols[i, x]] = (1 - a) * img[i, rows[i, y], cols[i, x]] + a * colour[i]


def add_blobs(rng: np.random.Generator, img: np.ndarray, knobs: dict) -> None:
    """Clutter: `blobs` discs of random colour and radius at random places (possibly over the edge)."""
    n, size = img.shape[:2]
    lo, hi = knobs["blobs"]
    count = rng.integers(lo, hi + 1, n)
    px = size / 32
    width = int(np.ceil(2 * knobs["blob_radius"][1] * px)) + 1
    d = np.arange(width, dtype=np.float32) - (width - 1) / 2
    dist2 = d[:, None] ** 2 + d[None, :] ** 2  # (width, width) squared distance to the centre
    for j in range(hi):
        radius = rng.uniform(*knobs["blob_radius"], n).astype(np.float32) * px
        mask = (dist2[None] <= radius[:, None, None] ** 2) & (j < count)[:, None, None]
        top, left = rng.integers(-width // 2, size - width // 2, (2, n))
        paint(img, mask, top, left, rng.random((n, 3), dtype=np.float32))


def glyph_colour(rng: np.random.Generator, background: np.ndarray, knobs: dict) -> np.ndarray:
    """(n, 3): a colour at a random distance in `contrast` from each image's mean background colour (n, 3),
    lighter on dark backgrounds and darker on light ones."""
    n = len(background)
    amount = rng.uniform(*knobs["contrast"], (n, 1))
    direction = np.abs(rng.normal(size=(n, 3))) + 0.3
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    sign = np.where(background.mean(1, keepdims=True) > 0.5, -1.0, 1.0)
    return np.clip(background + sign * amount * direction * np.sqrt(3), 0, 1).astype(np.float32)


def add_glyphs(rng: np.random.Generator, img: np.ndarray, labels: np.ndarray, bank: np.ndarray,
               knobs: dict) -> None:
    """Paint each image's class glyph (`copies` times), one scale and colour per image, at random positions."""
    n, size = img.shape[:2]
    cell = rng.uniform(*knobs["scale"], n) * size / 32            # pixels per stencil cell
    side = int(np.ceil(GLYPH * knobs["scale"][1] * size / 32))    # the largest glyph's side in pixels
    which = np.floor(np.arange(side)[None, :] / cell[:, None]).astype(int)  # (n, side): stencil cell of each pixel
    inside = which < GLYPH
    which = which.clip(0, GLYPH - 1)
    stencil = bank[labels]                                            # (n, 5, 5)
    mask = stencil[np.arange(n)[:, None, None], which[:, :, None], which[:, None, :]]  # (n, side, side)
    mask &= inside[:, :, None] & inside[:, None, :]
    glyph_side = np.ceil(GLYPH * cell).astype(int)                   # (n,) each image's glyph side
    colour = glyph_colour(rng, img.reshape(n, -1, 3).mean(1), knobs)
    lo, hi = knobs["copies"]
    count = rng.integers(lo, hi + 1, n)
    for j in range(hi):
        top = (rng.random(n) * (size - glyph_side + 1)).astype(int)
        left = (rng.random(n) * (size - glyph_side + 1)).astype(int)
        paint(img, mask & (j < count)[:, None, None], top, left, colour)


def add_smooth_glyphs(rng: np.random.Generator, img: np.ndarray, labels: np.ndarray, bank: np.ndarray,
                      knobs: dict) -> None:
    """`add_glyphs` drawn on a grid `supersample` times finer than the pixels, then averaged to them: a glyph
    lands at any sub-pixel position and its edges are partly covered pixels, as a camera would record it. One
    glyph per image (`copies` is ignored)."""
    n, size = img.shape[:2]
    k = knobs["supersample"]
    cell = rng.uniform(*knobs["scale"], n) * size / 32 * k                # sub-pixels per stencil cell
    side = int(np.ceil(GLYPH * knobs["scale"][1] * size / 32)) + 1      # pixels covered, whatever the offset
    top_sub, left_sub = [(rng.random(n) * (size - GLYPH * cell / k) * k).astype(int) for _ in range(2)]
    sub = np.arange(side * k)                                            # sub-pixel index inside the glyph's box

    def cells_per_pixel(offset):  # (n, side, 5): how many of a pixel's k sub-pixel rows fall in each stencil row
        c = np.floor((sub[None, :] + 0.5 - offset[:, None] % k) / cell[:, None])  # (n, side·k), at the centres
        return (c.reshape(n, side, k, 1) == np.arange(GLYPH)).sum(2, dtype=np.float32)  # k sub-rows summed

    # A pixel's coverage is the number of its k×k sub-pixels on painted cells: sub-pixel rows in stencil row i
    # times sub-pixel columns in stencil column j, summed over the painted cells (i, j), over k².
    rows, cols = cells_per_pixel(top_sub), cells_per_pixel(left_sub)
    stencil = bank[labels].astype(np.float32)                            # (n, 5, 5)
    alpha = rows @ stencil @ cols.transpose(0, 2, 1) / k ** 2           # (n, side, side): coverage of each pixel
    colour = glyph_colour(rng, img.reshape(n, -1, 3).mean(1), knobs)
    blend(img, alpha, top_sub // k, left_sub // k, colour)


def generate(split: str, img_size: int, num_classes: int, num_samples: int, seed: int, style: str = "standard"):
    """(images uint8 (N, S, S, 3), noisy targets (N,), clean labels (N,)), read-only, drawn with SETTINGS changed
    by STYLES[style]; the same arguments and SETTINGS always give the same arrays, and a repeated call returns the
    cached ones."""
    knobs = {**SETTINGS, **STYLES[style]}
    return _generate(split, img_size, num_classes, num_samples, seed, tuple(sorted(knobs.items())))


@functools.lru_cache(maxsize=8)
def _generate(split: str, img_size: int, num_classes: int, num_samples: int, seed: int, knobs: tuple):
    """`generate`'s work; `knobs` is the settings dict as a tuple, so that the cache can hash it."""
    knobs = dict(knobs)
    rng = split_rng(split, seed)
    _, bank = glyph_bank(num_classes)
    labels = rng.permutation(np.arange(num_samples) % num_classes)  # balanced classes
    img = smooth_background(rng, num_samples, img_size)
    add_blobs(rng, img, knobs)
    draw = add_smooth_glyphs if knobs.get("supersample", 1) > 1 else add_glyphs  # the fine style: anti-aliased
    draw(rng, img, labels, bank, knobs)
    img += rng.standard_normal(img.shape, dtype=np.float32) * knobs["noise"]
    images = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    targets = labels.copy()
    if split == "train" and knobs["label_noise"] > 0:
        relabel = rng.random(num_samples) < knobs["label_noise"]
        targets[relabel] = rng.integers(0, num_classes, int(relabel.sum()))
    for a in (images, targets, labels):
        a.setflags(write=False)
    return images, targets, labels


class SyntheticShapes:
    """The ``synthetic`` dataset: (PIL image, label) pairs like every other dataset here.

    ``.data`` uint8 (N, H, W, 3), ``.targets`` (training labels, with the label noise on the train split),
    ``.clean_targets`` (the glyph actually drawn), ``.classes``, ``.num_classes``. ``num_samples`` defaults to
    3,000 for train and 1,000 for val. ``style`` names a variant of the drawing knobs (STYLES).
    """

    def __init__(self, split: str = "train", img_size: int = 32, num_classes: int = 10,
                 num_samples: int | None = None, seed: int = 0, transform: Callable | None = None,
                 style: str = "standard"):
        if split not in SPLITS:
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if style not in STYLES:
            raise ValueError(f"unknown synthetic style {style!r} (--synthetic-style); choose one of "
                             f"{', '.join(STYLES)}")
        if img_size < 16:
            raise ValueError(f"synthetic images must be at least 16 pixels for the glyphs to fit (img_size, --input-size), "
                             f"got {img_size}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        num_samples = DEFAULT_SIZES[split] if num_samples is None else int(num_samples)
        if num_samples <= 0:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        self.data, self.targets, self.clean_targets = generate(split, img_size, num_classes, num_samples, seed, style)
        self.classes = glyph_bank(num_classes)[0]
        self.num_classes = num_classes
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        image = Image.fromarray(self.data[index])
        return (image if self.transform is None else self.transform(image)), int(self.targets[index])
