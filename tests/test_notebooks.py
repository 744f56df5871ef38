"""Every notebook executes from top to bottom in smoke mode (MINIDEIT_SMOKE=1) with a solved workspace selected, and
says that the learner's code ran; none is stored with outputs."""
import json
import os
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no .ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path):
    cells = json.loads(path.read_text())["cells"]
    dirty = [i for i, c in enumerate(cells) if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{path.name}: cells {dirty} have stored outputs; clear them before committing"


@pytest.fixture(scope="module")
def solved_workspace(tmp_path_factory) -> Path:
    from minideit.tools.exercises import write_workspace
    directory = tmp_path_factory.mktemp("key")
    write_workspace(directory, solved=True)
    return directory


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_mode(path, monkeypatch, solved_workspace):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("MINIDEIT_SMOKE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("MINIDEIT_WORKSPACE", str(solved_workspace))  # the learner has solved every exercise
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    text = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    lines = text.splitlines()
    # The learner's versions were chosen (never the package's) and actually ran.
    assert any(line.startswith(f"your code from {solved_workspace}") for line in lines), text[-2000:]
    assert not [line for line in lines if line.startswith(("reference ", "reference code"))], text[-2000:]
    ran = [line for line in lines if line.startswith("your code ran: ")]
    assert ran, f"{path.name} does not report which of the learner's functions ran"
    if path.stem.startswith("12"):
        assert any(line.startswith("PASS capstone") for line in lines), text[-2000:]
