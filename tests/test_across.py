"""`python -m minideit.tools.reproduce.across`: each ordering's verdict across runs of the suite (issue 13).

The tool reads the claims' evidence lines that ``Gap.describe`` writes, so the first test makes those lines with the
real ``Gap`` and ``claim`` and checks that what is read back is what was written. The published runs in
book/results are read too: the tool's count per run must be the count each run's README states.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from minideit.tools.reproduce import across
from minideit.tools.reproduce.common import Gap, claim

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "book" / "results"


def write_run(folder: Path, claims: dict[str, list[dict]], seeds=(0, 1, 2)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for experiment, cs in claims.items():
        (folder / f"{experiment}.json").write_text(json.dumps({"seeds": list(seeds), "claims": cs}))
    return folder


def test_gaps_read_back_from_the_evidence_line():
    strict = Gap("hard", "soft", (69.98, 69.46, 68.56), (58.58, 61.42, 58.88))
    at_least = Gap("soft", "none", (58.58, 61.42, 58.88), (57.6, 61.07, 58.54), at_least=True)
    lower = Gap("joint", "none", (0.33, 0.35, 0.36), (0.40, 0.43, 0.42), higher=False, digits=3)
    c = claim("hard > soft ≥ none (Table 3)", [strict, at_least])
    read = across.gaps_of(c["evidence"])
    assert [g["at_least"] for g in read] == [False, True]
    for g, got in zip([strict, at_least], read):
        assert got["diff"] == pytest.approx(g.diff, abs=0.05)
        assert got["two_se"] == pytest.approx(2 * g.se, abs=0.05)
    (got,) = across.gaps_of(claim("disagrees less", [lower])["evidence"])
    assert got["diff"] == pytest.approx(lower.diff, abs=5e-4) and got["diff"] > 0  # "below" claims: the paper's way +
    assert not got["at_least"]


def test_seeds_needed():
    # the fourth run's 64-px fine-tune: +2.3 against 2·SE 2.8 on 3 seeds → 3·(2.8/2.3)² = 4.4, so 5 seeds
    assert across.seeds_needed([{"diff": 2.3, "two_se": 2.8, "at_least": False}], 3) == 5
    # the weakest strict gap decides; an "at least" gap inside its error needs nothing
    gaps = [{"diff": 3.8, "two_se": 2.1, "at_least": False}, {"diff": 0.9, "two_se": 3.2, "at_least": False},
            {"diff": -0.5, "two_se": 1.0, "at_least": True}]
    assert across.seeds_needed(gaps, 3) == 38
    assert across.seeds_needed([{"diff": -1.8, "two_se": 2.1, "at_least": False}], 3) is None  # wrong sign
    assert across.seeds_needed([{"diff": -2.7, "two_se": 1.2, "at_least": True}], 3) is None  # "no" on ≥
    assert across.seeds_needed([{"diff": 0.4, "two_se": 1.2, "at_least": True}], 3) == 0


def test_table_counts_and_columns(tmp_path, monkeypatch):
    yes = claim("a > b (Table 1)", [Gap("a", "b", (5.0, 5.1, 4.9), (1.0, 1.1, 0.9))])
    unsure = claim("c > d (Table 2)", [Gap("c", "d", (2.0, 3.0, 1.0), (1.0, 2.0, 0.5))])
    shown = claim("c > d (Table 2)", [Gap("c", "d", (5.0, 5.1, 4.9), (1.0, 1.1, 0.9))])
    one = write_run(tmp_path / "one", {"distillation": [yes, unsure]})
    two = write_run(tmp_path / "two", {"distillation": [yes, shown]})
    out = across.table([one, two], ["first", "second"])
    rows = [line for line in out.splitlines() if line.startswith("| distillation")]
    assert rows[0].endswith("| yes | yes | 2 of 2 | agrees |")
    assert "| not shown | yes | 1 of 2 | agrees |" in rows[1]
    assert out.splitlines()[-1].startswith("| | **orderings that agree** | **1 of 2** | **2 of 2** |")
    # the last column reads the last run: the first run alone has "c > d" failing, written as +0.8 against
    # 2·SE = 1.5 on 3 seeds, so 3·(1.5/0.8)² = 10.5 → 11 seeds
    alone = across.table([one]).splitlines()[3]
    assert alone.endswith("| about 11 |"), alone
    # without --names a column is titled by its folder, "." included
    assert across.table([one]).splitlines()[0].startswith("| experiment | ordering | one |")
    monkeypatch.chdir(one)
    assert across.table([Path(".")]).splitlines()[0].startswith("| experiment | ordering | one |")


def test_a_claim_stated_differently_gets_a_row_of_its_own(tmp_path):
    """Rows pair claims by their text, not by their place in the file: a run that drops or rewords a claim must not
    have its verdicts put beside another claim's."""
    a = claim("a > b (Table 1)", [Gap("a", "b", (5.0, 5.1, 4.9), (1.0, 1.1, 0.9))])
    c = claim("c > d (Table 2)", [Gap("c", "d", (1.0, 1.1, 0.9), (5.0, 5.1, 4.9))])  # "no"
    one = write_run(tmp_path / "one", {"teachers": [a, c]})
    two = write_run(tmp_path / "two", {"teachers": [c]})  # a dropped: c is now the first claim in the file
    rows = [line for line in across.table([one, two]).splitlines() if line.startswith("| teachers")]
    assert len(rows) == 2
    assert "| a > b | yes | – | 1 of 1 |" in rows[0]
    assert "| c > d | no | no | 0 of 2 |" in rows[1]


@pytest.mark.parametrize("folder", ["first-final", "second-final", "third-final", "."])
def test_published_runs_count_as_their_readmes_say(folder):
    """The count the tool makes from a run's JSON files is the count that run's README states ("**12 of 21**")."""
    readme = (RESULTS / folder / ("summary.md" if (RESULTS / folder / "summary.md").exists() else "README.md"))
    stated = re.search(r"\*\*(\d+) of (?:the )?21\b", readme.read_text())  # "**12 of 21**", "**8 of the 21 ..."
    assert stated, readme
    last = across.table([RESULTS / folder]).splitlines()[-1]
    assert f"**{stated[1]} of 21**" in last, (folder, last)


def test_cli_refuses_a_folder_without_results(tmp_path):
    r = subprocess.run([sys.executable, "-m", "minideit.tools.reproduce.across", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "no experiment's JSON" in r.stderr and "Traceback" not in r.stderr


def test_cli_refuses_a_results_file_cut_short(tmp_path):
    (tmp_path / "distillation.json").write_text('{"seeds": [0, 1, 2], "claims": [')  # a write that stopped half-way
    r = subprocess.run([sys.executable, "-m", "minideit.tools.reproduce.across", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert "distillation.json is not a results file" in r.stderr


def test_results_readme_shows_what_the_tool_prints():
    """book/results/README.md quotes the tool's table for the four final runs; it must be what the command prints
    today, so that the page and the runs' JSON cannot drift apart."""
    runs = [RESULTS / "first-final", RESULTS / "second-final", RESULTS / "third-final", RESULTS]
    printed = across.table(runs, ["first", "second", "third", "fourth"])
    assert printed in (RESULTS / "README.md").read_text()
