"""``python -m minideit.reproduce EXPERIMENT``: the paper's tables and figures in miniature, on data you have offline.

Each experiment (``distillation.py``: Tables 2–4 and Figure 3; ``recipe.py``: Tables 8, 10 and 7) trains small models
on the synthetic data (or on CIFAR-10/100 with ``--data-set cifar10 --data-path DIR``) for every seed in ``--seeds``
and writes three files into ``--out`` (default ``book/results/``): ``EXPERIMENT.json`` (every number, per seed),
``EXPERIMENT.md`` (the tables as mean ± std over seeds, and whether the paper's ordering shows up) and
``EXPERIMENT.png`` (the figure). The runs are cached (``lab.py``). Run ``all`` to do everything (``FULL_MINUTES`` on a
2-core CPU with 3 seeds); ``--budget-minutes 60`` shortens every run so that the whole suite fits in an hour there.
``MINIDEIT_SMOKE=1`` shrinks every run to a few dozen images for one epoch, so that CI covers every experiment.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from minideit import config as config_mod
from minideit.models import DEIT_CONFIGS
from minideit.tools.reproduce import distillation, recipe
from minideit.tools.reproduce.lab import (EXPERIMENTS, FULL_MINUTES, Lab, Scale, budget_fraction,
                                          predicted_minutes, scale_for)

# Each experiment takes one Lab per seed and returns its tables, claims and a plot function (see write_outputs).
RUNNERS = {"distillation": distillation.distillation, "teachers": distillation.teachers,
           "agreement": distillation.agreement, "epochs": distillation.epochs, "ablation": recipe.ablation,
           "resolution": recipe.resolution, "transfer": recipe.transfer}

# ----------------------------------------------------------------------------------------------------------------
# 3. Results: per-seed values → mean ± std tables, claims, files
# ----------------------------------------------------------------------------------------------------------------
def summarise(values: list[float]) -> dict:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": round(mean, 4), "std": round(std, 4), "values": [round(v, 4) for v in values]}


def fmt(s: dict | None, digits: int = 1) -> str:
    if s is None:
        return "–"
    if len(set(s["values"])) == 1:  # one value (a paper figure) or a setting that is the same for every seed
        return f"{s['mean']:.{digits}f}"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def markdown_table(table: dict, digits: dict, default: int) -> str:
    """Rows × columns of mean ± std; ``digits`` may name a column to print it with other precision."""
    columns = list(dict.fromkeys(c for row in table.values() for c in row))
    columns.sort(key=lambda c: c.startswith("paper"))  # the paper's figures last, next to ours
    lines = ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row, cells in table.items():
        lines.append(f"| {row} | " + " | ".join(fmt(cells.get(c), digits.get(c, default)) for c in columns) + " |")
    return "\n".join(lines)


def write_outputs(out: Path, result: dict, seeds: list[int], data_set: str, scale: Scale, seconds: float) -> None:
    """``result`` (from an experiment): title, paper, intro, sizes (optional: its own runs' sizes, when they are not
    the scale's), tables {name: {row: {col: [per-seed values]}}},
    digits {table: n}, claims [{claim, holds, evidence, why}], notes [str], plot(fig, tables)."""
    out.mkdir(parents=True, exist_ok=True)
    name = result["name"]
    tables = {t: {r: {c: summarise(v) for c, v in cells.items()} for r, cells in rows.items()}
              for t, rows in result["tables"].items()}
    payload = {"experiment": name, "paper": result["paper"], "data_set": data_set, "seeds": seeds,
               "scale": dataclasses.asdict(scale), "smoke": config_mod.smoke(), "seconds": round(seconds, 1),
               "tables": tables, "claims": result["claims"]}
    (out / f"{name}.json").write_text(json.dumps(payload, indent=1) + "\n")

    sizes = result.get("sizes") or (f"{scale.num_samples if data_set == 'synthetic' else 'all'} training images, "
                                    f"{scale.epochs} epoch{'s' if scale.epochs != 1 else ''} per student")
    md = [f"# {result['title']} ({result['paper']})", "", result["intro"], "",
          f"Data: {data_set}; seeds {', '.join(map(str, seeds))} (mean ± std over seeds); "
          f"{sizes}; {seconds / 60:.1f} minutes of training on {device_name()} "
          "(its runs' own times, summed over runs and seeds). "
          f"Made by `python -m minideit.reproduce {name}`.", ""]
    for t, rows in tables.items():
        digits = result.get("digits", {})
        md += [f"## {t}", "", markdown_table(rows, digits, digits.get(t, 1)), ""]
    md += ["## Does the paper's ordering show up?", ""]
    md += ["Each verdict compares the means over the seeds: **yes** when the gap points the paper's way by more than "
           "twice its standard error √(s₁²/n + s₂²/n), **same within error** for a claim the paper makes with a "
           "gap of a few tenths, **not shown** when the gap is inside 2·SE, **no** when it is reversed beyond it "
           "([PROTOCOL.md](PROTOCOL.md)).", ""]
    for c in result["claims"]:
        md.append(f"- {c['claim']}: **{c['verdict']}**. {c['evidence']}" + (f" {c['why']}" if c.get("why") else ""))
    md += [""] + [f"{n}" for n in result.get("notes", [])]
    (out / f"{name}.md").write_text("\n".join(md).rstrip() + "\n")

    import matplotlib
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=result.get("figsize", (6.4, 4.0)))
    result["plot"](fig, tables)
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=110)
    plt.close(fig)


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    import os
    return f"a {os.cpu_count()}-core CPU"


# ----------------------------------------------------------------------------------------------------------------
# 4. Seeds side by side
# ----------------------------------------------------------------------------------------------------------------
def train_shared_runs(lab: Lab, names: list[str]) -> None:
    """Train the teachers that every seed distils from (``Lab.teachers_lab``) in this process, with all its cores,
    before the seeds start side by side: otherwise each seed's process would train the same teacher into the same
    folder at the same time."""
    if any(name not in ("ablation", "resolution", "transfer") for name in names):  # these distil from the teacher
        lab.teacher()
    if "transfer" in names:  # its distilled source is trained on the synthetic images, whatever --data-set says
        (lab if lab.data_set == "synthetic" else lab.sibling("synthetic", "")).teacher()
    if "teachers" in names:
        distillation.teacher_runs(lab)


def train_seeds_in_parallel(labs: list[Lab], names: list[str], jobs: int) -> None:
    """Train every run of every seed into the cache, one process per seed (``jobs`` at a time).

    Why processes: a DeiT-nano on 32×32 images is too small for torch to keep many cores busy with one model
    (two threads train only ~1.5× faster than one), so on a machine with several cores per seed, one process per
    seed uses them better. On our 2-core CPU it measured about even with one seed after another (three teachers
    side by side took ~300 s each; one alone with two threads ~100 s). The only runs seeds share, the teachers,
    are trained before (``train_shared_runs``), so the processes cannot collide in the cache."""
    import concurrent.futures
    import multiprocessing
    import os
    threads = max(1, (os.cpu_count() or 1) // min(jobs, len(labs)))
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no copied torch thread pools
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
        futures = [pool.submit(train_one_seed, lab.root, lab.data_set, lab.data_path, lab.seed, lab.scale, names,
                               threads, config_mod.smoke(), os.getpid()) for lab in labs]
        for future in futures:
            future.result()  # re-raises a worker's error here


def train_one_seed(root: Path, data_set: str, data_path: str, seed: int, scale: Scale, names: list[str],
                   threads: int, smoke: bool, parent: int) -> None:
    """One worker of :func:`train_seeds_in_parallel`: runs the experiments on one seed for their side effect, the
    cached runs; the tables are made afterwards from the cache by the parent."""
    import os
    exit_with(parent)
    if smoke:
        os.environ["MINIDEIT_SMOKE"] = "1"
    os.environ["OMP_NUM_THREADS"] = str(threads)  # the trainer's set_threads honours it (minideit/threads.py)
    lab = Lab(root, data_set, data_path, seed, scale)
    for name in names:
        RUNNERS[name]([lab])


def exit_with(parent: int, every_s: float = 1.0) -> None:
    """End this worker as soon as ``parent`` is gone. A pool's workers outlive a parent that was killed (``kill``,
    a closed SSH session): each would go on training its seed for up to an hour, unseen, and a second
    ``reproduce`` started meanwhile would train the same runs into the same cache folders beside it. (Ctrl-C is
    not the case: it reaches the whole process group.) The check is a daemon thread polling ``os.getppid()``,
    which changes when the parent dies, because Linux has no portable "die with my parent" call in Python."""
    import os
    import threading

    def watch():
        while os.getppid() == parent:
            time.sleep(every_s)
        os._exit(3)  # no clean-up needed: an unfinished run has no result.json and resumes from its checkpoint

    threading.Thread(target=watch, daemon=True).start()


# ----------------------------------------------------------------------------------------------------------------
# 5. Command line
# ----------------------------------------------------------------------------------------------------------------
class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr and exit status 2 (no usage block)."""

    def error(self, message: str):
        print(f"error: {message} (see python -m minideit.reproduce --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m minideit.reproduce",
                      description="Reproduce the shape of the paper's tables on small data; writes JSON, Markdown "
                                  "and PNG per experiment.")
    p.add_argument("experiment", help="one of: " + ", ".join(EXPERIMENTS + ("all",)))
    p.add_argument("--seeds", nargs="+", default=["9", "10", "11"],
                   help="seeds to average over (default 9 10 11, the book's final seeds: book/results/PROTOCOL.md)")
    p.add_argument("--data-set", dest="data_set", default="synthetic", help="synthetic, cifar10 or cifar100")
    p.add_argument("--data-path", dest="data_path", default="", help="CIFAR folder (python/download_cifar.py)")
    p.add_argument("--out", default="book/results", help="where the JSON/Markdown/PNG go (default book/results)")
    p.add_argument("--cache", default="runs/reproduce", help="trained runs, reused across experiments")
    p.add_argument("--jobs", type=int, default=0,
                   help="seeds trained at the same time, each in its own process (default: one process per seed on "
                        "a CPU, 1 on a GPU)")
    p.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                   help="change the run sizes of Scale (minideit/tools/reproduce/lab.py), e.g. --set num_samples=512 "
                        "epochs=80 batch_size=32 lr=3e-4: how development runs try a regime (book/results/"
                        "PROTOCOL.md); the runs are cached under their own settings")
    p.add_argument("--budget-minutes", dest="budget", type=float, default=None,
                   help="shorten training so the requested experiments fit in this many minutes (default: the "
                        f"full settings, which took {FULL_MINUTES:.0f} minutes for all with 3 seeds on 2 cores)")
    return p


