"""Relative links in the documentation point at files that exist, and chapters and notebooks link each other.

Collects every Markdown link and image (`[text](target)`, `![alt](target)`, `[label]: target`) and every HTML
`<img src="...">` in README.md, book/**/*.md, data_scripts/README.md and the markdown cells of notebooks/*.ipynb.
Web addresses (anything with a scheme such as https: or mailto:) and pure anchors (#...) are skipped; a #fragment
is cut off; the rest must name a file or folder, relative to the file holding the link (or to the repository root
when it starts with /). Plain Python, no torch, well under a second.
"""
import json
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]


def documents() -> list[Path]:
    docs = [ROOT / "README.md", *sorted((ROOT / "book").rglob("*.md")), ROOT / "data_scripts" / "README.md",
            *sorted((ROOT / "notebooks").glob("*.ipynb"))]
    return [p for p in docs if p.is_file()]


FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,}).*?^\1\2[`~]*[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.S)
# `](target)` closes both `[text](target)` and `![alt](target)`, whatever the text holds; an optional "title"
INLINE_LINK = re.compile(r"\]\(\s*(<[^>\n]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]\n]+\]:\s*(<[^>\n]*>|\S+)", re.M)
IMG_SRC = re.compile(r"<img\b[^>]*?\bsrc\s*=\s*(?:\"([^\"]*)\"|'([^']*)')", re.I)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def markdown_of(path: Path) -> str:
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        return "\n\n".join("".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                           for c in cells if c["cell_type"] == "markdown")
    return path.read_text(encoding="utf-8")


def link_targets(text: str) -> list[str]:
    """Every link or image target in a Markdown text, code blocks and inline code left out."""
    text = FENCE.sub("", text)
    # a code span inside a link's text must not hide the link: replace spans by a placeholder, not by nothing
    text = INLINE_CODE.sub("code", text)
    targets = [m.group(1) for m in INLINE_LINK.finditer(text)]
    targets += [m.group(1) for m in REFERENCE_DEF.finditer(text)]
    targets += [m.group(1) or m.group(2) for m in IMG_SRC.finditer(text)]
    return [t[1:-1] if t.startswith("<") and t.endswith(">") else t for t in targets]


def local_path(target: str, source: Path) -> Path | None:
    """The file a relative target names, or None for web addresses and pure anchors."""
    if not target or target.startswith("#") or target.startswith("//") or SCHEME.match(target):
        return None
    target = unquote(target.split("#", 1)[0].split("?", 1)[0])
    if not target:
        return None
    return ROOT / target.lstrip("/") if target.startswith("/") else source.parent / target


def broken_links(path: Path) -> list[str]:
    rel = path.relative_to(ROOT)
    return [f"{rel}: {t}" for t in link_targets(markdown_of(path))
            if (p := local_path(t, path)) is not None and not p.exists()]


def linked_files(path: Path) -> set[Path]:
    return {p.resolve() for t in link_targets(markdown_of(path)) if (p := local_path(t, path)) is not None}


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    broken = broken_links(path)
    if broken:
        pytest.fail(f"{len(broken)} broken link(s):\n" + "\n".join(broken), pytrace=False)


# Chapter 12 (paper against official code) has no notebook; notebook 12, the capstone, has chapter 13.
CAPSTONE = {"12_capstone": "13_capstone"}
CHAPTERS = sorted(p for p in (ROOT / "book").glob("[0-9][0-9]_*.md")
                  if int(p.name[:2]) <= 11 or p.stem in CAPSTONE.values())
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_every_notebook_has_a_chapter():
    chapters = {p.stem for p in CHAPTERS}
    notebooks = {CAPSTONE.get(p.stem, p.stem) for p in NOTEBOOKS}
    assert len(chapters) == 13, f"expected chapters 00-11 and 13 in book/, found {sorted(chapters)}"
    assert chapters == notebooks, (f"chapters without a notebook: {sorted(chapters - notebooks)}; "
                                   f"notebooks without a chapter: {sorted(notebooks - chapters)}")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_links_its_notebook(chapter):
    stem = {v: k for k, v in CAPSTONE.items()}.get(chapter.stem, chapter.stem)
    notebook = (ROOT / "notebooks" / f"{stem}.ipynb").resolve()
    assert notebook in linked_files(chapter), f"book/{chapter.name} does not link ../notebooks/{notebook.name}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_links_its_chapter(notebook):
    chapter = (ROOT / "book" / f"{CAPSTONE.get(notebook.stem, notebook.stem)}.md").resolve()
    assert chapter in linked_files(notebook), f"notebooks/{notebook.name} does not link ../book/{chapter.name}"
