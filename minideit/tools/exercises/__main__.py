"""``python -m minideit.exercises {list, init, check}``: the learner's command line (``check DIR capstone``: the
learner's pieces as one DeiT, see capstone.py).

Exit status: 0 when everything asked for passed, 1 when a check failed, 2 for bad input (a missing directory, an
unknown id), which is reported in one line.
"""
from __future__ import annotations

import argparse
import sys

from . import CHECKS, EXERCISES, get_exercise
from .checking import run_check
from .registry import NOTEBOOKS
from .workspace import WorkspaceError, check_workspace_dir, load_function, write_workspace


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of argparse's usage block
        print(f"error: {message} (see `python -m minideit.exercises --help`)", file=sys.stderr)
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m minideit.exercises", description="DeiT course exercises: list them, write a "
                "workspace of stubs, check a workspace.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    ls = sub.add_parser("list", help="every exercise with its id, notebook and task")
    ls.add_argument("--notebook", type=int, help="only this notebook's exercises")
    init = sub.add_parser("init", help="write a workspace: one file of stubs per notebook")
    init.add_argument("dir")
    init.add_argument("--force", action="store_true", help="overwrite existing exercise files")
    init.add_argument("--solved", action="store_true", help="fill in the reference solutions (an instructor's key)")
    chk = sub.add_parser("check", help="run the checks on a workspace (or on the package with --reference)")
    chk.add_argument("dir", nargs="?", help="the workspace directory")
    chk.add_argument("ids", nargs="*", metavar="ID", help="only these exercises (default: all); `capstone` "
                     "assembles your pieces into a DeiT-Ti that must match the reference logits and learn")
    chk.add_argument("--runs", help="where the demo's teacher is cached (default runs/demo)")
    chk.add_argument("--reference", action="store_true", help="check the package's own solutions")
    return p


def _list(notebook: int | None) -> int:
    for ex in EXERCISES.values():
        if notebook is None or ex.notebook == notebook:
            print(f"{ex.notebook:02d}  {ex.id:<22} {ex.task}")
    return 0


def _check(directory: str | None, ids: list[str], reference: bool, runs: str | None = None) -> int:
    if reference and directory is not None:
        ids, directory = [directory] + ids, None  # `check --reference ID ...`: the first ID landed in dir
    if not reference and directory is None:
        raise ValueError("give the workspace directory to check, or --reference for the package's solutions")
    if "capstone" in ids:
        if reference or ids != ["capstone"]:
            raise ValueError("the capstone runs alone, on a workspace: `check DIR capstone` (write the key with "
                             "`init DIR --solved` to see it pass)")
        check_workspace_dir(directory)
        from .capstone import run_capstone  # imported here: it pulls in the trainer, which `list` never needs
        return 0 if run_capstone(directory, runs) else 1
    chosen = [get_exercise(i) for i in ids] if ids else list(EXERCISES.values())
    if not reference:
        check_workspace_dir(directory)
    failed, cache = 0, {}
    for ex in chosen:
        try:
            fn = ex.reference() if reference else load_function(directory, ex, cache)
            ok, message = run_check(CHECKS[ex.id], fn)
        except WorkspaceError as e:
            ok, message = False, str(e)
        failed += not ok
        print(f"PASS {ex.id}" if ok else f"FAIL {ex.id} (notebook {ex.notebook:02d}): {message}")
    print(f"{len(chosen) - failed} of {len(chosen)} passed")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            if args.notebook is not None and args.notebook not in NOTEBOOKS:
                raise ValueError(f"there is no notebook {args.notebook}; notebooks are 0 to {max(NOTEBOOKS)}")
            return _list(args.notebook)
        if args.command == "init":
            paths = write_workspace(args.dir, force=args.force, solved=args.solved)
            what = "reference solutions of" if args.solved else ""
            print(f"wrote {len(paths)} files with the {what}{' ' if what else ''}{len(EXERCISES)} exercises to "
                  f"{args.dir}; check them with `python -m minideit.exercises check {args.dir}`, and the whole "
                  f"model with `python -m minideit.exercises check {args.dir} capstone`")
            return 0
        return _check(args.dir, args.ids, args.reference, args.runs)
    except ValueError as e:  # WorkspaceError included: bad input, one line
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
