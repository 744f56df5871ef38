"""python -m minideit.reproduce: every experiment end to end in smoke mode, the cache, the tables, bad input."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minideit.tools.reproduce import cli
from minideit.tools.reproduce import lab as rlab
from minideit.tools.reproduce.common import Gap, claim, gap, merge

ROOT = Path(__file__).resolve().parents[1]

EXPECTED_ROWS = {
    "distillation": {"teacher (regnety_002)", "no distillation", "soft, class token", "hard, class token only",
                     "DeiT⚗ hard: class head", "DeiT⚗ hard: distillation head", "DeiT⚗ hard: joint"},
    "teachers": {"no teacher", "convnet regnety_002, ½ length",
                 "convnet regnety_002, full length", "transformer deit_nano, full length"},
    "agreement": {"ground truth", "teacher", "no distillation", "DeiT⚗ class", "DeiT⚗ distillation", "DeiT⚗ joint"},
    "epochs": {"½ length", "full length"},
    "ablation": {"base: Table 9 recipe", "− Mixup and CutMix", "− RandAugment", "− random erasing",
                 "− stochastic depth", "− repeated augmentation", "SGD instead of AdamW", "+ EMA of the weights",
                 "demo recipe (none of Table 9's regularisers)"},
    "resolution": {"train 32, test 32", "fine-tune at 32 (control)", "test at 48, no fine-tuning", "fine-tune at 48",
                   "test at 64, no fine-tuning", "fine-tune at 64"},
    "transfer": {"from scratch", "fine-tuned from DeiT-nano", "fine-tuned from DeiT-nano⚗ (class head)"},
}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """`all` once, in smoke mode, with one seed: every experiment's files, and the cache they shared."""
    tmp = tmp_path_factory.mktemp("reproduce")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINIDEIT_SMOKE", "1")
        code = cli.main(["all", "--seeds", "0", "--out", str(tmp / "out"), "--cache", str(tmp / "cache")])
    assert code == 0
    return tmp