def parse_seeds(raw: list[str]) -> list[int]:
    try:
        seeds = [int(s) for s in raw]
    except ValueError:
        raise ValueError(f"--seeds takes non-negative integers such as 0 1 2, got {' '.join(raw)}") from None
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must be distinct non-negative integers such as 0 1 2, got {' '.join(raw)}")
    return seeds


def parse_scale(pairs: list[str]) -> Scale:
    """``["epochs=80", "lr=3e-4"]`` → ``Scale()`` with those fields changed; every number must be positive (a data
    seed and the teachers' regularisers may be 0), and the style one of the synthetic STYLES."""
    fields = {f.name: f.type for f in dataclasses.fields(Scale)}
    changes = {}
    for pair in pairs:
        name, _, raw = pair.partition("=")
        if name not in fields:
            raise ValueError(f"--set {pair}: {name!r} is not a Scale field; choose from {', '.join(fields)}")
        if fields[name] in (str, "str"):  # the text fields: styles of the synthetic images
            from minideit.data.synthetic import STYLES
            if raw not in STYLES:
                raise ValueError(f"--set {pair}: {name} is one of {', '.join(STYLES)}")
            changes[name] = raw
            continue
        kind = int if fields[name] in (int, "int") else float
        try:
            value = kind(raw)
        except ValueError:
            raise ValueError(f"--set {pair}: {name} takes {'an integer' if kind is int else 'a number'}, "
                             f"got {raw!r}") from None
        if name == "data_seed":  # a seed may be 0
            if value < 0:
                raise ValueError(f"--set {pair}: data_seed must be 0 or more")
        elif name in ("teacher_mixup", "teacher_cutmix", "teacher_smoothing"):  # 0 turns the regulariser off
            top = 1.0 if name == "teacher_smoothing" else math.inf  # smoothing 1 would leave no label at all
            if not (math.isfinite(value) and 0 <= value < top):
                raise ValueError(f"--set {pair}: {name} must be 0 or more" + (" and below 1" if top == 1 else ""))
        elif not (math.isfinite(value) and value > 0):
            raise ValueError(f"--set {pair}: {name} must be positive")
        if name == "patch_size" and f"deit_nano_patch{value}_32" not in DEIT_CONFIGS:
            sizes = sorted(int(n[len("deit_nano_patch"):-3]) for n in DEIT_CONFIGS if n.startswith("deit_nano_patch"))
            raise ValueError(f"--set {pair}: DeiT-nano comes with patch_size {' or '.join(map(str, sizes))} "
                             "(minideit/models.py)")
        changes[name] = value
    return dataclasses.replace(Scale(), **changes)


