"""Turn the official ILSVRC2012 downloads into the class-folder layout minideit (and most code) reads.

    python data_scripts/prepare_imagenet.py --train-tar ILSVRC2012_img_train.tar \\
        --val-tar ILSVRC2012_img_val.tar --devkit ILSVRC2012_devkit_t12.tar.gz --out data/imagenet --verify

Input (from image-net.org):
* ILSVRC2012_img_train.tar: 1000 tars n0xxxxxxx.tar, one per class, each holding that class's JPEGs;
* ILSVRC2012_img_val.tar: 50,000 JPEGs in one flat folder, ILSVRC2012_val_00000001.JPEG ...;
* ILSVRC2012_devkit_t12.tar.gz: data/meta.mat maps ILSVRC2012_ID 1..1000 to WordNet ids, and
  data/ILSVRC2012_validation_ground_truth.txt holds one ILSVRC2012_ID per val image, in file-number order.
  meta.mat is read with our own MATLAB v5 reader (data_scripts/matfile.py; scipy is used only as a fallback
  if it is installed). Instead of the devkit, `--val-labels FILE` takes one label per val image as
  "ILSVRC2012_val_00000001.JPEG n01751748" lines, the Kaggle LOC_val_solution.csv, or bare wnids in order.

Output: <out>/train/<wnid>/*.JPEG and <out>/val/<wnid>/*.JPEG (class index = rank of the wnid in sorted
order). Each train class and the whole val split are written to a hidden temp folder and renamed into place
with a `.done` marker inside, so an interrupted run resumes where it stopped and a rerun skips what is done.
`--verify` counts the result against 1,281,167 / 50,000 images and 1000 classes (override with --expect-*)
and exits with code 1 on a mismatch; bad input exits with code 2.
"""
from __future__ import annotations

import argparse
import io
import re
import shutil
import tarfile
from pathlib import Path

from tqdm import tqdm

if __package__:  # imported as data_scripts.prepare_imagenet
    from .matfile import MatFileError, loadmat
    from .scriptutil import ScriptError, replace_dir, require_file, run_main
else:  # run as a script: data_scripts/ is on sys.path
    from matfile import MatFileError, loadmat
    from scriptutil import ScriptError, replace_dir, require_file, run_main

MARKER = '.done'
WNID = re.compile(r'^n\d{8}$')


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description='Extract the official ImageNet-1k (ILSVRC2012) archives into '
                                            '<out>/train/<wnid>/ and <out>/val/<wnid>/ (resumable).')
    p.add_argument('--train-tar', help='ILSVRC2012_img_train.tar (a tar of 1000 per-class tars)')
    p.add_argument('--val-tar', help='ILSVRC2012_img_val.tar (50,000 flat JPEGs)')
    p.add_argument('--devkit', help='ILSVRC2012_devkit_t12.tar.gz (labels of the val images)')
    p.add_argument('--val-labels', help='instead of --devkit: a text/CSV file with the wnid of every val image')
    p.add_argument('--out', required=True, help='output folder, later the data path')
    p.add_argument('--verify', action='store_true', help='count images and classes at the end; exit 1 if off')
    p.add_argument('--expect-train', type=int, default=1281167, help='train images --verify expects')
    p.add_argument('--expect-val', type=int, default=50000, help='val images --verify expects')
    p.add_argument('--expect-classes', type=int, default=1000, help='classes --verify expects')
    args = p.parse_args(argv)
    if not (args.train_tar or args.val_tar or args.verify):
        p.error('nothing to do: give --train-tar and/or --val-tar, or --verify to check an existing --out')
    if args.val_tar and not (args.devkit or args.val_labels):
        p.error('--val-tar needs the labels of the val images: add --devkit ILSVRC2012_devkit_t12.tar.gz '
                'or --val-labels FILE')
    return args


# ------------------------------------------------------------------------------------- val labels
def devkit_val_labels(devkit: Path) -> dict[str, str]:
    """{'ILSVRC2012_val_00000001': wnid, ...} from the devkit's meta.mat and ground-truth list."""
    try:
        with tarfile.open(devkit) as tar:
            files = [m for m in tar.getmembers() if m.isfile()]
            meta = next((m for m in files if m.name.endswith('data/meta.mat')), None)
            truth = next((m for m in files if m.name.endswith('data/ILSVRC2012_validation_ground_truth.txt')), None)
            if meta is None or truth is None:
                raise ScriptError(f'{devkit} lacks data/meta.mat or data/ILSVRC2012_validation_ground_truth.txt; '
                                  f'use ILSVRC2012_devkit_t12.tar.gz (the task 1&2 devkit) or --val-labels')
            meta_bytes, truth_text = tar.extractfile(meta).read(), tar.extractfile(truth).read().decode()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ScriptError(f'cannot read the devkit {devkit}: {e}; download it again') from None
    id_to_wnid = read_meta(meta_bytes)
    labels = {}
    for i, line in enumerate(truth_text.split(), start=1):
        if not line.isdigit() or int(line) not in id_to_wnid:
            raise ScriptError(f'ground-truth line {i} of {devkit} is {line!r}, not an ILSVRC2012_ID in meta.mat')
        labels[f'ILSVRC2012_val_{i:08d}'] = id_to_wnid[int(line)]
    return labels


