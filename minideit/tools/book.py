"""``python -m minideit.book``: the book's code excerpts, taken from the package at build time (never pasted).

A chapter marks where code goes::

    <!-- code: minideit/vit.py Attention.forward -->
    <!-- /code -->

and this command fills the space between the two comments with the current source of that function or class
(``Qualified.name``), or with the lines between ``# BEGIN EXERCISE <id>`` / ``# END EXERCISE <id>`` (``exercise:<id>``),
as a fenced Python block. ``--check`` writes nothing and exits 1 naming every chapter whose excerpt differs from
the package, so chapter and code cannot drift (tests/test_book_code.py runs it).
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"(<!-- code: (\S+) (\S+) -->\n)(.*?)(<!-- /code -->)", re.S)


class ExcerptError(ValueError):
    """A marker names a file or a name that does not exist; the message says which."""


def excerpt(file: str, name: str, root: Path = ROOT) -> str:
    """The source of ``name`` in ``file`` (relative to the repository root), dedented, without trailing blanks."""
    path = root / file
    if not path.is_file():
        raise ExcerptError(f"{file} does not exist")
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    if name.startswith("exercise:"):
        ex_id = name.split(":", 1)[1]
        begin = [i for i, line in enumerate(lines) if line.strip() == f"# BEGIN EXERCISE {ex_id}"]
        end = [i for i, line in enumerate(lines) if line.strip() == f"# END EXERCISE {ex_id}"]
        if len(begin) != 1 or len(end) != 1:
            raise ExcerptError(f"{file} has no single BEGIN/END EXERCISE {ex_id} pair")
        body = lines[begin[0] + 1:end[0]]
    else:
        nodes = ast.parse(text).body
        node = None
        for part in name.split("."):
            node = next((n for n in nodes if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part), None)
            if node is None:
                raise ExcerptError(f"{file} defines no {name}")
            nodes = node.body
        first = min([d.lineno for d in node.decorator_list] + [node.lineno]) - 1
        last = node.end_lineno  # the exercise markers stay in: they tell the reader which lines are an exercise
        if last < len(lines) and lines[last].strip().startswith("# END EXERCISE"):
            last += 1
        body = lines[first:last]
    return textwrap.dedent("\n".join(body)).rstrip() + "\n"


def render(text: str, root: Path = ROOT) -> str:
    """The chapter text with every code block refreshed."""
    def fill(m: re.Match) -> str:
        return f"{m.group(1)}```python\n{excerpt(m.group(2), m.group(3), root)}```\n{m.group(5)}"
    return BLOCK.sub(fill, text)


def build(book: Path = ROOT / "book", check: bool = False) -> list[Path]:
    """Refresh every chapter (or, with ``check``, only list those that are stale); returns the stale chapters."""
    stale = []
    for path in sorted(book.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        new = render(text, book.parent)
        if new != text:
            stale.append(path)
            if not check:
                path.write_text(new, encoding="utf-8")
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minideit.book", description="Fill the book's code excerpts "
                                     "from the package's current source.")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if an excerpt is stale")
    args = parser.parse_args(argv)
    try:
        stale = build(check=args.check)
    except (ExcerptError, SyntaxError) as e:
        print(f"error: {e}; fix the <!-- code: FILE NAME --> marker", file=sys.stderr)
        return 2
    names = ", ".join(p.name for p in stale)
    if args.check:
        if stale:
            print(f"stale code excerpts in {names}; run `python -m minideit.book`")
        return 1 if stale else 0
    print(f"refreshed {names}" if stale else "every code excerpt is current")
    return 0
