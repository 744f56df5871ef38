"""Data from scratch: datasets, the DeiT augmentation stack, Mixup/CutMix, samplers and loaders (paper §6)."""
from .datasets import CIFAR, ImageFolder, build_dataset, check_data_path, load_rgb
from .loader import build_loader, seed_everything
from .mixup import Mixup
from .samplers import EvalSampler, RASampler
from .transforms import IMAGENET_MEAN, IMAGENET_STD, build_transform

__all__ = ["CIFAR", "ImageFolder", "build_dataset", "check_data_path", "load_rgb", "build_loader",
           "seed_everything", "Mixup", "EvalSampler", "RASampler", "IMAGENET_MEAN", "IMAGENET_STD",
           "build_transform"]
