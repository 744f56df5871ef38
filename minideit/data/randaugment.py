"""RandAugment (Cubuk et al. 2020) with the semantics DeiT trains with: timm's 'rand-m9-mstd0.5-inc1' (Table 9).

For every image: pick `n` ops (2) uniformly, with replacement, from a fixed list; apply each with probability 0.5
at magnitude m (9 on a 0-10 scale) plus Gaussian noise of std 0.5, clipped to [0, 10]. 'inc1' selects the
"increasing" op list, in which a larger magnitude always means a stronger change (posterize keeps fewer bits,
solarize uses a lower threshold, enhancements move further from 1 in a random direction).

Every op is a function `op(img, magnitude)` in `OPS`, so a notebook can show each one. Geometric ops also take
`fill` (the colour of uncovered pixels: the ImageNet mean, timm's img_mean) and `resample` (bicubic, from the
training interpolation); the other ops ignore them (`**_`). Signs and choices come from Python's `random`.
Shear, translate and sharpness are the plain PIL operations (an affine map, ImageEnhance.Sharpness), computed by
``_fast.py`` with the same pixels in less time (see that module for why).
"""
from __future__ import annotations

import random
import re
from typing import Callable, Sequence

from PIL import Image, ImageEnhance, ImageOps

from minideit.data import _fast

MAX_MAGNITUDE = 10.0  # magnitudes live on a 0..10 scale (timm's _LEVEL_DENOM)
DEFAULT_FILL = (124, 116, 104)  # round(255 * ImageNet mean): what affine ops paint outside the image

_RESAMPLE = {'bicubic': Image.BICUBIC, 'bilinear': Image.BILINEAR, 'nearest': Image.NEAREST}


def _random_sign(value: float) -> float:
    """Negate with probability 1/2: signed ops (rotate, shear, translate, enhance-increasing) go either way."""
    return -value if random.random() > 0.5 else value


# ---- colour ops (ignore fill/resample) --------------------------------------------------------------------

def auto_contrast(img: Image.Image, magnitude: float, **_) -> Image.Image:
    return ImageOps.autocontrast(img)


def equalize(img: Image.Image, magnitude: float, **_) -> Image.Image:
    return ImageOps.equalize(img)


def invert(img: Image.Image, magnitude: float, **_) -> Image.Image:
    return ImageOps.invert(img)


def _posterize_bits(img: Image.Image, bits: int) -> Image.Image:
    if bits >= 8:
        return img
    if bits <= 0:  # keeping no bits leaves 0 everywhere; recent Pillow refuses bits=0, old Pillow gave black
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits)


def posterize(img: Image.Image, magnitude: float, **_) -> Image.Image:
    """Keep int(m/10 * 4) high bits: 0 bits at m=0 (a black image) up to 4 at m=10 (TF EfficientNet mapping)."""
    return _posterize_bits(img, int(magnitude / MAX_MAGNITUDE * 4))


def posterize_increasing(img: Image.Image, magnitude: float, **_) -> Image.Image:
    """Keep 4 - int(m/10 * 4) high bits: 4 bits at m=0, none at m=10."""
    return _posterize_bits(img, 4 - int(magnitude / MAX_MAGNITUDE * 4))


def solarize(img: Image.Image, magnitude: float, **_) -> Image.Image:
    """Invert pixels >= threshold int(m/10 * 256): stronger at low m (256 = no change)."""
    return ImageOps.solarize(img, int(magnitude / MAX_MAGNITUDE * 256))


def solarize_increasing(img: Image.Image, magnitude: float, **_) -> Image.Image:
    """Invert pixels >= 256 - int(m/10 * 256): no change at m=0, everything inverted at m=10."""
    return ImageOps.solarize(img, 256 - int(magnitude / MAX_MAGNITUDE * 256))


def solarize_add(img: Image.Image, magnitude: float, **_) -> Image.Image:
    """Add int(m/10 * 110) to pixels below 128 (saturating at 255); brighter pixels are kept."""
    add = int(magnitude / MAX_MAGNITUDE * 110)
    lut = [min(255, i + add) if i < 128 else i for i in range(256)]
    return img.point(lut * len(img.getbands()))


def _enhance_factor(magnitude: float) -> float:
    """Original mapping: factor in [0.1, 1.9] growing with m (1.0, no change, near m=5)."""
    return magnitude / MAX_MAGNITUDE * 1.8 + 0.1


def _enhance_increasing_factor(magnitude: float) -> float:
    """'Increasing' mapping: 1 +/- m/10 * 0.9, so m=0 is no change; kept >= 0.1."""
    return max(0.1, 1.0 + _random_sign(magnitude / MAX_MAGNITUDE * 0.9))


