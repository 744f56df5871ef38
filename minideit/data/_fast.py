"""Speed-only versions of three PIL operations of the training transform, giving PIL's pixels (within one grey level).

Why this module exists: one CPU core must decode and augment images as fast as the training step consumes them
(``python -m minideit.benchmark data`` measures it). PIL's bicubic resize, its affine warp for shears and
translations, and its sharpness filter were the slowest steps after decoding; each function below does the same
operation 2–4x faster. The teaching code (transforms.py, randaugment.py) calls them where it means the plain PIL
operation named in each docstring: to learn the recipe, read that operation, not this file. The tests in
tests/test_transforms.py check every function against PIL.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


# ---- img.resize ------------------------------------------------------------------------------------------------
def resize(img: Image.Image, size: tuple[int, int], interpolation: str = 'bicubic',
                 box: tuple[int, int, int, int] | None = None) -> Image.Image:
    """Resize `img` (or its region `box` = (left, top, right, bottom)) to `size` = (height, width).

    Same as ``img.resize((width, height), interpolation, box=box)``. Bicubic/bilinear use torch's antialiased uint8 kernel: the same filter as PIL's resize (Keys cubic a=-0.5,
    support widened by the downscale factor), equal to PIL's output within one grey level, and about 4x faster
    than Pillow on one core. This resize is the costliest step of the training transform after decoding.
    """
    if box is not None:
        img = img.crop(box)  # a cheap copy of the region only
    if interpolation == 'nearest':
        return img.resize((size[1], size[0]), Image.NEAREST)
    # np.array (not asarray): torch wants a writable buffer. The permuted view is channels-last, the layout the
    # fast uint8 kernel reads.
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W) uint8
    y = F.interpolate(x, size=size, mode=interpolation, antialias=True, align_corners=False)[0].numpy()
    # Back to PIL one plane at a time: merging planes is ~10x cheaper than a uint8 (3, H, W) -> (H, W, 3) copy.
    # From a 1x1 input torch cannot tell channels-last from contiguous and may return the other layout; then a
    # plane is a strided view, which frombuffer refuses. ascontiguousarray copies only in that case.
    planes = [np.ascontiguousarray(plane) for plane in y]
    return Image.merge('RGB', [Image.frombuffer('L', (size[1], size[0]), plane, 'raw', 'L', 0, 1) for plane in planes])



# ---- ImageEnhance.Sharpness -----------------------------------------------------------------------------------
def sharpness(img: Image.Image, factor: float) -> Image.Image:
    """ImageEnhance.Sharpness(img).enhance(factor), same pixels, about 2x faster (PIL's 3x3 filter is slow).

    PIL blends the image with its SMOOTH-filtered copy, kernel (1 1 1; 1 5 1; 1 1 1) / 13 rounded to uint8 with
    the border pixels left as they are; the blend smooth + factor * (img - smooth) is truncated to uint8.
    """
    # Whole numbers (int16 holds the largest sum, 13 * 255) until the blend: half the time of float32 throughout.
    x = np.asarray(img).astype(np.int16)  # (H, W, 3)
    rows = x[:, :-2] + x[:, 1:-1] + x[:, 2:]  # sums of 3 neighbours along x: (H, W-2, 3)
    box = rows[:-2] + rows[1:-1] + rows[2:]  # 3x3 sums: (H-2, W-2, 3)
    smooth = x.copy()
    # centre weight 5 = 1 in box + 4; (v + 6) // 13 is PIL's rounding of v / 13 for whole v >= 0
    smooth[1:-1, 1:-1] = (box + 4 * x[1:-1, 1:-1] + 6) // 13
    out = smooth.astype(np.float32) + np.float32(factor) * (x - smooth)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))



# ---- img.transform(AFFINE) for maps that move whole rows or columns (shear, translate) ---------------------------
def affine(img: Image.Image, matrix: tuple, fill, resample) -> Image.Image:
    """``img.transform(img.size, Image.AFFINE, matrix, resample, fillcolor=fill)``: output pixel centre (x, y)
    samples the input at (a x + b y + c, d x + e y + f) for ``matrix`` = (a, b, c, d, e, f).

    A bicubic translation along one axis takes the slice path of _translate; a bicubic map that moves whole rows
    sideways (a = e = 1, d = f = 0) or whole columns up and down (a = e = 1, b = c = 0) takes the row path below;
    anything else is PIL's own warp."""
    a, b, c, d, e, f = matrix
    if resample != Image.BICUBIC or a != 1 or e != 1:
        return img.transform(img.size, Image.AFFINE, matrix, resample=resample, fillcolor=fill)
    if b == d == f == 0:  # moves along x only
        return _translate(img, c, 1, fill)
    if b == c == d == 0:  # moves along y only
        return _translate(img, f, 0, fill)
    if d == f == 0:  # whole rows sideways
        return _shift_lines(img, b, c, 1, fill)
    if b == c == 0:  # whole columns up and down
        return _shift_lines(img, d, f, 0, fill)
    return img.transform(img.size, Image.AFFINE, matrix, resample=resample, fillcolor=fill)


def _translate(img: Image.Image, offset: float, axis: int, fill) -> Image.Image:
    """Shift by `offset` pixels along `axis` (1: x, 0: y): output index i = input at i + offset, the pixels of
    PIL's BICUBIC affine (1, 0, offset, 0, 1, 0) or (1, 0, 0, 0, 1, offset), within one grey level.

    The special case of _shift_rows where every row moves by the same amount (TranslateX/Y of RandAugment),
    about twice as fast: one set of 4 tap weights for the whole image, so each tap is a plain slice (no per-row
    gather, no transposes for y), and only the part of the output that lands inside the image is computed; the
    rest (about 40% at RandAugment's magnitude 9) is `fill`.
    """
    pixels = np.asarray(img)  # (h, w, 3) uint8
    n = pixels.shape[axis]
    whole = math.floor(offset)
    weights = [np.float32(wk) for wk in _cubic_weights(offset - whole)]
    # Output i samples source i + offset, inside the image when that lies in [-0.5, n - 0.5) (pixel centres).
    first, stop = max(0, math.ceil(-0.5 - offset)), min(n, math.ceil(n - 0.5 - offset))
    out = np.empty_like(pixels)
    out[...] = fill
    if first < stop:
        # Tap k of output i reads source i + whole + k - 1, the edge pixel repeated past the border: gather the
        # band of sources that outputs first..stop-1 read, then tap k is the band shifted by k.
        sources = np.clip(np.arange(first + whole - 1, stop + whole + 2), 0, n - 1)
        band = np.take(pixels, sources, axis=axis).astype(np.float32)  # (h, L+3, 3) or (L+3, w, 3), L = stop-first
        length = stop - first

        def tap(k):  # the band shifted by k taps along the axis: (h, L, 3) or (L, w, 3)
            return band[:, k:k + length] if axis == 1 else band[k:k + length]

        acc = tap(0) * weights[0]
        for k in range(1, 4):
            acc += tap(k) * weights[k]
        inside = out[:, first:stop] if axis == 1 else out[first:stop]
        inside[...] = np.clip(acc, 0, 255, out=acc).astype(np.uint8)  # truncated, as PIL does
    return Image.fromarray(out)


def _cubic_weights(t):
    """Weights of the taps at -1, 0, +1, +2 for points t in [0, 1) past tap 0 (a float, or a tensor of them):
    cubic convolution with a = -1, the kernel of PIL's BICUBIC affine/rotate (PIL's resize uses a = -0.5)."""
    t2, t3 = t * t, t * t * t
    return -t + 2 * t2 - t3, 1 - 2 * t2 + t3, t + t2 - t3, -t2 + t3


def _shift_rows(img: Image.Image, shifts: torch.Tensor, fill) -> Image.Image:
    """Output pixel (y, x) = input at (y, x + shifts[y]): the pixels of PIL's BICUBIC affine (within one grey
    level) for any map that moves whole rows sideways (shear along x, translation along x), ~3x faster.

    Such a map samples every pixel of a row at the same fractional offset, so PIL's 4x4 bicubic filter reduces
    to 4 taps along the row with one set of weights per row, and the taps of a whole row are one contiguous run
    of w + 3 source pixels: gather that run once per row, then each tap is a slice of it. As in PIL, taps past
    the border repeat the edge pixel, pixels whose source lies outside the image get `fill`, and the result is
    truncated to uint8.
    """
    w, h = img.size
    # Each pixel's 4 bytes (R, G, B, pad) viewed as one int32, so gathering a pixel is gathering one number.
    pixels = torch.from_numpy(np.frombuffer(img.tobytes('raw', 'RGBX'), dtype=np.int32).reshape(h, w).copy())
    whole = shifts.floor()
    weights = _cubic_weights((shifts - whole).float().view(h, 1, 1))
    # Tap k of output (y, x) reads source column x + whole[y] + k - 1: row y's run is columns whole[y] - 1 ...
    # whole[y] + w + 1, clamped to the image (the edge pixel repeated past the border).
    columns = (torch.arange(-1, w + 2).view(1, w + 3) + whole.long().view(h, 1)).clamp_(0, w - 1)  # (h, w + 3)
    runs = pixels.gather(1, columns)  # (h, w + 3): row y's run
    runs = runs.view(torch.uint8).view(h, w + 3, 4).float()  # (h, w + 3, RGBX)
    acc = runs[:, 0:w] * weights[0]
    for k in range(1, 4):
        acc.addcmul_(runs[:, k:k + w], weights[k])
    out = np.clip(acc.numpy(), 0, 255).astype(np.uint8).view(np.int32)[..., 0]  # numpy casts ~5x faster
    source_x = (torch.arange(w).view(1, w) + shifts.view(h, 1)).numpy()
    out[(source_x < -0.5) | (source_x >= w - 0.5)] = np.frombuffer(bytes(fill) + b'\0', dtype=np.int32)[0]
    return Image.frombytes('RGB', (w, h), out.tobytes(), 'raw', 'RGBX')


def _shift_lines(img: Image.Image, shear: float, offset: float, axis: int, fill) -> Image.Image:
    """Shear by `shear` and translate by `offset` pixels along `axis` (1: x, 0: y), as PIL's bicubic affine
    (1, shear, offset, 0, 1, 0) along x or (1, 0, 0, shear, 1, offset) along y."""
    if axis == 0:  # columns move along y: transpose, move rows, transpose back (transposes are cheap copies)
        return _shift_lines(img.transpose(Image.TRANSPOSE), shear, offset, 1, fill).transpose(Image.TRANSPOSE)
    rows = torch.arange(img.height, dtype=torch.float64) + 0.5  # pixel centres, as PIL samples
    return _shift_rows(img, shear * rows + offset, fill)
