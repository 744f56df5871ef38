"""Datasets: ImageNet-style class folders, the CIFAR pickles, and `build_dataset` that picks one by name.

Every dataset returns `(PIL.Image in RGB, int)` (or `(transform(img), int)`) and has `.classes` and
`.num_classes`. Real data is messy, so decoding is defensive (DESIGN.md, reliability rules):

* `load_rgb` decodes fully at load time and converts whatever it finds (CMYK, grayscale, palette, RGBA,
  a PNG saved under a .JPEG name, all of which ImageNet contains) to RGB;
* `ImageFolder` skips a file that does not decode, warns naming it, counts it in a counter shared by
  all DataLoader workers, and serves the next readable image instead; only a long run of failures in a
  row (a broken disk or a wrong folder, not one bad file) stops training, with the files named;
* `check_data_path` checks the layout before anything heavy happens and, when it is wrong, says in one
  line what is missing and which `data_scripts/` command makes it, or, when the folder holds another data
  set (CIFAR batches, a class-folder tree), which `--data-set` reads it.
"""
from __future__ import annotations

import multiprocessing
import os
import pickle
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageFile

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp')
DATASET_NAMES = ('synthetic', 'cifar10', 'cifar100', 'imagenet', 'folder')


# ------------------------------------------------------------------------------------------- decoding
class UnreadableDataError(RuntimeError):
    """Too many files in a row could not be decoded: the data, not one file, is broken. One line."""


def load_rgb(path: str | Path) -> Image.Image:
    """Decode an image file completely and return it in RGB.

    `Image.open` reads the file's content, not its name, so a PNG called .JPEG decodes as a PNG.
    `load()` forces the full decode here, where a broken file can be caught, rather than later inside a
    transform. Truncated files must fail: Pillow would otherwise fill the missing rows with grey.
    """
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # Pillow's default, restated: some libraries flip it globally
    with Image.open(path) as img:
        img.load()
        return img.convert('RGB')  # also a copy, so the file is closed when we return


# ------------------------------------------------------------------------------------- class folders
def find_classes(root: Path) -> list[str]:
    """Class names = sub-folder names in sorted order; for ImageNet that is the official index order
    (class i = the i-th WordNet id in sorted order). Hidden folders (.ipynb_checkpoints) are not classes."""
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith('.'))


