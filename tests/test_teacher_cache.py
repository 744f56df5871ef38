"""--teacher-cache (minideit/teacher_cache.py): students of the same batches share the teacher's answers, and learn
exactly what they would learn from the teacher itself."""
import re

import pytest
import torch

from minideit.teacher_cache import RememberingTeacher, batch_key
from test_train import read_log, run_cli, save_teacher, synthetic_args


@pytest.fixture(autouse=True)
def smoke(monkeypatch):
    monkeypatch.setenv("MINIDEIT_SMOKE", "1")


class CountingTeacher(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x.flatten(1)[:, :3] * 2


def test_a_batch_that_differs_in_one_pixel_is_not_answered_from_the_table(tmp_path):
    inner = CountingTeacher()
    teacher = RememberingTeacher(inner, tmp_path / "answers.pt")
    x = torch.rand(4, 3, 8, 8)
    first, again = teacher(x), teacher(x.clone())
    assert torch.equal(first, again) and inner.calls == 1 and (teacher.hits, teacher.misses) == (1, 1)
    y = x.clone()
    y[2, 1, 5, 5] += 1e-6
    assert torch.equal(teacher(y), inner(y)) and teacher.misses == 2  # computed, not read
    assert batch_key(x) != batch_key(x[:3]) and batch_key(x) != batch_key(x.double())
    teacher.save()
    reread = RememberingTeacher(CountingTeacher(), tmp_path / "answers.pt")
    assert torch.equal(reread(x), first) and reread.teacher.calls == 0


def test_a_damaged_or_unwritable_file_costs_the_answers_not_the_run(tmp_path):
    bad = tmp_path / "answers.pt"
    bad.write_bytes(b"not a torch file")
    teacher = RememberingTeacher(CountingTeacher(), bad)
    x = torch.rand(2, 3, 4, 4)
    assert torch.equal(teacher(x), x.flatten(1)[:, :3] * 2) and "could not read" in teacher.summary()
    teacher.save()
    assert bad.read_bytes() == b"not a torch file"  # not ours: left as it is
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    teacher = RememberingTeacher(CountingTeacher(), blocked / "answers.pt")  # its folder is a file
    teacher(x)
    teacher.save()
    assert "could not write" in teacher.summary()


def test_a_second_student_of_the_same_batches_reads_every_answer_and_learns_the_same(tmp_path, capsys):
    teacher = save_teacher(tmp_path / "teacher.pth", stem_stride=1)
    answers = tmp_path / "answers.pt"
    # the default recipe: RandAugment, erasing, Mixup/CutMix and stochastic depth all draw random numbers
    distil = ["--distillation-type", "hard", "--teacher-model", "regnety_002", "--teacher-path", teacher,
              "--epochs", "1"]
    code, _, err = run_cli(synthetic_args(tmp_path / "plain", *distil), capsys)
    assert code == 0, err
    code, first, err = run_cli(synthetic_args(tmp_path / "first", *distil, "--teacher-cache", answers), capsys)
    assert code == 0, err
    # the first student computes every training batch's answer (the validation set, the same each epoch, is read
    # back from the second evaluation on)
    computed = int(re.search(r"teacher answers: \d+ of \d+ batches read from .*, (\d+) computed", first).group(1))
    assert computed > 0 and answers.is_file()
    # another student (no distillation token: both terms on the class head) of the same seed and batches
    code, second, err = run_cli(synthetic_args(tmp_path / "second", *distil, "--teacher-cache", answers,
                                               "--model", "deit_nano_patch4_32"), capsys)
    assert code == 0, err
    read, total = map(int, re.search(r"teacher answers: (\d+) of (\d+) batches read", second).groups())
    assert read == total > 0, second
    code, _, err = run_cli(synthetic_args(tmp_path / "second_plain", *distil, "--model", "deit_nano_patch4_32"),
                           capsys)
    assert code == 0, err
    for cached, plain in ((tmp_path / "first", tmp_path / "plain"), (tmp_path / "second", tmp_path / "second_plain")):
        for a, b in zip(read_log(cached), read_log(plain), strict=True):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
            assert a["test_acc1"] == b["test_acc1"] and a["test_agreement"] == b["test_agreement"]


def test_a_file_written_for_another_teacher_is_not_read(tmp_path):
    x = torch.rand(2, 3, 4, 4)
    first = RememberingTeacher(torch.nn.Linear(48, 3), tmp_path / "answers.pt")
    first(x.flatten(1))
    first.save()
    other = RememberingTeacher(torch.nn.Linear(48, 3), tmp_path / "answers.pt")  # other weights, same file
    assert torch.equal(other(x.flatten(1)), other.teacher(x.flatten(1))) and other.misses == 1
    assert "another teacher" in other.summary()
    same = RememberingTeacher(first.teacher, tmp_path / "answers.pt")
    same(x.flatten(1))
    assert same.hits == 1


@pytest.mark.parametrize("other", [torch.ones(3), [1, 2], {"model": {"w": torch.ones(2)}}])
def test_a_path_holding_something_else_is_used_and_left_as_it_is(tmp_path, other):
    """--teacher-cache pointed at a file that is not an answers file (a weights file given by mistake): the run
    computes every answer, says so, and never overwrites the file."""
    path = tmp_path / "weights.pth"
    torch.save(other, path)
    before = path.read_bytes()
    teacher = RememberingTeacher(CountingTeacher(), path)
    x = torch.rand(2, 3, 4, 4)
    assert torch.equal(teacher(x), x.flatten(1)[:, :3] * 2) and teacher.misses == 1
    teacher.save()
    assert path.read_bytes() == before and "not a teacher-answers file" in teacher.summary()
