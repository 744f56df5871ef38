"""``python -m minideit.tools.reproduce.across DIR [DIR ...]``: one ordering a row, one run of the suite a column.

Every run of ``python -m minideit.reproduce`` writes one JSON file per experiment, and each file keeps its claims:
the paper's statement, the verdict, and the evidence line that :class:`~minideit.tools.reproduce.common.Gap` wrote
("a 69.3 ± 0.7 > b 59.6 ± 1.6? gap +9.7 (the paper's way positive), which exceeds 2·SE = 2.0; ..."). This tool reads
several runs' folders and prints, as a Markdown table, each ordering's verdict in every run, so that a reader can tell
an ordering that agrees in every run from one that comes and goes with the seeds.

Its last column is a rough answer to "would more seeds settle it?". A strict gap shows ("yes") once it exceeds
2·SE, and SE shrinks as 1/√n. If the last run's mean gap and spread held, the gap would exceed 2·SE from
n·(2·SE/gap)² seeds on. That is a guide, not a power analysis: the gap is itself uncertain, the figures are the
rounded ones on the pages, and a gap that points against the paper (or is zero) gets no count, because no number of
seeds turns its sign. "At least" gaps (the paper's own gap is a few tenths) need no seeds: inside the error they
already agree.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

from minideit.tools.reproduce.lab import EXPERIMENTS

# One Gap.describe(): "... > b 59.6 ± 1.6? gap +9.7 (the paper's way positive), which exceeds 2·SE = 2.0".
# The sign in front of b is ">"/"<" for a strict claim and "≥"/"≤" for an "at least" one.
GAP = re.compile(r"(?P<sign>[<>≤≥]) [^?]*\? gap (?P<diff>[+-]\d+(?:\.\d+)?) \(the paper's way positive\), "
                 r"which (?:exceeds|is inside) 2·SE = (?P<two_se>\d+(?:\.\d+)?)")


def gaps_of(evidence: str) -> list[dict]:
    """The gaps a claim's evidence line states: their signed difference, 2·SE, and whether they are "at least"."""
    return [{"diff": float(m["diff"]), "two_se": float(m["two_se"]), "at_least": m["sign"] in "≤≥"}
            for m in GAP.finditer(evidence)]


def seeds_needed(gaps: list[dict], n: int) -> int | None:
    """Seeds at which every strict gap would exceed 2·SE if its mean and spread held: the smallest m with
    2·SE·√(n/m) < gap, i.e. m > n·(2·SE/gap)². None when a strict gap is zero or points against the paper, or an
    "at least" gap points against it beyond 2·SE (more seeds do not turn a sign; they only shrink the error around
    it). 0 when every gap already agrees."""
    need = 0
    for g in gaps:
        if g["at_least"]:
            if g["diff"] < -g["two_se"]:
                return None
            continue
        if g["diff"] <= 0:
            return None
        need = max(need, math.floor(n * (g["two_se"] / g["diff"]) ** 2) + 1)
    return need


class BadRun(ValueError):
    """A folder's JSON file that reproduce did not write whole: reported in one line by main()."""


def load_run(folder: Path) -> dict:
    """{experiment: {"seeds": [...], "claims": [...]}} for the experiments' JSON files found in ``folder``."""
    run = {}
    for name in EXPERIMENTS:
        path = folder / f"{name}.json"
        if path.exists():
            try:
                data = json.loads(path.read_text())
                run[name] = {"seeds": data["seeds"], "claims": data["claims"]}
            except (ValueError, KeyError, TypeError) as e:  # cut short, edited by hand, or not reproduce's file
                raise BadRun(f"{path} is not a results file of `python -m minideit.reproduce` ({type(e).__name__}: "
                             f"{e}); write it again with that command, or leave its folder out") from e
    return run


def short(claim: str) -> str:
    """The statement without its citation: "hard distillation > soft ≥ no distillation (Table 3: ...)" → the part
    before the first bracket that cites the paper (a table, a figure, a section or a figure's numbers)."""
    return re.split(r" \((?:Table|Fig|§|DeiT|cosine|CIFAR|\d)", claim, maxsplit=1)[0]


def table(folders: list[Path], names: list[str] | None = None) -> str:
    """The Markdown table: one row per ordering, one verdict column per run, how many runs agree, and the seeds the
    last run's gaps would need. A row is one claim's text: runs whose statement of an ordering differs get a row
    each, instead of having their verdicts put side by side as if they were the same claim."""
    names = names or [f.resolve().name for f in folders]  # "." → the folder's own name, not ""
    runs = [load_run(f) for f in folders]
    # (experiment, claim text) → {run index: (claim, number of seeds)}, rows in the order first seen
    rows: dict[tuple[str, str], dict[int, tuple[dict, int]]] = {}
    for experiment in EXPERIMENTS:
        for k, run in enumerate(runs):
            if experiment in run:
                for c in run[experiment]["claims"]:
                    rows.setdefault((experiment, c["claim"]), {})[k] = (c, len(run[experiment]["seeds"]))
    header = ["experiment", "ordering", *names, "agrees in", "seeds the last run's gap would need"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for (experiment, text), found in rows.items():
        verdicts = [found[k][0]["verdict"] if k in found else "–" for k in range(len(runs))]
        last, n = found[max(found)]
        if last["holds"]:
            need = "agrees"
        else:
            m = seeds_needed(gaps_of(last["evidence"]), n)
            need = "no count: a gap points against the paper" if m is None else f"about {m}"
        agree = sum(c["holds"] for c, _ in found.values())
        lines.append(f"| {experiment} | {short(text)} | " + " | ".join(verdicts)
                     + f" | {agree} of {len(found)} | {need} |")
    counts = [f"**{sum(f[k][0]['holds'] for f in rows.values() if k in f)} of {sum(k in f for f in rows.values())}**"
              for k in range(len(runs))]
    lines.append("| | **orderings that agree** | " + " | ".join(counts) + " | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m minideit.tools.reproduce.across",
                                description="Each ordering's verdict across several runs of minideit.reproduce.")
    p.add_argument("folders", nargs="+", help="folders written by `python -m minideit.reproduce ... --out DIR`")
    p.add_argument("--names", nargs="+", default=None, help="a column title per folder (default: the folder names)")
    args = p.parse_args(argv)
    folders = [Path(f) for f in args.folders]
    try:
        empty = [str(f) for f in folders if not load_run(f)]
    except BadRun as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if empty:
        print(f"error: no experiment's JSON (e.g. distillation.json) in {', '.join(empty)}; give folders that "
              f"`python -m minideit.reproduce ... --out DIR` wrote", file=sys.stderr)
        return 2
    if args.names and len(args.names) != len(folders):
        print(f"error: --names gives {len(args.names)} titles for {len(folders)} folders; give one per folder",
              file=sys.stderr)
        return 2
    print(table(folders, args.names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