def read_meta(data: bytes) -> dict[int, str]:
    """ILSVRC2012_ID -> WNID for the leaf synsets (num_children == 0) of meta.mat's `synsets` struct."""
    try:
        synsets = loadmat(data)['synsets']
        rows = [(float(s['ILSVRC2012_ID'].ravel()[0]), s['WNID'], float(s['num_children'].ravel()[0]))
                for s in synsets]
    except (MatFileError, KeyError, IndexError, TypeError, AttributeError) as ours:
        rows = read_meta_with_scipy(data, ours)
    return {int(i): str(w) for i, w, children in rows if children == 0}


def read_meta_with_scipy(data: bytes, ours: Exception) -> list[tuple[float, str, float]]:
    """Fallback for a meta.mat our reader rejects; scipy is optional, so say what to do without it."""
    hint = (f'cannot read meta.mat ({ours}); install scipy or pass --val-labels FILE with lines '
            f'"ILSVRC2012_val_00000001.JPEG n01751748"')
    try:
        import scipy.io
    except ImportError:
        raise ScriptError(hint) from None
    try:
        synsets = scipy.io.loadmat(io.BytesIO(data), squeeze_me=True)['synsets']
        return [(float(s['ILSVRC2012_ID']), str(s['WNID']), float(s['num_children'])) for s in synsets]
    except Exception as e:  # scipy raises several types on malformed files
        raise ScriptError(f'{hint} (scipy: {e})') from None


def file_val_labels(path: Path) -> dict[str, str]:
    """Parse --val-labels: 'name wnid' lines, LOC_val_solution.csv rows, or one wnid per line in order."""
    labels = {}
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith('ImageId'):  # blank or the CSV header
            continue
        if ',' in line:  # LOC_val_solution.csv: ImageId,"wnid x y x y ..."
            name, rest = line.split(',', 1)
            fields = [name] + rest.split()[:1]
        else:
            fields = line.split()
        if len(fields) == 1:  # bare wnids, line k is val image k
            fields = [f'ILSVRC2012_val_{len(labels) + 1:08d}', fields[0]]
        name, wnid = Path(fields[0]).stem, fields[-1]
        if not WNID.match(wnid):
            raise ScriptError(f'line {i} of {path} has {wnid!r} where a wnid like n01751748 should be')
        labels[name] = wnid
    if not labels:
        raise ScriptError(f'{path} holds no labels')
    return labels


# ------------------------------------------------------------------------------------ extraction
def open_tar(path: Path, what: str) -> tarfile.TarFile:
    try:
        return tarfile.open(path)
    except (tarfile.TarError, OSError) as e:
        raise ScriptError(f'{path} is not a readable tar ({e}); is it the {what}?') from None


def image_members(tar: tarfile.TarFile):
    """Regular files of a flat tar, by base name (no folders, links or paths leaving the target)."""
    for m in tar:
        name = Path(m.name).name
        if m.isfile() and name and not name.startswith('.'):
            yield m, name


def extract_train(train_tar: Path, out: Path) -> tuple[int, int]:
    """Extract each per-class tar into <out>/train/<wnid>/; return (classes extracted, classes skipped)."""
    root = out / 'train'
    root.mkdir(parents=True, exist_ok=True)
    outer = open_tar(train_tar, 'ILSVRC2012_img_train.tar')
    with outer:
        classes = [m for m in outer.getmembers() if m.isfile() and m.name.endswith('.tar')]
        if not classes:
            raise ScriptError(f'{train_tar} holds no per-class .tar files; is it ILSVRC2012_img_train.tar?')
        todo = [m for m in classes if not (root / Path(m.name).stem / MARKER).is_file()]
        need = sum(m.size for m in todo)
        if need > shutil.disk_usage(root).free:
            raise ScriptError(f'{root} has {shutil.disk_usage(root).free / 1e9:.1f} GB free, the train images '
                              f'need {need / 1e9:.1f} GB; free space or choose another --out')
        bar = tqdm(todo, desc='train classes', unit='class', initial=len(classes) - len(todo), total=len(classes))
        for member in bar:
            wnid = Path(member.name).stem
            tmp = root / f'.{wnid}.tmp'  # hidden, so a half-written class is never taken for a class
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            count = 0
            try:
                with tarfile.open(fileobj=outer.extractfile(member), mode='r|') as inner:  # stream: no seeking
                    for m, name in image_members(inner):
                        with inner.extractfile(m) as src, open(tmp / name, 'wb') as dst:
                            shutil.copyfileobj(src, dst)
                        count += 1
            except (tarfile.TarError, EOFError) as e:
                raise ScriptError(f'{member.name} inside {train_tar} is damaged ({e}); download the train tar again')
            (tmp / MARKER).write_text(f'{count}\n')
            replace_dir(tmp, root / wnid)
            bar.set_postfix(last=f'{wnid} ({count})')
    return len(todo), len(classes) - len(todo)


