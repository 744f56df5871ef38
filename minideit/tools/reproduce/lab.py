"""Cached training runs for ``python -m minideit.reproduce``: how big a run is (:class:`Scale`) and one seed's
runs (:class:`Lab`), each trained once through :func:`minideit.train.run` and cached under ``--cache`` (default
``runs/reproduce/``) by a hash of its configuration. The teachers are trained once for all seeds (from the data
seed) and reused by every experiment that needs them; the students several experiments share (undistilled,
hard-distilled) are trained once a seed.

The experiments (``distillation.py``, ``recipe.py``) import this module; the command line (``cli.py``) imports them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path

import torch

from minideit import config as config_mod
from minideit.config import PRESETS, TrainConfig
from minideit.models import has_attention
from minideit.train import DEMO_TEACHER, run

EXPERIMENTS = ("distillation", "teachers", "agreement", "epochs", "ablation", "resolution", "transfer")
FIT_GIVEN = "train top-1, given labels (%)"  # a table column: `training_fit`'s top-1 against the given labels
# What `all` at the settings of `Scale()` takes with 3 seeds on this project's 2-core CPU, fresh cache: measured by
# the fourth final run on seeds 9-11 (book/results/README.md: about 166 minutes of wall time, of which the six
# experiments other than the ablation, with their teachers, 76.5 and the ablation about 89). Its Table 10 trains ~8
# minutes longer than the second and third final runs' did (PROTOCOL.md, Amendment 3), yet its `all` took less than
# their 176 and 173.7 minutes (book/results/second-final/summary.md, third-final/summary.md): ablation runs of the
# same size went ~14 % faster that day (89 minutes against ~103). Such day-to-day spread of the machine is the error
# of this figure.
FULL_MINUTES = 166.0
# What does not shrink with the epochs (building the data, scoring 10,000 validation images per run, starting
# processes), FIXED, comes from two measurements at the second final run's settings: `all` took 176 minutes at full
# length and 66.2 with every run's epochs cut to 0.34 (students 34, teachers 68, Table 8 204; the first
# book/results/hour, made before `scale_for` knew of fixed costs). Through the two points runs a line, minutes =
# FIXED + (176 - FIXED) * fraction: FIXED is about 10 minutes for 3 seeds. Checked by a third run: `all
# --budget-minutes 60` cut the epochs to 0.30 and took 61.2 minutes (book/results/second-final/hour), and with the
# third final run's settings about 61 again (book/results/third-final/hour). The fourth run's longer Table 10 adds
# training, which shrinks with the epochs, so the same FIXED carries over to its FULL_MINUTES: at its settings
# `--budget-minutes 60` cut the epochs to 0.32 and took 55.2 minutes (book/results/hour), on a day the machine ran
# fast.
SECOND_RUN_MINUTES = 176.0
SHORT_FRACTION, SHORT_MINUTES = 0.34, 66.2
FIXED_MINUTES = (SHORT_MINUTES - SHORT_FRACTION * SECOND_RUN_MINUTES) / (1 - SHORT_FRACTION)


# ----------------------------------------------------------------------------------------------------------------
# 1. How big each run is
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Scale:
    """Sizes of one run: the regime the paper is about, a transformer trained long on too little data for it
    (book/results/development.md, runs 7–18, chose these on development seeds). 512 clearly drawn images with 30%
    noisy labels, students (DeiT-nano with 8×8 patches) trained 100 epochs: the undistilled student fits its
    training images far better than the validation images (over-fitting), while the convnet teacher, with the
    inductive bias the transformer lacks, generalises much better. ``all`` with 3 seeds then takes
    ``FULL_MINUTES`` on a 2-core CPU (``--budget-minutes`` shortens every run by the same factor). The paper trains
    300 epochs on 1.28M images; these runs are ~10⁵ times smaller."""
    num_samples: int = 512  # synthetic training images: few enough for the transformer to over-fit
    epochs: int = 100  # one student run; `epochs` adds one of half the length (75 lost distillation's gain:
    # development.md, run 16)
    teacher_epochs: int = 200  # the convnet teacher (`teachers` adds one of half the length)
    # The teachers' regularisers, Table 9's strengths of Mixup, CutMix and label smoothing. Without them the convnet
    # memorises the 30% random labels (on the development images it reproduced 87% of its training images' given
    # labels while reading only 78% of the glyphs drawn), so its labels there say little that the given ones do not;
    # with them it reproduced 69-79% of the given labels, read 86% of the glyphs, and was 3-10 points better on
    # validation images (development.md, run 34; added to the protocol before its second final run, on whose images
    # it still reproduced 86%: how well it resists memorising depends on the images). 0 turns each off.
    teacher_mixup: float = 0.8
    teacher_cutmix: float = 1.0
    teacher_smoothing: float = 0.1
    # The resolution fine-tunes: the paper's 30 epochs (after 300). At 10, a tenth of training as the first three
    # final runs had it, the 48- and 64-px fine-tunes were still learning their larger grids of tokens (development.md,
    # run 46: 30 epochs added 2.6 and 4.2 points to them and nothing to the 32-px control; PROTOCOL.md, Amendment 3).
    finetune_epochs: int = 30
    transfer_samples: int = 512  # training images of the transfer target
    # Table 8's ablation trains on its own, smaller set, longer. A regulariser can only be missed where the model
    # over-fits with the whole recipe on. At 512 images for 300 epochs it was still learning its glyphs and every
    # removal raised top-1; at 256 images for 600 epochs it fits about as many training labels as are right, and
    # removing RandAugment or Mixup/CutMix lowers top-1 (development.md, runs 24, 26, 29-31).
    ablation_samples: int = 256
    ablation_epochs: int = 600
    batch_size: int = 32  # 16 optimiser steps an epoch on 512 images
    input_size: int = 32  # image side in pixels (the synthetic images are drawn at this size)
    # Validation images (the generator's default is 1,000). Which of 1,000 images a run happens to get right adds
    # ~1 point of spread from seed to seed on top of training's own (2.4-3.7); on 10,000 about a third of that
    # (development.md, run 25). Evaluating them costs seconds: it happens once, after the last epoch.
    val_samples: int = 10_000
    lr: float = 3e-4  # the students' AdamW learning rate, not scaled by the batch (development.md, run 12)
    patch_size: int = 8  # the students' patch side at 32 px: 8 gives 4×4 = 16 tokens (3× faster than 4's 64)
    # The std of the students' q/k/v at initialisation: 0.05, not the official 0.02, which at width 128 starts the
    # attention so flat that the distillation-token student lost 2-8 points to the class-token one on some seeds;
    # 0.05 (the demo's) steadied every student on development seeds (development.md, runs 42 and 44; PROTOCOL.md,
    # Amendment 2, done by the third final run). The first two final runs used 0.02. Convnets have no attention and
    # always get the default.
    attn_init_std: float = 0.05
    synthetic_style: str = "clear"  # how the synthetic images are drawn (minideit/data/synthetic.py, STYLES)
    # Table 10's images (resolution only). "fine" draws glyphs of many sizes anti-aliased, so that the small ones lose
    # detail at 32 px that 48 and 64 px show, as photos do; the clear style's blocky glyphs look the same at every
    # size, and on them every higher resolution lost accuracy in all three final runs. The fourth final run, whose
    # tables are the book's, used "fine" (PROTOCOL.md, Amendment 3; development.md, run 46).
    resolution_style: str = "fine"
    # Every seed trains on the same images, drawn once from this seed, as every run of the paper trains on the same
    # ImageNet: a seed then changes what it changes there (initialisation, order, augmentation), and a comparison
    # between rows is not swamped by how easy each seed's 512 images happen to be. Development runs use another
    # data seed (--set data_seed=100) than the final tables, so that settings are never chosen on final images. The
    # book's tables come from data seed 3 (seeds 9-11, the fourth final run); the third used 2 (seeds 6-8), the second
    # 1 (seeds 3-5), the first 0 (seeds 0-2; PROTOCOL.md).
    data_seed: int = 3


def predicted_minutes(fraction: float, num_seeds: int) -> float:
    """Wall minutes of ``all`` on a 2-core CPU like ours, fresh cache, with every run's epochs cut to ``fraction`` of
    ``Scale()``'s: the line through the two measurements above, for 3 seeds, and in proportion for other counts."""
    return num_seeds / 3 * (FIXED_MINUTES + (FULL_MINUTES - FIXED_MINUTES) * fraction)


