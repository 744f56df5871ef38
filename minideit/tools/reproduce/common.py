"""What every experiment shares: per-seed rows merged into tables, the paper's claims checked on the means, and
a bar plot. A claim whose gap is inside the seed-to-seed spread says so, because three seeds of a run a few epochs
long cannot order two methods that close."""
from __future__ import annotations

import statistics

NANO, NANO_DIST = "deit_nano_patch4_32", "deit_nano_distilled_patch4_32"


# ----------------------------------------------------------------------------------------------------------------
# Helpers: per-seed rows → tables, claims
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


def spread(table: dict, row: str, col: str) -> float:
    values = table[row][col]
    return statistics.stdev(values) if len(values) > 1 else 0.0


def show(table: dict, row: str, col: str) -> str:
    return f"{row}: {mean(table, row, col):.1f}"


def claim(text: str, holds: bool, evidence: str, why_not: str = "", close: bool = False) -> dict:
    """One of the paper's statements checked on our means. ``close``: the gap is inside the seed spread."""
    if close:
        evidence += " The gap is within one seed-to-seed standard deviation, so these seeds cannot order them."
    return {"claim": text, "holds": bool(holds), "evidence": evidence, "why": "" if holds else why_not}


def is_close(table: dict, col: str, *rows: str) -> bool:
    """Are any two consecutive rows closer than the larger of their standard deviations?"""
    return any(abs(mean(table, a, col) - mean(table, b, col)) < max(spread(table, a, col), spread(table, b, col))
               for a, b in zip(rows, rows[1:]))


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


UNDERTRAINED = ("These runs are about 10⁵ times smaller than the paper's (a few thousand images, a few epochs): the "
                "students are still learning the training set, not over-fitting it, which is where the paper's "
                "effect comes from.")


