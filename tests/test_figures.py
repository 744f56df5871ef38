"""`python -m minideit.figures` writes real PNGs, and refuses an unknown figure name with one error line."""
import pytest

pytest.importorskip("matplotlib")

from minideit.tools import figures  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_pngs(out, names):
    for name in names:
        path = out / f"{name}.png"
        assert path.is_file(), f"{path} was not written"
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE), f"{path} is not a PNG"
        assert len(data) > 5 * 1024, f"{path} is only {len(data)} bytes: an empty figure?"
        assert len(data) < 150 * 1024, f"{path} is {len(data) // 1024} KB: keep book figures under 150 KB"


def test_cheap_figures(tmp_path, capsys):
    names = ["synthetic_samples", "augmentations", "patches"]
    assert figures.main(["--out", str(tmp_path), "--only", *names]) == 0
    check_pngs(tmp_path, names)
    assert len(capsys.readouterr().out.splitlines()) == len(names)  # one line per figure


@pytest.mark.slow
def test_model_figures(tmp_path):
    # models are built on the meta device, so this stays at a few seconds even with regnety_160
    names = ["regnet_widths", "params_flops"]
    assert figures.main(["--out", str(tmp_path), "--only", *names]) == 0
    check_pngs(tmp_path, names)


def test_unknown_figure_is_one_error_line(tmp_path, capsys):
    assert figures.main(["--out", str(tmp_path), "--only", "patches", "nope"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "nope" in lines[0], captured.err
    assert "Traceback" not in captured.err
    assert not list(tmp_path.iterdir()), "nothing should be drawn when a name is wrong"


def test_every_figure_is_listed():
    assert list(figures.FIGURES) == ["synthetic_samples", "augmentations", "patches", "regnet_widths",
                                     "params_flops"]
