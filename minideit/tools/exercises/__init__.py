"""Exercises: solutions live once, in the package, between ``# BEGIN EXERCISE <id>`` / ``# END EXERCISE <id>``.

In a notebook::

    from minideit.tools.exercises import check
    check("patchify", my_patchify)        # prints PASS, or exactly what is wrong; returns True/False

From a shell (see ``python -m minideit.exercises --help``)::

    python -m minideit.exercises list                 # every exercise: id, notebook, task
    python -m minideit.exercises init my_exercises    # a workspace of stubs, one file per notebook
    python -m minideit.exercises check my_exercises [ID]
    python -m minideit.exercises check --reference    # the package's own solutions

Under pytest every exercise id is a marker: ``pytest -m patchify tests/test_exercises.py``.
"""
from __future__ import annotations

from typing import Callable

from . import checks_data, checks_models, checks_training
from .checking import run_check
from .registry import EXERCISES, NOTEBOOKS, Exercise, get_exercise
from .workspace import WorkspaceError, load_function, write_workspace

# id → check_<id>, collected from the three check modules
CHECKS: dict[str, Callable] = {
    name[len("check_"):]: fn
    for module in (checks_models, checks_data, checks_training)
    for name, fn in vars(module).items() if name.startswith("check_") and callable(fn)
}


def check(ex_id: str, fn: Callable) -> bool:
    """Run exercise ``ex_id``'s check on ``fn``; print one PASS line or the precise failure, return whether it
    passed. For a method exercise, ``fn`` takes ``self`` first, like the stub in the workspace."""
    ex = get_exercise(ex_id)
    ok, message = run_check(CHECKS[ex.id], fn)
    print(f"PASS {ex.id}" if ok else f"FAIL {ex.id}: {message}")
    return ok


__all__ = ["check", "run_check", "CHECKS", "EXERCISES", "NOTEBOOKS", "Exercise", "get_exercise",
           "write_workspace", "load_function", "WorkspaceError"]
