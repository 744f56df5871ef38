"""CPU speed (issue 15): the thread defaults, `benchmark vs-timm` and `benchmark contention`.

No test here is timed: a speed claim is a benchmark that prints a ratio. These check the logic that decides the
thread settings, that the comparison compares like with like, and that both commands run end to end.
"""
import json
import os
import subprocess
import sys

import pytest

from minideit import threads
from minideit.tools.bench import contention
from minideit.tools.bench.cli import main as bench_main
from minideit.tools.bench.vs_timm import CASES, build_ours, build_timm

SMOKE = ['--rounds', '1', '--steps', '1', '--warmup', '0', '--batch-size', '2']


# ---- the thread defaults (minideit/threads.py) -------------------------------------------------------------

def test_wait_policy_is_set_only_when_the_user_did_not_choose_one():
    env = {}
    assert threads.set_wait_policy_default(env, torch_loaded=False) is True
    assert env == {'OMP_WAIT_POLICY': 'PASSIVE'}
    env = {'OMP_WAIT_POLICY': 'ACTIVE'}
    assert threads.set_wait_policy_default(env, torch_loaded=False) is False
    assert env == {'OMP_WAIT_POLICY': 'ACTIVE'}  # never overridden
    env = {}
    assert threads.set_wait_policy_default(env, torch_loaded=True) is False  # too late: OpenMP has read it


def run_python(code: str, **env_changes) -> str:
    env = {k: v for k, v in os.environ.items() if k != 'OMP_WAIT_POLICY'} | env_changes
    return subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, check=True,
                          timeout=120).stdout.strip()


def test_import_minideit_sets_the_wait_policy_before_torch_loads():
    """The real scenario: a fresh interpreter that imports minideit first gets PASSIVE, in time for OpenMP; a
    user's own value is kept; importing torch first leaves the variable set but says it came too late."""
    code = "import minideit, os; print(os.environ['OMP_WAIT_POLICY'], minideit.WAIT_POLICY_IN_TIME)"
    assert run_python(code) == 'PASSIVE True'
    assert run_python(code, OMP_WAIT_POLICY='active') == 'active False'
    assert run_python('import torch; ' + code) == 'PASSIVE False'


@pytest.mark.parametrize('cpus, workers, expected', [
    (1, 0, 1), (2, 0, 2), (2, 1, 1), (4, 0, 4), (4, 2, 2), (16, 10, 6), (16, 0, 16), (8, 20, 1)])
def test_default_threads_leave_the_workers_their_cores(cpus, workers, expected):
    assert threads.default_threads(cpus, workers) == expected


def test_set_threads_prefers_the_flag_then_omp_num_threads_then_the_rule(monkeypatch):
    import torch
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv('OMP_NUM_THREADS', '3')
        assert threads.set_threads(2) == 2 and torch.get_num_threads() == 2
        assert threads.set_threads(None) == 3 and torch.get_num_threads() == 3
        monkeypatch.delenv('OMP_NUM_THREADS')
        monkeypatch.setattr(threads, 'available_cpus', lambda: 4)
        assert threads.set_threads(None, num_workers=1) == 3
        with pytest.raises(ValueError, match='--threads'):
            threads.set_threads(0)
    finally:
        torch.set_num_threads(before)


# ---- benchmark vs-timm -------------------------------------------------------------------------------------

def test_vs_timm_without_timm_says_so_in_one_line_and_times_ours(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, 'timm', None)  # `import timm` now raises ImportError, as if not installed
    out = tmp_path / 'r.json'
    assert bench_main(['vs-timm', '--case', 'nano-step', *SMOKE, '--json', str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum('timm is not available' in line for line in lines) == 1
    assert lines[0].startswith('timm is not available') and 'pip install timm' in lines[0]
    (row,) = json.loads(out.read_text())['results']
    assert set(row['img_per_s']) == {'minideit'} and row['img_per_s']['minideit'] > 0
    assert 'ours_over_timm' not in row


def test_vs_timm_rejects_bad_sizes_in_one_line(capsys):
    assert bench_main(['vs-timm', '--rounds', '0']) == 2
    assert capsys.readouterr().err.strip() == 'error: --rounds must be >= 1, got 0'


@pytest.mark.slow
def test_timm_models_have_our_configuration():
    """Like is compared with like: every case's timm model has exactly our parameter count and, for the demo's
    teacher, the stride-1 stem (timm has no argument for it)."""
    timm = pytest.importorskip('timm')
    for case in CASES.values():
        ours, theirs = build_ours(case), build_timm(case, timm)
        assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters()), case.name
    assert build_timm(CASES['teacher-step'], timm).stem.conv.stride == (1, 1)


def test_vs_timm_compares_when_timm_is_importable(tmp_path, capsys):
    pytest.importorskip('timm')
    out = tmp_path / 'r.json'
    assert bench_main(['vs-timm', '--case', 'nano-step', 'teacher-step', *SMOKE, '--json', str(out)]) == 0
    for row in json.loads(out.read_text())['results']:
        assert set(row['img_per_s']) == {'minideit', 'timm'}
        assert row['ours_over_timm']['median'] > 0 and len(row['ours_over_timm']['rounds']) == 1


# ---- benchmark contention ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_contention_runs_every_setting_alone_and_contended_and_stops_the_busy_process(tmp_path, monkeypatch,
                                                                                     capsys):
    started = []
    real_start = contention.start_busy
    monkeypatch.setattr(contention, 'start_busy', lambda n: started.extend(real_start(n)) or started)
    out = tmp_path / 'c.json'
    assert bench_main(['contention', '--batch-size', '2', '--seconds', '0', '--steps', '1', '--warmup', '0',
                       '--json', str(out)]) == 0
    assert len(started) == 1 and all(p.poll() is not None for p in started)  # the busy loop is gone
    r = json.loads(out.read_text())
    assert [row['name'] for row in r['results']] == ['torch defaults', 'minideit default', 'one core spare']
    for row in r['results']:
        assert row['alone_img_per_s'] > 0 and row['contended_img_per_s'] > 0
    assert 'contended / alone' in capsys.readouterr().out


def test_contention_child_sees_exactly_the_wait_policy_it_was_given(monkeypatch):
    """The 'torch defaults' child must run with OMP_WAIT_POLICY unset, even though this process (which imported
    minideit) has it set; the others with PASSIVE."""
    seen = []

    def fake_run(cmd, env, **kwargs):
        seen.append((json.loads(cmd[-1])['threads'], env.get('OMP_WAIT_POLICY')))
        return subprocess.CompletedProcess(cmd, 0, stdout='{"img_per_s": 1.0}\n', stderr='')
    monkeypatch.setattr(contention.subprocess, 'run', fake_run)
    monkeypatch.setenv('OMP_WAIT_POLICY', 'PASSIVE')
    rows = contention.settings(4)
    args = type('Args', (), dict(batch_size=2, seconds=0, steps=1, warmup=0, timeout=10))()
    for row in rows:
        contention.run_child(row, args)
    assert seen == [(4, None), (4, 'PASSIVE'), (3, 'PASSIVE')]
