"""RegNetY, the convnet teacher of DeiT (paper §5.2; Radosavovic et al. 2020, "Designing Network Design Spaces").

A RegNet is not designed block by block: six numbers generate it. Block j (0 ≤ j < depth) gets a width on a line,
u_j = w0 + wa·j, which is then snapped to a geometric ladder w0·wm^k so that consecutive blocks share a width. Blocks
of equal width form a stage. The "Y" variant adds squeeze-and-excitation to every block. The paper's best teacher,
RegNetY-16GF (``regnety_160``), reaches 82.9% on ImageNet and gives DeiT-B⚗ its 83.4%.

Parameter names match the official teacher file and timm (``stem.conv``, ``s1.b1.conv1.bn`` ...), so
``regnety_160-a5fe301d.pth`` loads with ``load_state_dict(strict=True)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from .vit import DropPath, linear_rates


# ----------------------------------------------------------------------------------------------------------------
# 1. The design space: six numbers → widths and depths of four stages
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RegNetConfig:
    w0: int  # initial width
    wa: float  # slope of the width line
    wm: float  # width multiplier of the geometric ladder
    depth: int  # number of blocks
    group_width: int  # channels per group of the 3×3 convolution
    se_ratio: float = 0.25  # squeeze-excitation width, as a fraction of the block's input width
    bottleneck_ratio: float = 1.0  # RegNetY uses no bottleneck


def quantized_widths(w0: int, wa: float, wm: float, depth: int, q: int = 8) -> list[int]:
    """Per-block widths: u_j = w0 + wa·j snapped to w0·wm^round(log(u_j/w0)/log wm), then to a multiple of q."""
    # BEGIN EXERCISE quantized_widths
    u = w0 + wa * np.arange(depth)  # the continuous widths on a line
    exponent = np.round(np.log(u / w0) / np.log(wm))  # nearest step of the geometric ladder
    widths = w0 * np.power(wm, exponent)
    return (np.round(widths / q) * q).astype(int).tolist()
    # END EXERCISE quantized_widths


def stages_from_widths(widths: list[int]) -> tuple[list[int], list[int]]:
    """Group consecutive blocks of equal width into stages: returns (stage widths, stage depths)."""
    # BEGIN EXERCISE stages_from_widths
    stage_widths, stage_depths = [], []
    for w in widths:
        if stage_widths and stage_widths[-1] == w:
            stage_depths[-1] += 1
        else:
            stage_widths.append(w)
            stage_depths.append(1)
    return stage_widths, stage_depths
    # END EXERCISE stages_from_widths


def compatible_widths(stage_widths: list[int], group_width: int, bottleneck_ratio: float = 1.0
                      ) -> tuple[list[int], list[int]]:
    """Make every stage's (bottleneck) width a multiple of its group width; returns (widths, group widths).

    A group can't be wider than the layer, so the group width is first capped at the bottleneck width.
    """
    widths, groups = [], []
    for w in stage_widths:
        bottleneck = int(w * bottleneck_ratio)
        g = min(group_width, bottleneck)
        bottleneck = int(round(bottleneck / g) * g)
        widths.append(int(bottleneck / bottleneck_ratio))
        groups.append(g)
    return widths, groups


def regnet_stages(cfg: RegNetConfig) -> tuple[list[int], list[int], list[int]]:
    """The whole generator: config → (stage widths, stage depths, group widths)."""
    widths, depths = stages_from_widths(quantized_widths(cfg.w0, cfg.wa, cfg.wm, cfg.depth))
    widths, groups = compatible_widths(widths, cfg.group_width, cfg.bottleneck_ratio)
    return widths, depths, groups


# ----------------------------------------------------------------------------------------------------------------
# 2. The Y block
# ----------------------------------------------------------------------------------------------------------------
class ConvBn(nn.Module):
    """Convolution (no bias) → BatchNorm → optional ReLU; the keys are ``conv`` and ``bn`` like the official file."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding=kernel_size // 2, groups=groups,
                              bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): rescale each channel by a gate computed from the global average.

    squeeze: (B, C, H, W) → (B, C, 1, 1) by averaging; excite: two 1×1 convolutions (C → r → C) with ReLU then a
    sigmoid; the gate multiplies the input channel-wise.
    """

    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BEGIN EXERCISE squeeze_excite
        s = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        gate = self.fc2(self.act(self.fc1(s))).sigmoid()
        return x * gate
        # END EXERCISE squeeze_excite


class YBlock(nn.Module):
    """RegNetY block: 1×1 conv → grouped 3×3 conv (carries the stride) → SE → 1×1 conv, plus the shortcut, then ReLU.

    The shortcut is the identity when shapes agree, otherwise a strided 1×1 conv + BN (the "projection").
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, group_width: int, se_ratio: float,
                 bottleneck_ratio: float = 1.0, drop_path_rate: float = 0.0):
        super().__init__()
        mid = int(round(out_chs * bottleneck_ratio))
        self.conv1 = ConvBn(in_chs, mid, 1)
        self.conv2 = ConvBn(mid, mid, 3, stride=stride, groups=mid // group_width)
        self.se = SqueezeExcite(mid, int(round(in_chs * se_ratio))) if se_ratio > 0 else nn.Identity()
        self.conv3 = ConvBn(mid, out_chs, 1, act=False)
        needs_projection = in_chs != out_chs or stride != 1
        self.downsample = ConvBn(in_chs, out_chs, 1, stride=stride, act=False) if needs_projection else nn.Identity()
        self.drop_path = DropPath(drop_path_rate)
        self.act3 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(self.se(self.conv2(self.conv1(x))))
        return self.act3(self.drop_path(y) + self.downsample(x))


class Stage(nn.Module):
    """Blocks of one width; the first block of the stage halves the resolution. Children are named b1, b2, ..."""

    def __init__(self, depth: int, in_chs: int, out_chs: int, stride: int, drop_path_rates: list[float],
                 **block_args):
        super().__init__()
        for i in range(depth):
            block = YBlock(in_chs if i == 0 else out_chs, out_chs, stride if i == 0 else 1,
                           drop_path_rate=drop_path_rates[i], **block_args)
            self.add_module(f"b{i + 1}", block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.children():
            x = block(x)
        return x


class Head(nn.Module):
    """Global average pool → linear classifier (key ``head.fc``)."""

    def __init__(self, in_chs: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(in_chs, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))  # (B, C, H, W) → (B, C) → (B, classes)


# ----------------------------------------------------------------------------------------------------------------
# 3. The network
# ----------------------------------------------------------------------------------------------------------------
class RegNet(nn.Module):
    """Stem (3×3 conv, stride 2, 32 channels) → 4 stages → head.

    ``stem_stride=1`` keeps the input resolution in the stem: on 32×32 images (CIFAR, the synthetic set) the usual
    stride-2 stem plus four stride-2 stages would leave a single pixel; with stride 1 the last stage still sees 2×2.
    """

    def __init__(self, cfg: RegNetConfig, num_classes: int = 1000, in_chans: int = 3, stem_width: int = 32,
                 stem_stride: int = 2, drop_path_rate: float = 0.0):
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        self.stem = ConvBn(in_chans, stem_width, 3, stride=stem_stride)
        widths, depths, groups = regnet_stages(cfg)
        # Stochastic depth grows linearly over all blocks of the network.
        rates = linear_rates(drop_path_rate, sum(depths))
        in_chs = stem_width
        for i, (w, d, g) in enumerate(zip(widths, depths, groups)):
            first = sum(depths[:i])
            stage = Stage(d, in_chs, w, stride=2, drop_path_rates=rates[first:first + d], group_width=g,
                          se_ratio=cfg.se_ratio, bottleneck_ratio=cfg.bottleneck_ratio)
            self.add_module(f"s{i + 1}", stage)
            in_chs = w
        self.num_features = in_chs
        self.head = Head(in_chs, num_classes)
        self.init_weights()

    def init_weights(self) -> None:
        """He-normal (fan-out) convolutions, N(0, 0.01) classifier, and the last BN of each block at zero.

        Zeroing ``conv3.bn.weight`` makes every residual block start as the identity, which helps deep nets train.
        """
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, YBlock):
                nn.init.zeros_(m.conv3.bn.weight)

    def stages(self) -> list[Stage]:
        return [self.s1, self.s2, self.s3, self.s4]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu":
            # Speed only, same function: on a CPU, oneDNN's convolutions (the grouped 3x3 ones above all) run
            # about 1.2x faster on channels-last (NHWC) tensors, forward and backward (`python -m minideit.benchmark
            # vs-timm`). Each convolution keeps its input's layout, so converting the input once is enough. On a
            # GPU the default layout is faster for this network (README, "Speed on one GPU"), so it stays.
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.stem(x)  # (B, 32, H/2, W/2) with the default stem
        for stage in self.stages():
            x = stage(x)  # each stage halves H and W
        return x  # (B, C, H/32, W/32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


# The family by its usual names: the three digits are the FLOPs in units of 10^8 (regnety_160 = 16 GF).
# Values from Radosavovic et al. 2020 (Table of RegNetY models), as used by the official DeiT teacher.
REGNETY_CONFIGS: dict[str, RegNetConfig] = {
    "regnety_002": RegNetConfig(w0=24, wa=36.44, wm=2.49, depth=13, group_width=8),
    "regnety_004": RegNetConfig(w0=48, wa=27.89, wm=2.09, depth=16, group_width=8),
    "regnety_006": RegNetConfig(w0=48, wa=32.54, wm=2.32, depth=15, group_width=16),
    "regnety_008": RegNetConfig(w0=56, wa=38.84, wm=2.4, depth=14, group_width=16),
    "regnety_016": RegNetConfig(w0=48, wa=20.71, wm=2.65, depth=27, group_width=24),
    "regnety_032": RegNetConfig(w0=80, wa=42.63, wm=2.66, depth=21, group_width=24),
    "regnety_040": RegNetConfig(w0=96, wa=31.41, wm=2.24, depth=22, group_width=64),
    "regnety_064": RegNetConfig(w0=112, wa=33.22, wm=2.27, depth=25, group_width=72),
    "regnety_080": RegNetConfig(w0=192, wa=76.82, wm=2.19, depth=17, group_width=56),
    "regnety_120": RegNetConfig(w0=168, wa=73.36, wm=2.37, depth=19, group_width=112),
    "regnety_160": RegNetConfig(w0=200, wa=106.23, wm=2.48, depth=18, group_width=112),
    "regnety_320": RegNetConfig(w0=232, wa=115.89, wm=2.53, depth=20, group_width=232),
}


# ----------------------------------------------------------------------------------------------------------------
# 4. The teacher at training time: frozen, folded, cheap (paper §4: the teacher is never trained)
# ----------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold each eval-mode BatchNorm of a RegNet ``ConvBn`` into its convolution, in place; returns ``model``.

    In eval mode BatchNorm is a fixed per-channel affine map, y = (x - mean) * g + b with g = weight / sqrt(var +
    eps), so conv-then-BN is one convolution with weights W * g and bias b - mean * g: the same function (up to
    float rounding) for one memory pass less per layer. Only for a frozen model: the BN layers are gone after.
    """
    for m in model.modules():
        if isinstance(m, ConvBn) and isinstance(m.bn, nn.BatchNorm2d):
            bn, conv = m.bn, m.conv
            g = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C_out,)
            bias = bn.bias - bn.running_mean * g
            if conv.bias is not None:
                bias = bias + conv.bias * g
            conv.weight.mul_(g.view(-1, 1, 1, 1))  # scales each output channel's kernel
            conv.bias = nn.Parameter(bias, requires_grad=False)
            m.bn = nn.Identity()
    return model


def prepare_teacher(teacher: nn.Module, device: torch.device | str, amp: str = "bf16",
                    channels_last: bool = False, compile: bool = False, fold_bn: bool = True) -> nn.Module:
    """Make a frozen teacher cheap to run: the one place where training and the benchmark set it up.

    It lives with the teacher (any model works; the BatchNorm folding applies to RegNet's ``ConvBn``).

    Eval mode and no gradients always (the teacher is never trained, paper §4); its BatchNorms folded into the
    convolutions (``fold_batchnorm``; about 10% faster on a CPU, eager). On CUDA with ``amp='bf16'`` the
    weights themselves are stored in bf16: autocast would otherwise re-cast every fp32 weight to bf16 at every
    call, and the teacher (RegNetY-16GF, 16 GMACs) costs more per image than a DeiT-S forward and backward
    together. ``channels_last`` (NHWC) memory layout is an option, off by default: whether it speeds up the
    grouped convolutions depends on the GPU and cuDNN, so measure it (``benchmark train --channels-last``).
    ``compile`` wraps it in ``torch.compile``.
    """
    device = torch.device(device)
    teacher = teacher.to(device).eval().requires_grad_(False)
    if fold_bn:
        fold_batchnorm(teacher)
    if device.type == "cuda" and amp == "bf16":
        teacher = teacher.to(dtype=torch.bfloat16)
    if channels_last:
        teacher = teacher.to(memory_format=torch.channels_last)
    return torch.compile(teacher) if compile else teacher
