"""minideit: a compact, readable, from-scratch PyTorch implementation of DeiT (Touvron et al., 2021).

The public interface: ``create_model``, ``list_models``, ``load_checkpoint``, ``count_flops`` and
``DistillationLoss``. Start with ``python -m minideit.train`` (the demo) or the notebooks.
"""
# Before anything imports torch: OpenMP reads its wait policy once, as torch loads (see minideit/threads.py).
from .threads import set_wait_policy_default

WAIT_POLICY_IN_TIME = set_wait_policy_default()  # False: the user chose a policy, or torch was imported first

from .flops import count_flops  # noqa: E402  (after the wait policy on purpose)
from .models import create_model, is_distilled, list_models  # noqa: E402

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
