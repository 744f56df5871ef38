"""A training step alone and beside one busy process: ``python -m minideit.benchmark contention``.

On a small machine the cores are often shared: a second notebook kernel, the DataLoader's workers, a build. Torch's
defaults (one intra-op thread per core, OpenMP threads that spin while they wait) make a step collapse then, because
every parallel operation waits for its slowest thread and the thread that shares a core with the busy process is
slow (see minideit/threads.py). This command measures the demo teacher's step (``regnety_002``, stride-1 stem,
32 px, batch 64, AdamW) under several thread settings, each in a fresh process (OpenMP reads its wait policy only
as torch loads), first alone, then with one CPU-bound busy loop running beside it, and prints img/s and the ratio
contended / alone. The busy process is stopped before the command returns, whatever happens.

    python -m minideit.benchmark contention                  # torch's defaults vs minideit's default vs one core spare
    python -m minideit.benchmark contention --busy 2 --seconds 10 --json contention.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from minideit.threads import available_cpus, default_threads
from minideit.tools.bench.common import report

# The child imports torch first, so that what OpenMP sees is exactly the environment it was given (import
# minideit first and it would set OMP_WAIT_POLICY=PASSIVE for the "torch defaults" setting too).
CHILD = ("import torch, json, sys; from minideit.tools.bench.contention import child_main; "
         "print(json.dumps(child_main(json.loads(sys.argv[1]))))")
BUSY = "while True: pass"


def settings(cpus: int) -> list[dict]:
    """The thread settings compared: torch's defaults, minideit's default (the passive wait policy, every core the
    loader leaves), and one core left spare (``--threads`` one below that)."""
    return [
        {"name": "torch defaults", "threads": cpus, "wait_policy": None},
        {"name": "minideit default", "threads": default_threads(cpus, 0), "wait_policy": "PASSIVE"},
        {"name": "one core spare", "threads": max(1, cpus - 1), "wait_policy": "PASSIVE"},
    ]


def child_main(cfg: dict) -> dict:
    """In the child: time the teacher's training step for at least cfg['seconds']; returns img/s."""
    import torch

    from minideit.tools.bench.vs_timm import CASES, Case, build_ours, make_call
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    case = Case(**{**CASES["teacher-step"].__dict__, "batch_size": cfg["batch_size"]})
    step = make_call(build_ours(case), case, torch.device("cpu"))
    for _ in range(cfg["warmup"]):
        step()
    steps, start = 0, time.perf_counter()
    while steps < cfg["min_steps"] or time.perf_counter() - start < cfg["seconds"]:
        step()
        steps += 1
    elapsed = time.perf_counter() - start
    return {"img_per_s": steps * case.batch_size / elapsed, "steps": steps,
            "torch_threads": torch.get_num_threads()}


def run_child(setting: dict, args: argparse.Namespace) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if setting["wait_policy"]:
        env["OMP_WAIT_POLICY"] = setting["wait_policy"]
    cfg = {"threads": setting["threads"], "batch_size": args.batch_size, "seconds": args.seconds,
           "min_steps": args.steps, "warmup": args.warmup}
    try:
        proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], env=env, capture_output=True,
                              text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        raise ChildProcessError(f"a measurement took longer than {args.timeout:.0f} s; is the machine overloaded?")
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1:] or ["no message"]
        raise ChildProcessError(f"the measuring process failed: {last[0]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def start_busy(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", BUSY], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL) for _ in range(n)]


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


def run_contention(args: argparse.Namespace) -> dict:
    for flag in ("busy", "batch_size", "steps"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.seconds < 0 or args.warmup < 0:
        raise ValueError("--seconds and --warmup must be >= 0")
    cpus = available_cpus()
    rows = [dict(s) for s in settings(cpus)]
    load_before = list(os.getloadavg())
    for row in rows:
        row["alone_img_per_s"] = run_child(row, args)["img_per_s"]
        print(f"  {row['name']}, alone: {row['alone_img_per_s']:.1f} img/s", file=sys.stderr, flush=True)
    busy = start_busy(args.busy)
    try:
        time.sleep(0.5)  # let the busy loops reach their cores
        for row in rows:
            row["contended_img_per_s"] = run_child(row, args)["img_per_s"]
            print(f"  {row['name']}, beside {args.busy} busy: {row['contended_img_per_s']:.1f} img/s",
                  file=sys.stderr, flush=True)
    finally:
        stop(busy)
    for row in rows:
        row["contended_over_alone"] = row["contended_img_per_s"] / row["alone_img_per_s"]
    return {"command": "contention", "cpus": cpus, "busy_processes": args.busy, "batch_size": args.batch_size,
            "seconds": args.seconds, "load_average_before": load_before, "load_average_after": list(os.getloadavg()),
            "results": rows}


def print_contention_report(r: dict) -> None:
    print(f"regnety_002 (stride-1 stem) training step, 32 px, batch {r['batch_size']}, on {r['cpus']} cores; "
          f"alone, then beside {r['busy_processes']} busy process(es); load average "
          f"{r['load_average_before'][0]:.2f} before, {r['load_average_after'][0]:.2f} after")
    print(f"{'setting':<20}{'threads':>8}{'wait policy':>13}{'alone img/s':>13}{'contended':>11}{'ratio':>7}")
    for row in r["results"]:
        print(f"{row['name']:<20}{row['threads']:>8}{row['wait_policy'] or '(unset)':>13}"
              f"{row['alone_img_per_s']:>13.1f}{row['contended_img_per_s']:>11.1f}"
              f"{row['contended_over_alone']:>7.2f}")
    print("ratio = contended / alone: 1.00 means the busy process costs nothing, 0.50 means the step halves")


def add_contention_command(subparsers) -> None:
    p = subparsers.add_parser("contention", help="a training step alone and beside a busy process, per thread setting")
    p.add_argument("--busy", type=int, default=1, help="competing CPU-bound processes (default 1)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seconds", type=float, default=5.0, help="minimum timed seconds per measurement (default 5)")
    p.add_argument("--steps", type=int, default=3, help="minimum timed steps per measurement (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    p.add_argument("--timeout", type=float, default=600, help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.set_defaults(func=lambda args: report(run_contention(args), print_contention_report))
