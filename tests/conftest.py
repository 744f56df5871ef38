"""Shared test helpers: where the reference fixtures live, and small utilities."""
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# Official-format checkpoints (random weights) and the reference implementation's outputs, shipped with the
# repository so that every parity test runs on a user's clone and in CI (see tests/fixtures/README.md).
FIXTURES = Path(os.environ.get("MINIDEIT_FIXTURES", ROOT / "tests" / "fixtures"))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    # A missing fixture is a failure, not a skip: a skipped parity test would let CI pass without checking parity.
    assert (FIXTURES / "reference_outputs.pt").exists(), f"reference fixtures not found in {FIXTURES}"
    return FIXTURES


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # Two cores on CI; keep every test's own seed independent of the order tests run in.
    torch.manual_seed(0)
    yield


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def pytest_configure(config):
    # One marker per exercise id: `pytest -m patchify tests/test_exercises.py` runs that exercise's tests.
    from minideit.tools.exercises import EXERCISES
    for ex in EXERCISES.values():
        config.addinivalue_line("markers", f"{ex.id}: exercise of notebook {ex.notebook:02d}")
