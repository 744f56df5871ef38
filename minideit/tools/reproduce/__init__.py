"""``python -m minideit.reproduce``: the paper's tables in miniature. ``lab.py`` trains and caches runs; the
experiments (``distillation.py``, ``recipe.py``, helpers in ``common.py``) use them; ``cli.py`` is the command."""
