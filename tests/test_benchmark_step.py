"""GPU-speed work that runs on a CPU: the `train`/`model`/`loader` benchmarks, MFU arithmetic, the student's
graph under torch.compile, the inference-mode teacher and the on-device augmentation of --gpu-aug."""
import json
import math
import random
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

import minideit
from minideit.data.gpu_aug import (DeviceAugment, ToUint8Tensor, build_uint8_transform, normalize_uint8,
                                   random_erase_batch, sample_erase_boxes)
from minideit.data.transforms import RandomErasing, ToNormalizedTensor, build_transform
from minideit.losses import DistillationLoss
from minideit.regnet import prepare_teacher


def photo(seed: int, size=(80, 60)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


# ---- --gpu-aug: the device path gives what the CPU path gives ---------------------------------------------

def test_normalize_uint8_is_bit_identical_to_the_cpu_transform():
    img = photo(0)
    expected = ToNormalizedTensor()(img)
    got = normalize_uint8(ToUint8Tensor()(img).unsqueeze(0))[0]
    assert got.dtype == torch.float32 and torch.equal(got, expected)


@pytest.mark.parametrize('size,aa', [(48, 'rand-m9-mstd0.5-inc1'), (32, None)])
def test_uint8_transform_then_normalize_equals_the_float_transform_without_erasing(size, aa):
    """Same seeds -> same crops, flips and RandAugment: the only difference may be where normalisation runs."""
    img = photo(1, (96, 72))
    outs = []
    for make in (lambda: build_transform(True, size, aa=aa, reprob=0.0),
                 lambda: build_uint8_transform(True, size, aa=aa)):
        tf = make()
        random.seed(5)
        torch.manual_seed(5)
        outs.append([tf(img) for _ in range(4)])
    for float_x, uint8_x in zip(*outs):
        assert uint8_x.dtype == torch.uint8 and uint8_x.shape == (3, size, size)
        assert torch.equal(normalize_uint8(uint8_x.unsqueeze(0))[0], float_x)


def test_uint8_transform_refuses_float_arguments():
    with pytest.raises(ValueError, match='device'):
        build_uint8_transform(True, 32, reprob=0.25)
    with pytest.raises(ValueError, match='uint8'):
        normalize_uint8(torch.zeros(2, 3, 4, 4))


def erased_boxes_cpu(n: int, size: int, p: float):
    """(erased?, area fraction, h/w) of n CPU RandomErasing draws on zero images."""
    random.seed(0)
    torch.manual_seed(0)
    re = RandomErasing(p, mode='const')
    stats = []
    for _ in range(n):
        x = torch.full((3, size, size), 7.0)
        mask = (re(x) != 7.0)[0]
        stats.append(box_stats(mask))
    return stats


def box_stats(mask: torch.Tensor):
    if not mask.any():
        return False, 0.0, 0.0
    rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
    h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
    assert mask.sum() == h * w  # one solid axis-aligned rectangle
    return True, h * w / mask.numel(), h / w


def test_batch_erasing_matches_the_per_image_statistics_of_random_erasing():
    n, size, p = 3000, 32, 0.25
    cpu = erased_boxes_cpu(n, size, p)
    gen = torch.Generator().manual_seed(1)
    x = torch.full((n, 3, size, size), 7.0)
    out = random_erase_batch(x, p, mode='const', generator=gen)
    dev = [box_stats((out[i] != 7.0)[0]) for i in range(n)]
    for stats in (cpu, dev):
        assert abs(np.mean([s[0] for s in stats]) - p) < 0.035  # 4.5 standard errors
    rate = lambda stats, k: np.mean([s[k] for s in stats if s[0]])  # noqa: E731
    assert abs(rate(cpu, 1) - rate(dev, 1)) < 0.02  # mean erased area (about 0.17 of the image)
    assert abs(np.mean([math.log(s[2]) for s in cpu if s[0]]) - np.mean([math.log(s[2]) for s in dev if s[0]])) < 0.1
    # per image: the erased images are not all the same box
    boxes = {tuple((out[i] != 7.0)[0].nonzero()[0].tolist()) for i in range(n) if dev[i][0]}
    assert len(boxes) > 100


def test_pixel_erasing_fills_with_unit_noise_and_leaves_the_rest():
    x = torch.rand(64, 3, 40, 40) + 20.0  # far from any N(0, 1) value
    out = random_erase_batch(x, p=1.0, mode='pixel', generator=torch.Generator().manual_seed(0))
    erased = out < 10.0
    assert erased.any(dim=(1, 2, 3)).float().mean() > 0.9  # p = 1: only failed box fits escape
    assert torch.equal(out[~erased], x[~erased])
    noise = out[erased]
    assert abs(noise.mean()) < 0.05 and abs(noise.std() - 1) < 0.05
    assert torch.equal(erased[:, 0], erased[:, 1])  # every channel of the box


def test_erase_boxes_always_fit_inside():
    erase, top, left, h, w = sample_erase_boxes(5000, 7, 13, p=1.0, generator=torch.Generator().manual_seed(3))
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= 7)[erase].all() and (left + w <= 13)[erase].all()
    assert (h < 7)[erase].all() and (w < 13)[erase].all()


