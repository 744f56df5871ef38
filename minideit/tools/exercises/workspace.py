"""The learner's workspace, generated from the package itself: one source of truth for every solution.

``write_workspace(DIR)`` writes one Python file per notebook (``ex01_patches.py`` ...). Each exercise appears there
as a plain function named by its id, with the package's signature and docstring; the lines between the markers
``# BEGIN EXERCISE <id>`` / ``# END EXERCISE <id>`` become ``raise NotImplementedError("<id>: <task>")``. A method
keeps ``self`` as its first parameter: the check calls it with a real instance of the class. Names the solution
uses (``torch``, ``rearrange``, helper functions) are imported at the top of the file, from the package where
they are the package's own, so the learner writes exactly the missing lines and nothing else.

``load_function(DIR, exercise)`` imports the learner's file and returns their function.
"""
from __future__ import annotations

import ast
import builtins
import importlib
import importlib.util
import re
import textwrap
from pathlib import Path

from .registry import EXERCISES, NOTEBOOKS, Exercise

MARKER = re.compile(r"^\s*# (BEGIN|END) EXERCISE (\w+)\s*$")


class WorkspaceError(ValueError):
    """A workspace that can't be written or read; the message is one line saying what to do."""


# ----------------------------------------------------------------------------------------------------------------
# 1. Reading the package: the function that holds an exercise, and how its module imports names
# ----------------------------------------------------------------------------------------------------------------
def _source(module: str) -> tuple[list[str], ast.Module]:
    path = Path(importlib.import_module(module).__file__)
    text = path.read_text(encoding="utf-8")
    return text.split("\n"), ast.parse(text)


def _find_def(tree: ast.Module, qualname: str) -> ast.FunctionDef:
    body, node = tree.body, None
    for part in qualname.split("."):
        node = next((n for n in body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part), None)
        if node is None:
            raise LookupError(f"{qualname} not found")
        body = node.body
    return node


def function_source(ex: Exercise, solved: bool = False) -> str:
    """The exercise's function as the learner sees it: dedented, renamed to the id, its marked lines replaced by
    the stub (or, with ``solved=True``, kept with the marker comments dropped)."""
    lines, tree = _source(ex.module)
    node = _find_def(tree, ex.qualname)
    first = min([d.lineno for d in node.decorator_list] + [node.lineno]) - 1
    last = node.end_lineno  # ast ends at the last statement: a trailing END marker comment comes after it
    while last < len(lines) and MARKER.match(lines[last]) and lines[last].split()[-1] == ex.id:
        last += 1
    body = lines[first:last]
    marks = [(i, *MARKER.match(line).groups()) for i, line in enumerate(body) if MARKER.match(line)]
    if [(kind, name) for _, kind, name in marks] != [("BEGIN", ex.id), ("END", ex.id)]:
        raise LookupError(f"{ex.source} must hold exactly one BEGIN/END EXERCISE {ex.id} pair, found "
                          f"{[(kind, name) for _, kind, name in marks]}")
    (begin, _, _), (end, _, _) = marks
    indent = body[begin][: len(body[begin]) - len(body[begin].lstrip())]
    inner = body[begin + 1:end] if solved else _stub_lines(ex, indent)
    out = body[:begin] + inner + body[end + 1:]
    out = textwrap.dedent("\n".join(out)).split("\n")
    def_line = node.lineno - 1 - first
    out[def_line] = re.sub(rf"\bdef {re.escape(node.name)}\(", f"def {ex.id}(", out[def_line], count=1)
    return "\n".join(out)


def _stub_lines(ex: Exercise, indent: str) -> list[str]:
    message = f"{ex.id}: {ex.task}"
    if len(indent) + len(message) + 32 <= 118:
        return [f"{indent}raise NotImplementedError({message!r})"]
    # Long tasks: one string split over several lines, so the generated file stays readable.
    chunks = textwrap.wrap(message, width=110 - len(indent), drop_whitespace=False)
    return ([f"{indent}raise NotImplementedError("]
            + [f"{indent}    {chunk!r}" for chunk in chunks[:-1]]
            + [f"{indent}    {chunks[-1]!r})"])


