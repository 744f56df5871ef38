"""Download Oxford Flowers-102 and sort it into <out>/train/<class>/ and <out>/val/<class>/ (DeiT Table 7).

    python data_scripts/download_flowers102.py --out data/flowers102
    python data_scripts/download_flowers102.py --from-dir ~/Downloads --out data/flowers102

The dataset page (https://www.robots.ox.ac.uk/~vgg/data/flowers/102/) offers 102flowers.tgz (jpg/image_00001.jpg
... image_08189.jpg), imagelabels.mat (`labels`: the class 1..102 of every image) and setid.mat (`trnid`,
`valid`, `tstid`: image numbers of the official train, validation and test splits, 1020 + 1020 + 6149).
We read the .mat files with data_scripts/matfile.py, so scipy is not needed.

Split chosen, as is common for transfer learning (and in the DeiT/ViT transfer tables): train = trnid + valid
(2040 images), val = tstid (6149 images). Class folders are named 001 ... 102 after the official label, so the
sorted order gives index = label - 1. Use it as dataset "folder" with data path <out>.
"""
from __future__ import annotations

import argparse
import shutil
import tarfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

if __package__:  # imported as data_scripts.download_flowers102
    from .matfile import MatFileError, loadmat
    from .scriptutil import ScriptError, check_md5, download, replace_dir, require_file, run_main
else:  # run as a script: data_scripts/ is on sys.path
    from matfile import MatFileError, loadmat
    from scriptutil import ScriptError, check_md5, download, replace_dir, require_file, run_main

BASE_URL = 'https://www.robots.ox.ac.uk/~vgg/data/flowers/102/'
FILES = {'102flowers.tgz': '52808999861908f626f3c1f4e79d11fa',  # MD5s as published with torchvision's copy
         'imagelabels.mat': 'e0620be6f572b9609742df49c70aed4d',
         'setid.mat': 'a5357ecc9cb78c4bef273ce3793fc85c'}
OURS = '.flowers102'  # marker inside each finished split folder


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description='Download Oxford Flowers-102 and sort it into train/<class>/ '
                                            '(trnid+valid) and val/<class>/ (tstid).')
    p.add_argument('--out', default='data/flowers102', help='output folder, later the data path')
    p.add_argument('--from-dir', help=f'folder already holding {", ".join(FILES)} (no download)')
    p.add_argument('--skip-md5', action='store_true', help='do not check the MD5s (repacked copies, tests)')
    return p.parse_args(argv)


def read_ids(path: Path, key: str) -> np.ndarray:
    """A numeric vector of a .mat file as int64, whatever numeric type MATLAB stored."""
    try:
        value = loadmat(path).get(key)
    except MatFileError as e:
        raise ScriptError(f'cannot read {path}: {e}') from None
    if not isinstance(value, np.ndarray) or value.size == 0:
        raise ScriptError(f'{path} has no numeric variable {key!r}; is it the official file?')
    return value.ravel().astype(np.int64)


def split_table(labels_mat: Path, setid_mat: Path) -> tuple[dict[int, tuple[str, int]], int]:
    """{image number: (split, label)} and the number of classes, after consistency checks."""
    labels = read_ids(labels_mat, 'labels')
    splits = {'train': np.concatenate([read_ids(setid_mat, 'trnid'), read_ids(setid_mat, 'valid')]),
              'val': read_ids(setid_mat, 'tstid')}
    if labels.min() < 1:
        raise ScriptError(f'{labels_mat} has label {labels.min()}; Flowers-102 labels start at 1')
    table: dict[int, tuple[str, int]] = {}
    for split, ids in splits.items():
        for i in ids.tolist():
            if not 1 <= i <= len(labels):
                raise ScriptError(f'{setid_mat} names image {i}, but {labels_mat} labels only 1..{len(labels)}')
            if i in table:
                raise ScriptError(f'{setid_mat} puts image {i} in two splits; the split files are inconsistent')
            table[i] = (split, int(labels[i - 1]))
    return table, int(labels.max())


def sort_images(tgz: Path, table: dict[int, tuple[str, int]], tmp: Path) -> dict[str, int]:
    """Stream jpg/image_NNNNN.jpg out of the archive into tmp/<split>/<label>/; return images per split."""
    counts = {'train': 0, 'val': 0}
    seen = set()
    try:
        with tarfile.open(tgz, 'r|*') as tar:  # stream: the .tgz is read once, front to back
            for m in tqdm(tar, desc='images', unit='img', total=len(table)):
                stem = Path(m.name).stem
                if not (m.isfile() and stem.startswith('image_') and stem[6:].isdigit()):
                    continue
                number = int(stem[6:])
                if number not in table:
                    continue
                split, label = table[number]
                folder = tmp / split / f'{label:03d}'
                folder.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(m) as src, open(folder / Path(m.name).name, 'wb') as dst:
                    shutil.copyfileobj(src, dst)
                counts[split] += 1
                seen.add(number)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ScriptError(f'cannot read {tgz} ({e}); download it again') from None
    missing = sorted(set(table) - seen)
    if missing:
        raise ScriptError(f'{tgz} lacks {len(missing)} images named in setid.mat (e.g. image_{missing[0]:05d}.jpg)')
    return counts


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out).expanduser()
    if all((out / s / OURS).is_file() for s in ('train', 'val')):
        print(f'already prepared: {out}/train and {out}/val; use dataset "folder" with data path {out}')
        return 0
    for split in ('train', 'val'):
        if (out / split).exists() and not (out / split / OURS).is_file():
            raise ScriptError(f'{out / split} exists and was not made by this script; choose another --out')
    out.mkdir(parents=True, exist_ok=True)
    if args.from_dir:
        paths = {f: require_file(Path(args.from_dir) / f, f, f'download it from {BASE_URL}') for f in FILES}
    else:
        (out / 'downloads').mkdir(exist_ok=True)
        by_hand = f'download {", ".join(FILES)} by hand into one folder and use --from-dir'
        paths = {f: download(BASE_URL + f, out / 'downloads' / f, by_hand) for f in FILES}
    if not args.skip_md5:
        for name, path in paths.items():
            check_md5(path, FILES[name], downloaded=not args.from_dir)
    table, num_classes = split_table(paths['imagelabels.mat'], paths['setid.mat'])
    tmp = out / '.flowers102.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    counts = sort_images(paths['102flowers.tgz'], table, tmp)
    for split in ('train', 'val'):
        (tmp / split).mkdir(parents=True, exist_ok=True)
        (tmp / split / OURS).write_text(f'{counts[split]}\n')
        replace_dir(tmp / split, out / split)
    shutil.rmtree(tmp)
    print(f'Flowers-102: {counts["train"]} train (trnid+valid) + {counts["val"]} val (tstid) images, '
          f'{num_classes} classes in {out}; use dataset "folder" with data path {out}')
    return 0


if __name__ == '__main__':
    run_main(main)
