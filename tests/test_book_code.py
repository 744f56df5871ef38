"""The book's code excerpts are the package's current source (`python -m minideit.book` fills them)."""
import pytest

from minideit.tools.book import ROOT, BLOCK, ExcerptError, build, excerpt, render


def test_every_excerpt_is_the_current_source():
    stale = build(check=True)
    assert not stale, f"stale code excerpts in {[p.name for p in stale]}; run `python -m minideit.book`"


def test_the_new_exercises_are_shown_in_their_chapters():
    shown = {(m.group(2), m.group(3)) for p in (ROOT / "book").glob("*.md") for m in BLOCK.finditer(p.read_text())}
    for name in ("Attention.forward", "VisionTransformer.embed", "VisionTransformer.forward_features"):
        assert ("minideit/vit.py", name) in shown
    assert ("minideit/losses.py", "hard_distillation_loss") in shown
    assert ("minideit/engine.py", "distillation_step") in shown


def test_a_chapter_that_drifted_from_the_code_is_found(tmp_path):
    (tmp_path / "minideit").mkdir()
    (tmp_path / "minideit" / "m.py").write_text("def f(x):\n    # BEGIN EXERCISE f\n    return x + 1\n"
                                               "    # END EXERCISE f\n")
    (tmp_path / "book").mkdir()
    chapter = tmp_path / "book" / "c.md"
    chapter.write_text("text\n<!-- code: minideit/m.py f -->\n```python\ndef f(x):\n    return x + 2\n```\n"
                       "<!-- /code -->\nmore\n")
    assert build(tmp_path / "book", check=True) == [chapter]  # the pasted copy is stale
    assert build(tmp_path / "book") == [chapter]  # the build refreshes it ...
    assert "return x + 1" in chapter.read_text() and chapter.read_text().endswith("<!-- /code -->\nmore\n")
    assert build(tmp_path / "book", check=True) == []  # ... and then it is current
    assert excerpt("minideit/m.py", "exercise:f", tmp_path) == "return x + 1\n"


def test_a_marker_naming_nothing_is_an_error():
    with pytest.raises(ExcerptError, match="defines no Attention.backward"):
        render("<!-- code: minideit/vit.py Attention.backward -->\n<!-- /code -->")
    with pytest.raises(ExcerptError, match="does not exist"):
        excerpt("minideit/nope.py", "f")