def _enhancer(kind: type, factor_fn: Callable[[float], float]) -> Callable[..., Image.Image]:
    """An op that blends the image with a degenerate copy of itself (grey for Color, mean grey for Contrast, black
    for Brightness, smoothed for Sharpness) by a factor: PIL's ImageEnhance."""
    def op(img: Image.Image, magnitude: float, **_) -> Image.Image:
        if kind is ImageEnhance.Sharpness and img.mode == 'RGB' and min(img.size) >= 3:
            return _fast.sharpness(img, factor_fn(magnitude))  # = ImageEnhance.Sharpness(img).enhance(...), faster
        return kind(img).enhance(factor_fn(magnitude))
    return op


# ---- geometric ops (use fill and resample) ----------------------------------------------------------------

def _affine(img: Image.Image, matrix: tuple, fill, resample) -> Image.Image:
    """PIL affine: output pixel centre (x, y) samples the input at (a x + b y + c, d x + e y + f)
    (``img.transform(img.size, Image.AFFINE, matrix, ...)``, computed by _fast.affine with the same pixels)."""
    return _fast.affine(img, matrix, fill, resample)


def rotate(img: Image.Image, magnitude: float, fill=DEFAULT_FILL, resample=Image.BICUBIC) -> Image.Image:
    """Rotate about the centre by +/- m/10 * 30 degrees."""
    return img.rotate(_random_sign(magnitude / MAX_MAGNITUDE * 30.0), resample=resample, fillcolor=fill)


def shear_x(img: Image.Image, magnitude: float, fill=DEFAULT_FILL, resample=Image.BICUBIC) -> Image.Image:
    """Shear along x by a factor of +/- m/10 * 0.3."""
    return _affine(img, (1, _random_sign(magnitude / MAX_MAGNITUDE * 0.3), 0, 0, 1, 0), fill, resample)


def shear_y(img: Image.Image, magnitude: float, fill=DEFAULT_FILL, resample=Image.BICUBIC) -> Image.Image:
    """Shear along y by a factor of +/- m/10 * 0.3."""
    return _affine(img, (1, 0, 0, _random_sign(magnitude / MAX_MAGNITUDE * 0.3), 1, 0), fill, resample)


def translate_x_rel(img: Image.Image, magnitude: float, fill=DEFAULT_FILL, resample=Image.BICUBIC) -> Image.Image:
    """Shift along x by +/- m/10 * 45% of the width."""
    return _affine(img, (1, 0, _random_sign(magnitude / MAX_MAGNITUDE * 0.45) * img.width, 0, 1, 0), fill, resample)


def translate_y_rel(img: Image.Image, magnitude: float, fill=DEFAULT_FILL, resample=Image.BICUBIC) -> Image.Image:
    """Shift along y by +/- m/10 * 45% of the height."""
    return _affine(img, (1, 0, 0, 0, 1, _random_sign(magnitude / MAX_MAGNITUDE * 0.45) * img.height), fill, resample)


OPS: dict[str, Callable[..., Image.Image]] = {
    'AutoContrast': auto_contrast,
    'Equalize': equalize,
    'Invert': invert,
    'Rotate': rotate,
    'Posterize': posterize,
    'PosterizeIncreasing': posterize_increasing,
    'Solarize': solarize,
    'SolarizeIncreasing': solarize_increasing,
    'SolarizeAdd': solarize_add,
    'Color': _enhancer(ImageEnhance.Color, _enhance_factor),
    'ColorIncreasing': _enhancer(ImageEnhance.Color, _enhance_increasing_factor),
    'Contrast': _enhancer(ImageEnhance.Contrast, _enhance_factor),
    'ContrastIncreasing': _enhancer(ImageEnhance.Contrast, _enhance_increasing_factor),
    'Brightness': _enhancer(ImageEnhance.Brightness, _enhance_factor),
    'BrightnessIncreasing': _enhancer(ImageEnhance.Brightness, _enhance_increasing_factor),
    'Sharpness': _enhancer(ImageEnhance.Sharpness, _enhance_factor),
    'SharpnessIncreasing': _enhancer(ImageEnhance.Sharpness, _enhance_increasing_factor),
    'ShearX': shear_x,
    'ShearY': shear_y,
    'TranslateXRel': translate_x_rel,
    'TranslateYRel': translate_y_rel,
}

# timm's _RAND_TRANSFORMS ('inc0') and _RAND_INCREASING_TRANSFORMS ('inc1'); cutout is random erasing instead.
RAND_OPS = ['AutoContrast', 'Equalize', 'Invert', 'Rotate', 'Posterize', 'Solarize', 'SolarizeAdd', 'Color',
            'Contrast', 'Brightness', 'Sharpness', 'ShearX', 'ShearY', 'TranslateXRel', 'TranslateYRel']
