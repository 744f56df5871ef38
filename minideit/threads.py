"""CPU threads: defaults that degrade gracefully when the cores are shared.

PyTorch runs each large operation (a matrix product, a convolution) on a pool of OpenMP threads, one per core by
default, and every thread must finish its share before the operation returns. When another busy process (a second
notebook kernel, a DataLoader worker, a compile job) holds one of the cores, the thread that shares it runs at
half speed or waits to be scheduled, and the whole operation waits for it. Two settings keep that from turning into
a collapse (measured on 2 cores with one busy process beside a regnety_002 step at 32 px: 20 img/s with torch's
defaults, 442 img/s with one thread; ``python -m minideit.benchmark contention`` re-runs it):

- ``OMP_WAIT_POLICY=PASSIVE``: an idle OpenMP thread sleeps instead of spinning on its core waiting for the next
  operation, so it does not steal the time that the loader's workers or the other process need. OpenMP reads this
  variable once, when torch is first imported; :func:`set_wait_policy_default` (called by ``import minideit``)
  therefore only helps when minideit is imported before torch, and never overrides a value the user set.
- :func:`default_threads`: as many intra-op threads as there are cores left after the loader's workers, so that
  workers and the training step do not fight over cores. Leaving one more core free would protect the step further
  from a competing program, but costs a learner on a quiet 2-core laptop half its speed (the demo took about twice
  as long with one thread), so it is a choice (``--threads``), not the default.

This module imports nothing heavy at the top: ``minideit/__init__.py`` calls it before torch is loaded.
"""
from __future__ import annotations

import os
import sys
from typing import MutableMapping

WAIT_POLICY = "PASSIVE"


def set_wait_policy_default(environ: MutableMapping[str, str] | None = None,
                            torch_loaded: bool | None = None) -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user already chose a value. Returns whether it takes effect.

    It takes effect only if torch (and with it the OpenMP runtime, which reads the variable as it loads) was not
    imported yet: in a notebook whose first cell imports torch, set the variable in the shell that starts Jupyter
    (``OMP_WAIT_POLICY=PASSIVE jupyter lab``) or import minideit first.
    """
    environ = os.environ if environ is None else environ
    if torch_loaded is None:
        torch_loaded = "torch" in sys.modules
    if "OMP_WAIT_POLICY" in environ:
        return False  # the user's choice stands, whatever it is
    environ["OMP_WAIT_POLICY"] = WAIT_POLICY
    return not torch_loaded


def available_cpus() -> int:
    """Cores this process may run on (its affinity mask where the OS has one, e.g. under taskset or SLURM)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_threads(cpus: int, num_workers: int = 0) -> int:
    """Intra-op threads for the training process: the cores the loader's workers leave (at least one).

    Each worker augments on a core of its own. 2 cores, 0 workers → 2; 16 cores, 10 workers → 6; never fewer than 1.
    """
    if cpus < 1 or num_workers < 0:
        raise ValueError(f"need cpus >= 1 and num_workers >= 0, got cpus={cpus}, num_workers={num_workers}")
    return max(1, cpus - num_workers)


def choose_threads(threads: int | None = None, num_workers: int = 0) -> int:
    """The intra-op thread count :func:`set_threads` sets: ``threads`` if given (the ``--threads`` flag), else an
    explicit ``OMP_NUM_THREADS`` in the environment (the user's choice too), else :func:`default_threads`."""
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    if threads is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        threads = int(os.environ["OMP_NUM_THREADS"])
    if threads is None:
        threads = default_threads(available_cpus(), num_workers)
    return threads


def set_threads(threads: int | None = None, num_workers: int = 0) -> int:
    """Set torch's intra-op threads to :func:`choose_threads`' count. Returns the number set."""
    threads = choose_threads(threads, num_workers)
    import torch  # here, not at the top: minideit/__init__.py imports this module before torch is loaded
    torch.set_num_threads(threads)
    return threads
