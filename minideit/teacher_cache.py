"""A frozen teacher that remembers its answers, so that several students trained on the same batches run it once.

Speed only: the students learn exactly what they would learn from the teacher itself. ``python -m
minideit.reproduce`` trains up to five distilled students a seed from one teacher (soft, hard, the distillation
token, the half-length run, ...), and at 32 px the RegNetY teacher's forward pass is about a quarter of a
distilled student's training time. With ``--teacher-cache FILE`` the first student stores the teacher's logits for
every batch it sees and the next ones read them back (a 10-epoch DeiT-nano⚗ run on 512 images, one thread: 22.5 s
with the teacher, 16.9 s with its answers read back, median of three interleaved runs on a quiet 2-core CPU).

Why the answers can be reused:

- the teacher is frozen and in eval mode (paper §4), so its output is a function of the input batch alone;
- the students of one seed see the same batches in the same order: each image's augmentation is drawn from
  (seed, epoch, position) (``train.sample_seed``), never from the model's random numbers, and the order from
  (seed, epoch). A student with another batch size, other augmentation or another teacher simply finds no answers.

A batch is looked up by a hash of its bytes (and its shape and dtype), so two batches that differ in one pixel
never share an answer: that is a miss, and the teacher runs; the file also records a hash of the teacher's
weights, and a file written for another teacher is ignored. The file is written at the end of the run (also of a
run stopped early); losing it costs time, never correctness. A path that holds anything else is never
overwritten. It is meant for small runs like the reproduce suite's: every batch is copied to the CPU to be hashed,
and the file grows by batch × classes numbers a step (2 MB for a 100-epoch run on 512 images, gigabytes for an
ImageNet run).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn


def teacher_fingerprint(teacher: nn.Module) -> str:
    """A hash of the teacher's weights (values and dtypes): answers stored for one teacher are never read for
    another, even if the same file is given to both."""
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in teacher.state_dict().items():
        h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        h.update(tensor.detach().contiguous().view(-1).cpu().view(torch.uint8).numpy())
    return h.hexdigest()


def batch_key(images: torch.Tensor) -> str:
    """A 128-bit hash of the batch's bytes, with its shape and dtype: equal keys mean equal batches."""
    flat = images.detach().contiguous().view(-1).cpu()
    digest = hashlib.blake2b(flat.view(torch.uint8).numpy(), digest_size=16).hexdigest()
    return f"{digest}-{tuple(images.shape)}-{images.dtype}"


class RememberingTeacher(nn.Module):
    """``teacher`` with a table of its answers, read from and written to ``path`` (see the module docstring)."""

    def __init__(self, teacher: nn.Module, path: str | Path):
        super().__init__()
        self.teacher = teacher
        self.path = Path(path)
        self.fingerprint = teacher_fingerprint(teacher)
        self.answers: dict[str, torch.Tensor] = {}
        self.note = ""
        self.keep = True  # False: `path` holds something else, which save() must not overwrite
        if self.path.is_file():
            self.read()
        self.hits = self.misses = 0

    def read(self) -> None:
        """Load the answers in ``path`` if it is an answers file of this teacher. Another teacher's answers are
        ignored (and replaced at the end); a file that is not an answers file at all (unreadable, or someone's
        weights given by mistake) is left as it is, and this run's answers are not kept."""
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:
            saved = e
        if not (isinstance(saved, dict) and {"teacher", "answers"} <= saved.keys()):
            self.keep = False
            why = f"could not read it: {saved}" if isinstance(saved, Exception) else "it is not a teacher-answers file"
            self.note = f" ({self.path} left as it is, {why}; this run's answers are not kept)"
        elif saved["teacher"] != self.fingerprint:
            self.note = f" ({self.path} holds another teacher's answers; starting empty)"
        else:
            self.answers = saved["answers"]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        key = batch_key(images)
        found = self.answers.get(key)
        if found is not None:
            self.hits += 1
            return found.to(images.device)
        self.misses += 1
        logits = self.teacher(images)
        self.answers[key] = logits.detach().cpu()
        return logits

    def save(self) -> None:
        """Write the table if this run added answers: to a temporary name, then renamed, so a reader never sees half
        a file."""
        if self.misses == 0 or not self.keep:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"teacher": self.fingerprint, "answers": self.answers}, tmp)
            os.replace(tmp, self.path)
        except OSError as e:  # a full disk or a read-only folder costs the answers, not the finished run
            self.note += f" (could not write {self.path}: {e})"

    def summary(self) -> str:
        total = self.hits + self.misses
        return (f"teacher answers: {self.hits} of {total} batches read from {self.path}, {self.misses} computed"
                + self.note)
