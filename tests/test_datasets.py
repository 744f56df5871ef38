"""minideit.data.datasets: class order, decoding of odd files, skipping and counting of broken files (also
across DataLoader workers), the CIFAR reader on archives in the official pickle format, and the one-line
messages of check_data_path."""
import pickle
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from minideit.data.datasets import CIFAR, ImageFolder, build_dataset, check_data_path, load_rgb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # data_scripts is a folder of scripts, importable from the repo root
from data_scripts.make_fake_imagenet import make_fake_imagenet  # noqa: E402


@pytest.fixture(scope='module')
def fake(tmp_path_factory):
    out = tmp_path_factory.mktemp('fake') / 'imagenet'
    summary = make_fake_imagenet(out, classes=4, train_per_class=5, val_per_class=2, size=32, seed=3, broken=True)
    return out, summary


def quiet_items(ds, indices=None):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return [ds[i] for i in (range(len(ds)) if indices is None else indices)]


# ------------------------------------------------------------------------------------ ImageFolder
def test_classes_are_sorted_wnids_and_labels_follow_folders(fake):
    out, summary = fake
    ds = ImageFolder(out / 'train')
    assert ds.classes == sorted(ds.classes) == summary['classes']
    assert ds.num_classes == 4
    for path, label in ds.samples:
        assert ds.classes[label] == Path(path).parent.name
    assert len(ds) == summary['train'] + len(summary['broken'])  # broken files are listed, skipped when read


def test_odd_files_decode_to_rgb(fake, tmp_path):
    out, summary = fake
    assert Image.open(out / summary['odd']['cmyk']).mode == 'CMYK'
    assert Image.open(out / summary['odd']['grayscale']).mode == 'L'
    assert Image.open(out / summary['odd']['png_named_jpeg']).format == 'PNG'
    rgba = Image.new('RGBA', (9, 7), (10, 200, 30, 128))
    rgba.save(tmp_path / 'rgba.png')
    rgba.convert('RGB').convert('P').save(tmp_path / 'palette.png')
    paths = [out / p for p in summary['odd'].values()] + [tmp_path / 'rgba.png', tmp_path / 'palette.png']
    for p in paths:
        img = load_rgb(p)
        assert img.mode == 'RGB' and img.size[0] > 0, p
    assert load_rgb(tmp_path / 'rgba.png').getpixel((0, 0)) == (10, 200, 30)


def test_truncated_jpeg_fails_even_when_pillow_flag_was_flipped(fake):
    out, summary = fake
    truncated = next(out / p for p in summary['broken'] if 'truncated' in p)
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True  # as some other library might have done
    try:
        with pytest.raises(OSError):
            load_rgb(truncated)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


def test_broken_files_are_skipped_warned_and_counted(fake):
    out, summary = fake
    ds = ImageFolder(out / 'train')
    broken = {str(out / p) for p in summary['broken']}
    bad_idx = [i for i, (p, _) in enumerate(ds.samples) if p in broken]
    assert len(bad_idx) == 3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        items = [ds[i] for i in range(len(ds))]
    assert all(img.mode == 'RGB' for img, _ in items)
    named = {p for p in broken if any(p in str(w.message) for w in caught)}
    assert named == broken
    # The three broken files sit next to each other: reading them costs 3 + 2 + 1 failed attempts, but each
    # file is counted (and named) once.
    assert ds.num_failures() == 3
    assert len([w for w in caught if 'skipping unreadable image' in str(w.message)]) == 3
    # A broken index serves the next readable sample, label included.
    after = max(bad_idx) + 1
    img, label = quiet_items(ds, [bad_idx[0]])[0]
    assert label == ds.samples[after % len(ds)][1]
    assert np.array_equal(np.asarray(img), np.asarray(load_rgb(ds.samples[after % len(ds)][0])))
    ds.reset_failures()
    assert ds.num_failures() == 0


def to_array(img):
    return torch.from_numpy(np.asarray(img.resize((8, 8))).copy())


def test_failure_counter_is_shared_by_dataloader_workers(fake):
    out, _ = fake
    ds = ImageFolder(out / 'train', transform=to_array)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        n = sum(len(y) for _, y in loader)
    assert n == len(ds)
    assert ds.num_failures() == 3  # counted in the workers (once per file), seen in the main process