def check_args(args) -> list[str]:
    """Everything that can be wrong, found before any model is built; returns the experiments to run."""
    from minideit.data.datasets import check_data_path
    if args.experiment not in EXPERIMENTS + ("all",):
        raise ValueError(f"unknown experiment {args.experiment!r}; choose one of: "
                         f"{', '.join(EXPERIMENTS + ('all',))}")
    if args.data_set not in ("synthetic", "cifar10", "cifar100"):
        raise ValueError(f"--data-set must be synthetic, cifar10 or cifar100, got {args.data_set!r}")
    check_data_path(args.data_set, args.data_path)
    if args.jobs < 0:
        raise ValueError(f"--jobs must be 0 (automatic) or a positive number of processes, got {args.jobs}")
    if args.budget is not None and (not math.isfinite(args.budget) or args.budget <= 0):
        raise ValueError(f"--budget-minutes must be a positive number of minutes, got {args.budget}")
    return list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        names = check_args(args)
        seeds = parse_seeds(args.seeds)
        base = parse_scale(args.set)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # The budget is for what was asked: one experiment alone may use about a seventh of the whole suite's time.
    suite_budget = None if args.budget is None else args.budget * len(EXPERIMENTS) / len(names)
    scale = scale_for(suite_budget, len(seeds), base)
    if suite_budget is not None:
        print(budget_line(args.budget, suite_budget, len(seeds), len(names), scale), flush=True)
    labs = [Lab(Path(args.cache), args.data_set, args.data_path, s, scale) for s in seeds]
    t_start = time.perf_counter()
    jobs = args.jobs or (1 if torch.cuda.is_available() else len(seeds))
    if jobs > 1 and len(seeds) > 1:
        train_shared_runs(labs[0], names)
        train_seeds_in_parallel(labs, names, jobs)
    timings, used, verdicts = {}, {}, {}
    for name in names:
        print(f"{name}: {len(seeds)} seeds, {scale}", flush=True)
        for lab in labs:
            lab.used = {}
        result = RUNNERS[name](labs)  # after train_seeds_in_parallel every run comes from the cache
        runs = {folder: sec for lab in labs for folder, sec in lab.used.items()}  # a shared teacher counts once
        used.update(runs)
        timings[name] = sum(runs.values())  # each run's own training time, whether trained now or found cached
        verdicts[name] = [c["verdict"] for c in result["claims"]]
        write_outputs(Path(args.out), result, seeds, args.data_set, scale, timings[name])
        print(f"{name}: {timings[name] / 60:.1f} min of training → {Path(args.out) / name}.md", flush=True)
    wall = time.perf_counter() - t_start
    if len(names) > 1:
        command = args.experiment + ("" if args.budget is None else f" --budget-minutes {args.budget:g}")
        write_readme(Path(args.out), command, seeds, timings, verdicts, used, wall)
    return 0


