"""``python -m minideit.reproduce EXPERIMENT``: the paper's tables and figures in miniature, on data you have offline.

Each experiment (see :mod:`minideit.experiments`) trains small models on the synthetic data (or on CIFAR-10/100 with
``--data-set cifar10 --data-path DIR``) for every seed in ``--seeds`` and writes three files into ``--out``
(default ``book/results/``): ``EXPERIMENT.json`` (every number, per seed), ``EXPERIMENT.md`` (the tables as
mean ± std over seeds, and whether the paper's ordering shows up) and ``EXPERIMENT.png`` (the figure).

Every training run goes through :func:`minideit.train.run` and is cached under ``--cache`` (default
``runs/reproduce/``) by a hash of its configuration: a teacher is trained once per seed and reused by every
experiment that needs it, and the students that several experiments share (the undistilled and the hard-distilled
ones) are trained once. Run ``all`` to do everything (``FULL_MINUTES`` on a 2-core CPU with 3 seeds);
``--budget-minutes 60`` shortens every run so that the whole suite fits in an hour there.
``MINIDEIT_SMOKE=1`` shrinks every run to a few dozen images for one epoch, so that CI covers every experiment.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

from . import config as config_mod
from .config import PRESETS, TrainConfig
from .train import DEMO_TEACHER, run

EXPERIMENTS = ("distillation", "teachers", "agreement", "epochs", "ablation", "resolution", "transfer")
# What `all` at the settings of `Scale()` took with 3 seeds on this project's 2-core CPU, fresh cache (2026-11-28).
FULL_MINUTES = 75.0


# ----------------------------------------------------------------------------------------------------------------
# 1. How big each run is
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Scale:
    """Sizes of one run. The defaults are the demo's data and student settings (`python -m minideit.train`: 3,000
    noisy images, batch 64, a 12-epoch convnet teacher), with students trained 6 epochs instead of 10: `all` with
    3 seeds then takes ``FULL_MINUTES`` on a 2-core CPU (``--budget-minutes 60`` shortens it to an hour). The
    paper trains for 300 epochs on 1.28M images; these runs are ~10⁵ times smaller. Fewer images are not a cheaper option: with 2,000 the teacher reached 44%
    and the students stayed near chance (10–12%, one seed), so there would be nothing left to compare."""
    num_samples: int = 3000  # synthetic training images (the demo's)
    epochs: int = 6  # one student run; the transformer teacher of `teachers` trains twice as long
    teacher_epochs: int = 12  # the convnet teacher (the demo's length)
    finetune_epochs: int = 2  # the resolution fine-tunes (the paper: 30 epochs after 300)
    transfer_samples: int = 1000  # training images of the transfer target
    batch_size: int = 64  # the demo's: more steps per epoch than 128, which these short runs need


def scale_for(budget_minutes: float | None, num_seeds: int) -> Scale:
    """The full settings, or, given ``budget_minutes``, shrunk (never grown) so that ``num_seeds`` seeds of the
    whole suite fit in it on a CPU like ours. Training time is about proportional to the epochs, so the epochs
    shrink by the ratio of the budget to ``FULL_MINUTES``, rounded down so that the budget is not overrun."""
    if config_mod.smoke():
        return Scale(num_samples=64, epochs=1, teacher_epochs=1, finetune_epochs=1, transfer_samples=64,
                     batch_size=32)
    full = Scale()
    if budget_minutes is None:
        return full
    factor = min(1.0, budget_minutes / FULL_MINUTES * 3 / num_seeds)
    return dataclasses.replace(full, epochs=max(2, math.floor(full.epochs * factor)),
                               teacher_epochs=max(2, math.floor(full.teacher_epochs * factor)),
                               finetune_epochs=max(1, math.floor(full.finetune_epochs * factor)))


# ----------------------------------------------------------------------------------------------------------------
# 2. Cached training runs of one seed
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Run:
    name: str
    cfg: TrainConfig
    stats: dict  # the last epoch's figures, as train.run returns them
    weights: Path  # {'model': state_dict}, what --finetune and --teacher-path read
    seconds: float


class Lab:
    """All runs of one seed on one dataset. ``train(name, **overrides)`` trains the demo recipe (preset ``demo``:
    AdamW, no Mixup/RandAugment, which suits a few thousand images) with ``overrides`` once, and afterwards returns
    the cached result: the run directory is named after a hash of the configuration."""

    def __init__(self, root: Path, data_set: str, data_path: str, seed: int, scale: Scale, log=print,
                 tag: str = ""):
        self.root = Path(root)
        self.cache = self.root / (tag or data_set) / f"seed{seed}"
        self.data_set, self.data_path, self.seed, self.scale, self.log = data_set, data_path, seed, scale, log
        self.used: dict[str, float] = {}  # run folder → its training seconds, for every run asked for (cached too)

    def sibling(self, data_set: str, data_path: str, tag: str = "") -> "Lab":
        """The same seed and scale on another dataset (transfer's source or target)."""
        return Lab(self.root, data_set, data_path, self.seed, self.scale, self.log, tag)

    def config(self, **overrides) -> TrainConfig:
        s = self.scale
        cfg = TrainConfig(**PRESETS["demo"])
        epochs = overrides.get("epochs", s.epochs)
        cfg = dataclasses.replace(
            cfg, data_set=self.data_set, data_path=self.data_path, seed=self.seed, batch_size=s.batch_size,
            num_samples=s.num_samples if self.data_set == "synthetic" else 0, epochs=epochs,
            warmup_epochs=max(min(1, epochs - 1), epochs // 10),  # the demo's one epoch, a tenth of longer runs
            model="deit_nano_patch4_32", distillation_type="none", teacher_path="", num_workers=0,
            log_every=10 ** 6, resume="auto", eval_every=epochs)  # only the last epoch is reported
        return dataclasses.replace(cfg, **overrides)

    def train(self, name: str, **overrides) -> Run:
        cfg = self.config(**overrides)
        key = config_hash(cfg)
        found = sorted(self.cache.glob(f"*-{key}/result.json"))  # the same run, perhaps under another name
        folder = found[0].parent if found else self.cache / f"{name}-{key}"
        cfg.output_dir = str(folder)
        done = folder / "result.json"
        if done.is_file():
            saved = json.loads(done.read_text())
            self.used[folder.name] = saved["seconds"]
            return Run(name, cfg, saved["stats"], folder / "weights.pth", saved["seconds"])
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        # train.run prints a configuration line, progress bars and a line per epoch: keep them in the run folder.
        with open(folder / "train.log", "a") as logf, contextlib.redirect_stdout(logf), \
                contextlib.redirect_stderr(logf):
            stats = run(cfg)
        seconds = time.perf_counter() - t0
        if cfg.eval:  # evaluation only: the figures come back without the test_ prefix and there are no weights
            stats = {f"test_{k}": v for k, v in stats.items()}
        else:
            slim_checkpoint(folder)
        done.write_text(json.dumps({"stats": stats, "seconds": seconds, "config": config_mod.to_dict(cfg)},
                                   indent=1, default=str))
        self.log(f"  seed {self.seed} · {name}: top-1 {stats['test_acc1']:.1f}% ({seconds:.0f} s)")
        self.used[folder.name] = seconds
        return Run(name, cfg, stats, folder / "weights.pth", seconds)

    def teacher(self, epochs: int | None = None) -> Run:
        """The convnet teacher: regnety_002 (stem stride 1 at 32 px) with the demo's teacher settings."""
        return self.train(f"teacher-regnety_002-e{epochs or self.scale.teacher_epochs}", model="regnety_002",
                          **dict(DEMO_TEACHER, epochs=epochs or self.scale.teacher_epochs,
                                 warmup_epochs=min(1, (epochs or self.scale.teacher_epochs) - 1)))

    def student(self, name: str, model: str, distillation: str = "none", teacher: Run | None = None,
                **overrides) -> Run:
        if teacher is not None:
            overrides.update(teacher_model=teacher.cfg.model, teacher_path=str(teacher.weights))
        return self.train(name, model=model, distillation_type=distillation, **overrides)

    # The students that several experiments share: train them in one place so their settings cannot drift apart.
    def undistilled(self) -> Run:
        return self.student("deit-none", "deit_nano_patch4_32")

    def hard_distilled(self) -> Run:
        return self.student("deit-distilled-hard", "deit_nano_distilled_patch4_32", "hard", self.teacher())


def config_hash(cfg: TrainConfig) -> str:
    """8 hex digits of the configuration; paths of teachers/checkpoints count by their run folder's name."""
    d = config_mod.to_dict(cfg)
    for key in ("output_dir", "log_every", "resume", "num_workers", "device", "eval_every"):
        d.pop(key, None)
    for key in ("teacher_path", "finetune"):
        if d.get(key):
            d[key] = Path(d[key]).parent.name
    return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:8]


def slim_checkpoint(folder: Path) -> None:
    """Keep only the weights (a few MB); the optimiser state and the best-epoch copy are not needed again."""
    ckpt = torch.load(folder / "checkpoint.pth", map_location="cpu", weights_only=False)
    torch.save({"model": ckpt["model"]}, folder / "weights.pth")
    for name in ("checkpoint.pth", "best_checkpoint.pth"):
        (folder / name).unlink(missing_ok=True)


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
    """``result`` (from an experiment): title, paper, intro, tables {name: {row: {col: [per-seed values]}}},
    digits {table: n}, claims [{claim, holds, evidence, why}], notes [str], plot(fig, tables)."""
    out.mkdir(parents=True, exist_ok=True)
    name = result["name"]
    tables = {t: {r: {c: summarise(v) for c, v in cells.items()} for r, cells in rows.items()}
              for t, rows in result["tables"].items()}
    payload = {"experiment": name, "paper": result["paper"], "data_set": data_set, "seeds": seeds,
               "scale": dataclasses.asdict(scale), "smoke": config_mod.smoke(), "seconds": round(seconds, 1),
               "tables": tables, "claims": result["claims"]}
    (out / f"{name}.json").write_text(json.dumps(payload, indent=1) + "\n")

    md = [f"# {result['title']} ({result['paper']})", "", result["intro"], "",
          f"Data: {data_set}; seeds {', '.join(map(str, seeds))} (mean ± std over seeds); "
          f"{scale.num_samples if data_set == 'synthetic' else 'all'} training images, {scale.epochs} epoch"
          f"{'s' if scale.epochs != 1 else ''} per student; {seconds / 60:.1f} minutes of training on {device_name()} "
          "(its runs' own times, summed over runs and seeds). "
          f"Made by `python -m minideit.reproduce {name}`.", ""]
    for t, rows in tables.items():
        digits = result.get("digits", {})
        md += [f"## {t}", "", markdown_table(rows, digits, digits.get(t, 1)), ""]
    md += ["## Does the paper's ordering show up?", ""]
    for c in result["claims"]:
        verdict = {True: "**yes**", False: "**no**", None: "**undecided**"}[c["holds"]]
        md.append(f"- {c['claim']}: {verdict}. {c['evidence']}" + (f" {c['why']}" if c.get("why") else ""))
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
def train_seeds_in_parallel(labs: list[Lab], names: list[str], jobs: int) -> None:
    """Train every run of every seed into the cache, one process per seed (``jobs`` at a time).

    Why processes: a DeiT-nano on 32×32 images is too small for torch to keep many cores busy with one model
    (two threads train only ~1.5× faster than one), so on a machine with several cores per seed, one process per
    seed uses them better. On our 2-core CPU it measured about even with one seed after another (three teachers
    side by side took ~300 s each; one alone with two threads ~100 s). Seeds never share a run, so the processes
    cannot collide in the cache."""
    import concurrent.futures
    import multiprocessing
    import os
    threads = max(1, (os.cpu_count() or 1) // min(jobs, len(labs)))
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no copied torch thread pools
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
        futures = [pool.submit(train_one_seed, lab.root, lab.data_set, lab.data_path, lab.seed, lab.scale, names,
                               threads, config_mod.smoke()) for lab in labs]
        for future in futures:
            future.result()  # re-raises a worker's error here


def train_one_seed(root: Path, data_set: str, data_path: str, seed: int, scale: Scale, names: list[str],
                   threads: int, smoke: bool) -> None:
    """One worker of :func:`train_seeds_in_parallel`: runs the experiments on one seed for their side effect, the
    cached runs; the tables are made afterwards from the cache by the parent."""
    import os
    from . import experiments
    if smoke:
        os.environ["MINIDEIT_SMOKE"] = "1"
    torch.set_num_threads(threads)
    lab = Lab(root, data_set, data_path, seed, scale)
    for name in names:
        getattr(experiments, name)([lab])


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
    p.add_argument("--seeds", nargs="+", default=["0", "1", "2"], help="seeds to average over (default 0 1 2)")
    p.add_argument("--data-set", dest="data_set", default="synthetic", help="synthetic, cifar10 or cifar100")
    p.add_argument("--data-path", dest="data_path", default="", help="CIFAR folder (python/download_cifar.py)")
    p.add_argument("--out", default="book/results", help="where the JSON/Markdown/PNG go (default book/results)")
    p.add_argument("--cache", default="runs/reproduce", help="trained runs, reused across experiments")
    p.add_argument("--jobs", type=int, default=0,
                   help="seeds trained at the same time, each in its own process (default: one process per seed on "
                        "a CPU, 1 on a GPU)")
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


def check_args(args) -> list[str]:
    """Everything that can be wrong, found before any model is built; returns the experiments to run."""
    from .data.datasets import check_data_path
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
    from . import experiments
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        names = check_args(args)
        seeds = parse_seeds(args.seeds)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # The budget is for what was asked: one experiment alone may use about a seventh of the whole suite's time.
    scale = scale_for(None if args.budget is None else args.budget * len(EXPERIMENTS) / len(names), len(seeds))
    labs = [Lab(Path(args.cache), args.data_set, args.data_path, s, scale) for s in seeds]
    t_start = time.perf_counter()
    jobs = args.jobs or (1 if torch.cuda.is_available() else len(seeds))
    if jobs > 1 and len(seeds) > 1:
        train_seeds_in_parallel(labs, names, jobs)
    timings, used = {}, {}
    for name in names:
        print(f"{name}: {len(seeds)} seeds, {scale}", flush=True)
        for lab in labs:
            lab.used = {}
        result = getattr(experiments, name)(labs)  # after train_seeds_in_parallel every run comes from the cache
        runs = {(lab.seed, folder): sec for lab in labs for folder, sec in lab.used.items()}
        used.update(runs)
        timings[name] = sum(runs.values())  # each run's own training time, whether trained now or found cached
        write_outputs(Path(args.out), result, seeds, args.data_set, scale, timings[name])
        print(f"{name}: {timings[name] / 60:.1f} min of training → {Path(args.out) / name}.md", flush=True)
    wall = time.perf_counter() - t_start
    if len(names) > 1:
        lines = ["| experiment | minutes of training (its runs) |", "|---|---|"] + [
            f"| [{n}]({n}.md) | {t / 60:.1f} |" for n, t in timings.items()]
        (Path(args.out) / "README.md").write_text(
            f"# Results of `python -m minideit.reproduce {args.experiment}`\n\n" + "\n".join(lines) +
            f"\n\nAll {len(used)} runs together: {sum(used.values()) / 60:.1f} minutes of training on "
            f"{device_name()}, each run timed in its own process (a run that several experiments share counts "
            f"once here and in each of their rows). With `--jobs N`, N seeds train at the same time: on our 2-core "
            f"CPU a fresh `all` with 3 seeds side by side took {FULL_MINUTES:.0f} minutes of wall time. This "
            f"invocation took {wall / 60:.1f} minutes; runs found in the cache (`--cache`) are not trained again.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
