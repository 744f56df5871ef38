"""minideit: a compact, readable, from-scratch PyTorch implementation of DeiT (Touvron et al., 2021).

The public interface: ``create_model``, ``list_models``, ``load_checkpoint``, ``count_flops`` and
``DistillationLoss``. Start with ``python -m minideit.train`` (the demo) or the notebooks.
"""
from .flops import count_flops
from .models import create_model, is_distilled, list_models

__all__ = ["create_model", "list_models", "load_checkpoint", "count_flops", "is_distilled", "CheckpointError"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """``load_checkpoint`` and ``CheckpointError`` come from :mod:`minideit.weights`, imported on first use.

    Importing it here eagerly would make ``python -m minideit.weights`` (the download command) find the module
    already imported and warn before running it (a RuntimeWarning from runpy).
    """
    if name in ("load_checkpoint", "CheckpointError"):
        from . import weights
        return getattr(weights, name)
    raise AttributeError(f"module 'minideit' has no attribute '{name}'")
