"""Every run draws curves.png after its first evaluation, at most every 30 s after that, and after the last; ``python -m minideit.plot`` overlays several runs."""
import json

import pytest
import torch

pytest.importorskip("matplotlib")

from minideit import create_model  # noqa: E402
from minideit.curves import plan_curves, read_log, write_curves  # noqa: E402
from minideit.tools import plot  # noqa: E402
from minideit.train import main as train  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def hard_run(tmp_path_factory):
    """A real 2-epoch run of a distilled DeiT-nano with a (random) teacher on tiny synthetic data."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MINIDEIT_SMOKE", "1")  # a small validation set
    out = tmp_path_factory.mktemp("runs") / "hard"
    teacher = out.parent / "teacher.pth"
    torch.manual_seed(1)
    torch.save({"model": create_model("deit_nano_patch4_32", num_classes=10).state_dict()}, teacher)  # cheap
    code = train(["--model", "deit_nano_distilled_patch4_32", "--data-set", "synthetic", "--input-size", "32",
                  "--num-samples", "64", "--batch-size", "32", "--epochs", "2", "--warmup-epochs", "1",
                  "--num-workers", "0", "--output-dir", str(out), "--distillation-type", "hard",
                  "--teacher-model", "deit_nano_patch4_32", "--teacher-path", str(teacher)])
    mp.undo()
    assert code == 0
    return out


@pytest.mark.slow
def test_a_two_epoch_run_writes_curves_png(hard_run):
    png = hard_run / "curves.png"
    assert png.is_file() and png.read_bytes().startswith(PNG)
    assert not list(hard_run.glob(".*.tmp")), "a temporary file was left behind"
    panels = plan_curves({"hard": read_log(hard_run / "log.jsonl")})
    assert list(panels) == ["loss", "learning rate", "top-1 accuracy (%)", "agreement with teacher (%)"]
    labels = [line["label"] for line in panels["top-1 accuracy (%)"]]
    assert labels == ["joint", "class head", "distillation head", "teacher", "EMA"]
    assert all(line["x"] == [1, 2] for lines in panels.values() for line in lines)  # both evaluations


@pytest.mark.slow
def test_plot_overlays_two_runs_named_in_the_legend(hard_run, tmp_path, capsys):
    other = tmp_path / "none"
    other.mkdir()
    records = [{k: v for k, v in r.items() if "teacher" not in k and "agreement" not in k}
               for r in read_log(hard_run / "log.jsonl")]
    (other / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"epoch": 2, "trunc')
    out = tmp_path / "both.png"
    assert plot.main([str(hard_run), str(other), "--out", str(out)]) == 0
    assert out.read_bytes().startswith(PNG)
    assert "hard" in capsys.readouterr().out
    panels = plan_curves(plot.load_runs([hard_run, other]))
    top1 = [line["label"] for line in panels["top-1 accuracy (%)"]]
    assert "hard: joint" in top1 and "none: joint" in top1 and "hard: teacher" in top1
    assert {line["colour"] for line in panels["loss"] if line["label"].startswith("hard")} != \
           {line["colour"] for line in panels["loss"] if line["label"].startswith("none")}


def test_plot_bad_input_is_one_error_line(tmp_path, capsys):
    out = tmp_path / "x.png"
    assert plot.main([str(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "log.jsonl" in err[0]
    assert not out.exists()


def test_a_drawing_failure_never_raises(tmp_path, capsys):
    (tmp_path / "log.jsonl").write_text('{"epoch": 0, "train_loss": 1.0, "lr": 0.001}\n')
    (tmp_path / "curves.png").mkdir()  # the PNG cannot be written: a folder is in the way
    assert write_curves(tmp_path) is None
    assert "warning: could not draw" in capsys.readouterr().err


def test_curves_are_redrawn_first_then_at_most_every_30_s_and_at_the_end(monkeypatch):
    """Drawing takes ~1.5 s, so a run that evaluates every few seconds must not redraw each time."""
    from types import SimpleNamespace

    from minideit import train as train_mod
    clock = [100.0]
    monkeypatch.setattr(train_mod.time, "monotonic", lambda: clock[0])
    r = SimpleNamespace(curves_drawn_at=float("-inf"))
    assert train_mod.draw_curves_now(r, last=False)  # the first evaluation
    clock[0] += 5
    assert not train_mod.draw_curves_now(r, last=False)
    assert train_mod.draw_curves_now(r, last=True)  # the last epoch always
    clock[0] += train_mod.CURVES_EVERY_S
    assert train_mod.draw_curves_now(r, last=False)
