"""Images to time the data path on: photo-like JPEGs made on the spot, or a real data set's training files."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from minideit.data.datasets import IMG_EXTENSIONS


# ---- images to time ----------------------------------------------------------------------------------------

def make_photo_like_jpegs(out_dir: Path, num_images: int, seed: int = 0) -> list[Path]:
    """Write `num_images` JPEGs (quality 90) of about 500x375 that cost as much to decode as photos.

    Decoding time grows with the bytes that survive compression, so the images mix smooth colour fields at
    several scales, hard-edged shapes and fine luminance texture. They come out near 105 KB (0.57 bytes per
    pixel), close to ImageNet train's average (about 110 KB for about 470x390 pixels, 0.6 bytes per pixel);
    smooth images would make decoding look cheaper than it is on real photos.
    """
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(num_images):
        width, height = int(rng.integers(440, 561)), int(rng.integers(330, 421))
        canvas = np.zeros((height, width, 3), dtype=np.float32)
        for cells, weight in ((3, 90.0), (12, 45.0), (48, 20.0), (160, 40.0)):
            field = Image.fromarray((rng.random((cells, cells, 3)) * 255).astype(np.uint8))
            canvas += weight / 255.0 * np.asarray(field.resize((width, height), Image.BICUBIC), np.float32)
        for _ in range(int(rng.integers(2, 6))):  # shapes with sharp edges, like objects
            y0, x0 = int(rng.integers(0, height - 40)), int(rng.integers(0, width - 40))
            y1, x1 = y0 + int(rng.integers(20, height // 2)), x0 + int(rng.integers(20, width // 2))
            canvas[y0:y1, x0:x1] = canvas[y0:y1, x0:x1] * 0.3 + rng.random(3) * 170
        canvas += rng.normal(0.0, 20.0, (height, width, 1))  # grey texture: detail lives mostly in luminance
        path = out_dir / f'img_{i:04d}.JPEG'
        Image.fromarray(canvas.clip(0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def find_train_images(data_path: Path, num_images: int) -> list[Path]:
    """Up to `num_images` files from <data_path>/train/<class>/, spread over the classes (ImageNet layout)."""
    train = data_path / 'train'
    if not train.is_dir():
        raise FileNotFoundError(f"{train} not found: --data-path must hold train/<class>/*.JPEG (ImageNet layout)")
    class_dirs = sorted(d for d in train.iterdir() if d.is_dir())
    per_class = max(1, -(-num_images // max(1, len(class_dirs))))  # ceil: a few from each class
    paths: list[Path] = []
    for d in class_dirs:
        files = sorted(e.path for e in os.scandir(d) if e.name.lower().endswith(IMG_EXTENSIONS))
        paths += [Path(f) for f in files[:per_class]]
        if len(paths) >= num_images:
            break
    if not paths:
        raise ValueError(f"no images ({', '.join(IMG_EXTENSIONS)}) in {train}/<class>/; check --data-path")
    return paths[:num_images]


# ---- timing ------------------------------------------------------------------------------------------------


def images_to_time(data_path: str, num_images: int, seed: int, tmp: Path) -> tuple[list[Path], str]:
    """``num_images`` training images of ``data_path`` or, with no path, photo-like JPEGs written into ``tmp``;
    and a word on where they came from, for the report."""
    if data_path:
        return find_train_images(Path(data_path), num_images), str(data_path)
    return make_photo_like_jpegs(tmp, num_images, seed), 'generated JPEGs'