def budget_line(budget: float, suite_budget: float, num_seeds: int, num_names: int, scale: Scale) -> str:
    """What --budget-minutes did to the runs, and the minutes that predicts; where the budget is below what the
    fixed costs alone take, it says so (the runs are then as short as they go, and take longer than asked)."""
    fraction = budget_fraction(suite_budget, num_seeds)
    share = num_names / len(EXPERIMENTS)
    lengths = (f"students {scale.epochs} epochs, teachers {scale.teacher_epochs}, Table 8 {scale.ablation_epochs}, "
               f"fine-tunes {scale.finetune_epochs}")
    if fraction == 0:
        floor = predicted_minutes(0, num_seeds) * share
        return (f"note: --budget-minutes {budget:g} is below the ~{floor:.0f} minutes this takes before any "
                f"training (building data, scoring validation images, starting processes) with {num_seeds} seeds on "
                f"a 2-core CPU; running the shortest settings ({lengths}).")
    return (f"--budget-minutes {budget:g}: every run's epochs cut to {fraction:.2f} of the full settings ({lengths}); "
            f"predicted ~{predicted_minutes(fraction, num_seeds) * share:.0f} minutes on a 2-core CPU.")


def agreeing(verdicts: list[str]) -> int:
    return sum(v in ("yes", "same within error") for v in verdicts)


