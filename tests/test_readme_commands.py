"""The README's two "Start here" commands, and .ci/run following them.

Both commands begin with the same set-up: keep a torch that is already importable, otherwise install torch (PyTorch's
CPU build unless `nvidia-smi` finds a GPU), then install minideit editable with requirements.txt. The set-up's shell
logic is run here against stand-ins for `python` and `nvidia-smi` (seconds, no network); .ci/run runs the real thing
in a fresh virtual environment made from a clean clone, taking the command from README.md through `start_here()`,
so the README and CI cannot drift.

Run as a script (`python tests/test_readme_commands.py [demo|tests|setup]`) it prints that command; standard
library only, so it runs before anything is installed.
"""
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOBS = ("python -m minideit.train", "python -m pytest -q")  # the demo, then the tests
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def start_here(readme: str | None = None) -> list[str]:
    """The commands of the README's "Start here" block, in order (comment lines and blank lines left out)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8") if readme is None else readme
    section = text.split("\n## Start here\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"^```bash\n(.*?)^```", section, re.M | re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def split_command(command: str) -> tuple[str, str]:
    """(set-up, job): a command is its set-up, then ` && `, then the job."""
    setup, job = command.rsplit(" && ", 1)
    return setup, job


def test_two_commands_one_setup_then_the_demo_and_the_tests():
    commands = start_here()
    assert len(commands) == 2, f"README's Start here should hold two commands, holds {commands}"
    (setup_demo, job_demo), (setup_tests, job_tests) = map(split_command, commands)
    assert (job_demo, job_tests) == JOBS
    assert setup_demo == setup_tests, "the two commands must begin with the same set-up"
    assert "python -m pip install -e . -r requirements.txt" in setup_demo, "the set-up installs minideit editable"


def fake_tools(folder: Path, gpu: bool) -> None:
    """`python` that logs its pip calls and answers `import torch` from $HAVE_TORCH; `nvidia-smi` if `gpu`."""
    folder.mkdir()
    python = folder / "python"
    python.write_text('#!/bin/bash\n'
                      'if [ "$1" = "-c" ]; then [ "$HAVE_TORCH" = 1 ]; exit; fi\n'
                      'echo "$*" >> "$LOG"\n'
                      'if [ "$3 $4" = "install torch" ] && [ "$TORCH_FAILS" = 1 ]; then exit 1; fi\n')
    tools = [python]
    if gpu:
        (folder / "nvidia-smi").write_text("#!/bin/bash\necho 'GPU 0: NVIDIA H200'\n")
        tools.append(folder / "nvidia-smi")
    for tool in tools:
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR)


def run_setup(tmp_path: Path, have_torch: bool, gpu: bool, torch_fails: bool = False) -> tuple[int, list[str]]:
    """Run the README's set-up with the stand-ins alone on PATH; (exit status, pip calls in order)."""
    setup, _ = split_command(start_here()[0])
    fake_tools(tmp_path / "bin", gpu)
    log = tmp_path / "pip.log"
    log.touch()
    env = {"PATH": str(tmp_path / "bin"), "LOG": str(log), "HAVE_TORCH": str(int(have_torch)),
           "TORCH_FAILS": str(int(torch_fails))}
    done = subprocess.run(["/bin/bash", "-c", setup], env=env, cwd=tmp_path, capture_output=True, text=True)
    return done.returncode, log.read_text().splitlines()


EDITABLE = "-m pip install -e . -r requirements.txt"


def test_setup_keeps_an_installed_torch(tmp_path):
    assert run_setup(tmp_path, have_torch=True, gpu=False) == (0, [EDITABLE])


def test_setup_without_a_gpu_installs_the_cpu_build(tmp_path):
    assert run_setup(tmp_path, have_torch=False, gpu=False) == (0, [f"-m pip install torch --index-url {CPU_INDEX}",
                                                                    EDITABLE])


def test_setup_with_a_gpu_installs_the_default_cuda_build(tmp_path):
    assert run_setup(tmp_path, have_torch=False, gpu=True) == (0, ["-m pip install torch", EDITABLE])


def test_setup_stops_when_torch_does_not_install(tmp_path):
    status, calls = run_setup(tmp_path, have_torch=False, gpu=False, torch_fails=True)
    assert status != 0 and calls == [f"-m pip install torch --index-url {CPU_INDEX}"]


def test_ci_runs_the_readme_commands():
    # .ci/run asks this file for the command, so what it runs is the README's, character for character
    printed = subprocess.run([sys.executable, __file__, "tests"], capture_output=True, text=True, check=True).stdout
    assert printed == start_here()[1] + "\n"
    ci = (ROOT / ".ci" / "run").read_text()
    for step in ("git clone", "python -m venv", 'python tests/test_readme_commands.py tests', 'bash -c "$test_command"'):
        assert step in ci, f".ci/run no longer does: {step}"
    assert "--system-site-packages" not in ci, "CI's environment must be fresh, or it proves nothing about set-up"


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "tests"
    commands = dict(zip(("demo", "tests"), start_here()))
    print(split_command(commands["tests"])[0] if which == "setup" else commands[which])
