"""The tools every check is made of, ARENA style: call the learner's function, compare with the reference, and say
exactly what differs (which input, expected against got, shape, first wrong element) in one AssertionError.

A check is ``check_<id>(fn)``: it raises AssertionError with that message or returns quietly. ``run_check`` runs
one with the random states saved and restored, so checking never changes a notebook's random streams.
"""
from __future__ import annotations

import math
import numbers
import random
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .learner import reference_code

_LIBRARY_DIRS = tuple(str(Path(m.__file__).parent) for m in (torch, np))


def _where(error: BaseException) -> str:
    """' (at file.py:line)' for the deepest frame of the traceback that is neither torch's nor numpy's."""
    frames = [f for f in traceback.extract_tb(error.__traceback__)[1:] if not f.filename.startswith(_LIBRARY_DIRS)]
    if not frames or frames[-1].filename == __file__:
        return ""
    return f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})"


def call(fn: Callable, label: str, *args, **kwargs):
    """fn(*args, **kwargs), with any exception it raises turned into one AssertionError naming the call."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError as e:
        raise AssertionError(f"{label} raised NotImplementedError: {e}") from None
    except Exception as e:
        raise AssertionError(f"{label} raised {type(e).__name__}: {e}{_where(e)}") from None


def describe(x: Any) -> str:
    """A short description of a value for messages: tensors by shape, short values by repr."""
    if isinstance(x, torch.Tensor):
        return f"tensor {tuple(x.shape)}" if x.numel() > 6 else f"tensor({x.tolist()})"
    text = repr(x)
    return text if len(text) <= 60 else text[:57] + "..."


def _tensor_diff(got: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> str | None:
    if got.shape != expected.shape:
        return f"expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
    if expected.is_floating_point() and not (got.is_floating_point() or got.is_complex()):
        return f"expected a floating-point tensor ({expected.dtype}), got {got.dtype}"
    if expected.dtype == torch.bool and got.dtype != torch.bool:
        return f"expected a bool tensor, got {got.dtype}"
    g, e = got.detach().double().cpu(), expected.detach().double().cpu()
    bad = ~torch.isclose(g, e, rtol=rtol, atol=atol, equal_nan=True)
    if not bad.any():
        return None
    if e.numel() == 1:
        return f"expected {e.item():.6g}, got {g.item():.6g}"
    first = tuple(int(i) for i in bad.nonzero()[0])
    at = f" at index {list(first)}" if first else ""
    finite = torch.isfinite(g) & torch.isfinite(e)
    worst = (g - e).abs()[finite].max().item() if finite.any() else float("nan")
    return (f"values differ{at}: expected {e[first].item():.6g}, got {g[first].item():.6g} "
            f"({int(bad.sum())} of {bad.numel()} values wrong, largest difference {worst:.3g})")


def difference(got: Any, expected: Any, atol: float = 1e-5, rtol: float = 1e-4) -> str | None:
    """None if ``got`` matches ``expected``, else what differs (one phrase). Tuples/lists compare elementwise."""
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"expected a tensor {tuple(expected.shape)}, got {type(got).__name__} {describe(got)}"
        return _tensor_diff(got, expected, atol, rtol)
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)):
            return f"expected a {type(expected).__name__} of {len(expected)}, got {type(got).__name__} {describe(got)}"
        if len(got) != len(expected):
            return f"expected {len(expected)} elements, got {len(got)}"
        for i, (g, e) in enumerate(zip(got, expected)):
            d = difference(g, e, atol, rtol)
            if d is not None:
                return f"element [{i}]: {d}"
        return None
    if expected is None or isinstance(expected, bool):
        return None if got is expected or (isinstance(got, (bool, np.bool_)) and bool(got) == expected) \
            else f"expected {expected!r}, got {describe(got)}"
    if isinstance(expected, numbers.Integral):
        if isinstance(got, bool) or not isinstance(got, numbers.Integral):
            return f"expected the int {expected}, got {type(got).__name__} {describe(got)}"
        return None if got == expected else f"expected {expected}, got {got}"
    if isinstance(expected, numbers.Real):
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if not isinstance(got, numbers.Real):
            return f"expected a number, got {type(got).__name__} {describe(got)}"
        return None if math.isclose(got, expected, rel_tol=rtol, abs_tol=atol) \
            else f"expected {expected:.8g}, got {got:.8g}"
    return None if got == expected else f"expected {describe(expected)}, got {describe(got)}"


def compare(got: Any, expected: Any, label: str, atol: float = 1e-5, rtol: float = 1e-4,
            mistakes: list[tuple[Any, str]] = ()) -> None:
    """AssertionError '<label>: <what differs>[ - <hint>]' unless got matches expected.

    ``mistakes`` pairs the output of a known wrong solution with a hint: if the learner's output matches one of
    them, the hint says which mistake it looks like.
    """
    diff = difference(got, expected, atol, rtol)
    if diff is None:
        return
    hint = next((text for wrong, text in mistakes if difference(got, wrong, atol, rtol) is None), None)
    raise AssertionError(f"{label}: {diff}" + (f" - {hint}" if hint else ""))


def expect(condition: bool, message: str) -> None:
    """A plain assertion whose message is the whole explanation (also under ``python -O``)."""
    if not condition:
        raise AssertionError(message)


def seeded(fn: Callable, seed: int, *args, **kwargs):
    """Call fn with Python's ``random`` and torch's global generator both seeded (for sampling functions)."""
    random.seed(seed)
    torch.manual_seed(seed)
    return fn(*args, **kwargs)


def run_check(check_fn: Callable, fn: Callable) -> tuple[bool, str]:
    """Run one check: (True, "") or (False, message). The random states of random, numpy and torch are restored,
    and the package's own code is in place during the check (whatever learner code is installed): a piece is
    checked alone, against the reference."""
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]), reference_code():
            check_fn(fn)
        return True, ""
    except AssertionError as e:
        return False, str(e)
    except Exception as e:  # the output was so unexpected that the check itself tripped over it
        return False, f"{type(e).__name__} while checking the output: {e}{_where(e)}"
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