def test_device_augment_erases_each_image_before_mixing():
    """Order of the official pipeline: normalise -> erase (per image) -> Mixup (per batch)."""
    from minideit.data.mixup import Mixup
    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    y = torch.tensor([0, 1, 2, 3])
    torch.manual_seed(9)
    got, targets = DeviceAugment(0.5, 'pixel', Mixup(0.8, 0.0, num_classes=4, seed=3))(x, y)
    torch.manual_seed(9)
    erased = random_erase_batch(normalize_uint8(x), 0.5, 'pixel')
    expected, expected_targets = Mixup(0.8, 0.0, num_classes=4, seed=3)(erased, y)
    assert torch.equal(got, expected) and torch.equal(targets, expected_targets)
    plain, same_y = DeviceAugment(0.0)(x, y)
    assert torch.equal(plain, normalize_uint8(x)) and same_y is y


@pytest.mark.slow  # three one-epoch runs of the nano model on synthetic data
def test_train_with_gpu_aug_equals_the_cpu_path_without_erasing_and_runs_with_it(tmp_path, monkeypatch, capsys):
    from minideit.train import main as train_main
    monkeypatch.setenv('MINIDEIT_SMOKE', '1')
    seen = []
    original = DeviceAugment.__call__

    def spy(self, x, y):
        seen.append(x.dtype)
        return original(self, x, y)
    monkeypatch.setattr(DeviceAugment, '__call__', spy)

    def run(name, *extra):
        args = ['--model', 'deit_nano_distilled_patch4_32', '--data-set', 'synthetic', '--input-size', '32',
                '--num-samples', '64', '--batch-size', '16', '--epochs', '1', '--warmup-epochs', '1',
                '--num-workers', '0', '--output-dir', str(tmp_path / name), *extra]
        assert train_main(args) == 0, capsys.readouterr().err
        return torch.load(tmp_path / name / 'checkpoint.pth', weights_only=False)['model']

    no_erase = ('--reprob', '0', '--mixup', '0', '--cutmix', '0')
    cpu = run('cpu', *no_erase)
    assert seen == []
    gpu = run('gpu', '--gpu-aug', *no_erase)
    assert seen and set(seen) == {torch.uint8}  # the loader handed over uint8 batches
    for key in cpu:  # same per-image randomness, bit-identical normalisation: the very same training
        assert torch.equal(cpu[key], gpu[key]), key
    full = run('gpu-full', '--gpu-aug')  # erasing and Mixup/CutMix on the device
    assert any(not torch.equal(full[k], gpu[k]) for k in gpu)
    log = json.loads((tmp_path / 'gpu-full' / 'log.jsonl').read_text().splitlines()[-1])
    assert math.isfinite(log['train_loss']) and log['nonfinite_steps'] == 0


# ---- arithmetic --------------------------------------------------------------------------------------------

from minideit.tools.bench import common as perf  # noqa: E402
from minideit.tools.bench.cli import main as bench_main  # noqa: E402


def test_mfu_counts_three_student_passes_and_one_teacher_pass():
    # DeiT-S⚗ (4.63 GMACs) + RegNetY-16GF (15.96) at 4,450 img/s: 2 * (3 * 4.63 + 15.96) GFLOP per image
    tflops = perf.achieved_tflops(4450, 4.63e9, 15.96e9)
    assert tflops == pytest.approx(4450 * 2 * (3 * 4.63 + 15.96) / 1e3)
    assert perf.mfu(4450, 4.63e9, 15.96e9, 989.0) == pytest.approx(tflops / 989.0)
    assert perf.mfu(100, 1e9, 0, None) is None  # unknown peak (a CPU): no MFU
    assert perf.achieved_tflops(1000, 2e9, train=False) == pytest.approx(4.0)  # inference: one forward, 2 FLOPs/MAC
    assert perf.projected_hours(1_281_167 * 300 / 3600) == pytest.approx(1.0)


