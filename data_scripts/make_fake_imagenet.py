"""Make a tiny ImageNet look-alike in seconds: for tests, demos and trying the pipeline without 150 GB.

    python data_scripts/make_fake_imagenet.py --out data/fake_imagenet --classes 10 --train-per-class 8
    python data_scripts/make_fake_imagenet.py --out data/fake_archives --archives   # the official tar files

The tree is the layout `prepare_imagenet.py` produces: <out>/train/<wnid>/<wnid>_<k>.JPEG and
<out>/val/<wnid>/ILSVRC2012_val_<8 digits>.JPEG, with WordNet-like ids (n0 + 7 digits). Images are real
JPEGs of varied sizes whose colours depend on the class (so a model can learn them), and the oddities
real ImageNet has are always there: a CMYK JPEG and a grayscale JPEG in train, a PNG saved under a .JPEG
name, a CMYK JPEG in val. These all decode, so they count as ordinary images. `--broken` (off by default:
real ImageNet has none) adds three unreadable train files: an empty file, a truncated JPEG and a text file
named .JPEG, which a loader must skip.

`--archives` writes the same images as the three official downloads instead: ILSVRC2012_img_train.tar (a tar
of per-class tars), ILSVRC2012_img_val.tar (flat, numbered in shuffled order) and ILSVRC2012_devkit_t12.tar.gz
(data/meta.mat + data/ILSVRC2012_validation_ground_truth.txt), so prepare_imagenet.py can be tried end to end:
its output then equals the tree made with the same options.

Importable: `from data_scripts.make_fake_imagenet import make_fake_imagenet` (repo root on sys.path).
"""
from __future__ import annotations

import argparse
import io
import tarfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

if __package__:  # imported as data_scripts.make_fake_imagenet
    from .matfile import savemat
    from .scriptutil import ScriptError, run_main
else:  # run as a script: data_scripts/ is on sys.path
    from matfile import savemat
    from scriptutil import ScriptError, run_main

DEVKIT = 'ILSVRC2012_devkit_t12'


def fake_wnids(rng: np.random.Generator, n: int) -> list[str]:
    """n distinct WordNet-like ids, in generation order (deliberately not sorted)."""
    ids: list[str] = []
    while len(ids) < n:
        wnid = f'n0{int(rng.integers(10 ** 7)):07d}'
        ids += [] if wnid in ids else [wnid]
    return ids


