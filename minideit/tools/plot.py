"""``python -m minideit.plot RUN_DIR... [--out PNG]``: the training curves of several runs in one figure.

    python -m minideit.plot runs/none runs/hard --out none_vs_hard.png

Each RUN_DIR is a training output folder (it holds ``log.jsonl``); its folder name labels it in the legend. The
panels are those of the ``curves.png`` each run draws for itself (:mod:`minideit.curves`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from minideit.curves import draw_curves, read_log

DEFAULT_OUT = Path("curves_compared.png")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one ``error:`` line and exit status 2 (no usage block)."""

    def error(self, message: str):
        print(f"error: {message} (see python -m minideit.plot --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m minideit.plot", description="Overlay the training curves of several runs.")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="training output folders (with log.jsonl)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the PNG to write (default: {DEFAULT_OUT})")
    return p


def run_names(runs: list[Path]) -> list[str]:
    """Legend names: the folder names, or the paths as given where two folders share a name."""
    names = [r.resolve().name for r in runs]
    return [str(r) if names.count(n) > 1 else n for r, n in zip(runs, names)]


def load_runs(runs: list[Path]) -> dict[str, list[dict]]:
    """{name: records}; a folder without a readable log is an error naming it."""
    loaded = {}
    for run, name in zip(runs, run_names(runs)):
        log = run / "log.jsonl"
        if not log.is_file():
            raise ValueError(f"{run} has no log.jsonl; pass training output folders (--output-dir of a run)")
        records = read_log(log)
        if not records:
            raise ValueError(f"{log} holds no epoch yet; wait for the run's first epoch to finish")
        loaded[name] = records
    return loaded


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a bad argument (2, its error line already printed)
        return int(e.code or 0)
    try:
        if args.out.suffix.lower() != ".png":
            raise ValueError(f"--out {args.out} should end in .png")
        if not args.out.parent.is_dir():
            raise ValueError(f"--out {args.out}: folder {args.out.parent} does not exist")
        runs = load_runs(args.runs)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    draw_curves(runs, args.out)
    print(f"wrote {args.out} ({', '.join(runs)})")
    return 0
