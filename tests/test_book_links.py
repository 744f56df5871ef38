"""Relative links in the documentation point at files that exist, and chapters and notebooks link each other.

Collects every Markdown link and image (`[text](target)`, `![alt](target)`, `[label]: target`) and every HTML
`<img src="...">` in README.md, book/**/*.md, data_scripts/README.md and the markdown cells of notebooks/*.ipynb.
Web addresses (anything with a scheme such as https: or mailto:) and pure anchors (#...) are skipped; a #fragment
is cut off; the rest must name a file or folder inside the repository, relative to the file holding the link (or to
the repository root when it starts with /).

A user's clone holds nothing beside the repository, so neither links nor paths cited in plain text may leave it:
every `../` path written anywhere in those documents (code spans, code blocks and notebook code cells included),
in the sources under minideit/, tests/ and data_scripts/, and in .ci/, must name something that exists inside the
repository, and the names of things that once lived outside it (PAPER_FACTS.md, the shared fixtures folder, this
machine's work folders) must not appear at all. Plain Python, no torch, well under a second.
"""
import json
import os
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


def inside_repository(path: Path) -> bool:
    return path.resolve().is_relative_to(ROOT.resolve())


def broken_links(path: Path) -> list[str]:
    rel = path.relative_to(ROOT)
    return [f"{rel}: {t}" for t in link_targets(markdown_of(path))
            if (p := local_path(t, path)) is not None and not (p.exists() and inside_repository(p))]


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


# --- Paths cited in plain text, code and comments -----------------------------------------------------------------

SOURCES = [*sorted((ROOT / "minideit").rglob("*.py")), *sorted((ROOT / "tests").rglob("*.py")),
           *sorted((ROOT / "data_scripts").glob("*.py")), *sorted((ROOT / ".ci").glob("*")),
           ROOT / "pyproject.toml", ROOT / "requirements.txt"]
CITING = [*documents(), *sorted((ROOT / "tests").rglob("*.md")),
          *(p for p in SOURCES if p.is_file() and p.resolve() != Path(__file__).resolve())]
# Names of things that lived outside the repository while it was written; a clone has none of them.
OUTSIDE = re.compile(r"PAPER_FACTS|\bshared\b\W{1,6}fixtures|/work/(?:wt|main)\b|\bROOT\.parent\b")
# a relative path that climbs: ../x, ../../x/y.md; trailing punctuation of the sentence is not part of it
CLIMBING = re.compile(r"(?<![\w./])((?:\.\./)+[\w.\-/]*[\w/])")


def full_text(path: Path) -> str:
    """The whole text, every cell of a notebook included (code cells run from notebooks/, as their links do)."""
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        return "\n\n".join("".join(c["source"]) for c in cells)
    return path.read_text(encoding="utf-8")


def paths_leaving_repository(path: Path, text: str) -> list[str]:
    """Cited paths in `text` (held by `path`) that name something outside the repository, or nothing at all."""
    found = [m.group(0) for m in OUTSIDE.finditer(text)]
    # a document's ../ path is relative to the document; a source's may also be relative to the repository root
    bases = [path.parent] if path in DOCUMENTS else [path.parent, ROOT]
    for m in CLIMBING.finditer(text):
        if not any((base / m.group(1)).exists() and inside_repository(base / m.group(1)) for base in bases):
            found.append(m.group(1))
    return found


DOCUMENTS = set(documents())


@pytest.mark.parametrize("path", CITING, ids=lambda p: str(p.relative_to(ROOT)))
def test_cited_paths_stay_inside_the_repository(path):
    outside = paths_leaving_repository(path, full_text(path))
    assert not outside, (f"{path.relative_to(ROOT)} cites paths outside the repository (a clone does not have them; "
                         f"facts from the paper live in book/paper_facts.md, fixtures in tests/fixtures/): {outside}")


