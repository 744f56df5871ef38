"""data_scripts/: the MATLAB v5 reader, the fake ImageNet, and each preparation script run as a user runs it
(subprocess, exit code, no traceback) on small archives generated here in the official formats."""
import hashlib
import http.server
import io
import os
import pickle
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / 'data_scripts'
sys.path.insert(0, str(ROOT))
from data_scripts import matfile  # noqa: E402
from data_scripts.make_fake_imagenet import make_fake_imagenet  # noqa: E402
from data_scripts.scriptutil import download  # noqa: E402


def run(script, *args, expect=0):
    """Run a script like a user would; return (stdout, stderr) after checking the exit code."""
    proc = subprocess.run([sys.executable, str(SCRIPTS / script), *map(str, args)], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert 'Traceback' not in proc.stderr, proc.stderr
    assert proc.returncode == expect, (proc.returncode, proc.stdout, proc.stderr)
    if expect == 2:
        assert 'error: ' in proc.stderr
    return proc.stdout, proc.stderr


def tree(root):
    """{relative path: bytes} of the visible files under root (markers and temp folders left out)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*'))
            if p.is_file() and not any(part.startswith('.') for part in p.relative_to(root).parts)}


def md5(path):
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


@pytest.mark.parametrize('script', ['prepare_imagenet.py', 'download_cifar.py', 'download_flowers102.py',
                                    'make_fake_imagenet.py'])
def test_every_script_has_help(script):
    out, _ = run(script, '--help')
    assert 'usage:' in out and '--out' in out


# --------------------------------------------------------------------------------------- matfile
SYNSETS = [{'ILSVRC2012_ID': 1.0, 'WNID': 'n01440764', 'words': 'tench, Tinca tinca', 'num_children': 0.0,
            'children': np.zeros((1, 0))},
           {'ILSVRC2012_ID': 2.0, 'WNID': 'n00001740', 'words': 'entity', 'num_children': 2.0,
            'children': np.array([[1.0, 3.0]])}]


@pytest.mark.parametrize('compress', [True, False])
def test_matfile_round_trip(tmp_path, compress):
    labels = np.arange(1, 8190) % 102 + 1
    matfile.savemat(tmp_path / 'a.mat', {'labels': labels, 'synsets': SYNSETS, 'grid': np.arange(6.0).reshape(2, 3),
                                         'cell': ['ab', np.ones(2)], 'x': 'hi'}, compress=compress)
    got = matfile.loadmat(tmp_path / 'a.mat')
    assert got['labels'].shape == (1, 8189) and np.array_equal(got['labels'].ravel(), labels)
    assert np.array_equal(got['grid'], np.arange(6.0).reshape(2, 3))  # column-major order undone
    assert got['synsets'][0]['WNID'] == 'n01440764' and got['synsets'][1]['children'].tolist() == [[1.0, 3.0]]
    assert got['synsets'][0]['children'].shape == (1, 0)
    assert got['cell'][0] == 'ab' and got['x'] == 'hi'


@pytest.mark.parametrize('compress', [True, False])
def test_matfile_agrees_with_scipy(tmp_path, compress):
    sio = pytest.importorskip('scipy.io')
    record = np.empty((2, 1), dtype=[(k, object) for k in SYNSETS[0]])
    for i, s in enumerate(SYNSETS):
        record[i, 0] = tuple(s.values())
    sio.savemat(tmp_path / 's.mat', {'synsets': record, 'trnid': np.array([[5, 9, 2]], dtype=np.uint16),
                                     'labels': np.array([[1.0, 102.0]]), 'ab': np.uint8(7)},  # 'ab': small elements
                do_compression=compress)
    ours = matfile.loadmat(tmp_path / 's.mat')
    assert [s['WNID'] for s in ours['synsets']] == ['n01440764', 'n00001740']
    assert ours['synsets'][1]['num_children'].item() == 2 and ours['trnid'].tolist() == [[5, 9, 2]]
    assert ours['ab'].tolist() == [[7]] and ours['labels'].tolist() == [[1.0, 102.0]]
    matfile.savemat(tmp_path / 'o.mat', {'synsets': SYNSETS, 'labels': np.array([3, 1])}, compress=compress)
    theirs = sio.loadmat(tmp_path / 'o.mat', squeeze_me=True)
    assert list(theirs['synsets']['WNID']) == ['n01440764', 'n00001740']
    assert theirs['labels'].tolist() == [3, 1]


def test_matfile_rejects_non_mat_files(tmp_path):
    (tmp_path / 'x.mat').write_bytes(b'hello' * 40)
    with pytest.raises(matfile.MatFileError, match='not a MATLAB 5.0'):
        matfile.loadmat(tmp_path / 'x.mat')


# ---------------------------------------------------------------------------------- fake ImageNet
def test_make_fake_imagenet_tree(tmp_path):
    s = make_fake_imagenet(tmp_path / 'f', classes=3, train_per_class=4, val_per_class=2, size=40, broken=True)
    train = sorted((tmp_path / 'f' / 'train').iterdir())
    assert [d.name for d in train] == s['classes'] and all(len(w) == 9 and w.startswith('n0') for w in s['classes'])
    files = list((tmp_path / 'f').rglob('*.JPEG'))
    assert len(files) == 3 * 4 + 3 * 2 + 3
    broken = {str(tmp_path / 'f' / p) for p in s['broken']}
    sizes, modes = set(), {}
    for f in files:
        if str(f) in broken:
            continue
        with Image.open(f) as img:
            img.load()
            sizes.add(img.size)
            modes[str(f.relative_to(tmp_path / 'f'))] = img.mode
    assert len(sizes) > 5  # varied sizes
    assert modes[s['odd']['cmyk']] == 'CMYK' and modes[s['odd']['grayscale']] == 'L'
    assert modes[s['odd']['val_cmyk']] == 'CMYK'
    for p in broken:
        with pytest.raises(Exception):
            Image.open(p).load()


def test_make_fake_imagenet_cli_refuses_a_non_empty_folder(tmp_path):
    out, _ = run('make_fake_imagenet.py', '--out', tmp_path / 'f', '--classes', 2)
    assert '16 train + 8 val images' in out
    _, err = run('make_fake_imagenet.py', '--out', tmp_path / 'f', expect=2)
    assert 'not empty' in err


# ----------------------------------------------------------------------------------- prepare_imagenet
@pytest.fixture
def archives(tmp_path):
    options = dict(classes=4, train_per_class=3, val_per_class=2, size=24, seed=5, broken=True)
    make_fake_imagenet(tmp_path / 'arch', archives=True, **options)
    make_fake_imagenet(tmp_path / 'want', **options)  # what the preparation must produce
    a = tmp_path / 'arch'
    args = ['--train-tar', a / 'ILSVRC2012_img_train.tar', '--val-tar', a / 'ILSVRC2012_img_val.tar',
            '--devkit', a / 'ILSVRC2012_devkit_t12.tar.gz']
    expect = ['--expect-train', 4 * 3 + 3, '--expect-val', 4 * 2, '--expect-classes', 4]
    return tmp_path, args, expect


def test_prepare_imagenet_sorts_archives_into_class_folders(archives):
    tmp, args, expect = archives
    out, _ = run('prepare_imagenet.py', *args, '--out', tmp / 'out', '--verify', *expect)
    assert 'extracted 4 classes' in out and 'sorted 8 images' in out and 'verification passed' in out
    assert tree(tmp / 'out') == tree(tmp / 'want')  # val labels came through meta.mat + ground truth


def test_prepare_imagenet_rerun_is_idempotent_and_resumes(archives):
    tmp, args, expect = archives
    run('prepare_imagenet.py', *args, '--out', tmp / 'out')
    stamps = {p: p.stat().st_mtime_ns for p in (tmp / 'out').rglob('*.JPEG')}
    out, _ = run('prepare_imagenet.py', *args, '--out', tmp / 'out')
    assert 'extracted 0 classes, 4 were already done' in out and 'val: already done' in out
    assert {p: p.stat().st_mtime_ns for p in (tmp / 'out').rglob('*.JPEG')} == stamps
    # Interrupted run: one class lost its marker, a temp folder was left behind, a file went missing.
    wnid = sorted((tmp / 'out' / 'train').iterdir())[1].name
    (tmp / 'out' / 'train' / wnid / '.done').unlink()
    next((tmp / 'out' / 'train' / wnid).glob('*.JPEG')).unlink()
    (tmp / 'out' / 'train' / f'.{wnid}.tmp').mkdir()
    out, _ = run('prepare_imagenet.py', *args, '--out', tmp / 'out', '--verify', *expect)
    assert 'extracted 1 classes, 3 were already done' in out
    assert not (tmp / 'out' / 'train' / f'.{wnid}.tmp').exists()
    assert tree(tmp / 'out') == tree(tmp / 'want')


def test_prepare_imagenet_verify_reports_mismatch_with_exit_1(archives):
    tmp, args, _ = archives
    out, _ = run('prepare_imagenet.py', *args, '--out', tmp / 'out', '--verify', expect=1)
    assert 'off by -1281152' in out and 'verification FAILED' in out
    out, _ = run('prepare_imagenet.py', '--out', tmp / 'out', '--verify', '--expect-train', 15, '--expect-val', 9,
                 '--expect-classes', 4, expect=1)
    assert 'val images' in out and 'off by -1' in out


def test_prepare_imagenet_val_labels_file_instead_of_devkit(archives):
    tmp, args, _ = archives
    want = {p.name: p.parent.name for p in (tmp / 'want' / 'val').rglob('*.JPEG')}
    lines = ['ImageId,PredictionString'] + [f'{Path(n).stem},{w} 1 2 3 4' for n, w in sorted(want.items())]
    (tmp / 'LOC_val_solution.csv').write_text('\n'.join(lines) + '\n')
    run('prepare_imagenet.py', *args[2:4], '--val-labels', tmp / 'LOC_val_solution.csv', '--out', tmp / 'o2')
    assert tree(tmp / 'o2') == {k: v for k, v in tree(tmp / 'want').items() if k.startswith('val/')}
    (tmp / 'plain.txt').write_text(''.join(f'{n} {w}\n' for n, w in sorted(want.items())))
    run('prepare_imagenet.py', *args[2:4], '--val-labels', tmp / 'plain.txt', '--out', tmp / 'o3')
    assert tree(tmp / 'o3') == tree(tmp / 'o2')


def test_prepare_imagenet_bad_input_is_one_error_line(archives):
    tmp, args, _ = archives
    _, err = run('prepare_imagenet.py', '--train-tar', tmp / 'missing.tar', '--out', tmp / 'o', expect=2)
    assert 'train tar not found' in err
    _, err = run('prepare_imagenet.py', *args[2:4], '--out', tmp / 'o', expect=2)
    assert '--devkit' in err
    (tmp / 'junk.tar').write_bytes(b'\0garbage' * 100)
    _, err = run('prepare_imagenet.py', '--train-tar', tmp / 'junk.tar', '--out', tmp / 'o', expect=2)
    assert 'junk.tar' in err
    with tarfile.open(tmp / 'devkit.tar.gz', 'w:gz') as tar:
        tar.add(tmp / 'junk.tar', 'ILSVRC2012_devkit_t12/data/other.txt')
    _, err = run('prepare_imagenet.py', *args[2:4], '--devkit', tmp / 'devkit.tar.gz', '--out', tmp / 'o', expect=2)
    assert 'meta.mat' in err
    (tmp / 'labels.txt').write_text('ILSVRC2012_val_00000001.JPEG dog\n')
    _, err = run('prepare_imagenet.py', *args[2:4], '--val-labels', tmp / 'labels.txt', '--out', tmp / 'o', expect=2)
    assert 'line 1' in err


# ------------------------------------------------------------------------------------- download_cifar
def cifar_archive(path, folder, files):
    with tarfile.open(path, 'w:gz') as tar:
        for name, obj in files.items():
            data = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f'{folder}/{name}')
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def fake_cifar10(path):
    batch = {'data': np.zeros((4, 3072), np.uint8), 'labels': [0, 1, 2, 3]}
    files = {f'data_batch_{i}': batch for i in range(1, 6)}
    files.update(test_batch=batch, **{'batches.meta': {'label_names': [f'c{i}' for i in range(10)]}})
    cifar_archive(path, 'cifar-10-batches-py', files)


def test_download_cifar_from_file_checks_md5_and_extracts(tmp_path):
    from minideit.data.datasets import CIFAR
    fake_cifar10(tmp_path / 'cifar-10-python.tar.gz')
    archive = tmp_path / 'cifar-10-python.tar.gz'
    _, err = run('download_cifar.py', '--from-file', archive, '--out', tmp_path / 'out', expect=2)
    assert 'md5' in err and 'c58f30108f718f92721af3b95e74349a' in err  # not the official archive
    assert not (tmp_path / 'out' / 'cifar-10-batches-py').exists()
    out, _ = run('download_cifar.py', '--from-file', archive, '--md5', md5(archive), '--out', tmp_path / 'out')
    assert 'cifar10: 20 train + 4 test images, 10 classes' in out
    assert len(CIFAR(tmp_path / 'out', train=True)) == 20
    _, err = run('download_cifar.py', '--from-file', archive, '--dataset', 'cifar100', '--md5', md5(archive),
                 '--out', tmp_path / 'out', expect=2)
    assert 'holds cifar10' in err


def test_download_cifar_100_and_bad_archives(tmp_path):
    meta = {'fine_label_names': [f'f{i}' for i in range(100)], 'coarse_label_names': ['c'] * 20}
    split = {'data': np.zeros((3, 3072), np.uint8), 'fine_labels': [5, 6, 7], 'coarse_labels': [0, 0, 0]}
    cifar_archive(tmp_path / 'c100.tar.gz', 'cifar-100-python', {'train': split, 'test': split, 'meta': meta})
    out, _ = run('download_cifar.py', '--from-file', tmp_path / 'c100.tar.gz', '--md5', md5(tmp_path / 'c100.tar.gz'),
                 '--out', tmp_path / 'out')
    assert 'cifar100: 3 train + 3 test images, 100 classes' in out
    cifar_archive(tmp_path / 'part.tar.gz', 'cifar-10-batches-py', {'data_batch_1': split})
    _, err = run('download_cifar.py', '--from-file', tmp_path / 'part.tar.gz', '--md5', md5(tmp_path / 'part.tar.gz'),
                 '--out', tmp_path / 'o2', expect=2)
    assert 'lacks' in err and 'test_batch' in err
    (tmp_path / 'junk.tar.gz').write_bytes(b'junk')
    run('download_cifar.py', '--from-file', tmp_path / 'junk.tar.gz', '--out', tmp_path / 'o3', expect=2)
    run('download_cifar.py', '--from-file', tmp_path / 'nothing.tar.gz', '--out', tmp_path / 'o3', expect=2)


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves one payload and honours 'Range: bytes=N-', like the dataset hosts do."""
    payload = bytes(range(256)) * 40
    ranges = []

    def do_GET(self):
        start = int(self.headers['Range'][6:-1]) if self.headers.get('Range') else 0
        RangeHandler.ranges.append(start)
        body = self.payload[start:]
        self.send_response(206 if start else 200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_download_resumes_a_partial_file_with_a_range_request(tmp_path):
    server = http.server.HTTPServer(('127.0.0.1', 0), RangeHandler)  # local only, no network
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        (tmp_path / 'x.bin.part').write_bytes(RangeHandler.payload[:1000])
        url = f'http://127.0.0.1:{server.server_port}/x.bin'
        download(url, tmp_path / 'x.bin')
    finally:
        server.shutdown()
    assert (tmp_path / 'x.bin').read_bytes() == RangeHandler.payload
    assert RangeHandler.ranges == [1000] and not (tmp_path / 'x.bin.part').exists()


# ---------------------------------------------------------------------------------------- Flowers-102
def fake_flowers(folder, n=24, classes=3):
    """102flowers.tgz, imagelabels.mat and setid.mat in the official layout, for n images."""
    folder.mkdir()
    labels = np.arange(n) % classes + 1
    with tarfile.open(folder / '102flowers.tgz', 'w:gz') as tar:
        for i in range(1, n + 1):
            buf = io.BytesIO()
            Image.new('RGB', (20, 16), (i * 10, 0, 0)).save(buf, format='JPEG')
            info = tarfile.TarInfo(f'jpg/image_{i:05d}.jpg')
            info.size = len(buf.getvalue())
            tar.addfile(info, io.BytesIO(buf.getvalue()))
    ids = np.random.default_rng(0).permutation(n) + 1
    matfile.savemat(folder / 'imagelabels.mat', {'labels': labels})
    matfile.savemat(folder / 'setid.mat', {'trnid': ids[:6], 'valid': ids[6:12], 'tstid': ids[12:]})
    return labels, ids


def test_flowers_script_sorts_images_by_split_and_class(tmp_path):
    labels, ids = fake_flowers(tmp_path / 'dl')
    out, _ = run('download_flowers102.py', '--from-dir', tmp_path / 'dl', '--skip-md5', '--out', tmp_path / 'fl')
    assert '12 train (trnid+valid) + 12 val (tstid) images, 3 classes' in out
    for split, chosen in [('train', ids[:12]), ('val', ids[12:])]:
        found = {p.name: p.parent.name for p in (tmp_path / 'fl' / split).rglob('*.jpg')}
        assert found == {f'image_{i:05d}.jpg': f'{labels[i - 1]:03d}' for i in chosen}
    out, _ = run('download_flowers102.py', '--from-dir', tmp_path / 'dl', '--skip-md5', '--out', tmp_path / 'fl')
    assert 'already prepared' in out
    from minideit.data.datasets import build_dataset
    ds = build_dataset('folder', tmp_path / 'fl', train=False)
    assert ds.classes == ['001', '002', '003'] and len(ds) == 12


def test_flowers_script_bad_input(tmp_path):
    fake_flowers(tmp_path / 'dl')
    _, err = run('download_flowers102.py', '--from-dir', tmp_path / 'dl', '--out', tmp_path / 'fl', expect=2)
    assert 'md5' in err
    _, err = run('download_flowers102.py', '--from-dir', tmp_path, '--out', tmp_path / 'fl', expect=2)
    assert 'not found' in err
    overlapping = {'trnid': np.array([1, 2]), 'valid': np.array([2]), 'tstid': np.array([3])}
    matfile.savemat(tmp_path / 'dl' / 'setid.mat', overlapping)
    _, err = run('download_flowers102.py', '--from-dir', tmp_path / 'dl', '--skip-md5', '--out', tmp_path / 'fl',
                 expect=2)
    assert 'two splits' in err
    os.makedirs(tmp_path / 'other' / 'train')
    _, err = run('download_flowers102.py', '--from-dir', tmp_path / 'dl', '--skip-md5', '--out', tmp_path / 'other',
                 expect=2)
    assert 'not made by this script' in err