def _module_bindings(module: str, tree: ast.Module) -> dict[str, tuple[str, str | None]]:
    """name → how the workspace imports it: ("import", "numpy as np") or ("from:<module>", "name").

    Relative imports are made absolute; the module's own top-level definitions are imported from the module.
    """
    package = module.rsplit(".", 1)[0]
    found: dict[str, tuple[str, str | None]] = {}
    for node in tree.body:
        if isinstance(node, ast.Import):
            for a in node.names:
                found[a.asname or a.name.split(".")[0]] = ("import", f"{a.name} as {a.asname}" if a.asname
                                                           else a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            source = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            for a in node.names:
                found[a.asname or a.name] = (f"from:{source}", f"{a.name} as {a.asname}" if a.asname else a.name)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            found[node.name] = (f"from:{module}", node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        found[n.id] = (f"from:{module}", n.id)
    return found


def free_names(code: str) -> set[str]:
    """Names a function reads but neither defines, takes as a parameter, nor finds among the builtins."""
    fn = ast.parse(code).body[0]
    bound = {a.arg for a in ast.walk(fn.args) if isinstance(a, ast.arg)}
    loaded = set()
    for n in ast.walk(fn):
        if isinstance(n, ast.Name):
            (loaded if isinstance(n.ctx, ast.Load) else bound).add(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.Lambda)) and n is not fn:
            bound |= {a.arg for a in ast.walk(n.args) if isinstance(a, ast.arg)}
    return {name for name in loaded - bound if not hasattr(builtins, name)}


# ----------------------------------------------------------------------------------------------------------------
# 2. Writing the workspace
# ----------------------------------------------------------------------------------------------------------------
def render_notebook(notebook: int, solved: bool = False) -> str:
    """The text of one workspace file: header, the imports the solutions need, then each exercise function."""
    exercises = [ex for ex in EXERCISES.values() if ex.notebook == notebook]
    own = {ex.id for ex in exercises}  # defined in this file: the learner's version is used, not the package's
    imports: dict[str, set[str]] = {}
    functions = []
    for ex in exercises:
        solution = function_source(ex, solved=True)
        lines, tree = _source(ex.module)
        bindings = _module_bindings(ex.module, tree)
        for name in sorted(free_names(solution) - own):
            if name not in bindings:
                raise LookupError(f"{ex.source}: cannot tell where the name {name!r} comes from")
            kind, part = bindings[name]
            imports.setdefault(kind, set()).add(part)
        code = solution if solved else function_source(ex, solved=False)
        intro = f"# {ex.module}.{ex.qualname}"
        intro += f": a method; `self` is an instance of {ex.owner}\n" if ex.owner else "\n"
        functions.append(intro + code)
    slug, subject = NOTEBOOKS[notebook]
    head = [f'"""Exercises of notebook {notebook:02d}: {subject}.',
            "",
            "Replace each `raise NotImplementedError(...)` by your code, then run",
            f"    python -m minideit.exercises check <this directory> [id]",
            "or, in the notebook, `from minideit.tools.exercises import check; check(\"<id>\", <your function>)`.",
            '"""',
            "from __future__ import annotations",
            ""]
    head += sorted(f"import {part}" for part in imports.pop("import", ()))
    for kind in sorted(imports, key=lambda k: (k.startswith("from:minideit"), k)):  # the package's names last
        head.append(f"from {kind[len('from:'):]} import {', '.join(sorted(imports[kind]))}")
    return "\n".join(head) + "\n\n\n" + "\n\n\n".join(functions) + "\n"


def write_workspace(directory: str | Path, force: bool = False, solved: bool = False) -> list[Path]:
    """Write one file per notebook into ``directory`` (created if needed); returns the paths written.

    Refuses to overwrite existing exercise files unless ``force``: they may hold the learner's work.
    ``solved=True`` writes the package's solutions instead of stubs (used by the tests of this generator).
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise WorkspaceError(f"{directory} is a file, not a directory; choose another path")
    notebooks = sorted({ex.notebook for ex in EXERCISES.values()})
    paths = [directory / next(ex.workspace_file for ex in EXERCISES.values() if ex.notebook == nb)
             for nb in notebooks]
    existing = [p.name for p in paths if p.exists()]
    if existing and not force:
        raise WorkspaceError(f"{directory} already holds exercises ({existing[0]} ...); pass --force to "
                             "overwrite them (your solutions would be lost) or choose another directory")
    texts = [render_notebook(nb, solved) for nb in notebooks]  # all rendered before anything is written
    directory.mkdir(parents=True, exist_ok=True)
    for path, text in zip(paths, texts):
        path.write_text(text, encoding="utf-8")
    return paths


# ----------------------------------------------------------------------------------------------------------------
# 3. Reading the learner's functions back
# ----------------------------------------------------------------------------------------------------------------
def check_workspace_dir(directory: str | Path) -> Path:
    directory = Path(directory)
    if not directory.is_dir():
        raise WorkspaceError(f"workspace {directory} does not exist; create it with "
                             f"`python -m minideit.exercises init {directory}`")
    if not any((directory / ex.workspace_file).exists() for ex in EXERCISES.values()):
        raise WorkspaceError(f"{directory} holds no exercise files (ex00_setup_data.py ...); create them with "
                             f"`python -m minideit.exercises init {directory}`")
    return directory


def load_module(path: Path):
    """Import a workspace file under a private name; WorkspaceError with one line if it does not import."""
    spec = importlib.util.spec_from_file_location(f"minideit_workspace_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise WorkspaceError(f"{path.name} line {e.lineno}: SyntaxError: {e.msg}") from None
    except Exception as e:  # the learner's module-level code: report it, don't crash the other checks
        raise WorkspaceError(f"{path.name} does not import: {type(e).__name__}: {e}") from None
    return module


def load_function(directory: str | Path, ex: Exercise, cache: dict | None = None):
    """The learner's function for ``ex`` from the workspace; WorkspaceError if the file or function is missing."""
    path = Path(directory) / ex.workspace_file
    if not path.exists():
        raise WorkspaceError(f"{path} is missing; write a fresh workspace with "
                             f"`python -m minideit.exercises init NEWDIR` and copy it over")
    cache = {} if cache is None else cache
    if path not in cache:
        try:
            cache[path] = load_module(path)
        except WorkspaceError as e:
            cache[path] = e
    module = cache[path]
    if isinstance(module, WorkspaceError):
        raise module
    fn = getattr(module, ex.id, None)
    if not callable(fn):
        raise WorkspaceError(f"{path.name} has no function {ex.id}(); restore it from a fresh workspace "
                             "(`python -m minideit.exercises init NEWDIR`)")
    return fn