def find_images(folder: Path) -> list[str]:
    """Image files under folder (recursively, in sorted order). Hidden files are skipped: macOS leaves
    '._name.JPEG' resource-fork files next to real images when copying, and they are not images."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames.sort()
        found += [os.path.join(dirpath, f) for f in sorted(filenames)
                  if f.lower().endswith(IMG_EXTENSIONS) and not f.startswith('.')]
    return found


class ImageFolder:
    """`<root>/<class>/**/<image>`; label = index of the class folder in sorted order.

    Unreadable files are counted in a `multiprocessing.Value` created here. Forked DataLoader workers
    (Linux's default start method) inherit it, and spawned or forkserver workers receive it while being
    started, so `num_failures()` in the main process sees every worker's skips either way. (Pickling the
    dataset at any other time, e.g. `copy.deepcopy`, is refused by multiprocessing for that reason.)
    """

    def __init__(self, root: str | Path, transform: Callable | None = None, max_consecutive_failures: int = 32):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f'image folder {self.root} does not exist; expected {self.root}/<class>/<images>')
        self.classes = find_classes(self.root)
        if not self.classes:
            raise ValueError(f'{self.root} holds no class folders; expected {self.root}/<class>/<images>')
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples: list[tuple[str, int]] = []
        empty = []
        for c in self.classes:
            images = find_images(self.root / c)
            empty += [] if images else [c]
            self.samples += [(p, self.class_to_idx[c]) for p in images]
        if empty:
            raise ValueError(f'{len(empty)} class folder(s) in {self.root} hold no images ({", ".join(empty[:5])}); '
                             f'extensions read: {" ".join(IMG_EXTENSIONS)}')
        self.transform = transform
        self.max_consecutive_failures = max(1, max_consecutive_failures)
        # Shared memory that every worker writes to: one flag per file (so a file sampled three times by
        # repeated augmentation, or by two workers, counts once) and their sum. The lock comes from the 'spawn'
        # context because a lock made by the 'fork' context may not be sent to spawned workers; forked workers
        # inherit either kind.
        ctx = multiprocessing.get_context('spawn')
        self._failures = ctx.Value('q', 0)
        self._bad_files = ctx.RawArray('b', len(self.samples))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def num_failures(self) -> int:
        """Distinct unreadable files met since the last reset, over all loader workers."""
        return int(self._failures.value)

    def reset_failures(self) -> None:
        with self._failures.get_lock():
            self._failures.value = 0
            self._bad_files[:] = bytes(len(self._bad_files))

    def _count_failure(self, sample: int) -> bool:
        """Mark file `sample` unreadable; True the first time (so it is reported and counted once)."""
        with self._failures.get_lock():  # test-and-set on shared memory must not interleave between workers
            if self._bad_files[sample]:
                return False
            self._bad_files[sample] = 1
            self._failures.value += 1
            return True

    def load(self, sample: int) -> Any:
        """Decode file `sample` and apply the transform; any exception means this file cannot be used."""
        img = load_rgb(self.samples[sample][0])
        return self.transform(img) if self.transform is not None else img

    def __getitem__(self, index: int) -> tuple[Any, int]:
        failed: list[str] = []
        # Try index, index+1, ... so a bad file costs one substitute sample, never a crashed epoch.
        for offset in range(min(self.max_consecutive_failures, len(self.samples))):
            sample = (index + offset) % len(self.samples)
            path, target = self.samples[sample]
            try:
                return self.load(sample), target
            except Exception as e:  # decoders raise OSError, SyntaxError, ValueError...; so can a transform
                reason = f'{type(e).__name__}: {e}'.splitlines()[0][:200]
                failed.append(f'{path} ({reason})')
                if self._count_failure(sample):
                    warnings.warn(f'skipping unreadable image {path}: {reason}', stacklevel=2)
        raise UnreadableDataError(f'{len(failed)} unreadable images in a row from index {index} of {self.root}; '
                                  f'the data is damaged or not images (re-run the data_scripts preparation): '
                                  + '; '.join(failed))

    def __repr__(self) -> str:
        return f'ImageFolder({str(self.root)!r}, {len(self)} images, {self.num_classes} classes)'


# ---------------------------------------------------------------------------------------------- CIFAR
# num_classes -> folder, train files, test files, meta file, label key, class-name key (official archives)
CIFAR_LAYOUT = {
    10: ('cifar-10-batches-py', [f'data_batch_{i}' for i in range(1, 6)], ['test_batch'], 'batches.meta',
         'labels', 'label_names'),
    100: ('cifar-100-python', ['train'], ['test'], 'meta', 'fine_labels', 'fine_label_names'),
}


def _cifar_files(num_classes: int) -> list[str]:
    _, train, test, meta, _, _ = CIFAR_LAYOUT[num_classes]
    return train + test + [meta]


def find_cifar_dir(root: Path, num_classes: int) -> Path:
    """`<root>/cifar-10-batches-py` (or cifar-100-python), or root itself if it is that folder."""
    sub = root / CIFAR_LAYOUT[num_classes][0]
    if not sub.is_dir() and all((root / f).is_file() for f in _cifar_files(num_classes)):
        return root
    return sub


def _unpickle(path: Path) -> dict[str, Any]:
    with open(path, 'rb') as f:
        d = pickle.load(f, encoding='latin1')  # written by Python 2: latin1 maps its byte strings 1:1
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


class CIFAR:
    """CIFAR-10/100 from the official python archives: each batch is a pickled dict whose 'data' is a
    (N, 3072) uint8 array, each row 1024 red, then 1024 green, then 1024 blue values in row-major order.
    For CIFAR-100 we use the 100 fine labels."""

    def __init__(self, root: str | Path, train: bool = True, transform: Callable | None = None,
                 num_classes: int = 10):
        if num_classes not in CIFAR_LAYOUT:
            raise ValueError(f'CIFAR has 10 or 100 classes, not {num_classes}')
        folder = find_cifar_dir(Path(root), num_classes)
        _, train_files, test_files, meta, label_key, names_key = CIFAR_LAYOUT[num_classes]
        missing = [f for f in _cifar_files(num_classes) if not (folder / f).is_file()]
        if missing:
            raise FileNotFoundError(f'{folder} lacks {", ".join(missing)}; run: python '
                                    f'data_scripts/download_cifar.py --dataset cifar{num_classes} --out {root}')
        data, labels = [], []
        for name in train_files if train else test_files:
            batch = _unpickle(folder / name)
            data.append(np.asarray(batch['data'], dtype=np.uint8))
            labels += list(batch[label_key])
        flat = np.concatenate(data)
        if flat.ndim != 2 or flat.shape[1] != 3 * 32 * 32 or len(flat) != len(labels):
            raise ValueError(f'{folder} does not hold CIFAR batches: data shape {flat.shape}, {len(labels)} labels')
        self.data = flat.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, 3, 32, 32) -> (N, 32, 32, 3)
        self.targets = [int(t) for t in labels]
        self.classes = [n.decode() if isinstance(n, bytes) else n for n in _unpickle(folder / meta)[names_key]]
        self.transform = transform

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        img = Image.fromarray(self.data[index])  # (32, 32, 3) uint8 -> RGB
        return (self.transform(img) if self.transform is not None else img), self.targets[index]


# ------------------------------------------------------------------------------- checks and factory
def _layout_and_command(name: str, path: str) -> tuple[str, str]:
    """(expected layout, command that makes it) for a dataset name, with the user's path filled in."""
    if name in ('cifar10', 'cifar100'):
        n = int(name[5:])
        folder = CIFAR_LAYOUT[n][0]
        files = 'data_batch_1..5,test_batch,batches.meta' if n == 10 else 'train,test,meta'
        return (f'{path}/{folder}/{{{files}}}',
                f'python data_scripts/download_cifar.py --dataset {name} --out {path}')
    layout = f'{path}/train/<class>/<images> and {path}/val/<class>/<images>'
    if name == 'imagenet':
        return layout, ('python data_scripts/prepare_imagenet.py --train-tar ILSVRC2012_img_train.tar '
                        f'--val-tar ILSVRC2012_img_val.tar --devkit ILSVRC2012_devkit_t12.tar.gz --out {path}')
    return layout, (f'python data_scripts/download_flowers102.py --out {path} '
                    f'(or a tiny test tree: python data_scripts/make_fake_imagenet.py --out {path})')


