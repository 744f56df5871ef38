"""The experiments of ``python -m minideit.reproduce``: each is one of the paper's tables or figures in miniature.

An experiment takes one :class:`~minideit.reproduce.Lab` per seed, trains the runs it needs (or finds them in the
cache, where other experiments may have left them), and returns a dict: its tables as per-seed values, the paper's
claims checked against the means, and a function that draws its figure. ``reproduce.write_outputs`` turns that
into JSON, Markdown and PNG.
"""
from .distillation import agreement, distillation, epochs, teachers
from .recipe import ablation, resolution, transfer

__all__ = ["distillation", "teachers", "agreement", "epochs", "ablation", "resolution", "transfer"]
