"""Without network, official weights missing from the cache fail in seconds with one helpful line; and
``python -m minideit.weights`` is a real command (--help, no runpy warning)."""
import socket
import subprocess
import sys
import time

import pytest

import minideit.weights as weights
from minideit import CheckpointError, create_model, load_checkpoint

from conftest import ROOT

DEIT = "deit_tiny_distilled_patch16_224"


def closed_port() -> int:
    """A local port nobody listens on: connecting is refused at once, and no packet leaves the machine."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDEIT_CACHE", str(tmp_path))
    return tmp_path


def check_offline_message(message: str, cache) -> None:
    assert "\n" not in message
    assert weights.OFFICIAL_FILES[DEIT] in message  # which file is missing
    assert str(cache) in message and "MINIDEIT_CACHE" in message  # where the cache is
    assert f"python -m minideit.weights {DEIT}" in message  # how to fetch it elsewhere


def test_connection_refused_fails_at_once(empty_cache, monkeypatch):
    url = f"http://127.0.0.1:{closed_port()}/{weights.OFFICIAL_FILES[DEIT]}"
    monkeypatch.setitem(weights.OFFICIAL_URLS, DEIT, url)
    start = time.monotonic()
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(create_model(DEIT), DEIT)
    assert time.monotonic() - start < 10
    check_offline_message(str(e.value), empty_cache)


# Run in a fresh interpreter: replacing socket.getaddrinfo in the test process would also stall any other thread
# that looks a name up meanwhile (an earlier test's leftovers), and a hang there must fail the test, not stop the suite.
NEVER_ANSWERS = """
import socket, sys, time
import minideit.weights as weights

def hang(*args, **kwargs):  # no network often means a DNS query that hangs; getaddrinfo has no time-out of its own
    time.sleep(30)
    raise socket.gaierror("gave up")

socket.getaddrinfo = hang
weights.urllib.request.getproxies = lambda: {}  # check the server, not a proxy
start = time.monotonic()
try:
    weights.resolve_state_dict(sys.argv[1])
except weights.CheckpointError as e:
    print(f"{time.monotonic() - start:.1f}")
    print(e)
"""


def test_a_name_lookup_that_never_answers_fails_in_seconds(empty_cache):
    result = subprocess.run([sys.executable, "-c", NEVER_ANSWERS, DEIT], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    seconds, message = result.stdout.strip().split("\n")
    assert float(seconds) < 10
    check_offline_message(message, empty_cache)
    assert not list(empty_cache.iterdir()), "nothing may be left in the cache"


def test_predict_pretrained_offline_is_one_error_line(empty_cache, monkeypatch, tmp_path, capsys):
    from minideit.tools import predict
    from PIL import Image
    Image.new("RGB", (64, 64), "red").save(tmp_path / "red.png")
    monkeypatch.setitem(weights.OFFICIAL_URLS, DEIT,
                        f"http://127.0.0.1:{closed_port()}/{weights.OFFICIAL_FILES[DEIT]}")
    start = time.monotonic()
    assert predict.main([str(tmp_path / "red.png"), "--model", DEIT, "--pretrained"]) == 2
    assert time.monotonic() - start < 10
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:"), err
    check_offline_message(err[0], empty_cache)


def run_weights(*args):
    return subprocess.run([sys.executable, "-m", "minideit.weights", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_weights_command_has_help_and_no_runpy_warning():
    result = run_weights("--help")
    assert result.returncode == 0 and "usage: python -m minideit.weights" in result.stdout
    assert "MINIDEIT_CACHE" in result.stdout and result.stderr == "", result.stderr
    result = run_weights("deit_nope")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "deit_nope" in result.stderr
    assert "RuntimeWarning" not in result.stderr