@pytest.mark.slow
@pytest.mark.parametrize("name", cli.EXPERIMENTS)
def test_every_experiment_writes_json_markdown_and_png(suite, name):
    out = suite / "out"
    payload = json.loads((out / f"{name}.json").read_text())
    assert payload["experiment"] == name and payload["seeds"] == [0] and payload["smoke"] is True
    first = next(iter(payload["tables"].values()))
    assert set(first) == EXPECTED_ROWS[name]
    for row in first.values():
        for cell in row.values():
            assert len(cell["values"]) >= 1 and cell["mean"] == pytest.approx(sum(cell["values"]) / len(cell["values"]),
                                                                            abs=1e-3)
    assert payload["claims"] and all(c["holds"] in (True, False) and c["evidence"] for c in payload["claims"])
    assert all(c["verdict"] in ("yes", "same within error", "not shown", "no") for c in payload["claims"])
    if name == "distillation":  # the over-fitting evidence: training top-1 beside the validation top-1
        for row in ("teacher (regnety_002)", "no distillation", "DeiT⚗ hard: joint"):
            fit = first[row]["train top-1, given labels (%)"]["mean"]
            assert 0 <= fit <= 100 and "train top-1, drawn glyphs (%)" in first[row]
    md = (out / f"{name}.md").read_text()
    assert md.startswith("# ") and "| " in md and "Does the paper's ordering show up?" in md
    for row in EXPECTED_ROWS[name]:
        assert f"| {row} |" in md
    png = (out / f"{name}.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    readme = (out / "README.md").read_text()
    assert "[PROTOCOL.md](PROTOCOL.md)" in readme and f"| [{name}]({name}.md) |" in readme
    assert " of 21** of the paper's orderings agree" in readme  # every experiment's claims counted once


@pytest.mark.slow
def test_teacher_and_shared_students_are_trained_once(suite):
    runs = suite / "cache" / "synthetic" / "seed0"
    names = [p.name.rsplit("-", 1)[0] for p in runs.iterdir()]
    # Used by distillation, teachers, agreement and epochs; one epoch in smoke mode, so all lengths coincide.
    # Trained once for every seed, from the data seed, beside the seeds' folders; never in a seed's own folder.
    shared = runs.parent / f"teachers-seed{rlab.Scale().data_seed}"
    teachers = [p.name.rsplit("-", 1)[0] for p in shared.iterdir() if p.is_dir()]
    assert teachers.count("teacher-regnety_002-e1") == 1 and "teacher-regnety_002-e1" not in names
    # one epoch in smoke mode: the ½ length of `epochs` rounds up to the shared 1-epoch student. Table 10 trains one
    # more undistilled student, on images of its own style (Scale.resolution_style), which nothing else shares.
    styles = sorted(json.loads((p / "config.json").read_text())["synthetic_style"]
                    for p in runs.iterdir() if p.name.rsplit("-", 1)[0] == "deit-none")
    assert styles == sorted([rlab.Scale().synthetic_style, rlab.Scale().resolution_style])
    assert all((p / "result.json").is_file() for p in runs.iterdir())
    assert not list(runs.glob("*/checkpoint.pth"))  # slimmed down to weights.pth


@pytest.mark.slow
def test_agreement_matrix_is_symmetric_with_zero_diagonal(suite):
    table = json.loads((suite / "out" / "agreement.json").read_text())["tables"]["disagreement"]
    for a in table:
        assert table[a][a]["mean"] == 0
        for b in table:
            assert table[a][b]["mean"] == pytest.approx(table[b][a]["mean"])
            assert 0 <= table[a][b]["mean"] <= 1
    cosine = json.loads((suite / "out" / "agreement.json").read_text())["tables"]["token cosine"]
    assert len(cosine) == 7  # the input and after each of DeiT-nano's 6 blocks


@pytest.mark.slow
def test_seeds_trained_side_by_side_give_the_tables_of_every_seed(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDEIT_SMOKE", "1")
    code = cli.main(["distillation", "--seeds", "0", "1", "--jobs", "2", "--out", str(tmp_path / "out"),
                           "--cache", str(tmp_path / "cache")])
    assert code == 0
    payload = json.loads((tmp_path / "out" / "distillation.json").read_text())
    assert payload["seeds"] == [0, 1]
    assert payload["seconds"] > 0  # the workers' training time, read back from the cached runs by the parent
    for row in next(iter(payload["tables"].values())).values():
        assert all(len(cell["values"]) == 2 for col, cell in row.items() if not col.startswith("paper"))
    for seed in (0, 1):  # each worker trained its seed's runs into the shared cache
        assert list((tmp_path / "cache" / "synthetic" / f"seed{seed}").glob("deit-none-*/result.json"))
    # one teacher for both seeds, trained before the workers started; each seed's students distil from it and keep
    # their own file of its answers
    shared = tmp_path / "cache" / "synthetic" / f"teachers-seed{rlab.Scale().data_seed}"
    teachers = list(shared.glob("teacher-*/result.json"))
    assert len(teachers) == 1
    for seed in (0, 1):
        hard = next((tmp_path / "cache" / "synthetic" / f"seed{seed}").glob("deit-distilled-hard-*/result.json"))
        assert Path(json.loads(hard.read_text())["config"]["teacher_path"]).parent == teachers[0].parent
        assert (teachers[0].parent / f"answers-seed{seed}.pt").is_file()
    teacher_row = payload["tables"]["top-1"]["teacher (regnety_002)"]["top-1 (%)"]["values"]
    assert teacher_row[0] == teacher_row[1]


def test_cached_run_is_not_trained_again(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDEIT_SMOKE", "1")
    lab = rlab.Lab(tmp_path, "synthetic", "", 0, rlab.scale_for(60, 1), log=lambda *_: None)
    first = lab.train("a", model="deit_nano_patch4_32", epochs=1)
    monkeypatch.setattr(rlab, "run", lambda cfg: pytest.fail("a cached run was trained again"))
    again = lab.train("b", model="deit_nano_patch4_32", epochs=1)  # another name, same configuration
    assert again.stats == first.stats and again.weights == first.weights
    assert rlab.config_hash(lab.config(epochs=2)) != rlab.config_hash(lab.config(epochs=1))


def test_a_cache_made_before_a_setting_existed_is_still_found(monkeypatch):
    """Adding attn_init_std must not change the hash of a run at its default: these are the hashes of the same
    configurations under the code before the setting existed (commit 9fc1543), under which caches were filled."""
    monkeypatch.delenv("MINIDEIT_SMOKE", raising=False)
    # the second final run's settings, written out: the defaults have moved on since (seeds 6-8, data seed 2, 0.05)
    lab = rlab.Lab(Path("/nonexistent"), "synthetic", "", 3, rlab.Scale(data_seed=1, attn_init_std=0.02),
                   log=lambda *_: None)
    assert rlab.config_hash(lab.config()) == "deb60d8a"
    assert rlab.config_hash(lab.config(model="regnety_002", epochs=200)) == "5a3d6815"
    assert rlab.config_hash(lab.config(attn_init_std=0.05)) != "deb60d8a"


def test_the_scale_sets_the_students_attention_init_and_not_the_teachers():
    lab = rlab.Lab(Path("/nonexistent"), "synthetic", "", 6, rlab.Scale(attn_init_std=0.05), log=lambda *_: None)
    assert lab.config().attn_init_std == 0.05  # a DeiT student
    assert lab.config(model=lab.nano_dist).attn_init_std == 0.05
    assert lab.config(model="regnety_002", epochs=200).attn_init_std == 0.02  # a convnet teacher: run() would refuse
    assert cli.parse_scale(["attn_init_std=0.05"]).attn_init_std == 0.05


def test_smoke_mode_shrinks_the_sizes_but_keeps_the_other_settings(monkeypatch):
    """MINIDEIT_SMOKE=1 is how a command is checked before a long run: it must run what --set asked for, small."""
    monkeypatch.setenv("MINIDEIT_SMOKE", "1")
    scale = rlab.scale_for(None, 3, rlab.Scale(data_seed=2, attn_init_std=0.05, lr=5e-4))
    assert (scale.data_seed, scale.attn_init_std, scale.lr) == (2, 0.05, 5e-4)
    assert scale.epochs == 1 and scale.num_samples == 64


def test_budget_shrinks_but_never_grows_the_runs(monkeypatch):
    monkeypatch.delenv("MINIDEIT_SMOKE", raising=False)
    full = rlab.Scale()
    assert rlab.scale_for(None, 3) == full == rlab.scale_for(600, 3)
    half = rlab.scale_for(rlab.FULL_MINUTES / 2, 3)  # the fixed costs take their share first: less than half
    assert full.epochs // 3 < half.epochs < full.epochs // 2 and half.teacher_epochs < full.teacher_epochs // 2
    assert half.ablation_epochs < full.ablation_epochs // 2
    assert rlab.scale_for(30, 6) == rlab.scale_for(15, 3)  # twice the seeds, half the time per seed
    assert rlab.scale_for(0.01, 3).epochs >= 2


def slowest_fraction(scale, full) -> float:
    """The largest share of its full length any run kind got: what the suite's time grows with."""
    return max(scale.epochs / full.epochs, scale.teacher_epochs / full.teacher_epochs,
               scale.ablation_epochs / full.ablation_epochs, scale.finetune_epochs / full.finetune_epochs)


def test_a_budget_leaves_the_fixed_costs_their_share(monkeypatch):
    """`all --budget-minutes 60` once cut the epochs by 60/FULL_MINUTES and took 66.2 minutes (the first
    book/results/hour): what does not shrink with the epochs (data, validation scoring, process starts) was not
    budgeted. The fixed costs come from the line through the two runs measured at the second final run's settings,
    which must give both back; the prediction at today's settings must give back today's measured `all`, and the
    hour's settings must be predicted to fit it."""
    monkeypatch.delenv("MINIDEIT_SMOKE", raising=False)
    assert rlab.predicted_minutes(1.0, 3) == pytest.approx(rlab.FULL_MINUTES)
    second_run_line = rlab.FIXED_MINUTES + (rlab.SECOND_RUN_MINUTES - rlab.FIXED_MINUTES) * rlab.SHORT_FRACTION
    assert second_run_line == pytest.approx(rlab.SHORT_MINUTES)
    assert 5 < rlab.FIXED_MINUTES < 15  # measured: ~10 minutes of 176
    full = rlab.Scale()
    for budget, seeds in [(60, 3), (30, 3), (120, 5), (100, 2)]:
        predicted = rlab.predicted_minutes(slowest_fraction(rlab.scale_for(budget, seeds), full), seeds)
        assert budget * 0.9 < predicted <= budget, (budget, seeds, predicted)


def test_budget_is_reported_with_its_prediction_and_a_budget_below_the_fixed_costs_says_so(monkeypatch):
    monkeypatch.delenv("MINIDEIT_SMOKE", raising=False)
    line = cli.budget_line(60, 60, 3, len(rlab.EXPERIMENTS), rlab.scale_for(60, 3))
    assert "0.32 of the full settings" in line and "students 32 epochs" in line and "~60 minutes" in line
    low = cli.budget_line(5, 5, 3, len(rlab.EXPERIMENTS), rlab.scale_for(5, 3))
    assert low.startswith("note: --budget-minutes 5 is below the ~10 minutes") and "students 2 epochs" in low
    one = cli.budget_line(10, 70, 3, 1, rlab.scale_for(70, 3))  # one experiment: a seventh of the suite's time
    assert "~10 minutes" in one


def test_ablation_trains_on_its_own_smaller_set_for_longer(monkeypatch):
    """Table 8's runs, the demo row included, use Scale.ablation_samples images for Scale.ablation_epochs epochs
    (the other experiments' students: Scale.num_samples, Scale.epochs), and the base is the milder Table 9."""
    from minideit.tools.reproduce import recipe
    monkeypatch.delenv("MINIDEIT_SMOKE", raising=False)
    scale = rlab.Scale()
    assert (scale.ablation_samples, scale.ablation_epochs) != (scale.num_samples, scale.epochs)
    asked = []

    def student(self, name, model, **overrides):
        asked.append(overrides)
        return rlab.Run(name, self.config(**overrides), {"test_acc1": 50.0, "ema_acc1": 50.0}, Path("w"), 1.0)

    monkeypatch.setattr(rlab.Lab, "student", student)
    monkeypatch.setattr(rlab.Lab, "fit", lambda self, run: {recipe.FIT_GIVEN: 90.0})
    lab = rlab.Lab("/tmp/unused", "synthetic", "", 100, scale)
    result = recipe.ablation([lab])
    assert len(asked) == 8  # the base (with its EMA), five removals, SGD, the demo recipe
    for overrides in asked:
        cfg = lab.config(**overrides)
        assert (cfg.num_samples, cfg.epochs) == (scale.ablation_samples, scale.ablation_epochs)
        assert cfg.warmup_epochs == scale.ablation_epochs // 10
    assert asked[0]["aa"] == recipe.BASE_RECIPE["aa"] != recipe.TABLE9["aa"] and asked[0]["model_ema"]
    assert asked[-1].get("aa") is None and asked[-1].get("mixup") is None  # the demo recipe: no regulariser
    sgd = next(overrides for overrides in asked if overrides.get("opt") == "sgd")
    assert sgd["lr"] == pytest.approx(0.1 * scale.batch_size / 256)  # the convnet rule at this batch
    assert asked[0]["model_ema_decay"] == pytest.approx(1 - 15 / (scale.ablation_epochs * scale.ablation_samples
                                                                  // scale.batch_size))
    assert result["sizes"] == f"{scale.ablation_samples} training images, {scale.ablation_epochs} epochs per run"
    assert result["tables"]["ablation"][recipe.BASE][recipe.FIT_GIVEN] == [90.0]
    erasing = next(c for c in result["claims"] if "random erasing" in c["claim"])  # a gap of 0: "not shown"
    assert erasing["verdict"] == "not shown" and erasing["why"] == recipe.REASONS["− random erasing"]
    # a row that never left chance is called a failed training, not a smaller accuracy
    table = {recipe.BASE: {"top-1 (%)": [51.0, 52.0]},
             "SGD": {"top-1 (%)": [10.3, 10.6], recipe.FIT_GIVEN: [16.0, 15.0]}}
    assert "never left chance (10.4% top-1, 15.5% on its own training labels)" in recipe.failed_run(table, "SGD")
    assert recipe.failed_run(table, recipe.BASE) == ""
    # on CIFAR the ablation trains on every image, for the scale's epochs
    assert recipe.ablation_sizes(rlab.Lab("/tmp/unused", "cifar10", "/x", 0, scale)) == {}


def test_resolution_draws_its_images_in_its_own_style(monkeypatch):
    """Table 10's runs (the base, the evaluations and the fine-tunes) train and test on Scale.resolution_style's
    images; the other experiments keep synthetic_style. Where the two are the same, the lab is the same one (a
    cache made before the field existed is still found); on CIFAR the style means nothing."""
    from minideit.tools.reproduce import recipe
    monkeypatch.delenv("MINIDEIT_SMOKE", raising=False)
    scale = dataclasses.replace(rlab.Scale(), synthetic_style="clear", resolution_style="fine")
    styles = []

    def train(self, name, **overrides):
        cfg = self.config(**overrides)
        styles.append(cfg.synthetic_style)
        return rlab.Run(name, cfg, {"test_acc1": 50.0}, Path("w"), 1.0)

    monkeypatch.setattr(rlab.Lab, "train", train)
    lab = rlab.Lab("/tmp/unused", "synthetic", "", 100, scale)
    result = recipe.resolution([lab])
    assert len(styles) == 6 and set(styles) == {"fine"}  # base, two evaluations, three fine-tunes
    assert "'fine' style" in result["intro"] and "anti-aliased" in result["intro"]
    assert lab.config().synthetic_style == "clear" and recipe.resolution_lab(lab).used is lab.used
    same = rlab.Lab("/tmp/unused", "synthetic", "", 100, dataclasses.replace(scale, resolution_style="clear"))
    assert recipe.resolution_lab(same) is same
    cifar = rlab.Lab("/tmp/unused", "cifar10", "/x", 100, scale)
    assert recipe.resolution_lab(cifar) is cifar and recipe.drawn_at_each_size(cifar) == ""


def test_set_changes_the_scale_of_development_runs(monkeypatch):
    monkeypatch.delenv("MINIDEIT_SMOKE", raising=False)
    scale = cli.parse_scale(["num_samples=300", "epochs=80", "lr=5e-4", "synthetic_style=standard"])
    assert (scale.num_samples, scale.epochs, scale.lr) == (300, 80, 5e-4)
    assert scale.batch_size == rlab.Scale().batch_size
    assert rlab.scale_for(None, 3, scale) == scale
    lab = rlab.Lab("/tmp/unused", "synthetic", "", 100, scale)
    cfg = lab.config()
    assert (cfg.num_samples, cfg.epochs, cfg.lr, cfg.synthetic_style) == (300, 80, 5e-4, "standard")
    # the suite's own images are the clear style; a transfer target (a CIFAR-layout folder) has no style
    assert rlab.Lab("/tmp/unused", "synthetic", "", 100, rlab.Scale()).config().synthetic_style == "clear"
    assert rlab.Lab("/tmp/unused", "cifar10", "/x", 100, rlab.Scale()).config().synthetic_style == "standard"


def test_the_teacher_is_trained_not_to_learn_the_random_labels_by_heart(monkeypatch, tmp_path):
    """The convnet teacher trains with Table 9's Mixup 0.8, CutMix 1.0 and label smoothing 0.1 (Scale's teacher_*
    fields; development.md, run 34: without them it reproduced 87% of its training images' given labels, 30% of
    which are random); --set teacher_mixup=0 ... turns them off, and the students keep the demo recipe."""
    monkeypatch.delenv("MINIDEIT_SMOKE", raising=False)
    trained = []
    monkeypatch.setattr(rlab.Lab, "train", lambda self, name, **o: trained.append((name, self.config(**o))))
    lab = rlab.Lab(tmp_path, "synthetic", "", 3, rlab.Scale())
    lab.teacher()
    (name, cfg), = trained
    assert (cfg.model, cfg.epochs, cfg.mixup, cfg.cutmix, cfg.smoothing) == ("regnety_002", 200, 0.8, 1.0, 0.1)
    assert (lab.config().mixup, lab.config().cutmix, lab.config().smoothing) == (0.0, 0.0, 0.0)  # the students
    plain = rlab.Lab(tmp_path, "synthetic", "", 3, cli.parse_scale(["teacher_mixup=0", "teacher_cutmix=0",
                                                                    "teacher_smoothing=0"]))
    plain.teacher(epochs=100)
    _, off = trained[1]
    assert (off.epochs, off.mixup, off.cutmix, off.smoothing) == (100, 0, 0, 0)


def test_every_seed_trains_on_the_same_images(monkeypatch):
    """The seeds of one invocation share one dataset (Scale.data_seed), as the paper's runs share ImageNet; the
    seed still changes the initialisation and order. --set data_seed=100 draws other images (development)."""
    import numpy as np
    from minideit.distributed import DistInfo
    from minideit.train import build_data
    monkeypatch.setenv("MINIDEIT_SMOKE", "1")  # 256 validation images
    dist = DistInfo(0, 1, 0, torch.device("cpu"), True)
    scale = rlab.Scale(num_samples=64)
    a, b = (rlab.Lab("/tmp/unused", "synthetic", "", seed, scale).config() for seed in (0, 1))
    assert a.seed != b.seed and a.data_seed == b.data_seed == scale.data_seed
    (train_a, val_a, *_), (train_b, val_b, *_) = build_data(a, dist), build_data(b, dist)
    assert np.array_equal(train_a.data, train_b.data) and np.array_equal(val_a.data, val_b.data)
    other = rlab.Lab("/tmp/unused", "synthetic", "", 0, cli.parse_scale(["num_samples=64", "data_seed=100"]))
    assert not np.array_equal(build_data(other.config(), dist)[0].data, train_a.data)
    # the patch size picks the registered students, with and without the distillation token
    lab = rlab.Lab("/tmp/unused", "synthetic", "", 100, cli.parse_scale(["patch_size=8"]))
    assert (lab.config().model, lab.nano_dist) == ("deit_nano_patch8_32", "deit_nano_distilled_patch8_32")


def test_val_samples_sets_the_validation_set_the_runs_are_scored_on(monkeypatch):
    """--val-samples (Scale.val_samples for reproduce) sizes the synthetic validation set: the suite scores its runs
    on 10,000 images, so that which images a seed happens to get right moves top-1 less (development.md, run 25)."""
    from minideit.config import resolve
    from minideit.distributed import DistInfo
    from minideit.train import build_data
    monkeypatch.delenv("MINIDEIT_SMOKE", raising=False)
    dist = DistInfo(0, 1, 0, torch.device("cpu"), True)
    cfg = resolve(["--data-set", "synthetic", "--input-size", "16", "--num-samples", "8", "--val-samples", "40"])
    assert len(build_data(cfg, dist)[1]) == 40
    assert len(build_data(dataclasses.replace(cfg, val_samples=0), dist)[1]) == 1000  # the generator's default
    assert rlab.Lab("/tmp/unused", "synthetic", "", 0, rlab.Scale()).config().val_samples == 10_000
    assert rlab.Lab("/tmp/unused", "cifar10", "/x", 0, rlab.Scale()).config().val_samples == 0  # real data: its own


def test_merge_and_claims():
    t = merge([{"a": {"x": 1.0}, "b": {"x": 5.0}}, {"a": {"x": 3.0}, "b": {"x": 5.0}}])
    assert t == {"a": {"x": [1.0, 3.0]}, "b": {"x": [5.0, 5.0]}}
    c = claim("b > a", [gap(t, "x", "b", "a")], "because")
    assert c["holds"] is True and c["verdict"] == "yes" and c["why"] == ""  # gap 3 > 2·SE = 2·√(2/2) = 2
    # the evidence also lists the gap on each seed (b − a: 4 on the first seed, 2 on the second), and for a
    # "lower is the paper's way" gap the sign follows the paper
    assert c["evidence"].endswith("; per seed +4.0, +2.0.")
    assert gap(t, "x", "a", "b", higher=False).per_seed == (4.0, 2.0)


def test_gap_is_judged_against_twice_its_standard_error():
    """The verdict protocol: yes beyond 2·SE the paper's way, not shown inside, no beyond it the other way; a
    "≥" claim (a few tenths in the paper) is "same within error" inside. SE = √(s₁²/n + s₂²/n)."""
    a, b = (10.0, 12.0, 14.0), (6.0, 7.0, 8.0)  # s = 2 and 1, n = 3: SE = √(4/3 + 1/3) = 1.29, 2·SE = 2.58
    g = Gap("a", "b", a, b)
    assert g.diff == pytest.approx(5.0) and g.se == pytest.approx((5 / 3) ** 0.5)
    assert g.verdict == "yes"
    assert Gap("a", "b", a, b, higher=False).verdict == "no"  # the paper says a is below b
    close = (7.0, 9.0, 11.0)  # s = 2: gap 2 is inside 2·SE = 2.58
    assert Gap("close", "b", close, b).verdict == "not shown"
    assert Gap("close", "b", close, b, at_least=True).verdict == "same within error"
    assert Gap("b", "close", b, close, at_least=True).verdict == "same within error"  # -2 is inside too
    assert Gap("b", "a", b, a, at_least=True).verdict == "no"
    # A claim is as weak as its weakest gap, and only yes / same within error count as agreeing.
    c = claim("a > b > close", [Gap("a", "b", a, b), Gap("b", "close", b, close, at_least=True)], "because")
    assert c["verdict"] == "same within error" and c["holds"] is True and c["why"] == ""
    c = claim("a > close > b", [Gap("a", "b", a, b), Gap("close", "b", close, b)], "because")
    assert c["verdict"] == "not shown" and c["holds"] is False and c["why"] == "because"
    assert "2·SE = 2.6" in c["evidence"] and "is inside" in c["evidence"] and "exceeds" in c["evidence"]
    assert claim("x", [g], note="but the cosine is 1.", condition=False)["verdict"] == "no"
    assert claim("x", [g], note="Teachers: 60 → 40.")["evidence"].endswith(
        "2·SE = 2.6; per seed +4.0, +5.0, +6.0. Teachers: 60 → 40.")


def test_markdown_table_shows_mean_and_std():
    table = {"row": {"acc": cli.summarise([70.0, 72.0]), "paper (%)": cli.summarise([74.5])}}
    md = cli.markdown_table(table, {}, 1)
    assert "| row | 71.0 ± 1.4 | 74.5 |" in md


def test_new_glyph_data_reads_as_cifar10(tmp_path):
    from minideit.data.datasets import CIFAR
    from minideit.tools.reproduce.recipe import new_glyph_data
    folder = new_glyph_data(tmp_path, seed=0, n_train=40, n_val=20)
    train, val = CIFAR(folder, train=True), CIFAR(folder, train=False)
    assert len(train) == 40 and len(val) == 20 and train.num_classes == 10
    assert sorted(set(train.targets)) == list(range(10))
    assert train[0][0].size == (32, 32)


def test_glyph_data_being_rewritten_by_another_seed_reads_whole(tmp_path, monkeypatch):
    """The seeds' processes reach the transfer data together. One that found the data missing rewrites it while
    another, which already has it, reads it: the reader must see whole files. Simulated without timing: the data is
    made once, its last-written marker removed (the second process looked before it existed), and every file of the
    first copy is read in the middle of each of the second process's writes. Without the temporary-name-and-rename,
    a file being rewritten is truncated: `all --budget-minutes 60` failed with UnpicklingError so."""
    import pickle
    from minideit.data.datasets import CIFAR, _unpickle
    from minideit.tools.reproduce import recipe
    folder = recipe.new_glyph_data(tmp_path, seed=0, n_train=200, n_val=20)
    batches = folder / "cifar-10-batches-py"
    (batches / "batches.meta").unlink()
    real_dump, reads = pickle.dump, []

    def dump_then_read(obj, f):
        real_dump(obj, f)  # part of the bytes may still sit in f's buffer
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            reads.append(len(_unpickle(batches / name)["labels"]))
    monkeypatch.setattr(pickle, "dump", dump_then_read)
    recipe.new_glyph_data(tmp_path, seed=0, n_train=200, n_val=20)
    monkeypatch.undo()
    assert reads and all(n > 0 for n in reads)
    assert len(CIFAR(folder, train=True)) == 200


@pytest.mark.parametrize("argv, message", [
    (["tables"], "unknown experiment 'tables'"),
    (["distillation", "--seeds", "0", "x"], "--seeds takes non-negative integers"),
    (["distillation", "--seeds", "1", "1"], "distinct"),
    (["distillation", "--seeds", "-3"], "non-negative"),
    (["distillation", "--data-set", "cifar10", "--data-path", "/nonexistent/cifar"], "does not exist"),
    (["distillation", "--data-set", "mnist"], "--data-set must be"),
    (["all", "--budget-minutes", "0"], "--budget-minutes must be a positive"),
    (["distillation", "--budget-minutes", "soon"], "invalid float value"),
    (["distillation", "--set", "epoch=3"], "'epoch' is not a Scale field; choose from num_samples, epochs"),
    (["distillation", "--set", "epochs=three"], "epochs takes an integer, got 'three'"),
    (["distillation", "--set", "lr=0"], "lr must be positive"),
    (["distillation", "--set", "patch_size=5"], "patch_size 4 or 8"),
    (["distillation", "--set", "synthetic_style=blurry"], "synthetic_style is one of standard, clear"),
    (["distillation", "--set", "data_seed=-1"], "data_seed must be 0 or more"),
    (["distillation", "--set", "teacher_mixup=-0.5"], "teacher_mixup must be 0 or more"),
    (["distillation", "--set", "teacher_smoothing=1"], "teacher_smoothing must be 0 or more and below 1"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys, tmp_path):
    code = cli.main(argv + ["--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")]) \
        if "soon" not in argv else None
    if code is None:  # argparse's own errors exit from inside parse_args
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        code = e.value.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1 and err.startswith("error: ")
    assert not (tmp_path / "out").exists()


def test_command_line_error_has_no_traceback():
    r = subprocess.run([sys.executable, "-m", "minideit.reproduce", "distilation"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: unknown experiment") and "Traceback" not in r.stderr


def test_transfer_starts_from_fresh_heads(tmp_path):
    """Fine-tuning to ten new classes must not start from the source task's classifier."""
    from minideit import create_model
    from minideit.tools.reproduce.recipe import with_fresh_heads
    torch.manual_seed(5)
    source = create_model("deit_nano_distilled_patch4_32", num_classes=10).state_dict()
    for k in ("head.weight", "head_dist.weight"):
        source[k] = torch.full_like(source[k], 3.0)  # a recognisable "trained" head
    path = tmp_path / "weights.pth"
    torch.save({"model": source}, path)
    fresh = torch.load(with_fresh_heads(path, "deit_nano_distilled_patch4_32"))["model"]
    assert not torch.equal(fresh["head.weight"], source["head.weight"])
    assert not torch.equal(fresh["head_dist.weight"], source["head_dist.weight"])
    assert all(torch.equal(fresh[k], v) for k, v in source.items() if not k.startswith(("head.", "head_dist.")))


def children_of(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def running(pid: int) -> bool:
    """``pid`` exists and is not a zombie (an exited child its dead parent never reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def is_worker(pid: int) -> bool:
    try:
        return "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_seed_workers_stop_when_the_parent_is_killed(tmp_path):
    """SIGKILL the parent of `--jobs 2` while its workers train: the workers must be gone within seconds instead of
    training on unseen (and beside a second run, into the same cache folders)."""
    import os
    import signal
    import time
    env = dict(os.environ, MINIDEIT_SMOKE="1", PYTHONPATH=str(ROOT))
    parent = subprocess.Popen([sys.executable, "-m", "minideit.reproduce", "all", "--seeds", "0", "1", "--jobs", "2",
                               "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    # wait until the workers are training, not just starting (the parent first trains the shared teachers, in
    # cache/synthetic/teachers-seed1, alone)
    while time.time() < deadline and not list((tmp_path / "cache").glob("synthetic/seed*/*/train.log")):
        time.sleep(0.2)
    workers = [pid for pid in children_of(parent.pid) if is_worker(pid)]
    assert parent.poll() is None and workers, "the workers never started training"
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 15
    alive = workers
    while alive and time.time() < deadline:
        time.sleep(0.5)
        alive = [pid for pid in workers if running(pid)]
    for pid in alive:  # do not leave them behind if the test fails
        os.kill(pid, signal.SIGKILL)
    assert not alive, f"{len(alive)} worker(s) still training 15 s after their parent was killed"


def test_shared_teachers_are_the_ones_the_seeds_will_ask_for(monkeypatch):
    """Before the seeds start side by side, the parent trains exactly the teachers they share: none for the ablation
    and resolution, the synthetic source's for transfer even on CIFAR (else every seed's process would train that
    one into the same folder at once)."""
    asked = []
    monkeypatch.setattr(rlab.Lab, "teacher", lambda self, epochs=None: asked.append((self.data_set, epochs)))
    cifar = rlab.Lab("/tmp/unused", "cifar10", "/x", 0, rlab.Scale())
    cli.train_shared_runs(cifar, ["transfer"])
    assert asked == [("synthetic", None)]
    asked.clear()
    cli.train_shared_runs(cifar, ["ablation", "resolution"])
    assert asked == []
    cli.train_shared_runs(cifar, ["distillation"])
    assert asked == [("cifar10", None)]
