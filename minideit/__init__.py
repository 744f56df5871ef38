"""minideit: a compact, readable, from-scratch PyTorch implementation of DeiT (Touvron et al., 2021).

The public interface: ``create_model``, ``list_models``, ``load_checkpoint``, ``count_flops`` and
``DistillationLoss``. Start with ``python -m minideit.train`` (the demo) or the notebooks.
"""
from .flops import count_flops
from .models import create_model, is_distilled, list_models
from .weights import CheckpointError, load_checkpoint

__all__ = ["create_model", "list_models", "load_checkpoint", "count_flops", "is_distilled", "CheckpointError"]
__version__ = "0.1.0"
