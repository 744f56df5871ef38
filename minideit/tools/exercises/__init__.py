"""Exercises: solutions live once, in the package, between ``# BEGIN EXERCISE <id>`` / ``# END EXERCISE <id>``.

In a notebook::

    from minideit.tools.exercises import check, use
    patchify = use("patchify")            # your patchify if you wrote it in the workspace, else the package's
    check("patchify")                     # checks your workspace's patchify: PASS, or exactly what is wrong

From a shell (see ``python -m minideit.exercises --help``)::

    python -m minideit.exercises list                 # every exercise: id, notebook, task
    python -m minideit.exercises init my_deit         # a workspace of stubs, one file per notebook
    python -m minideit.exercises init key --solved    # the same with the reference solutions (instructors, CI)
    python -m minideit.exercises check my_deit [ID]
    python -m minideit.exercises check my_deit capstone   # your pieces as one DeiT-Ti: logits, then training
    python -m minideit.exercises check --reference    # the package's own solutions

Under pytest every exercise id is a marker: ``pytest -m patchify tests/test_exercises.py``.
"""
from __future__ import annotations

from typing import Callable

from . import checks_data, checks_models, checks_training
from .checking import run_check
from .registry import EXERCISES, NOTEBOOKS, Exercise, get_exercise
from .learner import installed, ran, restore, use, use_notebooks, workspace_dir
from .workspace import WorkspaceError, load_function, write_workspace

# id → check_<id>, collected from the three check modules
CHECKS: dict[str, Callable] = {
    name[len("check_"):]: fn
    for module in (checks_models, checks_data, checks_training)
    for name, fn in vars(module).items() if name.startswith("check_") and callable(fn)
}


def check(ex_id: str, fn: Callable | None = None) -> bool:
    """Run exercise ``ex_id``'s check on ``fn`` (default: the workspace's function, see ``use``); print one PASS
    line or the precise failure, return whether it passed. For a method exercise, ``fn`` takes ``self`` first,
    like the stub in the workspace."""
    ex = get_exercise(ex_id)
    if fn is None:
        directory = workspace_dir()
        if directory is None:
            print(f"FAIL {ex.id}: no workspace; run `python -m minideit.exercises init my_deit` in the repository "
                  "root (or set MINIDEIT_WORKSPACE) and write your code in it")
            return False
        try:
            fn = load_function(directory, ex)
        except WorkspaceError as e:
            print(f"FAIL {ex.id}: {e}")
            return False
    ok, message = run_check(CHECKS[ex.id], fn)
    print(f"PASS {ex.id}" if ok else f"FAIL {ex.id}: {message}")
    return ok


__all__ = ["check", "use", "use_notebooks", "ran", "restore", "installed", "workspace_dir", "run_check", "CHECKS", "EXERCISES", "NOTEBOOKS", "Exercise", "get_exercise",
           "write_workspace", "load_function", "WorkspaceError"]
