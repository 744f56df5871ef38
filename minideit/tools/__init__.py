"""The tools around the paper and its trainer: benchmarks (``bench/``), the miniature experiments (``reproduce/``),
the book's figures (``figures.py``) and the exercises machinery (``exercises/``).

Imports run one way: tools → trainer (``minideit.train``, ``engine``, ...) → paper (``vit``, ``regnet``, ...). Nothing
outside this folder imports from it, except the few-line command entry points ``minideit/<command>.py`` that keep
``python -m minideit.<command>`` working.
"""
