"""The course as a learner lives it: `use` runs their code inside the package, and the capstone assembles their
pieces into a DeiT that must reproduce the reference logits and learn.

The capstone tests run in smoke mode (MINIDEIT_SMOKE=1: a tiny teacher and a few training steps, in a temporary
runs directory); the logits stage is the same as in a full run.
"""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minideit import vit
from minideit.tools.exercises import EXERCISES, check, ran, restore, use, write_workspace
from minideit.tools.exercises.__main__ import main
from minideit.tools.exercises.capstone import MODEL_PIECES, TRAINING_PIECES, run_capstone
from minideit.tools.exercises.learner import CALLS, is_written, learner_function

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def key(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("key")
    assert main(["init", str(directory), "--solved"]) == 0
    return directory


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("fresh")
    write_workspace(directory)
    return directory


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")  # the smoke teacher is trained once, then reused


@pytest.fixture(autouse=True)
def package_restored():
    yield
    restore()  # no test leaves learner code installed in the package


def _copy_with(src: Path, dst: Path, file: str, old: str, new: str) -> Path:
    shutil.copytree(src, dst)
    text = (dst / file).read_text()
    assert old in text
    (dst / file).write_text(text.replace(old, new))
    return dst


# ---- use: the learner's code where it exists, the package's otherwise ------------------------------------------
def test_use_installs_the_learners_function_into_the_package(key, fresh, monkeypatch, capsys):
    monkeypatch.setenv("MINIDEIT_WORKSPACE", str(fresh))
    assert use("split_heads") is vit.Attention.split_heads  # a stub: the package's own code stays
    assert capsys.readouterr().out == "reference split_heads (not written yet in ex02_attention.py)\n"
    monkeypatch.setenv("MINIDEIT_WORKSPACE", str(key))
    mine = use("split_heads")
    assert capsys.readouterr().out == "your split_heads\n"
    assert vit.Attention.split_heads is mine and mine.__name__ == "split_heads"
    use("attention_weights", quiet=True)
    CALLS.clear()
    model = vit.VisionTransformer(img_size=8, patch_size=4, num_classes=3, embed_dim=8, depth=2, num_heads=2)
    model.set_fused_attention(False)
    model(torch.randn(1, 3, 8, 8))
    assert ran() == {"split_heads": 2, "attention_weights": 2}  # the model ran the learner's code, twice each
    assert check("split_heads") is True  # the check compares with the package, not with what is installed
    restore()
    assert vit.Attention.split_heads is EXERCISES["split_heads"].reference()


def test_a_written_function_is_told_from_a_stub_without_calling_it(key, fresh):
    assert learner_function("patchify", fresh) == (None, "not written yet in ex01_patches.py")
    fn, why = learner_function("patchify", key)
    assert fn is not None and why == "" and is_written(fn, "patchify")


def test_use_without_a_workspace_falls_back_to_the_package(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MINIDEIT_WORKSPACE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert use("patchify") is vit.patchify
    assert "reference patchify (no workspace" in capsys.readouterr().out


# ---- the capstone ------------------------------------------------------------------------------------------------
def test_capstone_passes_on_the_solved_workspace(key, runs, monkeypatch):
    monkeypatch.setenv("MINIDEIT_SMOKE", "1")
    lines = []
    assert run_capstone(key, runs, say=lines.append), lines
    assert lines[0] == "your pieces: " + ", ".join(MODEL_PIECES + TRAINING_PIECES)
    assert any(line.startswith("logits: your DeiT-Ti⚗ matches the reference implementation's logits") for line in lines)
    assert any("steps of your distillation_step" in line for line in lines)
    assert lines[-1].startswith("PASS capstone")


def test_capstone_on_a_fresh_workspace_names_the_first_missing_piece(fresh, runs, capsys):
    assert main(["check", str(fresh), "capstone", "--runs", str(runs)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAIL capstone: missing piece: patchify (not written yet in ex01_patches.py). "
                          "Next: exercise patchify of notebook 01")


def test_capstone_names_the_first_missing_piece_after_the_written_ones(key, tmp_path, runs):
    stub = 'raise NotImplementedError("block_forward: write me")'
    ws = tmp_path / "ws"
    shutil.copytree(key, ws)
    text = (ws / "ex02_attention.py").read_text()
    start = text.index("def block_forward(")
    body = text.index("    if return_attn:", start)
    (ws / "ex02_attention.py").write_text(text[:body] + "    " + stub + "\n" + text[body:])
    lines = []
    assert not run_capstone(ws, runs, say=lines.append)
    assert lines[-1].startswith("FAIL capstone: missing piece: block_forward"), lines


@pytest.mark.parametrize("file, old, new, piece", [
    ("ex02_attention.py", '"b h n d -> b n (h d)"', '"b h n d -> b n (d h)"', "attention_forward"),
    ("ex06_dist_token.py", "return (cls_logits + dist_logits) / 2", "return cls_logits", "forward_head"),
])
def test_capstone_names_the_wrong_piece_from_the_logits(key, tmp_path, runs, file, old, new, piece):
    ws = _copy_with(key, tmp_path / "ws", file, old, new)
    lines = []
    assert not run_capstone(ws, runs, say=lines.append)
    assert lines[-1].startswith("FAIL capstone: logits differ from the reference implementation's logits"), lines
    assert f"with the package's {piece} instead of yours they match: fix {piece}" in lines[-1]


def test_capstone_command_line_runs_as_a_module(key, runs):
    result = subprocess.run([sys.executable, "-m", "minideit.exercises", "check", str(key), "capstone", "--runs",
                             str(runs)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**__import__("os").environ, "MINIDEIT_SMOKE": "1", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS capstone" in result.stdout


def test_capstone_bad_input_is_one_line(fresh, capsys):
    assert main(["check", "--reference", "capstone"]) == 2
    assert main(["check", str(fresh), "capstone", "patchify"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("error: the capstone runs alone") for line in err)