def extract_val(val_tar: Path, labels: dict[str, str], out: Path) -> int:
    """Sort the flat val tar into <out>/val/<wnid>/ (all or nothing); return the number of images."""
    final, tmp = out / 'val', out / '.val.tmp'
    if (final / MARKER).is_file():
        return 0
    if val_tar.stat().st_size > shutil.disk_usage(out).free:
        raise ScriptError(f'{out} has too little free space for the val images ({val_tar.stat().st_size / 1e9:.1f} GB)')
    shutil.rmtree(tmp, ignore_errors=True)
    count, unlabelled = 0, []
    with open_tar(val_tar, 'ILSVRC2012_img_val.tar') as tar:
        for m, name in tqdm(image_members(tar), desc='val images', unit='img', total=len(labels)):
            wnid = labels.get(Path(name).stem)
            if wnid is None:
                unlabelled.append(name)
                continue
            (tmp / wnid).mkdir(parents=True, exist_ok=True)
            with tar.extractfile(m) as src, open(tmp / wnid / name, 'wb') as dst:
                shutil.copyfileobj(src, dst)
            count += 1
    if unlabelled or count != len(labels):
        shutil.rmtree(tmp, ignore_errors=True)
        raise ScriptError(f'{val_tar} has {count + len(unlabelled)} images, the labels cover {len(labels)} '
                          f'({len(unlabelled)} without a label, e.g. {unlabelled[:2]}); '
                          f'the val tar and the labels must match')
    (tmp / MARKER).write_text(f'{count}\n')
    replace_dir(tmp, final)
    return count


# -------------------------------------------------------------------------------------- checking
def count_split(folder: Path) -> tuple[int, list[str]]:
    """(images, class names) of a finished split; hidden entries (markers, temp folders) are not counted."""
    if not folder.is_dir():
        return 0, []
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith('.'))
    images = sum(1 for c in classes for f in (folder / c).iterdir() if f.is_file() and not f.name.startswith('.'))
    return images, classes


def verify(out: Path, expect_train: int, expect_val: int, expect_classes: int) -> bool:
    n_train, train_classes = count_split(out / 'train')
    n_val, val_classes = count_split(out / 'val')
    checks = [('train images', n_train, expect_train), ('val images', n_val, expect_val),
              ('train classes', len(train_classes), expect_classes), ('val classes', len(val_classes), expect_classes)]
    ok = True
    for what, found, expected in checks:
        diff = '' if found == expected else f'   <- off by {found - expected:+d}'
        ok &= found == expected
        print(f'  {what:14s} {found:>9,d} (expected {expected:,d}){diff}')
    if train_classes != val_classes:
        ok = False
        print(f'  train and val class folders differ ({len(set(train_classes) ^ set(val_classes))} not in both)')
    return ok


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out).expanduser()
    # Check every input before the hours-long train extraction starts.
    train_tar = require_file(args.train_tar, 'train tar', 'check --train-tar') if args.train_tar else None
    val_tar = require_file(args.val_tar, 'val tar', 'check --val-tar') if args.val_tar else None
    labels = None
    if val_tar is not None:
        if args.val_labels:
            labels = file_val_labels(require_file(args.val_labels, 'val labels file', 'check --val-labels'))
        else:
            labels = devkit_val_labels(require_file(args.devkit, 'devkit', 'check --devkit'))
    out.mkdir(parents=True, exist_ok=True)
    if train_tar is not None:
        done, skipped = extract_train(train_tar, out)
        print(f'train: extracted {done} classes, {skipped} were already done, into {out / "train"}')
    if val_tar is not None:
        n = extract_val(val_tar, labels, out)
        print(f'val: sorted {n} images into {out / "val"}' if n else f'val: already done in {out / "val"}')
    if args.verify:
        print(f'verifying {out}:')
        if not verify(out, args.expect_train, args.expect_val, args.expect_classes):
            print('verification FAILED: rerun with the missing archives, or fix --expect-* for a subset')
            return 1
        print('verification passed')
    print(f'ready: dataset "imagenet" with data path {out}')
    return 0


if __name__ == '__main__':
    run_main(main)
