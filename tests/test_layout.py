"""The package's layout by audience (issue 16, DESIGN.md "Layout by audience").

The paper sits at the top of ``minideit/``, the trainer beside it, the tools in ``minideit/tools/``. Imports run one
way only: tools → trainer → paper. These tests read every module's imports with ``ast`` (function-local imports
included, since they are circles too, only later) and fail on an import circle or an import against that direction.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "minideit"

# The trainer a practitioner runs; everything else outside tools/ is the paper (vit, regnet, models, data, ...).
TRAINER = {"minideit.config", "minideit.engine", "minideit.train", "minideit.checkpoint", "minideit.distributed",
           "minideit.curves", "minideit.teacher_cache"}
# `python -m minideit.<command>` entry points: a few lines at the top of the package that hand over to minideit/tools/.
COMMANDS = sorted(p.stem for p in PACKAGE.glob("*.py") if "from minideit.tools" in p.read_text())


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    """0 = the paper, 1 = the trainer, 2 = the tools (and the command entry points that forward to them)."""
    if module.startswith("minideit.tools") or module.split(".")[-1] in COMMANDS and module.count(".") == 1:
        return 2
    return 1 if module in TRAINER else 0


def imports_of(path: Path) -> set[str]:
    """Every minideit module that ``path`` imports, anywhere in the file (top level or inside a function)."""
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from .x import y / from .. import y
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from minideit.data import _fast` imports a module; `from minideit.vit import Attention` a name.
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(n for n in names if n == "minideit" or n.startswith("minideit."))
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        # an import of a name inside a module counts as an import of that module; keep only real modules
        targets = {t for t in imports_of(path) if t in modules} - {name}
        # `import minideit.x.y` also runs minideit/__init__.py and minideit/x/__init__.py: those are not edges we
        # control from here, so only the module named is kept.
        edges[name] = targets
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle_among_minideit_modules():
    edges = graph()
    # A package's __init__ re-exporting its own submodules is not a circle of ideas: drop edges from a package to
    # its children, so that `minideit/__init__.py -> minideit.models -> minideit.vit` is not reported.
    for name in edges:
        edges[name] = {t for t in edges[name] if not t.startswith(name + ".")}
    assert cycles(edges) == [], "import circles (each list is one circle's modules)"


def test_imports_run_one_way_tools_to_trainer_to_paper():
    wrong = [f"{name} ({['paper', 'trainer', 'tools'][layer(name)]}) imports {target} "
             f"({['paper', 'trainer', 'tools'][layer(target)]})"
             for name, targets in graph().items() for target in sorted(targets)
             if layer(target) > layer(name) and target != "minideit"]
    assert wrong == []


def test_the_checker_sees_function_local_imports(tmp_path):
    """The checks above must be able to fail: a function-local import against the direction is found."""
    fake = tmp_path / "minideit" / "vit.py"
    fake.parent.mkdir()
    fake.write_text("def f():\n    from minideit.tools.bench import common\n    from .train import run\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert imports_of(fake) >= {"minideit.tools.bench.common", "minideit.train"}
    finally:
        ROOT = saved
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("command", ["train", "weights", *COMMANDS])
def test_every_command_answers_help(command):
    r = subprocess.run([sys.executable, "-m", f"minideit.{command}", "--help"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "usage" in r.stdout.lower(), r.stdout
    assert "Traceback" not in r.stderr and "Warning" not in r.stderr, r.stderr


def test_readme_package_map_names_every_file():
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## The package")
    section = readme[start:readme.index("\n## ", start + 1)]
    missing = [str(p.relative_to(PACKAGE)) for p in sorted(PACKAGE.rglob("*.py"))
               if p.name != "__init__.py" and p.name not in section]
    assert missing == [], "files of minideit/ that README's package map does not name"
