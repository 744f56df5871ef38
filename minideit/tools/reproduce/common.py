"""What every experiment shares: per-seed rows merged into tables, the paper's claims judged on the seeds, and a
bar plot.

How a claim is judged (the protocol of book/results/PROTOCOL.md): every ordering the paper states is a comparison of
two rows, ``a`` against ``b``, over the n seeds. Its gap is the difference of the means, its standard error
SE = √(s_a²/n + s_b²/n), and the verdict is

* **yes**: the gap points the paper's way and is larger than 2·SE;
* **same within error**: for a claim the paper makes with a gap of a few tenths (``at_least``: "≥", "does not
  hurt"), the gap is inside 2·SE, which is what the paper's own numbers would give at this precision;
* **not shown**: a strict claim whose gap points the paper's way but is inside 2·SE, so these seeds cannot order
  the two rows;
* **no**: the gap points the other way by more than 2·SE.

"yes" and "same within error" count as agreeing with the paper.
"""
from __future__ import annotations

import dataclasses
import math
import statistics


# ----------------------------------------------------------------------------------------------------------------
# Helpers: per-seed rows → tables
# ----------------------------------------------------------------------------------------------------------------
def merge(per_seed: list[dict]) -> dict:
    """[{row: {col: value}}, ...] (one dict per seed) → {row: {col: [value per seed]}}, rows in first-seen order."""
    table: dict = {}
    for rows in per_seed:
        for row, cells in rows.items():
            for col, value in cells.items():
                table.setdefault(row, {}).setdefault(col, []).append(float(value))
    return table


def mean(table: dict, row: str, col: str) -> float:
    return statistics.fmean(table[row][col])


# ----------------------------------------------------------------------------------------------------------------
# Claims: gaps against twice their standard error
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Gap:
    """``a`` against ``b`` in one column. ``higher``: the paper says a is above b (False: below, as for
    disagreement). ``at_least``: the paper's claim is "≥" (its gap is a few tenths), so a gap inside the error
    agrees with it."""
    a: str
    b: str
    a_values: tuple[float, ...]
    b_values: tuple[float, ...]
    higher: bool = True
    at_least: bool = False
    digits: int = 1

    @property
    def diff(self) -> float:
        """mean(a) − mean(b), signed so that a positive gap is the paper's direction."""
        d = statistics.fmean(self.a_values) - statistics.fmean(self.b_values)
        return d if self.higher else -d

    @property
    def se(self) -> float:
        """√(s_a²/n_a + s_b²/n_b): the standard error of the difference of two independent means."""
        var = lambda v: statistics.variance(v) / len(v) if len(v) > 1 else 0.0  # noqa: E731
        return math.sqrt(var(self.a_values) + var(self.b_values))

    @property
    def verdict(self) -> str:
        if self.diff > 2 * self.se:
            return "yes"
        if self.diff < -2 * self.se:
            return "no"
        return "same within error" if self.at_least else "not shown"

    def describe(self) -> str:
        def ms(v):
            s = statistics.stdev(v) if len(v) > 1 else 0.0
            return f"{statistics.fmean(v):.{self.digits}f} ± {s:.{self.digits}f}"
        sign = ("≥" if self.at_least else ">") if self.higher else ("≤" if self.at_least else "<")
        inside = "exceeds" if abs(self.diff) > 2 * self.se else "is inside"
        return (f"{self.a} {ms(self.a_values)} {sign} {self.b} {ms(self.b_values)}? gap {self.diff:+.{self.digits}f} "
                f"(the paper's way positive), which {inside} 2·SE = {2 * self.se:.{self.digits}f}"
                + (f"; per seed {', '.join(f'{d:+.{self.digits}f}' for d in self.per_seed)}" if self.per_seed else ""))

    @property
    def per_seed(self) -> tuple[float, ...]:
        """a − b on each seed (the paper's way positive), when both rows have one value per seed. Not part of the
        verdict (the protocol compares means): it shows the reader whether the seeds that differ from each other
        also differ in the gap, or move together."""
        if len(self.a_values) != len(self.b_values) or len(self.a_values) < 2:
            return ()
        sign = 1 if self.higher else -1
        return tuple(sign * (a - b) for a, b in zip(self.a_values, self.b_values))


def gap(table: dict, col: str, a: str, b: str, higher: bool = True, at_least: bool = False,
        digits: int = 1) -> Gap:
    return Gap(a, b, tuple(table[a][col]), tuple(table[b][col]), higher, at_least, digits)


VERDICT_ORDER = ("no", "not shown", "same within error", "yes")  # a claim is as weak as its weakest gap


def claim(text: str, gaps: list[Gap], why_not: str = "", note: str = "", condition: bool = True) -> dict:
    """One of the paper's statements, judged by its gaps (all must agree with the paper). ``note``: more evidence
    for the reader; ``condition``: a part of the statement that is not a gap between rows (a cosine staying below
    1), which makes the verdict "no" when False."""
    verdict = min((g.verdict for g in gaps), key=VERDICT_ORDER.index) if condition else "no"
    evidence = "; ".join(g.describe() for g in gaps) + "." + (f" {note}" if note else "")
    holds = verdict in ("yes", "same within error")
    return {"claim": text, "holds": holds, "verdict": verdict, "evidence": evidence, "why": "" if holds else why_not}


def bars(ax, table: dict, col: str, rows: list[str] | None = None, colours=None, xlabel: str = "top-1 (%)"):
    """Horizontal bars of a column, mean with the seed standard deviation as error bar."""
    rows = [r for r in (rows or list(table)) if col in table[r]]
    means = [table[r][col]["mean"] for r in rows]
    stds = [table[r][col]["std"] for r in rows]
    ax.barh(range(len(rows)), means, xerr=stds, color=colours or "tab:blue", capsize=3)
    ax.set_yticks(range(len(rows)), rows)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    lo = min(m - s for m, s in zip(means, stds))
    ax.set_xlim(max(0.0, lo - 5), max(m + s for m, s in zip(means, stds)) + 2)