@pytest.mark.parametrize("text, bad", [
    ("numbers in `PAPER_FACTS.md`", "PAPER_FACTS"),
    ("see [facts](../shared/PAPER_FACTS.md)", "../shared/PAPER_FACTS.md"),
    ('FIXTURES = ROOT.parent / "shared" / "fixtures"', "ROOT.parent"),
    ("reads ../../shared/fixtures/x.pt.", "../../shared/fixtures/x.pt"),
    ("cd /work/wt/newcomer", "/work/wt"),
    ("[up](../../README.md)", "../../README.md"),
])
def test_the_outside_check_catches(text, bad):
    # planted citations, as a notebook under notebooks/ would hold them
    assert bad in paths_leaving_repository(ROOT / "notebooks" / "x.ipynb", text)
    assert not paths_leaving_repository(ROOT / "notebooks" / "x.ipynb", "see [facts](../book/paper_facts.md).")


def test_a_link_out_of_the_repository_is_broken(tmp_path):
    # a file that exists, but beside the repository rather than in it, as ../shared/PAPER_FACTS.md did
    outside = tmp_path / "PAPER.md"
    outside.write_text("facts")
    target = os.path.relpath(outside, ROOT)
    assert broken_links_in(f"[facts]({target})", ROOT / "README.md") == [target]
    assert not broken_links_in("[book](book/README.md)", ROOT / "README.md")


def broken_links_in(text: str, source: Path) -> list[str]:
    return [t for t in link_targets(text)
            if (p := local_path(t, source)) is not None and not (p.exists() and inside_repository(p))]


# --- Verdicts on the paper's claims: stated once, in book/results/, quoted word for word --------------------------

RESULTS = ROOT / "book" / "results"
VERDICTS = r"\*\*(?:yes|no|not shown|same within error|undecided)\*\*"  # the protocol's verdicts, and the earlier rule's
QUOTED_VERDICT = re.compile(r"^> (.*" + VERDICTS + r".*?)(?: \(\[[^\]]*\]\(([^)]*)\)\))?$", re.M)


def results_verdicts() -> dict[str, str]:
    """Each verdict line of book/results/*.md (without its bullet) -> the page that states it."""
    return {line[2:]: page.name for page in sorted(RESULTS.glob("*.md"))
            for line in page.read_text(encoding="utf-8").splitlines()
            if line.startswith("- ") and re.search(VERDICTS, line)}


def misquoted_verdicts(text: str) -> list[str]:
    """Blockquoted verdicts in `text` that are not a results page's words, or that link to another page."""
    verdicts, wrong = results_verdicts(), []
    for m in QUOTED_VERDICT.finditer(text):
        quote, link = m.group(1), m.group(2)
        if quote not in verdicts:
            wrong.append(f"not in book/results: {quote[:80]}...")
        elif not link or Path(link).name != verdicts[quote]:
            wrong.append(f"should link results/{verdicts[quote]}: {quote[:80]}...")
    return wrong


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_quoted_verdicts_are_the_results_words(path):
    if path.is_relative_to(RESULTS):
        return
    wrong = misquoted_verdicts(markdown_of(path))
    assert not wrong, f"{path.relative_to(ROOT)}: " + "; ".join(wrong)


def test_readme_and_chapter_07_quote_the_distillation_verdict():
    verdict = next(v for v, page in results_verdicts().items() if page == "distillation.md"
                   and v.startswith("hard distillation > soft"))
    for doc in (ROOT / "README.md", ROOT / "book" / "07_distillation_experiments.md"):
        assert f"> {verdict}" in doc.read_text(encoding="utf-8"), f"{doc.name} does not quote: {verdict[:60]}"


def test_a_changed_word_in_a_quoted_verdict_is_caught():
    verdict, page = next(iter(results_verdicts().items()))
    assert not misquoted_verdicts(f"> {verdict} ([x](results/{page}))")
    assert misquoted_verdicts(f"> {verdict} Clearly. ([x](results/{page}))")
    assert misquoted_verdicts(f"> {verdict} ([x](results/README.md))")
