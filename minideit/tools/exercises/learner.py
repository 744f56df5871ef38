"""The learner's code, used wherever it exists: the one mechanism behind the notebooks and the capstone.

    from minideit.tools.exercises import use
    split_heads = use("split_heads")      # prints "your split_heads" or "reference split_heads"

Which workspace: ``$MINIDEIT_WORKSPACE`` if set, else ``my_deit`` in the current directory or its parent (the
notebooks run in ``notebooks/``; ``python -m minideit.exercises init my_deit`` run in the repository root puts the
workspace next to them). An exercise counts as *written* once its stub's ``raise NotImplementedError("<id>: ...")``
is gone from the function's source: read, never called, so deciding has no side effects.

``use`` also *installs* the learner's function into the package: a method replaces the class's method
(``Attention.split_heads``), a function replaces the module's name and every copy that a ``from ... import`` made
in minideit's modules and in the workspace. So every later call, inside a model, a figure or a training run, runs
the learner's code. ``restore()`` puts the package back, ``installed(...)`` does it for a ``with`` block, and
``ran()`` says which of the learner's functions ran and how often. Checks always run against the package's own
code (``reference_code()``), whatever is installed.
"""
from __future__ import annotations

import ast
import contextlib
import functools
import inspect
import os
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .registry import EXERCISES, Exercise, get_exercise
from .workspace import WorkspaceError, load_module

DEFAULT_NAME = "my_deit"
CALLS: Counter = Counter()  # exercise id → calls of the learner's version since it was installed
_PATCHES: list[tuple[object, str, object, object]] = []  # (module or class, attribute, original, replacement)
_ORIGINALS: dict[str, Callable] = {}  # exercise id → the package's own function, captured before any patch
_MODULES: dict[Path, tuple[float, object]] = {}  # workspace file → (mtime, module), reloaded when edited


# ----------------------------------------------------------------------------------------------------------------
# 1. Where the workspace is, and whether a function has been written
# ----------------------------------------------------------------------------------------------------------------
def workspace_dir(directory: str | Path | None = None) -> Path | None:
    """The workspace to use: ``directory``, else $MINIDEIT_WORKSPACE, else my_deit/ in the current folder or its parent (notebooks run in notebooks/); None if absent."""
    if directory is not None:
        return Path(directory)
    if os.environ.get("MINIDEIT_WORKSPACE"):
        return Path(os.environ["MINIDEIT_WORKSPACE"])
    return next((p for p in (Path.cwd() / DEFAULT_NAME, Path.cwd().parent / DEFAULT_NAME) if p.is_dir()), None)


