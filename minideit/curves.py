"""Training curves: ``curves.png`` next to a run's ``log.jsonl``, redrawn after every evaluation.

One row of panels: the training (and validation) loss, the learning rate of the schedule (paper Table 9: warm-up
then cosine), the top-1 accuracy of every classifier that the log has (the joint prediction, the class and
distillation heads of a DeiT⚗, the teacher, the EMA model) and the student's agreement with its teacher (paper
Table 4). Several runs can share one figure (``python -m minideit.plot``): each run keeps one colour, each
quantity one line style.

The trainer calls :func:`write_curves`; it never raises, because a figure is not worth a stopped run.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# (log key, legend label, line style) per panel; a panel is drawn only when some run logged one of its keys.
PANELS = {
    "loss": [("train_loss", "train", "-"), ("test_loss", "validation", "--")],
    "learning rate": [("lr", "lr", "-")],
    "top-1 accuracy (%)": [("test_acc1", "joint", "-"), ("test_cls_acc1", "class head", "--"),
                           ("test_dist_acc1", "distillation head", ":"), ("test_teacher_acc1", "teacher", "-."),
                           ("ema_acc1", "EMA", (0, (1, 4)))],
    "agreement with teacher (%)": [("test_agreement", "agreement", "-")],
}


def read_log(path: str | Path) -> list[dict]:
    """The epochs of a ``log.jsonl``; a line that does not parse (a run killed while writing it) is skipped."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "epoch" in record:
            records.append(record)
    return records


def plan_curves(runs: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """What to draw, as data: {panel title: [{'label', 'style', 'colour', 'x', 'y'}]}, only panels with lines."""
    plan: dict[str, list[dict]] = {}
    for title, rows in PANELS.items():
        lines = []
        for i, (run, records) in enumerate(runs.items()):
            for key, label, style in rows:
                points = [(r["epoch"] + 1, r[key]) for r in records if isinstance(r.get(key), (int, float))]
                if points:  # one run: the quantity names the line; several: the run (and the quantity) do
                    name = label if len(runs) == 1 else (run if len(rows) == 1 else f"{run}: {label}")
                    x, y = zip(*points)
                    lines.append(dict(label=name, style=style, colour=f"C{i % 10}", x=list(x), y=list(y)))
        if lines:
            plan[title] = lines
    return plan


def draw_curves(runs: dict[str, list[dict]], out: str | Path) -> Path:
    """Draw the panels for ``{run name: log records}`` into ``out`` (a PNG, written atomically)."""
    # Figure + Agg canvas, not pyplot: no global backend switch, so a notebook that trains keeps its own backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    plan = plan_curves(runs)
    if not plan:
        raise ValueError("the logs hold no loss, learning rate or accuracy to draw")
    fig = Figure(figsize=(4.2 * len(plan), 3.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(plan), squeeze=False)[0]
    for ax, (title, lines) in zip(axes, plan.items()):
        for line in lines:
            ax.plot(line["x"], line["y"], linestyle=line["style"], color=line["colour"], label=line["label"],
                    marker="o" if len(line["x"]) < 20 else None, markersize=3)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if title == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if len(runs) == 1:
        fig.suptitle(next(iter(runs)), fontsize=10)
    fig.tight_layout()
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        fig.savefig(tmp, dpi=100, format="png", metadata={"Software": None})
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def write_curves(run_dir: str | Path) -> Path | None:
    """Redraw ``run_dir/curves.png`` from ``run_dir/log.jsonl``; on any failure print one line and go on."""
    run_dir = Path(run_dir)
    try:
        return draw_curves({run_dir.name: read_log(run_dir / "log.jsonl")}, run_dir / "curves.png")
    except Exception as e:  # noqa: BLE001 (a missing matplotlib, a full disk: the run must go on)
        print(f"warning: could not draw {run_dir / 'curves.png'} ({type(e).__name__}: {e})", file=sys.stderr)
        return None