RAND_INCREASING_OPS = ['AutoContrast', 'Equalize', 'Invert', 'Rotate', 'PosterizeIncreasing',
                       'SolarizeIncreasing', 'SolarizeAdd', 'ColorIncreasing', 'ContrastIncreasing',
                       'BrightnessIncreasing', 'SharpnessIncreasing', 'ShearX', 'ShearY', 'TranslateXRel',
                       'TranslateYRel']


def apply_op(img: Image.Image, name: str, magnitude: float, fill=DEFAULT_FILL,
             interpolation: str = 'bicubic') -> Image.Image:
    """Apply the op called `name` at `magnitude` (0..10), e.g. apply_op(img, 'Rotate', 9)."""
    if name not in OPS:
        raise ValueError(f"unknown RandAugment op {name!r}; choose one of {sorted(OPS)}")
    if interpolation not in _RESAMPLE:
        raise ValueError(f"interpolation must be one of {sorted(_RESAMPLE)}, got {interpolation!r}")
    return OPS[name](img, magnitude, fill=fill, resample=_RESAMPLE[interpolation])


def parse_config(config: str) -> dict:
    """Parse a timm RandAugment string such as 'rand-m9-mstd0.5-inc1' into keyword arguments of RandAugment.

    Sections after 'rand', in any order: m<magnitude> n<num ops> mstd<magnitude std> mmax<magnitude cap>
    inc<0|1>. mstd > 100 means "magnitude uniform in [0, m]" (timm's convention).
    """
    usage = "expected e.g. 'rand-m9-mstd0.5-inc1' (sections m<int>, n<int>, mstd<float>, mmax<number>, inc<0|1>)"
    parts = config.split('-')
    if parts[0] != 'rand':
        raise ValueError(f"RandAugment config {config!r} must start with 'rand'; {usage}")
    kwargs = dict(num_ops=2, magnitude=MAX_MAGNITUDE, magnitude_std=0.0, magnitude_max=MAX_MAGNITUDE,
                  increasing=False)
    for part in parts[1:]:
        match = re.fullmatch(r'(mstd|mmax|inc|m|n)(\d+(?:\.\d*)?)', part)
        if match is None:
            raise ValueError(f"bad section {part!r} in RandAugment config {config!r}; {usage}")
        key, value = match.group(1), float(match.group(2))
        if key == 'm':
            kwargs['magnitude'] = value
        elif key == 'n':
            kwargs['num_ops'] = int(value)
        elif key == 'mstd':
            kwargs['magnitude_std'] = float('inf') if value > 100 else value
        elif key == 'mmax':
            kwargs['magnitude_max'] = value
        elif value not in (0, 1):
            raise ValueError(f"inc must be 0 or 1 in RandAugment config {config!r}; {usage}")
        else:
            # Old timm read 'inc0' with bool('0') == True; we read the number, so inc0 is the original op list.
            kwargs['increasing'] = value == 1
    return kwargs


class RandAugment:
    """Apply `num_ops` ops chosen uniformly (with replacement) from the list, each with probability `prob`."""

    def __init__(self, num_ops: int = 2, magnitude: float = 9.0, magnitude_std: float = 0.5,
                 magnitude_max: float = MAX_MAGNITUDE, increasing: bool = True, prob: float = 0.5,
                 fill: Sequence[int] = DEFAULT_FILL, interpolation: str = 'bicubic'):
        if interpolation not in _RESAMPLE:
            raise ValueError(f"interpolation must be one of {sorted(_RESAMPLE)}, got {interpolation!r}")
        self.ops = RAND_INCREASING_OPS if increasing else RAND_OPS
        self.num_ops, self.prob = num_ops, prob
        self.magnitude, self.magnitude_std, self.magnitude_max = magnitude, magnitude_std, magnitude_max
        self.fill, self.resample = tuple(fill), _RESAMPLE[interpolation]

    @classmethod
    def from_config(cls, config: str, fill: Sequence[int] = DEFAULT_FILL,
                    interpolation: str = 'bicubic') -> 'RandAugment':
        return cls(**parse_config(config), fill=fill, interpolation=interpolation)

    def sample_magnitude(self) -> float:
        """m + N(0, std) (or uniform in [0, m] when std is inf), clipped to [0, magnitude_max]; drawn per op."""
        m = self.magnitude
        if self.magnitude_std == float('inf'):
            m = random.uniform(0, m)
        elif self.magnitude_std > 0:
            m = random.gauss(m, self.magnitude_std)
        return max(0.0, min(m, self.magnitude_max))

    def __call__(self, img: Image.Image) -> Image.Image:
        for _ in range(self.num_ops):
            name = random.choice(self.ops)
            if random.random() > self.prob:
                continue
            img = OPS[name](img, self.sample_magnitude(), fill=self.fill, resample=self.resample)
        return img

    def __repr__(self) -> str:
        return (f"RandAugment(n={self.num_ops}, m={self.magnitude}, mstd={self.magnitude_std}, "
                f"mmax={self.magnitude_max}, ops={len(self.ops)})")