def write_readme(out: Path, experiment: str, seeds: list[int], timings: dict, verdicts: dict, used: dict,
                 wall: float) -> None:
    """The index of the results: per experiment its training minutes and how many of the paper's orderings
    agree; the protocol the verdicts follow is PROTOCOL.md, written by hand before the final run."""
    total = sum(len(v) for v in verdicts.values())
    lines = ["| experiment | minutes of training (its runs) | orderings that agree with the paper |", "|---|---|---|"]
    lines += [f"| [{n}]({n}.md) | {t / 60:.1f} | {agreeing(verdicts[n])} of {len(verdicts[n])} "
              f"({', '.join(verdicts[n])}) |" for n, t in timings.items()]
    (out / "README.md").write_text(
        f"# Results of `python -m minideit.reproduce {experiment}`\n\n"
        f"Seeds {', '.join(map(str, seeds))}. **{sum(agreeing(v) for v in verdicts.values())} of {total}** of the "
        f"paper's orderings agree (verdict **yes**, or **same within error** where the paper's own gap is a few "
        f"tenths). How the verdicts are made, which seeds chose the settings and which were kept for these tables: "
        f"[PROTOCOL.md](PROTOCOL.md).\n\n" + "\n".join(lines) +
        f"\n\nAll {len(used)} runs together: {sum(used.values()) / 60:.1f} minutes of training on "
        f"{device_name()}, each run timed in its own process (a run that several experiments share counts "
        f"once here and in each of their rows). This invocation took {wall / 60:.1f} minutes of wall time "
        f"(runs found in the cache, `--cache`, are not trained again; with `--jobs N`, N seeds train side by "
        f"side).\n")


if __name__ == "__main__":
    sys.exit(main())

