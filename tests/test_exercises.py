"""The exercise system: registry, markers in the package, generated workspace, checks and the command line.

Every exercise id is a pytest marker, so `pytest -m patchify tests/test_exercises.py` runs one exercise's tests.
With MINIDEIT_EXERCISES=DIR set, `test_exercise_passes` checks the learner's workspace DIR instead of the package.
"""
import inspect
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from minideit import flops, losses, regnet, vit
from minideit.data import transforms
from minideit.data.samplers import RASampler
from minideit.tools.exercises import CHECKS, EXERCISES, NOTEBOOKS, check, load_function, run_check, write_workspace
from minideit.tools.exercises.__main__ import main
from minideit.tools.exercises.workspace import MARKER, function_source

ROOT = Path(__file__).resolve().parents[1]
IDS = list(EXERCISES)


def by_id(ids=IDS):
    """Parametrize over exercise ids, each case carrying its id as a marker."""
    return [pytest.param(i, marks=getattr(pytest.mark, i), id=i) for i in ids]


@pytest.fixture(scope="module")
def fresh_workspace(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("fresh")
    write_workspace(directory)
    return directory


@pytest.fixture(scope="module")
def solved_workspace(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("solved")
    write_workspace(directory, solved=True)
    return directory


# ---- the registry and the markers in the package ---------------------------------------------------------------
def test_registry_spans_every_notebook():
    assert len(EXERCISES) >= 24
    notebooks = {ex.notebook for ex in EXERCISES.values()}
    assert notebooks == set(range(12)) == set(NOTEBOOKS)
    for ex in EXERCISES.values():
        assert ex.id.isidentifier() and ex.id not in {"slow", "skip", "skipif", "xfail", "parametrize"}
        assert ex.id in CHECKS, f"{ex.id} has no check_{ex.id}"
        assert callable(ex.reference())
        assert ex.task and "\n" not in ex.task
    assert set(CHECKS) == set(EXERCISES), "a check without an exercise, or the reverse"


def test_each_marker_pair_appears_once_in_the_package():
    found = []
    for path in sorted((ROOT / "minideit").rglob("*.py")):
        if "exercises" in path.parts:
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            m = MARKER.match(line)
            if m:
                found.append(m.groups())
    begins = [name for kind, name in found if kind == "BEGIN"]
    ends = [name for kind, name in found if kind == "END"]
    assert sorted(begins) == sorted(ends) == sorted(IDS)


def test_markers_are_registered(pytestconfig):
    registered = {line.split(":")[0].strip() for line in pytestconfig.getini("markers")}
    missing = [i for i in IDS if i not in registered]
    assert not missing, f"exercise markers not registered in tests/conftest.py: {missing[:5]}"


# ---- checks on the package, on a fresh workspace, on the solved workspace --------------------------------------
@pytest.mark.parametrize("ex_id", by_id())
def test_exercise_passes(ex_id):
    ex = EXERCISES[ex_id]
    learner_dir = os.environ.get("MINIDEIT_EXERCISES")
    fn = load_function(learner_dir, ex) if learner_dir else ex.reference()
    ok, message = run_check(CHECKS[ex_id], fn)
    assert ok, message


@pytest.mark.parametrize("ex_id", by_id())
def test_fresh_stub_fails_naming_its_id(fresh_workspace, ex_id):
    fn = load_function(fresh_workspace, EXERCISES[ex_id])
    with pytest.raises(NotImplementedError, match=rf"^{ex_id}: "):
        _call_stub(fn, ex_id)
    ok, message = run_check(CHECKS[ex_id], fn)
    assert not ok
    assert f"NotImplementedError: {ex_id}: " in message


def _call_stub(fn, ex_id):
    """Call a stub with dummy arguments: it must raise before it looks at them (guards aside)."""
    params = list(inspect.signature(fn).parameters.values())
    needed = [p for p in params if p.default is inspect.Parameter.empty]
    args = [None] * len(needed)
    if ex_id == "to_normalized_tensor":  # its unmarked guard reads img.mode first
        args[1] = type("Img", (), {"mode": "RGB"})()
    if ex_id == "accuracy":  # an unmarked guard reads the labels' shape
        args = [torch.zeros(2, 3), torch.zeros(2)]
    if ex_id == "ema_update":
        args[1] = torch.nn.Linear(1, 1)
    if ex_id == "epoch_indices":
        args[0] = RASampler(4)
    fn(*args)


@pytest.mark.parametrize("ex_id", by_id())
def test_solved_workspace_passes(solved_workspace, ex_id):
    """The generator's imports and renaming give working code: the package's own lines, extracted, pass."""
    ok, message = run_check(CHECKS[ex_id], load_function(solved_workspace, EXERCISES[ex_id]))
    assert ok, message


def test_stub_keeps_signature_and_docstring():
    ex = EXERCISES["resize_pos_embed"]
    stub = function_source(ex)
    reference = inspect.signature(ex.reference())
    namespace = {}
    exec("from __future__ import annotations\nimport torch\n" + stub, namespace)
    assert inspect.signature(namespace["resize_pos_embed"]).parameters.keys() == reference.parameters.keys()
    assert "bicubic interpolation" in namespace["resize_pos_embed"].__doc__
    assert "F.interpolate" not in stub and "raise NotImplementedError(" in stub
    method = function_source(EXERCISES["split_heads"])
    assert method.startswith("def split_heads(self, x: torch.Tensor)") and "rearrange(" not in method


# ---- wrong answers get precise messages ------------------------------------------------------------------------
def _soft_without_tau2(self, s, t):
    kl = torch.nn.functional.kl_div(torch.log_softmax(s / self.tau, 1), torch.log_softmax(t / self.tau, 1),
                                    reduction="sum", log_target=True)
    return kl / (s.numel() if self.kl_normalisation == "official" else s.shape[0])


def _lr_warmup_from_zero(self, step):
    if step < self.warmup_steps:
        return self.base_lr * step / self.warmup_steps
    return self.lr_at(step)


def _merge_heads_wrong(self, x, return_attn=False):
    q, k, v = self.split_heads(x)
    attn = vit.attention_weights(q, k)
    out = self.proj(rearrange(attn @ v, "b h n d -> b n (d h)"))  # heads interleaved: the classic mistake
    return (out, attn) if return_attn else out


def _step_without_zero_grad(student, teacher, images, labels, optimizer):
    teacher.eval()
    with torch.no_grad():
        teacher_logits = teacher(images)
    loss = losses.hard_distillation_loss(*student.train()(images), labels, teacher_logits)
    loss.backward()
    optimizer.step()
    return loss.detach()


WRONG = [
    ("patchify", lambda x, p: rearrange(x, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=p, p2=p),
     ["patchify(images (2, 3, 8, 12), patch_size=4)", "channel last"]),
    ("patchify", lambda x, p: rearrange(x, "b c (h p1) (w p2) -> b (c p1 p2) (h w)", p1=p, p2=p),
     ["expected shape (2, 6, 48), got (2, 48, 6)"]),
    ("attention_weights", lambda q, k: (q @ k.transpose(-2, -1)).softmax(-1), ["sqrt(d)"]),
    ("soft_term", _soft_without_tau2, ["tau=3.0", "multiply by tau^2"]),
    ("lr_at", _lr_warmup_from_zero, ["lr_at(step=0)", "expected 1e-06, got 0"]),
    ("one_hot_smoothed", lambda y, k, s=0.0: torch.full((len(y), k), s / (k - 1)).scatter_(1, y.view(-1, 1), 1 - s),
     ["smoothing=0.1", "off = smoothing / num_classes"]),
    ("transformer_macs", lambda n, d, depth, r=4.0: 2 * flops.transformer_macs(n, d, depth, r),
     ["multiply-accumulates"]),
    ("drop_path", lambda x, p, training: x * (torch.rand_like(x) > p) / (1 - p) if training and p else x,
     ["dropped in part only"]),
    ("quantized_widths", lambda *a: __import__("numpy").array(regnet.quantized_widths(*a)), [".tolist()"]),
    ("attention_forward", _merge_heads_wrong, ["fused=True", "merge the heads back as (h d)"]),
    ("forward_features", lambda self, x: self.norm(self.blocks[-1](self.embed(x))), ["run every block in order"]),
    ("hard_distillation_loss", lambda c, d, y, t, a=0.5, base=F.cross_entropy:
     (1 - a) * base(c, y) + a * F.cross_entropy(d, t.softmax(1)), ["teacher_logits.argmax(dim=1)"]),
    ("distillation_step", _step_without_zero_grad, ["zero the gradients before backward"]),
    ("rrc_box", lambda w, h, s=(0.08, 1.0), r=(3 / 4, 4 / 3): (0, 0, *transforms.rrc_box(w, h, s, r)[2:]),
     ["top offset takes 1 distinct", "random.randint(0, height - h)"]),
]


@pytest.mark.parametrize("ex_id, fn, phrases", [pytest.param(*w, marks=getattr(pytest.mark, w[0]))
                                                 for w in WRONG])
def test_wrong_implementation_fails_with_a_useful_message(ex_id, fn, phrases):
    ok, message = run_check(CHECKS[ex_id], fn)
    assert not ok
    for phrase in phrases:
        assert phrase in message, message
    assert "\n" not in message and "Traceback" not in message


def test_learner_exception_names_their_line():
    def broken(x, p):
        return x.reshape(-1, p, p, 7)  # a shape error in the learner's code
    ok, message = run_check(CHECKS["patchify"], broken)
    assert not ok and message.startswith("patchify(images (2, 3, 8, 12), patch_size=4) raised RuntimeError")
    assert re.search(r"\(at test_exercises\.py:\d+\)$", message), message


def test_notebook_check_prints_one_line_and_restores_random_state(capsys):
    random.seed(1)
    torch.manual_seed(1)
    before = (random.random(), torch.rand(1))
    random.seed(1)
    torch.manual_seed(1)
    assert check("patchify", vit.patchify) is True
    assert check("patchify", lambda x, p: x) is False
    assert (random.random(), torch.rand(1)) == before  # the checks drew numbers, the caller's streams didn't move
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "PASS patchify"
    assert len(lines) == 2 and lines[1].startswith("FAIL patchify: patchify(images (2, 3, 8, 12), patch_size=4)")
    with pytest.raises(ValueError, match="unknown exercise 'patchifY'; did you mean patchify"):
        check("patchifY", vit.patchify)


# ---- command line ---------------------------------------------------------------------------------------------
def test_cli_list(capsys):
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(EXERCISES) >= 24
    assert {line[:2] for line in lines} == {f"{n:02d}" for n in range(12)}
    assert any(line.split()[1] == "patchify" for line in lines)
    assert main(["list", "--notebook", "10"]) == 0
    assert "resize_pos_embed" in capsys.readouterr().out


def test_cli_init_and_check(tmp_path, capsys):
    ws = tmp_path / "ws"
    assert main(["init", str(ws)]) == 0
    files = sorted(p.name for p in ws.glob("ex*.py"))
    assert len(files) == 12 and files[0] == "ex00_setup_data.py" and files[-1] == "ex11_imagenet.py"
    capsys.readouterr()
    assert main(["check", str(ws), "patchify"]) == 1
    out = capsys.readouterr().out
    assert "FAIL patchify (notebook 01)" in out and "NotImplementedError: patchify:" in out
    assert out.strip().endswith("0 of 1 passed")
    # the learner solves it: replace the stub's raise with a line of code
    path = ws / "ex01_patches.py"
    text = path.read_text()
    solution = '    return rearrange(images, "b c (h p1) (w p2) -> b (h w) (c p1 p2)", p1=patch_size, p2=patch_size)\n'
    text = re.sub(r"    raise NotImplementedError\(\n        'patchify:.*?\)\n", solution, text, count=1, flags=re.S)
    path.write_text(text)
    assert main(["check", str(ws), "patchify"]) == 0
    assert "PASS patchify" in capsys.readouterr().out
    # a syntax error in one file fails that file's exercises with one line, the others still run
    (ws / "ex11_imagenet.py").write_text("def epoch_indices(:\n")
    assert main(["check", str(ws), "patchify", "epoch_indices"]) == 1
    out = capsys.readouterr().out
    assert "PASS patchify" in out and "FAIL epoch_indices (notebook 11): ex11_imagenet.py line 1: SyntaxError" in out


@pytest.mark.parametrize("argv, phrase", [
    (["check", "{tmp}/missing"], "does not exist; create it with"),
    (["check", "{tmp}", "patchify"], "holds no exercise files"),
    (["check", "{ws}", "no_such_id"], "unknown exercise 'no_such_id'"),
    (["check"], "give the workspace directory"),
    (["init", "{ws}"], "already holds exercises"),
    (["list", "--notebook", "12"], "there is no notebook 12"),
    (["frobnicate"], "invalid choice"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, fresh_workspace, capsys, argv, phrase):
    argv = [a.format(tmp=tmp_path, ws=fresh_workspace) for a in argv]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors exit from inside parse_args
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and phrase in err, err


def test_cli_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "minideit.exercises", "check", "--reference", "patchify", "lr_at"],
                            cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["PASS patchify", "PASS lr_at", "2 of 2 passed"]


# ---- checks of random samplers accept every correct sampler ---------------------------------------------------
def _rrc_left_first(width, height, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """A correct RandomResizedCrop box drawn in another order: aspect before area, left before top."""
    import math
    for _ in range(10):
        aspect = math.exp(random.uniform(math.log(ratio[0]), math.log(ratio[1])))
        area = width * height * random.uniform(*scale)
        w, h = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left = random.randint(0, width - w)
            return random.randint(0, height - h), left, h, w
    return transforms.rrc_box(width, height, (2.0, 3.0), ratio)  # the deterministic fallback


def _erasing_left_first(self, img_h, img_w):
    import math
    for _ in range(10):
        aspect = math.exp(random.uniform(*self.log_aspect))
        area = random.uniform(self.min_area, self.max_area) * img_h * img_w / self.count
        h, w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if w < img_w and h < img_h:
            left = random.randint(0, img_w - w)
            return random.randint(0, img_h - h), left, h, w
    return None


def _cutmix_column_first(h, w, lam, gen):
    import math
    cx = int(torch.randint(0, w, (1,), generator=gen))
    cy = int(torch.randint(0, h, (1,), generator=gen))
    cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    return max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h), max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)


@pytest.mark.parametrize("ex_id, fn", [("rrc_box", _rrc_left_first), ("erasing_box", _erasing_left_first),
                                       ("cutmix_box", _cutmix_column_first)])
def test_a_sampler_that_draws_in_another_order_passes(ex_id, fn):
    ok, message = run_check(CHECKS[ex_id], fn)
    assert ok, message
