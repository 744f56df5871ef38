"""``python -m minideit.benchmark``: the data path (``cli.py``, ``images.py``), the DataLoader (``loader.py``), a
training step (``step.py``) and inference (``model.py``), with their shared timing helpers (``common.py``)."""
