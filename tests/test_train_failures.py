"""python -m minideit.train against what practitioners do to it: mistyped values, unwritable folders, full disks,
odd and broken images, damaged checkpoints, signals during a save, notebooks. Every refusal is one `error:` line,
exit 2, and nothing of an existing run is touched."""
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from minideit import checkpoint, train
from minideit.config import TrainConfig
from minideit.train import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def smoke(monkeypatch):
    monkeypatch.setenv("MINIDEIT_SMOKE", "1")


def tiny(out, *extra):
    """16-pixel synthetic images, a nano DeiT, 4 optimiser steps per epoch: a run takes a few seconds."""
    return ["--model", "deit_nano_patch4_32", "--data-set", "synthetic", "--input-size", "16", "--num-samples", "32",
            "--batch-size", "8", "--epochs", "2", "--warmup-epochs", "1", "--num-workers", "0",
            "--distillation-type", "none", "--output-dir", str(out), *extra]


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err):
    """The one `error:` line; the progress bar (which tqdm draws on stderr, with carriage returns) aside."""
    lines = [line.split("\r")[-1].strip() for line in err.strip().splitlines()]
    lines = [line for line in lines if line and "it/s]" not in line and "s/it]" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


BAD_VALUES = {
    "--num-workers -1": (["--num-workers", "-1"], "--num-workers must be >= 0"),
    "--device cuda without a GPU": (["--device", "cuda"], "no(ne is)? .*visible|--device cpu"),
    "--lr -1": (["--lr", "-1"], "--lr must be > 0"),
    "--lr nan": (["--lr", "nan"], "--lr must be a finite number"),
    "--smoothing 1.5": (["--smoothing", "1.5"], "--smoothing must be >= 0 and < 1"),
    "--drop-path 1.5": (["--drop-path", "1.5"], "--drop-path must be >= 0 and < 1"),
    "--log-every 0": (["--log-every", "0"], "--log-every must be >= 1"),
    "--accum-steps 0": (["--accum-steps", "0"], "--accum-steps must be >= 1"),
    "--max-nonfinite -1": (["--max-nonfinite", "-1"], "--max-nonfinite must be >= 0"),
    "--data-seed -2": (["--data-seed", "-2"], "--data-seed must be >= -1"),
    "batch larger than the data": (["--batch-size", "64", "--num-samples", "32", "--no-repeated-aug"],
                                   "an epoch has 32 training images .* needs 64 .*lower --batch-size"),
}


@pytest.mark.parametrize("name", BAD_VALUES)
def test_bad_value_is_one_line_and_exit_2_and_writes_nothing(name, tmp_path, capsys, monkeypatch):
    if name == "batch larger than the data":
        monkeypatch.delenv("MINIDEIT_SMOKE")  # smoke mode would cap the batch at 32
    args, expected = BAD_VALUES[name]
    code, _, err = run_cli(tiny(tmp_path / "out", *args), capsys)
    assert code == 2
    import re
    assert re.search(expected, one_error_line(err)), err
    assert not (tmp_path / "out").exists()  # not even the folder


def test_output_dir_that_is_a_file_or_read_only(tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    code, _, err = run_cli(tiny(a_file), capsys)
    assert code == 2 and "is a file, not a folder" in one_error_line(err)
    # A read-only disk (tests run as root here, whom chmod does not stop): what os.access reports on one.
    real_access = os.access
    monkeypatch.setattr(train.os, "access", lambda p, mode: False if Path(p) == tmp_path else real_access(p, mode))
    code, _, err = run_cli(tiny(tmp_path / "new" / "run"), capsys)
    assert code == 2 and "cannot be written" in one_error_line(err) and "writable" in err
    assert not (tmp_path / "new").exists()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    os.environ["MINIDEIT_SMOKE"] = "1"
    try:
        assert main([str(a) for a in tiny(out)]) == 0
    finally:
        del os.environ["MINIDEIT_SMOKE"]
    return out


def test_resume_auto_with_a_bad_value_leaves_the_run_untouched(finished_run, capsys):
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in finished_run.iterdir()}
    code, _, err = run_cli(tiny(finished_run, "--resume", "auto", "--lr", "-1"), capsys)
    assert code == 2 and "--lr" in one_error_line(err)
    code, _, err = run_cli(tiny(finished_run, "--resume", "auto", "--input-size", "32"), capsys)
    assert code == 2
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in finished_run.iterdir()}
    assert after == before  # config.json included


