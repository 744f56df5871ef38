"""Every notebook executes from top to bottom in smoke mode (MINIDEIT_SMOKE=1) with a solved workspace selected,
says that the learner's code ran, and does not flood its cells with logs; none is stored with outputs.

A training cell should show a short summary, not the trainer's console output: no one-line configuration dump
(`configuration: {...}`, which belongs in the run's config.json) and no more than a handful of text progress-bar
lines (tqdm writes one per update; a notebook shows one bar per epoch as a widget, or none).
"""
import json
import os
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
MAX_BAR_LINES = 5  # per cell: a handful; the 384 of notebook 01's export were one per tqdm update
PROGRESS_BAR = re.compile(r"\d+%\|[^|]*\|")  # tqdm's text bar: "epoch 1/8:  50%|█████     | 1/2 [00:02<...]"


def output_text(output: dict) -> str:
    """What an output shows as text: a stream's text, or a result's text/plain. A widget (tqdm's notebook bar) is
    one live bar that its frontend draws and removes, not a line of text, so it shows none."""
    data = output.get("data", {})
    if output.get("output_type") == "stream":
        text = output.get("text", "")
    elif "application/vnd.jupyter.widget-view+json" in data:
        text = ""
    else:
        text = data.get("text/plain", "")
    return "".join(text) if isinstance(text, list) else text


def stray_output(notebook: dict) -> list[str]:
    """Cells of an executed notebook that dump the configuration or print more than MAX_BAR_LINES text progress
    bars, one message per cell. A line is what a carriage return or a newline ends, as tqdm writes them."""
    problems = []
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code":
            continue
        lines = [line for output in cell.get("outputs", []) for line in re.split(r"[\r\n]", output_text(output))]
        dumps = sum(line.startswith("configuration: {") for line in lines)
        bars = sum(bool(PROGRESS_BAR.search(line)) for line in lines)
        if dumps:
            problems.append(f"cell {index}: {dumps} configuration dump(s) ('configuration: {{...}}')")
        if bars > MAX_BAR_LINES:
            problems.append(f"cell {index}: {bars} progress-bar lines (at most {MAX_BAR_LINES})")
    return problems


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
    noisy = stray_output(notebook)
    assert not noisy, f"{path.name} floods its cells with the trainer's console output: " + "; ".join(noisy)


def crafted(*outputs: dict) -> dict:
    """A one-cell executed notebook holding `outputs`, as nbclient stores them."""
    return {"cells": [{"cell_type": "markdown", "source": "configuration: {not output}"},
                      {"cell_type": "code", "source": "run(cfg)", "outputs": list(outputs)}]}


def stream(text: str, name: str = "stdout") -> dict:
    return {"output_type": "stream", "name": name, "text": text}


def test_the_check_fails_on_a_configuration_dump():
    nb = crafted(stream('configuration: {"aa": "", "amp": "bf16"}\n'), stream("trained in 3 s: top-1 40.2%\n"))
    assert stray_output(nb) == ["cell 1: 1 configuration dump(s) ('configuration: {...}')"]


def test_the_check_fails_on_a_flood_of_progress_bars():
    # nbclient keeps each tqdm update as its own stream output, each starting with a carriage return
    updates = [stream(f"\repoch 1/8: {10 * i:3d}%|{'█' * i:10s}| {i}/10 [00:0{i}<00:05, 2.0it/s]", "stderr")
               for i in range(MAX_BAR_LINES + 1)]
    assert stray_output(crafted(*updates)) == [f"cell 1: {MAX_BAR_LINES + 1} progress-bar lines (at most {MAX_BAR_LINES})"]
    # the same updates in one output, as a terminal-style log would hold them
    joined = stream("".join(u["text"] for u in updates), "stderr")
    assert len(stray_output(crafted(joined))) == 1


def test_the_check_passes_a_short_summary():
    nb = crafted(stream("\repoch 1/1: 100%|██████████| 2/2 [00:03<00:00,  1.86s/it]", "stderr"),
                 stream("the run's configuration: {see config.json}\ntrained in 15 s: validation top-1 8.6%\n"),
                 {"output_type": "execute_result", "data": {"text/plain": "{'test_acc1': 8.6}"}},
                 *[{"output_type": "display_data",  # tqdm.notebook's bars: widgets, whose text/plain is the bar
                    "data": {"application/vnd.jupyter.widget-view+json": {"model_id": str(i)},
                             "text/plain": f"epoch {i}/8: 100%|██████████| 2/2 [00:03<00:00]"}} for i in range(8)])
    assert stray_output(nb) == []