def is_written(fn: Callable, ex_id: str) -> bool:
    """False while the function still holds its stub's ``raise NotImplementedError("<id>: ...")``."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):  # no source to read (a lambda typed in a shell): take it as written
        return True
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args \
                and getattr(node.exc.func, "id", None) == "NotImplementedError" \
                and isinstance(node.exc.args[0], ast.Constant) and str(node.exc.args[0].value).startswith(f"{ex_id}:"):
            return False
    return True


def reference(ex_id: str) -> Callable:
    """The package's own function for an exercise, even while the learner's is installed."""
    if ex_id not in _ORIGINALS:
        _ORIGINALS[ex_id] = get_exercise(ex_id).reference()
    return _ORIGINALS[ex_id]


def _module(directory: Path, ex: Exercise):
    path = directory / ex.workspace_file
    if not path.is_file():
        raise WorkspaceError(f"{path} is missing")
    mtime = path.stat().st_mtime
    if path not in _MODULES or _MODULES[path][0] != mtime:
        module = load_module(path)
        _link(module)
        _MODULES[path] = (mtime, module)
    return _MODULES[path][1]


def _link(module) -> None:
    """In a fresh workspace module, a stub that other functions of the file call is replaced by the package's
    function (so a written attention_forward runs while attention_weights is still a stub), and names imported
    from the package follow what is installed."""
    for ex in EXERCISES.values():
        fn = getattr(module, ex.id, None)
        if fn is not None and ex.owner is None and not is_written(fn, ex.id):
            setattr(module, ex.id, reference(ex.id))
    for target, name, original, replacement in _PATCHES:
        if inspect.ismodule(target):
            for attr, value in list(vars(module).items()):
                if value is original:
                    setattr(module, attr, replacement)


def learner_function(ex_id: str, directory: str | Path | None = None) -> tuple[Callable | None, str]:
    """(the learner's function, "") if it is written, else (None, why not)."""
    ex = get_exercise(ex_id)
    directory = workspace_dir(directory)
    if directory is None:
        return None, f"no workspace ({DEFAULT_NAME}/ or $MINIDEIT_WORKSPACE)"
    try:
        fn = getattr(_module(directory, ex), ex.id, None)
    except WorkspaceError as e:
        return None, str(e)
    if fn is None or (ex.owner is None and fn is reference(ex_id)) or not is_written(fn, ex_id):
        return None, f"not written yet in {ex.workspace_file}"
    return fn, ""


# ----------------------------------------------------------------------------------------------------------------
# 2. Installing it into the package
# ----------------------------------------------------------------------------------------------------------------
def _counted(ex_id: str, fn: Callable) -> Callable:
    @functools.wraps(fn)
    def learner_code(*args, **kwargs):
        CALLS[ex_id] += 1
        return fn(*args, **kwargs)
    return learner_code


def _targets(ex: Exercise) -> list[tuple[object, str]]:
    """Every place that holds the package's function: the class for a method; for a function, each minideit
    module (and loaded workspace module) that has it under some name."""
    original = reference(ex.id)
    if ex.owner is not None:
        cls = getattr(sys.modules[ex.module], ex.owner)
        return [(cls, ex.qualname.split(".")[-1])]
    modules = [m for name, m in list(sys.modules.items()) if name == "minideit" or name.startswith("minideit.")]
    modules += [m for _, m in _MODULES.values()]
    return [(m, attr) for m in modules for attr, value in list(vars(m).items()) if value is original]


def install(ex_id: str, fn: Callable) -> Callable:
    """Make the package call ``fn`` for this exercise from now on; returns the installed (call-counting) function."""
    uninstall(ex_id)
    reference(ex_id)  # captured before the first patch
    wrapped = _counted(ex_id, fn)
    wrapped.exercise_id = ex_id
    for target, attr in _targets(get_exercise(ex_id)):
        _PATCHES.append((target, attr, getattr(target, attr) if not inspect.isclass(target)
                         else target.__dict__[attr], wrapped))
        setattr(target, attr, wrapped)
    return wrapped


def uninstall(ex_id: str) -> None:
    for patch in [p for p in _PATCHES if getattr(p[3], "exercise_id", None) == ex_id][::-1]:
        target, attr, original, _ = patch
        setattr(target, attr, original)
        _PATCHES.remove(patch)


def restore() -> None:
    """Put the package's own code back everywhere."""
    for target, attr, original, _ in _PATCHES[::-1]:
        setattr(target, attr, original)
    _PATCHES.clear()


@contextlib.contextmanager
def reference_code() -> Iterator[None]:
    """Inside the block the package runs its own code; what was installed comes back after it."""
    saved = list(_PATCHES)
    for target, attr, original, _ in saved[::-1]:
        setattr(target, attr, original)
    try:
        yield
    finally:
        for target, attr, _, replacement in saved:
            setattr(target, attr, replacement)


@contextlib.contextmanager
def installed(functions: dict[str, Callable]) -> Iterator[None]:
    """Install {exercise id: function} for the block, then restore exactly what was there before."""
    saved = list(_PATCHES)
    try:
        for ex_id, fn in functions.items():
            install(ex_id, fn)
        yield
    finally:
        restore()
        for target, attr, _, replacement in saved:
            setattr(target, attr, replacement)
        _PATCHES.extend(saved)


# ----------------------------------------------------------------------------------------------------------------
# 3. What the notebooks call
# ----------------------------------------------------------------------------------------------------------------
def use(ex_id: str, directory: str | Path | None = None, quiet: bool = False) -> Callable:
    """The learner's function for ``ex_id`` if written (installed into the package), else the package's.

    Prints "your <id>" or "reference <id> (<why>)" unless ``quiet``. For a method the function takes ``self``
    first; the model's own calls (``attn.split_heads(x)``) run the same code, since it is installed.
    """
    fn, why = learner_function(ex_id, directory)
    if fn is None:
        uninstall(ex_id)
        if not quiet:
            print(f"reference {ex_id} ({why})")
        return reference(ex_id)
    if not quiet:
        print(f"your {ex_id}")
    return install(ex_id, fn)


def use_notebooks(up_to: int, directory: str | Path | None = None) -> list[str]:
    """``use`` every exercise of notebooks 0..up_to, with one summary line; returns the ids of the learner's."""
    mine, theirs = [], []
    for ex in EXERCISES.values():
        if ex.notebook <= up_to:
            fn = use(ex.id, directory, quiet=True)
            (mine if hasattr(fn, "exercise_id") else theirs).append(ex.id)
    where = workspace_dir(directory)
    print(f"your code from {where}: {', '.join(mine) or 'none yet'}" if where else
          f"no workspace ({DEFAULT_NAME}/ or $MINIDEIT_WORKSPACE): the package's code runs everywhere")
    if where and theirs:
        print(f"reference code (not written yet): {', '.join(theirs)}")
    return mine


def ran(ids: Iterable[str] | None = None) -> dict[str, int]:
    """Print and return how often each installed learner function ran (the notebooks' last cell calls it)."""
    counts = {i: CALLS[i] for i in (ids if ids is not None else CALLS) if CALLS[i]}
    print("your code ran: " + ", ".join(f"{i} x{n}" for i, n in counts.items()) if counts
          else "none of your functions ran")
    return counts