def fake_image(rng: np.random.Generator, class_idx: int, num_classes: int, size: int) -> Image.Image:
    """A noisy image of the class colour with a square of a second class colour, of a random size near size."""
    h, w = (int(size * f) for f in rng.uniform(0.75, 1.25, size=2))
    hue = class_idx / num_classes
    base = 255 * (0.5 + 0.5 * np.cos(2 * np.pi * (hue + np.array([0, 1 / 3, 2 / 3]))))  # (3,) a colour wheel
    img = base + rng.normal(0, 20, size=(h, w, 3))  # (H, W, 3)
    s = max(2, min(h, w) // 3)
    top, left = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
    img[top:top + s, left:left + s] = 255 - base
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def encode(img: Image.Image, fmt: str = 'JPEG') -> bytes:
    buf = io.BytesIO()
    options = {'quality': 90} if fmt == 'JPEG' else {}
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def make_files(classes: int, train_per_class: int, val_per_class: int, size: int, seed: int,
               broken: bool, progress: bool = False) -> tuple[list[str], list[tuple[str, str, str, bytes]], dict]:
    """All files as (split, wnid, filename, bytes), plus which ones are odd or broken."""
    rng = np.random.default_rng(seed)
    wnids = fake_wnids(rng, classes)
    files, odd, bad = [], {}, []
    val_numbers = iter(rng.permutation(classes * val_per_class) + 1)  # val ids are not grouped by class
    for c, wnid in enumerate(tqdm(wnids, desc='classes', disable=not progress, leave=False)):
        for k in range(train_per_class):
            files.append(('train', wnid, f'{wnid}_{k + 1}.JPEG', encode(fake_image(rng, c, classes, size))))
        for _ in range(val_per_class):
            name = f'ILSVRC2012_val_{int(next(val_numbers)):08d}.JPEG'
            files.append(('val', wnid, name, encode(fake_image(rng, c, classes, size))))
    # The oddities replace ordinary images, so the readable counts stay exactly as asked.
    train_idx = [i for i, f in enumerate(files) if f[0] == 'train']
    val_idx = [i for i, f in enumerate(files) if f[0] == 'val']
    for kind, i in zip(['cmyk', 'grayscale', 'png_named_jpeg'], train_idx[:3]):
        split, wnid, name, _ = files[i]
        img = fake_image(rng, wnids.index(wnid), classes, size)
        if kind == 'cmyk':
            data = encode(img.convert('CMYK'))
        elif kind == 'grayscale':
            data = encode(img.convert('L'))
        else:
            data = encode(img, 'PNG')  # content sniffing, not the name, must decide how to decode it
        files[i] = (split, wnid, name, data)
        odd[kind] = f'{split}/{wnid}/{name}'
    split, wnid, name, _ = files[val_idx[0]]
    files[val_idx[0]] = (split, wnid, name, encode(fake_image(rng, wnids.index(wnid), classes, size).convert('CMYK')))
    odd['val_cmyk'] = f'{split}/{wnid}/{name}'
    if broken:
        wnid = wnids[-1]
        jpeg = encode(fake_image(rng, classes - 1, classes, size))
        for suffix, data in [('empty', b''), ('truncated', jpeg[:len(jpeg) // 2]), ('text', b'not an image\n')]:
            files.append(('train', wnid, f'{wnid}_broken_{suffix}.JPEG', data))
            bad.append(f'train/{wnid}/{wnid}_broken_{suffix}.JPEG')
    return wnids, files, {'odd': odd, 'broken': bad}


def write_tree(out: Path, files: list[tuple[str, str, str, bytes]]) -> None:
    for split, wnid, name, data in files:
        folder = out / split / wnid
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 0  # fixed mtime: same options, same archive bytes
    tar.addfile(info, io.BytesIO(data))


def write_archives(out: Path, wnids: list[str], files: list[tuple[str, str, str, bytes]], seed: int) -> None:
    """The three official downloads, reduced: nested train tar, flat val tar, devkit with meta.mat."""
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out / 'ILSVRC2012_img_train.tar', 'w') as outer:
        for wnid in wnids:
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode='w') as tar:
                for split, w, name, data in files:
                    if split == 'train' and w == wnid:
                        _add(tar, name, data)
            _add(outer, f'{wnid}.tar', inner.getvalue())
    val = sorted((name, wnid, data) for split, wnid, name, data in files if split == 'val')
    with tarfile.open(out / 'ILSVRC2012_img_val.tar', 'w') as tar:
        for name, _, data in val:
            _add(tar, name, data)
    # Devkit ids 1..N follow neither sorted nor generation order, like the real ILSVRC2012_ID.
    order = [wnids[i] for i in np.random.default_rng(seed + 1).permutation(len(wnids))]
    ilsvrc_id = {wnid: i + 1 for i, wnid in enumerate(order)}
    synsets = [{'ILSVRC2012_ID': float(ilsvrc_id[w]), 'WNID': w, 'words': f'fake class {w}', 'gloss': 'made up',
                'num_children': 0.0, 'children': np.zeros((1, 0)), 'wordnet_height': 0.0, 'num_train_images': 1.0}
               for w in order]
    # Two inner WordNet nodes with children, as in the real meta.mat (which has 1860 synsets).
    for j, wnid in enumerate(['n00001740', 'n00002137']):
        synsets.append({'ILSVRC2012_ID': float(len(order) + 1 + j), 'WNID': wnid, 'words': 'entity', 'gloss': '',
                        'num_children': 1.0, 'children': np.array([[1.0]]), 'wordnet_height': 1.0,
                        'num_train_images': 0.0})
    meta = io.BytesIO()
    savemat(meta, {'synsets': synsets})
    truth = ''.join(f'{ilsvrc_id[wnid]}\n' for _, wnid, _ in val).encode()
    with tarfile.open(out / f'{DEVKIT}.tar.gz', 'w:gz') as tar:
        _add(tar, f'{DEVKIT}/data/meta.mat', meta.getvalue())
        _add(tar, f'{DEVKIT}/data/ILSVRC2012_validation_ground_truth.txt', truth)


def make_fake_imagenet(out: str | Path, classes: int = 10, train_per_class: int = 8, val_per_class: int = 4,
                       size: int = 64, seed: int = 0, broken: bool = False, archives: bool = False,
                       progress: bool = False) -> dict:
    """Write the tree (or with archives=True the official-style archives) into out; return a summary dict:
    classes (sorted wnids), train/val (readable image counts), odd (kind -> relative path), broken (paths)."""
    if classes < 1 or train_per_class < 3 or val_per_class < 1 or size < 8:
        raise ValueError('need classes >= 1, train_per_class >= 3 (room for the odd files), '
                         'val_per_class >= 1 and size >= 8')
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f'{out} is not empty; choose a new --out folder so fake and real files never mix')
    wnids, files, extra = make_files(classes, train_per_class, val_per_class, size, seed, broken, progress)
    if archives:
        write_archives(out, wnids, files, seed)
    else:
        write_tree(out, files)
    return {'out': str(out), 'classes': sorted(wnids), 'train': classes * train_per_class,
            'val': classes * val_per_class, **extra}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description='Make a tiny ImageNet-layout tree (or the official-style archives).')
    p.add_argument('--out', required=True, help='new or empty output folder')
    p.add_argument('--classes', type=int, default=10, help='number of classes (default 10)')
    p.add_argument('--train-per-class', type=int, default=8, help='readable train images per class (default 8)')
    p.add_argument('--val-per-class', type=int, default=4, help='val images per class (default 4)')
    p.add_argument('--size', type=int, default=64, help='typical image side; each varies by +-25%% (default 64)')
    p.add_argument('--seed', type=int, default=0, help='same seed, same files (default 0)')
    p.add_argument('--broken', action='store_true', help='add 3 unreadable train files (default: off)')
    p.add_argument('--archives', action='store_true', help='write ILSVRC2012_img_{train,val}.tar + devkit instead')
    args = p.parse_args(argv)
    start = time.time()
    try:
        s = make_fake_imagenet(args.out, args.classes, args.train_per_class, args.val_per_class, args.size,
                               args.seed, args.broken, args.archives, progress=True)
    except ValueError as e:
        raise ScriptError(str(e)) from None
    what = 'archives' if args.archives else 'tree'
    print(f'made a fake ImageNet {what} in {s["out"]} in {time.time() - start:.1f}s: {len(s["classes"])} classes, '
          f'{s["train"]} train + {s["val"]} val images, {len(s["odd"])} odd files, {len(s["broken"])} broken')
    if args.archives:
        print(f'next: python data_scripts/prepare_imagenet.py --train-tar {s["out"]}/ILSVRC2012_img_train.tar '
              f'--val-tar {s["out"]}/ILSVRC2012_img_val.tar --devkit {s["out"]}/{DEVKIT}.tar.gz --out DIR '
              f'--expect-train {s["train"] + len(s["broken"])} --expect-val {s["val"]} --expect-classes {args.classes}')
    else:
        print(f'use it as dataset "imagenet" (or "folder") with data path {s["out"]}')
    return 0


if __name__ == '__main__':
    run_main(main)