def _listing(folder: Path, limit: int = 4) -> str:
    names = sorted(os.listdir(folder))
    return ', '.join(names[:limit]) + (', ...' if len(names) > limit else '')


def _folder_problem(root: Path) -> str | None:
    """What is wrong with a train/val class-folder layout, or None."""
    for split in ('train', 'val'):
        d = root / split
        if not d.is_dir():
            return f'{root} has no {split}/ folder (it holds: {_listing(root)})'
        if not find_classes(d):
            files = [f for f in os.listdir(d) if not f.startswith('.')]
            if not files:
                return f'{d} is empty'
            if split == 'val' and any(f.lower().endswith(IMG_EXTENSIONS) for f in files):
                return f'{d} holds images directly, not class folders (the official val tar is flat)'
            return f'{d} holds no class folders (it holds: {_listing(d)})'
    train, val = find_classes(root / 'train'), find_classes(root / 'val')
    if train != val:
        only_val = sorted(set(val) - set(train))[:3]
        only_train = sorted(set(train) - set(val))[:3]
        return (f'val/ has {len(val)} class folders and train/ has {len(train)}, and they differ '
                f'(only in train: {only_train or "none"}, only in val: {only_val or "none"}); '
                f'both need the same classes')
    return None


def check_data_path(name: str, data_path: str | Path | None) -> None:
    """Raise ValueError (one line: what is wrong, the layout expected, the command that makes it) unless
    `data_path` holds dataset `name`. Cheap: it lists folders and never opens an image."""
    if name not in DATASET_NAMES:
        raise ValueError(f'unknown dataset {name!r}; choose one of: {", ".join(DATASET_NAMES)}')
    if name == 'synthetic':
        return  # generated in memory, no files
    shown = str(data_path) if data_path not in (None, '') else 'DIR'
    layout, command = _layout_and_command(name, shown)
    root = Path(shown).expanduser()
    if shown == 'DIR':
        problem = f'no data path given for {name}'
    elif not root.exists():
        problem = f'data path {root} does not exist'
    elif not root.is_dir():
        problem = f'data path {root} is a file, not a folder'
    elif not any(not f.startswith('.') for f in os.listdir(root)):
        problem = f'data path {root} is empty'
    elif name in ('cifar10', 'cifar100'):
        n = int(name[5:])
        folder = find_cifar_dir(root, n)
        missing = [f for f in _cifar_files(n) if not (folder / f).is_file()]
        problem = f'{folder} is missing {", ".join(missing)}' if missing else None
        archive = root / ('cifar-10-python.tar.gz' if n == 10 else 'cifar-100-python.tar.gz')
        if missing and archive.is_file():
            command = f'python data_scripts/download_cifar.py --from-file {archive} --out {root}'
    else:
        problem = _folder_problem(root)
    if not problem:
        return
    guess = guess_data_set(root) if root.is_dir() else None
    same_reader = guess == 'folder' and name == 'imagenet'  # both read class folders: no other flag would help
    if guess and guess != name and not same_reader:
        # the folder holds another data set: the fix is a flag, not a download (`--data-path data/cifar` without
        # `--data-set` is read as the default, ImageNet)
        raise ValueError(f'{problem}; it looks like {DATA_SET_LOOKS[guess]}, which --data-set {guess} reads '
                         f'(this run asked for {name})')
    raise ValueError(f'{problem}; expected {layout}; make it with: {command}')