@pytest.mark.slow
@pytest.mark.parametrize('start_method', ['spawn', 'forkserver'])  # forkserver: Linux default from Python 3.14
def test_failure_counter_works_with_spawned_workers(fake, start_method):
    out, _ = fake
    ds = ImageFolder(out / 'train', transform=to_array)
    loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=1, multiprocessing_context=start_method)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        list(loader)
    assert ds.num_failures() == 3


def test_many_failures_in_a_row_raise_naming_the_files(tmp_path):
    folder = tmp_path / 'root' / 'n00000001'
    folder.mkdir(parents=True)
    for i in range(5):
        (folder / f'a{i}.JPEG').write_bytes(b'not an image' * i)
    Image.new('RGB', (4, 4)).save(folder / 'z.JPEG')
    strict = ImageFolder(tmp_path / 'root', max_consecutive_failures=3)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with pytest.raises(RuntimeError) as err:
            strict[0]
        message = str(err.value)
        assert '\n' not in message and message.startswith('3 unreadable images in a row')
        assert all(str(folder / f'a{i}.JPEG') in message for i in range(3))
        assert strict.num_failures() == 3
        lenient = ImageFolder(tmp_path / 'root', max_consecutive_failures=10)
        assert lenient[0][0].size == (4, 4)


def test_hidden_entries_and_other_extensions_are_ignored(tmp_path):
    (tmp_path / 'b_class').mkdir()
    (tmp_path / 'a_class' / 'sub').mkdir(parents=True)
    (tmp_path / '.ipynb_checkpoints').mkdir()
    for p in ['a_class/x.jpg', 'a_class/sub/y.PNG', 'b_class/z.WebP', 'b_class/w.bmp']:
        Image.new('RGB', (3, 3)).save(tmp_path / p, format={'.jpg': 'JPEG', '.PNG': 'PNG', '.WebP': 'WEBP',
                                                             '.bmp': 'BMP'}[Path(p).suffix])
    (tmp_path / 'a_class' / '._x.jpg').write_bytes(b'\0\5\26\7')  # macOS resource fork
    (tmp_path / 'b_class' / 'notes.txt').write_text('hi')
    ds = ImageFolder(tmp_path)
    assert ds.classes == ['a_class', 'b_class']
    assert sorted(Path(p).name for p, _ in ds.samples) == ['w.bmp', 'x.jpg', 'y.PNG', 'z.WebP']


def test_empty_class_folder_and_missing_root_are_one_line_errors(tmp_path):
    (tmp_path / 'n1').mkdir()
    with pytest.raises(ValueError, match='hold no images') as err:
        ImageFolder(tmp_path)
    assert '\n' not in str(err.value)
    with pytest.raises(FileNotFoundError):
        ImageFolder(tmp_path / 'missing')