def budget_fraction(budget_minutes: float, num_seeds: int) -> float:
    """The largest fraction of the epochs (at most 1) whose ``predicted_minutes`` fit the budget; 0 where even the
    fixed costs do not (the runs then take the shortest lengths ``scale_for`` allows)."""
    per_three_seeds = budget_minutes * 3 / num_seeds
    return min(1.0, max(0.0, (per_three_seeds - FIXED_MINUTES) / (FULL_MINUTES - FIXED_MINUTES)))


def scale_for(budget_minutes: float | None, num_seeds: int, full: Scale | None = None) -> Scale:
    """``full`` (default ``Scale()``), or, given ``budget_minutes``, shrunk (never grown) so that ``num_seeds`` seeds
    of the whole suite fit in it on a CPU like ours. The epochs shrink by ``budget_fraction``, which leaves the
    fixed costs their share, and are rounded down so that the prediction stays inside the budget (the runs'
    own times vary by a few percent: 61.2 minutes were measured for 60)."""
    full = full or Scale()
    if config_mod.smoke():  # tiny sizes; the other settings (--set data_seed=..., attn_init_std=...) still hold
        return dataclasses.replace(full, num_samples=64, epochs=1, teacher_epochs=1, finetune_epochs=1,
                                   transfer_samples=64, ablation_samples=64, ablation_epochs=1, batch_size=32)
    if budget_minutes is None:
        return full
    factor = budget_fraction(budget_minutes, num_seeds)
    return dataclasses.replace(full, epochs=max(2, math.floor(full.epochs * factor)),
                               teacher_epochs=max(2, math.floor(full.teacher_epochs * factor)),
                               ablation_epochs=max(2, math.floor(full.ablation_epochs * factor)),
                               finetune_epochs=max(1, math.floor(full.finetune_epochs * factor)))