# what each data set's files look like on disk, said in words for the error above
DATA_SET_LOOKS = {'cifar10': 'CIFAR-10 (the python batches data_batch_1..5, test_batch)',
                  'cifar100': 'CIFAR-100 (the python files train, test, meta)',
                  'folder': 'a class-folder tree (train/<class>/ and val/<class>/)'}


def guess_data_set(root: Path) -> str | None:
    """Which data set the folder `root` holds, judged from names only: 'cifar10', 'cifar100', 'folder' or None.

    A class-folder tree is reported as 'folder' (ImageNet is one too, and `--data-set folder` reads any such tree).
    A downloaded but unpacked CIFAR archive counts: `--data-set cifar10` then says how to unpack it."""
    for n in (10, 100):
        folder = find_cifar_dir(root, n)
        archive = root / ('cifar-10-python.tar.gz' if n == 10 else 'cifar-100-python.tar.gz')
        # CIFAR-100's train/test are files; a class-folder tree's train/val are folders
        if any((folder / f).is_file() for f in _cifar_files(n)) or archive.is_file():
            return f'cifar{n}'
    if (root / 'train').is_dir() and (root / 'val').is_dir() and find_classes(root / 'train'):
        return 'folder'
    return None


SYNTHETIC_ONLY = {'img_size', 'num_classes', 'seed', 'num_samples', 'style'}


def build_dataset(name: str, data_path: str | Path | None, train: bool, transform: Callable | None = None,
                  **kwargs: Any):
    """The dataset `name` (synthetic|cifar10|cifar100|imagenet|folder), train or val split.

    For 'synthetic', kwargs (img_size, num_classes, seed, num_samples, style) go to SyntheticShapes and data_path
    is ignored. Real datasets ignore those synthetic-only options, so one config can always pass them;
    'imagenet'/'folder' also accept max_consecutive_failures. Anything else is a ValueError.
    """
    check_data_path(name, data_path)
    if name == 'synthetic':
        from minideit.data.synthetic import SyntheticShapes  # imported here so real-data runs never need it
        return SyntheticShapes(split='train' if train else 'val', transform=transform, **kwargs)
    allowed = SYNTHETIC_ONLY | ({'max_consecutive_failures'} if name in ('imagenet', 'folder') else set())
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(f'unexpected option(s) {", ".join(unknown)} for dataset {name}; '
                         f'accepted: {", ".join(sorted(allowed))}')
    if name in ('cifar10', 'cifar100'):
        return CIFAR(Path(data_path), train=train, transform=transform, num_classes=int(name[5:]))
    extra = {k: v for k, v in kwargs.items() if k == 'max_consecutive_failures'}
    return ImageFolder(Path(data_path) / ('train' if train else 'val'), transform=transform, **extra)