def test_resume_with_another_input_size_or_class_count_says_what_differs(finished_run, tmp_path, capsys):
    ckpt = finished_run / "checkpoint.pth"
    code, _, err = run_cli(tiny(tmp_path / "a", "--resume", ckpt, "--input-size", "32"), capsys)
    line = one_error_line(err)
    assert code == 2 and "input size 16 (this run: --input-size 32)" in line and "--finetune" in line
    fake = make_folder(tmp_path / "three_classes", classes=3)
    code, _, err = run_cli(tiny(tmp_path / "b", "--resume", ckpt, "--data-set", "folder", "--data-path", fake),
                           capsys)
    line = one_error_line(err)
    assert code == 2 and "10 classes (this run's data: 3)" in line and "--finetune" in line


def test_a_damaged_checkpoint_is_refused_naming_the_fallback(finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("checkpoint.pth", "best_checkpoint.pth", "config.json", "log.jsonl"):
        (run / name).write_bytes((finished_run / name).read_bytes())
    data = bytearray((run / "checkpoint.pth").read_bytes())
    # Flip 64 bytes inside a stored tensor (the model's last bytes sit well inside the zip): it still loads.
    at = len(data) // 2
    data[at:at + 64] = bytes(b ^ 0xFF for b in data[at:at + 64])
    (run / "checkpoint.pth").write_bytes(bytes(data))
    code, _, err = run_cli(tiny(run, "--resume", "auto"), capsys)
    line = one_error_line(err)
    assert code == 2 and "damaged" in line and "best_checkpoint.pth" in line
    # the fallback it names works
    code, _, err = run_cli(tiny(run, "--resume", run / "best_checkpoint.pth", "--epochs", "2"), capsys)
    assert code == 0, err


def test_a_run_shorter_than_the_default_warmup_trains(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MINIDEIT_SMOKE")  # smoke mode would shorten the warm-up
    out = tmp_path / "short"
    args = tiny(out, "--epochs", "1")
    args.remove("--warmup-epochs"), args.remove("1")  # the default: 5 warm-up epochs
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert config["warmup_epochs"] == 5 and len(log) == 1
    peak = config["resolved_lr"]
    assert log[0]["lr"] == pytest.approx(1e-6 + (peak - 1e-6) / 5)  # a fifth of the way up the warm-up


def test_full_disk_during_a_save_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    real_save, calls = torch.save, []

    def disk_fills_up(obj, f, *a, **k):
        calls.append(1)
        if len(calls) >= 2:  # the first epoch's checkpoint fits, the second does not
            f.write(b"PK partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(checkpoint.torch, "save", disk_fills_up)
    code, _, err = run_cli(tiny(out), capsys)
    line = one_error_line(err)
    assert code == 2 and "No space left on device" in line and "previous checkpoint is intact" in line
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    assert torch.load(out / "checkpoint.pth", weights_only=False)["epoch"] == 0
    assert sorted(p.name for p in out.iterdir()) == ["best_checkpoint.pth", "checkpoint.pth", "config.json",
                                                     "curves.png", "log.jsonl"]  # no temporary left
    code, _, err = run_cli(tiny(out, "--resume", "auto"), capsys)  # and the run continues
    assert code == 0, err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGUSR1])
def test_a_signal_during_a_save_finishes_it_then_stops(sig, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    real_save = torch.save

    sent = []

    def signalled_while_writing(obj, f, *a, **k):
        if not sent:
            sent.append(os.kill(os.getpid(), sig))  # arrives in the middle of the first write
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(checkpoint.torch, "save", signalled_while_writing)
    code, _, err = run_cli(tiny(out, "--save-every-steps", "2"), capsys)
    assert code == 128 + sig, err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"stopped by {signal.Signals(sig).name}: wrote") and "--resume auto" in line
    assert "Traceback" not in err
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    ckpt = checkpoint.load_training_checkpoint(out / "checkpoint.pth")  # complete, checksum verified
    assert ckpt["sampler"]["steps_done"] == 2  # stopped right after the save it interrupted
    assert not list(out.glob(".*.tmp"))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers put back


def make_folder(root, classes=2, per_class=6):
    """A class-folder dataset (train/ and val/) of small readable JPEGs."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            d = root / split / f"n{c:08d}"
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(d / f"{i}.JPEG")
    return root


def test_odd_images_train_and_unreadable_ones_are_skipped_and_counted_once(tmp_path, capsys):
    data = make_folder(tmp_path / "data")
    d = data / "train" / "n00000000"
    Image.new("RGB", (1, 1), (200, 10, 10)).save(d / "one_pixel.JPEG")
    Image.new("RGB", (3, 2)).save(d / "tiny.JPEG")
    Image.new("RGB", (400, 2)).save(d / "strip_wide.png")
    Image.new("RGB", (2, 300)).save(d / "strip_tall.png")
    Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).save(d / "sixteen_bit.png")
    Image.new("P", (10, 10), 3).save(d / "palette.png")
    # Two broken files side by side: reading the first also tries the second (the skip-to-next rule), so the
    # second is attempted twice in the epoch; it is still one file.
    (d / "broken_a.JPEG").write_bytes(b"\xff\xd8 not really a jpeg")
    (d / "broken_b.JPEG").write_bytes(b"nope")
    out = tmp_path / "run"
    # 20 files, batch 4, no repeated augmentation: every file is read in the one epoch
    args = ["--model", "deit_nano_patch4_32", "--data-set", "folder", "--data-path", data, "--input-size", "16",
            "--batch-size", "4", "--epochs", "1", "--num-workers", "1", "--distillation-type", "none",
            "--no-repeated-aug", "--output-dir", out]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert log[0]["bad_images"] == 2  # the odd images all trained: only the two broken files are counted


def test_a_folder_where_no_image_can_be_read_is_refused_before_anything_is_built(tmp_path, capsys):
    data = tmp_path / "data"
    for split in ("train", "val"):
        for c in range(2):
            d = data / split / f"n{c}"
            d.mkdir(parents=True)
            for i in range(3):
                (d / f"{i}.JPEG").write_bytes(b"not an image")
    code, _, err = run_cli(["--data-set", "folder", "--data-path", data, "--model", "deit_nano_patch4_32",
                            "--input-size", "16", "--batch-size", "2", "--output-dir", tmp_path / "run"], capsys)
    line = one_error_line(err)
    assert code == 2 and "could be read" in line and "data_scripts" in line
    assert not (tmp_path / "run").exists()


def test_notebook_output_has_no_configuration_dump(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(train, "in_notebook", lambda: True)
    code, stdout, err = run_cli(tiny(tmp_path / "nb", "--epochs", "1"), capsys)
    assert code == 0, err
    assert not [line for line in stdout.splitlines() if line.startswith("configuration: {")]
    assert len(stdout.strip().splitlines()) <= 3, stdout  # one line to start, one per epoch
    assert "epoch 1/1" not in stdout + err  # no text progress bar without ipywidgets
    code, stdout, _ = run_cli(tiny(tmp_path / "cli", "--epochs", "1"), capsys)
    monkeypatch.setattr(train, "in_notebook", lambda: False)
    code, stdout, _ = run_cli(tiny(tmp_path / "cli2", "--epochs", "1"), capsys)
    config_line = next(line for line in stdout.splitlines() if line.startswith("configuration: {"))
    assert json.loads(config_line[len("configuration: "):])["amp"] == "off (CPU)"  # what is in effect


def test_help_describes_every_flag_with_its_default():
    from minideit.config import build_parser
    parser = build_parser()
    fields = {f.name for f in __import__("dataclasses").fields(TrainConfig)}
    for action in parser._actions:
        if action.dest == "help":
            continue
        assert action.help and len(action.help) > 10, action.option_strings
        if action.dest in fields and action.dest != "preset":
            assert "(default: " in action.help, action.option_strings
    text = parser.format_help()
    assert "deit_base_patch16_224" in text and "presets" in text.lower()


BEST_KILLER = textwrap.dedent("""
    import os, signal, sys
    from minideit import checkpoint
    out = sys.argv[1]
    real_replace = os.replace
    def killed_at_the_worst_moment(src, dst):
        if str(dst).endswith("best_checkpoint.pth"):
            os.kill(os.getpid(), signal.SIGKILL)  # the new best is complete under its temporary name
        return real_replace(src, dst)
    os.replace = killed_at_the_worst_moment
    checkpoint.link_atomic(os.path.join(out, "checkpoint.pth"), os.path.join(out, "best_checkpoint.pth"))
""")


def test_sigkill_while_promoting_the_best_checkpoint_leaves_the_previous_best(tmp_path):
    out = tmp_path / "run"
    checkpoint.save_atomic({"model": {"w": torch.zeros(3)}, "epoch": 0}, out / "checkpoint.pth")
    checkpoint.link_atomic(out / "checkpoint.pth", out / "best_checkpoint.pth")
    checkpoint.save_atomic({"model": {"w": torch.ones(3)}, "epoch": 1}, out / "checkpoint.pth")
    result = subprocess.run([sys.executable, "-c", BEST_KILLER, str(out)], cwd=ROOT, capture_output=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert result.returncode == -signal.SIGKILL
    assert checkpoint.load_training_checkpoint(out / "best_checkpoint.pth")["epoch"] == 0  # the previous best
    assert list(out.glob(".best_checkpoint.pth.*.tmp"))  # what the kill left ...
    assert checkpoint.remove_stale_temporaries(out)  # ... is removed at the next start
    assert sorted(p.name for p in out.iterdir()) == ["best_checkpoint.pth", "checkpoint.pth"]
