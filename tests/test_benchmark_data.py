"""`python -m minideit.benchmark data` (minideit/benchmark.py)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from minideit.tools.bench.cli import main
from minideit.tools.bench.images import make_photo_like_jpegs

ROOT = Path(__file__).resolve().parents[1]


def test_data_benchmark_on_generated_images_writes_json(tmp_path, capsys):
    out = tmp_path / 'bench' / 'data.json'
    assert main(['data', '--num-images', '3', '--seconds', '0.05', '--json', str(out)]) == 0
    result = json.loads(out.read_text())
    assert result['decode_img_per_s'] > 0 and result['train_transform_img_per_s'] > 0
    assert result['num_images'] == 3 and result['input_size'] == 224
    # three rounds by default; the verdict is the median round's ratio, not the ratio of the median rates
    assert len(result['round_ratios']) == 3
    assert result['ratio'] == sorted(result['round_ratios'])[1]
    assert result['meets_goal'] == (result['ratio'] >= result['goal_ratio'])
    assert set(result['step_ms']) == {'decode', 'RandomResizedCrop', 'RandomHorizontalFlip', 'RandAugment',
                                      'ToNormalizedTensor', 'RandomErasing'}
    printed = capsys.readouterr().out
    assert 'img/s' in printed and '16-core' in printed


def test_data_benchmark_reads_an_imagenet_layout(tmp_path, capsys):
    for cls in ('n01', 'n02'):
        (tmp_path / 'train' / cls).mkdir(parents=True)
        make_photo_like_jpegs(tmp_path / 'train' / cls, 2, seed=len(cls))
    (tmp_path / 'train' / 'n02' / 'notes.txt').write_text('not an image')
    out = tmp_path / 'r.json'
    assert main(['data', '--data-path', str(tmp_path), '--num-images', '3', '--seconds', '0.01',
                 '--input-size', '64', '--json', str(out)]) == 0
    result = json.loads(out.read_text())
    assert result['num_images'] == 3 and result['source'] == str(tmp_path) and result['input_size'] == 64


def test_generated_images_look_like_imagenet_jpegs(tmp_path):
    paths = make_photo_like_jpegs(tmp_path, 2)
    for p in paths:
        with Image.open(p) as img:
            assert img.format == 'JPEG' and 440 <= img.width <= 560 and 330 <= img.height <= 420
        assert 50_000 < p.stat().st_size < 200_000  # photo-like detail, not flat colour


@pytest.mark.slow  # starts a Python process that imports torch
def test_bad_data_path_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, '-m', 'minideit.benchmark', 'data', '--data-path',
                           str(tmp_path / 'missing')], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.startswith('error: ') and 'train' in proc.stderr and 'Traceback' not in proc.stderr
    (tmp_path / 'train' / 'n01').mkdir(parents=True)
    assert main(['data', '--data-path', str(tmp_path), '--num-images', '2']) == 2
    assert main(['data', '--num-images', '0']) == 2


def test_data_benchmark_one_round_ratio_is_the_rate_ratio(tmp_path):
    out = tmp_path / 'one.json'
    assert main(['data', '--num-images', '2', '--seconds', '0.02', '--rounds', '1', '--json', str(out)]) == 0
    result = json.loads(out.read_text())
    assert result['round_ratios'] == [result['ratio']]
    assert abs(result['ratio'] - result['train_transform_img_per_s'] / result['decode_img_per_s']) < 1e-9


def test_data_benchmark_refuses_zero_rounds(capsys):
    assert main(['data', '--rounds', '0']) == 2
    assert '--rounds must be >= 1' in capsys.readouterr().err
