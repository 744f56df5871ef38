"""Download CIFAR-10 / CIFAR-100 (the official python-pickle archives), check them and extract them.

    python data_scripts/download_cifar.py --dataset cifar10 --out data/cifar
    python data_scripts/download_cifar.py --from-file ~/Downloads/cifar-100-python.tar.gz --out data/cifar

Result: <out>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta} and/or
<out>/cifar-100-python/{train,test,meta}, which `minideit.data.datasets.CIFAR` reads with data path <out>.
The download resumes from <archive>.part after an interruption; the archive's MD5 is checked against the
value published with the dataset; extraction goes to a temp folder that is renamed when complete, so a
rerun after any failure starts clean and a rerun after success does nothing.
"""
from __future__ import annotations

import argparse
import pickle
import shutil
import tarfile
from pathlib import Path

if __package__:  # imported as data_scripts.download_cifar (tests)
    from .scriptutil import ScriptError, check_md5, download, extract_tar, replace_dir, require_file, run_main
else:  # run as a script: data_scripts/ is on sys.path
    from scriptutil import ScriptError, check_md5, download, extract_tar, replace_dir, require_file, run_main

BASE_URL = 'https://www.cs.toronto.edu/~kriz/'
# name -> (archive, md5 published on the CIFAR page, folder inside the archive, files that folder must hold)
DATASETS = {
    'cifar10': ('cifar-10-python.tar.gz', 'c58f30108f718f92721af3b95e74349a', 'cifar-10-batches-py',
                [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch', 'batches.meta']),
    'cifar100': ('cifar-100-python.tar.gz', 'eb9058c3a382ffc7106e4002c42a8d85', 'cifar-100-python',
                 ['train', 'test', 'meta']),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description='Download, verify (MD5) and extract the official CIFAR archives.')
    p.add_argument('--dataset', choices=['cifar10', 'cifar100', 'both'], default=None,
                   help='which dataset (default cifar10; with --from-file it is read from the archive)')
    p.add_argument('--out', default='data/cifar', help='output folder, later the --data-path (default data/cifar)')
    p.add_argument('--from-file', metavar='ARCHIVE', help='use an already downloaded .tar.gz instead of the network')
    p.add_argument('--md5', help='expected MD5 instead of the official one (for a repacked mirror)')
    return p.parse_args(argv)


def is_complete(folder: Path, files: list[str]) -> bool:
    return all((folder / f).is_file() for f in files)


def dataset_of_archive(archive: Path) -> str:
    """The dataset an archive holds, from the name of its top folder (cheaper and surer than its file name)."""
    try:
        with tarfile.open(archive) as tar:
            top = next(iter(tar)).name.split('/')[0]
    except (tarfile.TarError, EOFError, OSError, StopIteration) as e:
        reason = str(e) or 'empty'
        raise ScriptError(f'{archive} is not a readable tar.gz archive ({reason}); download it again') from None
    for name, (_, _, folder, _) in DATASETS.items():
        if top == folder:
            return name
    raise ScriptError(f'{archive} holds {top!r}, not cifar-10-batches-py/ or cifar-100-python/; '
                      f'use the python version of the archive from {BASE_URL}')


def count_images(folder: Path, name: str) -> tuple[int, int, int]:
    """(train images, test images, classes) read back from the extracted pickles."""
    def load(file: str) -> dict:
        with open(folder / file, 'rb') as f:
            return pickle.load(f, encoding='latin1')  # the archives were pickled by Python 2
    if name == 'cifar10':
        train = sum(len(load(f'data_batch_{i}')['labels']) for i in range(1, 6))
        return train, len(load('test_batch')['labels']), len(load('batches.meta')['label_names'])
    return len(load('train')['fine_labels']), len(load('test')['fine_labels']), len(load('meta')['fine_label_names'])


def prepare(name: str, out: Path, archive: Path | None, md5: str | None) -> str:
    """Make <out>/<folder> for one dataset; return the summary line."""
    filename, official_md5, folder, files = DATASETS[name]
    final = out / folder
    if archive is None and is_complete(final, files):
        return f'{name}: already prepared at {final}'
    downloaded = archive is None
    if downloaded:
        archive = download(BASE_URL + filename, out / filename)
    check_md5(archive, md5 or official_md5, downloaded)
    tmp = out / f'.{folder}.tmp'
    shutil.rmtree(tmp, ignore_errors=True)  # leftovers of an interrupted run
    extract_tar(archive, tmp, desc=f'extract {archive.name}')
    if not is_complete(tmp / folder, files):
        missing = [f for f in files if not (tmp / folder / f).is_file()]
        shutil.rmtree(tmp)
        raise ScriptError(f'{archive} lacks {folder}/{", ".join(missing)}; it is not the official python archive')
    replace_dir(tmp / folder, final)
    shutil.rmtree(tmp)
    try:
        n_train, n_test, n_classes = count_images(final, name)
    except (pickle.UnpicklingError, KeyError, EOFError, ValueError) as e:
        raise ScriptError(f'{final} holds files that are not CIFAR pickles ({e}); use the official archive')
    return f'{name}: {n_train} train + {n_test} test images, {n_classes} classes in {final}'


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out).expanduser()
    archive = None
    if args.from_file:
        archive = require_file(args.from_file, 'archive', 'check the --from-file path')
        found = dataset_of_archive(archive)
        if args.dataset not in (None, found):
            raise ScriptError(f'--dataset {args.dataset} but {archive} holds {found}; drop --dataset or fix it')
        names = [found]
    else:
        names = ['cifar10', 'cifar100'] if args.dataset == 'both' else [args.dataset or 'cifar10']
        if args.md5 and len(names) > 1:
            raise ScriptError('--md5 applies to one archive; choose --dataset cifar10 or cifar100')
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        print(prepare(name, out, archive, args.md5))
    print(f'done. Train with data path {out} (dataset name {" or ".join(names)}).')
    return 0


if __name__ == '__main__':
    run_main(main)
