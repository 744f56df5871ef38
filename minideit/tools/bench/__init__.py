"""``python -m minideit.benchmark``: the data path (``cli.py``, ``images.py``), the DataLoader (``loader.py``), a
training step (``step.py``), inference (``model.py``), ours against timm on a CPU (``vs_timm.py``) and a step beside
a busy process (``contention.py``), with their shared timing helpers (``common.py``)."""