# ------------------------------------------------------------------------------------------- CIFAR
def write_cifar(root, num_classes, bytes_keys=False, per_batch=6):
    """Batches in the layout of the official python archives; returns the images written, per split."""
    rng = np.random.default_rng(num_classes)
    key = (lambda k: k.encode()) if bytes_keys else (lambda k: k)
    if num_classes == 10:
        folder, test_files = root / 'cifar-10-batches-py', ['test_batch']
        train_files = [f'data_batch_{i}' for i in range(1, 6)]
        label_key, meta_file, meta = 'labels', 'batches.meta', {key('label_names'): [f'c{i}' for i in range(10)],
                                                                key('num_vis'): 3072}
    else:
        folder, train_files, test_files = root / 'cifar-100-python', ['train'], ['test']
        label_key, meta_file = 'fine_labels', 'meta'
        meta = {key('fine_label_names'): [f'f{i}' for i in range(100)], key('coarse_label_names'): ['x'] * 20}
    folder.mkdir(parents=True)
    written = {}
    for split, files in [('train', train_files), ('test', test_files)]:
        images, labels = [], []
        for name in files:
            hwc = rng.integers(0, 256, size=(per_batch, 32, 32, 3), dtype=np.uint8)
            y = rng.integers(0, num_classes, size=per_batch).tolist()
            batch = {key('data'): hwc.transpose(0, 3, 1, 2).reshape(per_batch, 3072),  # rows of R, G, B planes
                     key(label_key): y, key('filenames'): [f'img{i}.png' for i in range(per_batch)]}
            if num_classes == 100:
                batch[key('coarse_labels')] = [0] * per_batch
            (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
            images.append(hwc)
            labels += y
        written[split] = (np.concatenate(images), labels)
    (folder / meta_file).write_bytes(pickle.dumps(meta, protocol=2))
    return written


@pytest.mark.parametrize('num_classes,bytes_keys', [(10, False), (100, False), (10, True)])
def test_cifar_reads_official_pickle_layout(tmp_path, num_classes, bytes_keys):
    written = write_cifar(tmp_path, num_classes, bytes_keys)
    for train, split in [(True, 'train'), (False, 'test')]:
        ds = CIFAR(tmp_path, train=train, num_classes=num_classes)
        images, labels = written[split]
        assert len(ds) == len(labels) == (30 if train and num_classes == 10 else 6)
        assert ds.num_classes == num_classes and ds.classes[1] == ('c1' if num_classes == 10 else 'f1')
        for i in [0, len(ds) - 1]:
            img, label = ds[i]
            assert img.mode == 'RGB' and img.size == (32, 32) and label == labels[i]
            assert np.array_equal(np.asarray(img), images[i])


def test_cifar_accepts_the_batches_folder_itself_and_build_dataset(tmp_path):
    write_cifar(tmp_path, 10)
    direct = CIFAR(tmp_path / 'cifar-10-batches-py', train=False)
    assert len(direct) == 6
    ds = build_dataset('cifar10', tmp_path, train=True, transform=lambda im: np.asarray(im).mean())
    x, y = ds[0]
    assert isinstance(x, float) and 0 <= y < 10
    with pytest.raises(ValueError, match='unexpected option'):
        build_dataset('cifar10', tmp_path, True, max_consecutive_failures=3)
    assert len(build_dataset('cifar10', tmp_path, False, img_size=32, num_classes=10, seed=1)) == 6


# ----------------------------------------------------------------------------- checks and factory
def bad_layouts(tmp_path, fake_root):
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'file').write_text('x')
    (tmp_path / 'flatval' / 'train' / 'n01').mkdir(parents=True)
    (tmp_path / 'flatval' / 'val').mkdir()
    (tmp_path / 'flatval' / 'val' / 'ILSVRC2012_val_00000001.JPEG').write_bytes(b'')
    (tmp_path / 'mismatch' / 'train' / 'n01').mkdir(parents=True)
    (tmp_path / 'mismatch' / 'train' / 'n02').mkdir()
    (tmp_path / 'mismatch' / 'val' / 'n01').mkdir(parents=True)
    (tmp_path / 'cifar_partial' / 'cifar-10-batches-py').mkdir(parents=True)
    (tmp_path / 'cifar_partial' / 'cifar-10-batches-py' / 'data_batch_1').write_bytes(b'')
    (tmp_path / 'cifar_archive').mkdir()
    (tmp_path / 'cifar_archive' / 'cifar-10-python.tar.gz').write_bytes(b'')
    return [  # (name, path, words the message must contain)
        ('nonsense', tmp_path, ['unknown dataset', 'synthetic, cifar10, cifar100, imagenet, folder']),
        ('imagenet', None, ['no data path given', 'prepare_imagenet.py']),
        ('imagenet', tmp_path / 'nowhere', ['does not exist', 'prepare_imagenet.py', 'train/<class>']),
        ('cifar10', tmp_path / 'empty', ['is empty', 'download_cifar.py --dataset cifar10 --out']),
        ('cifar100', tmp_path / 'file', ['is a file', 'download_cifar.py --dataset cifar100']),
        ('cifar10', tmp_path / 'cifar_partial', ['missing data_batch_2', 'test_batch', 'download_cifar.py']),
        ('cifar10', tmp_path / 'cifar_archive', ['download_cifar.py --from-file']),
        ('imagenet', fake_root / 'train', ['no train/ folder', 'prepare_imagenet.py']),
        ('folder', tmp_path / 'flatval', ['holds images directly', 'make_fake_imagenet.py --out']),
        ('folder', tmp_path / 'mismatch', ['differ', "only in train: ['n02']", 'make_fake_imagenet.py']),
    ]