# ----------------------------------------------------------------------------------------------------------------
# 2. Cached training runs of one seed
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Run:
    name: str
    cfg: TrainConfig
    stats: dict  # the last epoch's figures, as train.run returns them
    weights: Path  # {'model': state_dict}, what --finetune and --teacher-path read
    seconds: float


class Lab:
    """All runs of one seed on one dataset. ``train(name, **overrides)`` trains the demo recipe (preset ``demo``:
    AdamW, no Mixup/RandAugment, which suits a few thousand images) with ``overrides`` once, and afterwards returns
    the cached result: the run directory is named after a hash of the configuration."""

    def __init__(self, root: Path, data_set: str, data_path: str, seed: int, scale: Scale, log=print,
                 tag: str = ""):
        self.root = Path(root)
        self.cache = self.root / (tag or data_set) / f"seed{seed}"
        self.data_set, self.data_path, self.seed, self.scale, self.log = data_set, data_path, seed, scale, log
        self.tag = tag
        self.used: dict[str, float] = {}  # run folder → its training seconds, for every run asked for (cached too)
        # the students: DeiT-nano with the scale's patch size, without and with the distillation token
        self.nano = f"deit_nano_patch{scale.patch_size}_32"
        self.nano_dist = f"deit_nano_distilled_patch{scale.patch_size}_32"

    def sibling(self, data_set: str, data_path: str, tag: str = "") -> "Lab":
        """The same seed and scale on another dataset (transfer's source or target)."""
        return Lab(self.root, data_set, data_path, self.seed, self.scale, self.log, tag)

    def teachers_lab(self) -> "Lab":
        """Where the teachers live: one set for every seed, trained once from the data seed, as every student of
        the paper distils from the one RegNetY-16GF: a student's seed then changes what it changes in the paper
        (its initialisation, order and augmentation), and the teachers cost one training instead of one a seed
        (development.md, runs 19 and 21). Their training time counts in this lab's ``used``, under the shared
        folder's name, so that it is counted once however many seeds use them."""
        shared = Lab(self.root, self.data_set, self.data_path, self.scale.data_seed, self.scale, self.log, self.tag)
        shared.cache = self.root / (self.tag or self.data_set) / f"teachers-seed{self.scale.data_seed}"
        shared.used = self.used
        return shared

    def config(self, **overrides) -> TrainConfig:
        s = self.scale
        cfg = TrainConfig(**PRESETS["demo"])
        epochs = overrides.get("epochs", s.epochs)
        cfg = dataclasses.replace(
            cfg, data_set=self.data_set, data_path=self.data_path, seed=self.seed, batch_size=s.batch_size,
            input_size=s.input_size, lr=s.lr,
            num_samples=s.num_samples if self.data_set == "synthetic" else 0, epochs=epochs,
            val_samples=s.val_samples if self.data_set == "synthetic" else 0,
            synthetic_style=s.synthetic_style if self.data_set == "synthetic" else "standard",
            data_seed=s.data_seed if self.data_set == "synthetic" else -1,
            warmup_epochs=max(min(1, epochs - 1), epochs // 10),  # the demo's one epoch, a tenth of longer runs
            model=self.nano, distillation_type="none", teacher_path="", num_workers=0, attn_init_std=s.attn_init_std,
            log_every=10 ** 6, resume="auto", eval_every=epochs)  # only the last epoch is reported
        cfg = dataclasses.replace(cfg, **overrides)
        if not has_attention(cfg.model):  # a convnet (a teacher) has no attention to start wider
            cfg.attn_init_std = TrainConfig.attn_init_std
        return cfg

    def train(self, name: str, **overrides) -> Run:
        cfg = self.config(**overrides)
        key = config_hash(cfg)
        found = sorted(self.cache.glob(f"*-{key}/result.json"))  # the same run, perhaps under another name
        folder = found[0].parent if found else self.cache / f"{name}-{key}"
        cfg.output_dir = str(folder)
        done = folder / "result.json"
        if done.is_file():
            saved = json.loads(done.read_text())
            self.used[self.run_key(folder)] = saved["seconds"]
            return Run(name, cfg, saved["stats"], folder / "weights.pth", saved["seconds"])
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        # train.run prints a configuration line, progress bars and a line per epoch: keep them in the run folder.
        with open(folder / "train.log", "a") as logf, contextlib.redirect_stdout(logf), \
                contextlib.redirect_stderr(logf):
            stats = run(cfg)
        seconds = time.perf_counter() - t0
        if cfg.eval:  # evaluation only: the figures come back without the test_ prefix and there are no weights
            stats = {f"test_{k}": v for k, v in stats.items()}
        else:
            slim_checkpoint(folder)
        done.write_text(json.dumps({"stats": stats, "seconds": seconds, "config": config_mod.to_dict(cfg)},
                                   indent=1, default=str))
        self.log(f"  {self.cache.name} · {name}: top-1 {stats['test_acc1']:.1f}% ({seconds:.0f} s)")
        self.used[self.run_key(folder)] = seconds
        return Run(name, cfg, stats, folder / "weights.pth", seconds)

    def run_key(self, folder: Path) -> str:
        """A run's name in ``used``: its folder, under its seed's folder, e.g. ``seed0/deit-none-1a2b3c4d``."""
        return f"{folder.parent.name}/{folder.name}"

    def teacher(self, epochs: int | None = None) -> Run:
        """The convnet teacher, shared by every seed (``teachers_lab``): regnety_002 (stem stride 1 at 32 px) with
        the demo's teacher settings (AdamW lr 2e-3, batch 64), warmed up for a tenth of its epochs as the students
        are, and regularised by the scale's Mixup, CutMix and label smoothing so that it does not learn the random
        labels by heart."""
        s = self.scale
        epochs = epochs or s.teacher_epochs
        return self.teachers_lab().train(
            f"teacher-regnety_002-e{epochs}", model="regnety_002",
            **dict(DEMO_TEACHER, epochs=epochs, warmup_epochs=max(min(1, epochs - 1), epochs // 10),
                   mixup=s.teacher_mixup, cutmix=s.teacher_cutmix, smoothing=s.teacher_smoothing))

    def transformer_teacher(self) -> Run:
        """Table 2's transformer teacher, shared by every seed like the convnet: the undistilled student of the
        data seed."""
        return self.teachers_lab().undistilled()

    def student(self, name: str, model: str, distillation: str = "none", teacher: Run | None = None,
                **overrides) -> Run:
        if teacher is not None:
            # The students of a seed see the same batches, so the teacher's answers are computed once and read back
            # by the others (minideit/teacher_cache.py): a distilled run takes ~25% less time, with the same results.
            overrides.update(teacher_model=teacher.cfg.model, teacher_path=str(teacher.weights),
                             teacher_cache=str(teacher.weights.parent / f"answers-seed{self.seed}.pt"))
        return self.train(name, model=model, distillation_type=distillation, **overrides)

    def fit(self, run: Run) -> dict:
        """How well a trained run fits its own training images (the evaluation transform, no augmentation): top-1
        against the labels it was trained on (30% of them random) and against the glyphs actually drawn. Training
        accuracy far above the validation accuracy is over-fitting, the regime the paper's recipe is built for;
        near 100% on the noisy labels means the model memorised the random ones. Cached in the run folder."""
        cached = run.weights.parent / "fit.json"
        if cached.is_file():
            return json.loads(cached.read_text())
        if self.data_set != "synthetic":
            return {}
        result = training_fit(run.cfg, run.weights)
        cached.write_text(json.dumps(result))
        return result

    # The students that several experiments share: train them in one place so their settings cannot drift apart.
    def undistilled(self) -> Run:
        return self.student("deit-none", self.nano)

    def hard_distilled(self) -> Run:
        return self.student("deit-distilled-hard", self.nano_dist, "hard", self.teacher())


def trained_model(cfg: TrainConfig, weights: Path) -> torch.nn.Module:
    """The model a cached run trained, rebuilt from its configuration and ``weights``, in eval mode, on the CPU."""
    from minideit.models import create_model
    from minideit.train import model_overrides, num_classes_of
    size = {"img_size": cfg.input_size} if cfg.model.startswith("deit") else {}
    model = create_model(cfg.model, num_classes_of(cfg), **size,
                         **model_overrides(cfg.model, cfg.input_size, cfg.model_overrides))
    model.load_state_dict(torch.load(weights, map_location="cpu")["model"])
    return model.eval()


@torch.no_grad()
def training_fit(cfg: TrainConfig, weights: Path) -> dict:
    """{'train top-1, given labels (%)', 'train top-1, drawn glyphs (%)'} of the model in ``weights`` on the
    training images of ``cfg`` (synthetic data), read with the evaluation transform."""
    from minideit.data.synthetic import SyntheticShapes
    from minideit.data.transforms import build_transform
    from minideit.train import synthetic_seed
    data = SyntheticShapes("train", img_size=cfg.input_size, num_samples=cfg.num_samples or None,
                           seed=synthetic_seed(cfg), style=cfg.synthetic_style,
                           transform=build_transform(False, cfg.input_size, small_input=True))
    model = trained_model(cfg, weights)
    predicted = []
    for start in range(0, len(data), 256):
        images = torch.stack([data[i][0] for i in range(start, min(start + 256, len(data)))])
        logits = model(images)
        if isinstance(logits, tuple):  # a distilled model: the joint classifier, (class head + dist head) / 2
            logits = (logits[0] + logits[1]) / 2
        predicted.append(logits.argmax(1))
    predicted = torch.cat(predicted)
    given, drawn = torch.tensor(data.targets), torch.tensor(data.clean_targets)  # copies: the arrays are read-only
    return {FIT_GIVEN: (predicted == given).float().mean().item() * 100,
            "train top-1, drawn glyphs (%)": (predicted == drawn).float().mean().item() * 100}


def config_hash(cfg: TrainConfig) -> str:
    """8 hex digits of the configuration; paths of teachers/checkpoints count by their run folder's name."""
    d = config_mod.to_dict(cfg)
    # A setting added after runs were cached leaves the hash of a run at its default as it was, so that a cache made
    # before it is still found (a run at another value gets a hash of its own)
    for key, default in (("attn_init_std", TrainConfig.attn_init_std),):
        if d.get(key) == default:
            d.pop(key)
    for key in ("output_dir", "log_every", "resume", "num_workers", "device", "eval_every", "threads",
                "teacher_cache"):
        d.pop(key, None)
    for key in ("teacher_path", "finetune"):
        if d.get(key):
            d[key] = Path(d[key]).parent.name
    return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:8]


def slim_checkpoint(folder: Path) -> None:
    """Keep only the weights (a few MB); the optimiser state and the best-epoch copy are not needed again."""
    ckpt = torch.load(folder / "checkpoint.pth", map_location="cpu", weights_only=False)
    torch.save({"model": ckpt["model"]}, folder / "weights.pth")
    for name in ("checkpoint.pth", "best_checkpoint.pth"):
        (folder / name).unlink(missing_ok=True)