def test_peak_flops_known_devices_and_override():
    assert perf.peak_tflops_of(torch.device('cpu')) is None
    assert perf.peak_tflops_of(torch.device('cpu'), 123.0) == 123.0
    names = dict(perf.PEAK_BF16_TFLOPS)
    assert names['H200'] == names['H100'] == 989.0
    # 'H100 PCIe' must be tried before 'H100'
    keys = [k for k, _ in perf.PEAK_BF16_TFLOPS]
    assert keys.index('H100 PCIe') < keys.index('H100')


@pytest.mark.parametrize('capacity', [7, 8, 300, 1000, 5000])
def test_largest_batch_finds_the_largest_multiple_of_8_that_fits(capacity):
    tried = []

    def fits(b):
        tried.append(b)
        return b <= capacity
    got = perf.largest_batch(fits, start=64, limit=4096, multiple=8)
    assert got == min(capacity // 8 * 8, 4096)
    assert len(tried) < 20


# ---- the subcommands on tiny settings ----------------------------------------------------------------------

TINY_TRAIN = ['train', '--model', 'deit_tiny_distilled_patch16_224', '--teacher', 'regnety_002', '--batch-size', '2',
              '--steps', '2', '--warmup', '1', '--input-size', '64', '--device', 'cpu']
ROW_KEYS = {'family', 'student', 'teacher', 'batch_size', 'step_ms', 'step_img_per_s', 'student_fwd_bwd_img_per_s',
            'teacher_fwd_img_per_s', 'optimizer_step_ms', 'achieved_tflops', 'mfu', 'student_mfu', 'teacher_mfu',
            'peak_memory_mb', 'hours_300_epochs'}


def test_train_benchmark_writes_every_figure(tmp_path, capsys):
    out = tmp_path / 'train.json'
    assert bench_main([*TINY_TRAIN, '--no-timm', '--peak-tflops', '1', '--json', str(out)]) == 0
    r = json.loads(out.read_text())
    assert r['device'] == 'cpu' and r['amp'] == 'off' and r['timm'] == 'skipped' and r['peak_tflops'] == 1
    (entry,) = r['results']
    (row,) = entry['rows']
    assert set(row) == ROW_KEYS and row['family'] == 'minideit' and row['batch_size'] == 2
    assert row['step_img_per_s'] == pytest.approx(2000 / row['step_ms'])
    s, t = entry['student_gmacs'] * 1e9, entry['teacher_gmacs'] * 1e9
    assert 0 < t < s  # DeiT-Ti at 64 px costs more than RegNetY-200MF at 64 px
    assert row['mfu'] == pytest.approx(perf.achieved_tflops(row['step_img_per_s'], s, t) / 1.0)
    assert row['hours_300_epochs'] == pytest.approx(300 * 1_281_167 / row['step_img_per_s'] / 3600)
    assert row['peak_memory_mb'] > 0 and row['optimizer_step_ms'] > 0
    printed = capsys.readouterr().out
    assert 'deit_tiny_distilled_patch16_224' in printed and 'step img/s' in printed


def test_train_benchmark_compares_with_timm_when_it_is_importable(tmp_path, monkeypatch):
    """A stand-in `timm` module (our models under timm's API) exercises the side-by-side path."""
    made = []

    def create(name, **kwargs):
        model = minideit.create_model(name, **kwargs)
        if getattr(model, 'distilled', False):
            model.set_distilled_training = lambda enable=True: made.append(('distilled_training', enable))
        made.append(name)
        return model
    monkeypatch.setitem(sys.modules, 'timm', types.SimpleNamespace(create_model=create))
    out = tmp_path / 'train.json'
    assert bench_main([*TINY_TRAIN, '--json', str(out)]) == 0
    r = json.loads(out.read_text())
    assert r['timm'] == 'compared' and ('distilled_training', True) in made
    assert made.count('regnety_002') == 1 and made.count('deit_tiny_distilled_patch16_224') == 1
    (entry,) = r['results']
    assert [row['family'] for row in entry['rows']] == ['minideit', 'timm']
    ours, theirs = entry['rows']
    assert entry['ours_over_timm']['step_img_per_s'] == pytest.approx(ours['step_img_per_s'] / theirs['step_img_per_s'])


def test_model_benchmark_reports_params_macs_and_paper_figures(tmp_path, capsys):
    out = tmp_path / 'model.json'
    assert bench_main(['model', '--model', 'deit_tiny_patch16_224', 'regnety_002', '--input-size', '32',
                       '--batch-size', '2', '--steps', '1', '--warmup', '0', '--device', 'cpu',
                       '--json', str(out)]) == 0
    r = json.loads(out.read_text())
    deit, regnet = r['results']
    assert deit['params'] == 5_717_416 - (197 - 5) * 192  # paper count, with the position embedding of 4 patches
    assert deit['paper_v100_img_per_s'] == 2536 and regnet['paper_v100_img_per_s'] is None
    assert regnet['params'] == 3_162_996 and deit['input_size'] == regnet['input_size'] == 32
    assert deit['img_per_s'] > 0 and deit['gmacs'] > 0 and deit['mfu'] is None
    assert 'paper V100' in capsys.readouterr().out


@pytest.mark.parametrize('argv,message', [
    (['train', '--model', 'deit_tiny_distiled_patch16_224'], 'did you mean'),
    (['train', '--batch-size', '3', '--device', 'cpu'], 'even'),
    (['train', '--input-size', '60', '--device', 'cpu', '--model', 'deit_tiny_distilled_patch16_224'], 'patch'),
    (['model', '--steps', '0', '--device', 'cpu'], '--steps'),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert bench_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and message in err and err.count('\n') == 1


# ---- the step itself: fused attention without graph breaks, an inference-mode teacher ---------------------

@pytest.mark.slow  # dynamo traces the whole model (about 6 s)
def test_student_forward_has_no_graph_break_under_torch_compile():
    """torch.compile captures the whole training-mode DeiT⚗ forward (stochastic depth on) as one graph."""
    torch._dynamo.reset()
    model = minideit.create_model('deit_nano_distilled_patch4_32', num_classes=10, drop_path_rate=0.1).train()
    assert all(block.attn.fused for block in model.blocks)  # training uses scaled_dot_product_attention
    explanation = torch._dynamo.explain(model)(torch.randn(2, 3, 32, 32))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    torch._dynamo.reset()


def test_prepare_teacher_freezes_and_the_loss_runs_it_in_inference_mode():
    teacher = prepare_teacher(minideit.create_model('regnety_002', num_classes=10).train(), 'cpu', 'bf16')
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert next(teacher.parameters()).dtype == torch.float32  # bf16 weights only on CUDA
    seen = []
    teacher.register_forward_hook(lambda m, i, o: seen.append(torch.is_inference_mode_enabled()))
    student = nn.Linear(3 * 16 * 16, 10)
    x = torch.randn(4, 3, 16, 16)
    for kind in ('hard', 'soft'):
        loss = DistillationLoss(nn.CrossEntropyLoss(), teacher, kind, 0.5, 2.0)
        out = student(x.flatten(1))
        loss(x, (out, out), torch.tensor([0, 1, 2, 3])).backward()  # backward never meets an inference tensor
        assert student.weight.grad is not None
    assert seen == [True, True]


def test_teacher_in_bf16_takes_float_inputs():
    """What prepare_teacher does on CUDA with --amp bf16, checked on the CPU by hand."""
    teacher = minideit.create_model('regnety_002', num_classes=10).eval().to(dtype=torch.bfloat16)
    loss = DistillationLoss(nn.CrossEntropyLoss(), teacher, 'hard', 0.5, 1.0)
    logits = loss.teacher_logits(torch.randn(2, 3, 32, 32))
    assert logits.dtype == torch.float32 and logits.shape == (2, 10)


@pytest.mark.parametrize('workers,gpu_aug', [(0, False), (1, True)])
def test_loader_benchmark_times_the_training_loader(tmp_path, capsys, workers, gpu_aug):
    out = tmp_path / 'loader.json'
    argv = ['loader', '--workers', str(workers), '--batch-size', '2', '--num-images', '2', '--batches', '4',
            '--input-size', '64', '--json', str(out)] + (['--gpu-aug'] if gpu_aug else [])
    assert bench_main(argv) == 0
    r = json.loads(out.read_text())
    assert r['workers'] == workers and r['gpu_aug'] == gpu_aug and r['source'] == 'generated JPEGs'
    skipped = max(1, workers)  # batches before timing starts
    assert r['timed_images'] == (4 - skipped - 1) * 2 and r['img_per_s'] > 0
    assert ('uint8' in capsys.readouterr().out) == gpu_aug
    assert bench_main(['loader', '--workers', '4', '--batches', '3']) == 2  # too few batches to time 4 workers


def test_folding_batchnorm_keeps_the_teachers_function():
    from minideit.regnet import fold_batchnorm
    torch.manual_seed(0)
    teacher = minideit.create_model('regnety_002', num_classes=10).eval()
    for m in teacher.modules():  # statistics far from the identity, so a wrong fold would show
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_()
    x = torch.randn(3, 3, 32, 32)
    expected = teacher(x)
    prepared = prepare_teacher(teacher, 'cpu')
    assert not any(isinstance(m, nn.BatchNorm2d) for m in prepared.modules())
    assert torch.allclose(prepared(x), expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    plain = prepare_teacher(minideit.create_model('regnety_002', num_classes=10), 'cpu', fold_bn=False)
    assert any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