def test_check_data_path_says_what_is_wrong_in_one_line(tmp_path, fake):
    for name, path, words in bad_layouts(tmp_path, fake[0]):
        with pytest.raises(ValueError) as err:
            check_data_path(name, path)
        message = str(err.value)
        assert '\n' not in message, message
        for w in words:
            assert w in message, (w, message)


def test_check_data_path_accepts_good_layouts(tmp_path, fake):
    check_data_path('imagenet', fake[0])
    check_data_path('folder', str(fake[0]))
    check_data_path('synthetic', None)
    write_cifar(tmp_path, 100)
    check_data_path('cifar100', tmp_path)
    check_data_path('cifar100', tmp_path / 'cifar-100-python')


def test_build_dataset_imagenet_train_and_val_share_classes(fake):
    out, summary = fake
    train = build_dataset('imagenet', out, True, max_consecutive_failures=5)
    val = build_dataset('folder', out, False)
    assert train.classes == val.classes == summary['classes']
    assert len(val) == summary['val'] and train.max_consecutive_failures == 5
    img, label = quiet_items(val, [0])[0]
    assert img.mode == 'RGB' and val.classes[label] == Path(val.samples[0][0]).parent.name


def test_build_dataset_synthetic_passes_options_through():
    pytest.importorskip('minideit.data.synthetic')
    train = build_dataset('synthetic', '/ignored', True, img_size=16, num_classes=4, num_samples=8, seed=1)
    val = build_dataset('synthetic', None, False, img_size=16, num_classes=4, num_samples=8, seed=1)
    assert len(train) == 8 and train.num_classes == 4
    img, label = train[0]
    assert img.size == (16, 16) and 0 <= label < 4
    assert not np.array_equal(np.asarray(train[0][0]), np.asarray(val[0][0]))  # different splits


@pytest.mark.parametrize('asked', ['imagenet', 'folder', 'cifar100'])
def test_a_cifar10_folder_read_as_another_data_set_names_the_flag(tmp_path, asked):
    # `--data-path data/cifar` without `--data-set` is read as ImageNet: the fix is a flag, not prepare_imagenet.py
    write_cifar(tmp_path, 10)
    with pytest.raises(ValueError) as err:
        check_data_path(asked, tmp_path)
    message = str(err.value)
    assert '--data-set cifar10 reads' in message and 'CIFAR-10' in message and '\n' not in message, message
    assert 'prepare_imagenet' not in message and 'make_fake_imagenet' not in message, message
    check_data_path('cifar10', tmp_path)  # and that flag does read it


@pytest.mark.parametrize('where', ['root', 'inside'])
def test_a_cifar100_folder_read_as_imagenet_names_the_flag(tmp_path, where):
    write_cifar(tmp_path, 100)
    path = tmp_path if where == 'root' else tmp_path / 'cifar-100-python'
    with pytest.raises(ValueError, match=r'--data-set cifar100 reads'):
        check_data_path('imagenet', path)


def test_a_cifar_archive_not_yet_unpacked_names_the_flag(tmp_path):
    (tmp_path / 'cifar-10-python.tar.gz').write_bytes(b'')
    with pytest.raises(ValueError, match=r'--data-set cifar10 reads'):
        check_data_path('imagenet', tmp_path)


def test_a_class_folder_tree_read_as_cifar_names_the_flag(tmp_path, fake):
    with pytest.raises(ValueError) as err:
        check_data_path('cifar10', fake[0])
    assert '--data-set folder reads' in str(err.value) and 'download_cifar' not in str(err.value), str(err.value)


def test_a_broken_class_folder_tree_read_as_imagenet_gets_no_flag_advice(tmp_path):
    # imagenet and folder read the same layout, so suggesting --data-set folder would not help
    (tmp_path / 'train' / 'n01').mkdir(parents=True)
    (tmp_path / 'train' / 'n02').mkdir()
    (tmp_path / 'val' / 'n01').mkdir(parents=True)
    with pytest.raises(ValueError) as err:
        check_data_path('imagenet', tmp_path)
    assert '--data-set' not in str(err.value) and 'differ' in str(err.value), str(err.value)
