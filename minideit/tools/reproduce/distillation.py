"""The distillation experiments of paper §5: Tables 2, 3 and 4 and Figure 3 in miniature.

The convnet teacher, the undistilled DeiT-nano and the hard-distilled DeiT-nano⚗ trained for `distillation`
are the same cached runs that `teachers`, `agreement` and `epochs` start from (see ``Lab`` in reproduce.py)."""
from __future__ import annotations

import numpy as np
import torch

from minideit.tools.reproduce.lab import Lab, Run, trained_model
from .common import bars, claim, gap, mean, merge


# ----------------------------------------------------------------------------------------------------------------
# Table 3: distillation strategies
# ----------------------------------------------------------------------------------------------------------------
def distillation(labs: list[Lab]) -> dict:
    """Table 3: no distillation, soft, hard on the class token, and the distillation token read three ways."""
    per_seed = []
    for lab in labs:
        teacher, none, token = lab.teacher(), lab.undistilled(), lab.hard_distilled()
        # Soft: the paper's values (τ=3, λ=0.1) and its Eq. 2, a KL averaged over the batch.
        soft = lab.student("deit-soft", lab.nano, "soft", teacher, distillation_tau=3.0, distillation_alpha=0.1,
                           kl_normalisation="paper")
        hard = lab.student("deit-hard-class-token", lab.nano, "hard", teacher)
        s = lambda run, key="test_acc1": {"top-1 (%)": run.stats[key]}  # noqa: E731
        agree = lambda run: {"agrees with teacher (%)": run.stats["test_agreement"]}  # noqa: E731
        per_seed.append({
            "teacher (regnety_002)": {**s(teacher), **lab.fit(teacher)},
            "no distillation": {**s(none), **lab.fit(none)},
            "soft, class token": {**s(soft), **agree(soft)},
            "hard, class token only": {**s(hard), **agree(hard)},
            "DeiT⚗ hard: class head": s(token, "test_cls_acc1"),
            "DeiT⚗ hard: distillation head": s(token, "test_dist_acc1"),
            "DeiT⚗ hard: joint": {**s(token), **agree(token), **lab.fit(token)},
        })
    t = merge(per_seed)
    paper = {"no distillation": 72.2, "soft, class token": 72.2, "hard, class token only": 74.3,
             "DeiT⚗ hard: class head": 73.9, "DeiT⚗ hard: distillation head": 74.6, "DeiT⚗ hard: joint": 74.5}
    for row, value in paper.items():
        t[row]["paper DeiT-Ti (%)"] = [value]
    c, patch = "top-1 (%)", labs[0].scale.patch_size
    none, soft, hard = "no distillation", "soft, class token", "hard, class token only"
    cls, dist, joint = "DeiT⚗ hard: class head", "DeiT⚗ hard: distillation head", "DeiT⚗ hard: joint"
    teacher_gap = mean(t, "teacher (regnety_002)", c) - mean(t, none, c)
    weak_teacher = (f"The teacher is only {teacher_gap:.1f} points above the undistilled student, so its labels "
                    f"carry little that the ground truth does not." if teacher_gap < 5 else "")
    claims = [
        # The paper: hard 74.3 > soft 72.2 = none 72.2. Two gaps: hard above soft, soft not below none.
        claim("hard distillation > soft ≥ no distillation (Table 3: 74.3 > 72.2 = 72.2 for DeiT-Ti)",
              [gap(t, c, hard, soft), gap(t, c, soft, none, at_least=True)], weak_teacher),
        claim("the distillation token (joint) ≥ hard distillation on the class token only (74.5 vs 74.3)",
              [gap(t, c, joint, hard, at_least=True)],
              "The extra token is one more thing to learn; the paper's gain is 0.2 points."),
        claim("joint ≥ either head alone (DeiT-S/B; for DeiT-Ti the distillation head is 0.1 above joint)",
              [gap(t, c, joint, cls, at_least=True), gap(t, c, joint, dist, at_least=True)],
              "Averaging helps when the two heads make different mistakes; when one head is clearly better the "
              "average sits between them."),
    ]

    def plot(fig, tables):
        rows = list(tables["top-1"])
        bars(fig.add_subplot(), tables["top-1"], c, rows,
             ["tab:gray"] + ["tab:blue"] * 3 + ["tab:orange"] * 3)

    return dict(name="distillation", paper="Table 3", title="Distillation strategies",
                intro=f"DeiT-nano students (6 blocks, width 128, patches {patch}×{patch}) trained with the demo "
                      "recipe; "
                      "the teacher is a RegNetY-200MF trained on the same images, one for every seed, as the "
                      "paper's students all distil from one RegNetY-16GF, with Mixup, CutMix and label smoothing so "
                      "that it does not learn the random labels by heart. The paper column is DeiT-Ti on "
                      "ImageNet (300 epochs). The train columns read the training images without augmentation: "
                      "far above the validation top-1 is over-fitting, and against the given labels (30% of "
                      "them random) they show how much of the label noise a model memorised.",
                tables={"top-1": t}, claims=claims, plot=plot, figsize=(7.5, 3.8))


# ----------------------------------------------------------------------------------------------------------------
# Table 2: which teacher
# ----------------------------------------------------------------------------------------------------------------
def teacher_runs(lab: Lab) -> dict[str, Run]:
    """Convnet teachers of two strengths (one model trained ½ and the full length) and a transformer teacher
    (an undistilled DeiT-nano), the range of Table 2 at our scale; every seed's students distil from the same
    three (``Lab.teachers_lab``)."""
    T = lab.scale.teacher_epochs
    return {"convnet regnety_002, ½ length": lab.teacher(max(1, T // 2)),
            "convnet regnety_002, full length": lab.teacher(),
            # shared by every seed, like the convnets: the undistilled DeiT-nano of the data seed
            "transformer deit_nano, full length": lab.transformer_teacher()}


def teachers(labs: list[Lab]) -> dict:
    """Table 2: distil the same DeiT⚗ student from each teacher; a convnet should beat a transformer of equal
    accuracy as a teacher, thanks to its inductive bias passing through distillation (paper §5.1)."""
    per_seed = []
    for lab in labs:
        rows = {"no teacher": {"student top-1 (%)": lab.undistilled().stats["test_acc1"]}}
        for label, teacher in teacher_runs(lab).items():
            student = lab.student("deit-distilled-hard", lab.nano_dist, "hard", teacher)
            rows[label] = {"teacher epochs": teacher.cfg.epochs, "teacher top-1 (%)": teacher.stats["test_acc1"],
                           "student top-1 (%)": student.stats["test_acc1"],
                           "agreement (%)": student.stats["test_agreement"]}
        per_seed.append(rows)
    t = merge(per_seed)
    tc, sc = "teacher top-1 (%)", "student top-1 (%)"
    convnets = [r for r in t if r.startswith("convnet")]
    deit = "transformer deit_nano, full length"
    twin = min(convnets, key=lambda r: abs(mean(t, r, tc) - mean(t, deit, tc)))
    gap_t = abs(mean(t, twin, tc) - mean(t, deit, tc))
    order_t = sorted(convnets, key=lambda r: mean(t, r, tc))
    claims = [
        claim("a convnet teacher gives a better student than a transformer teacher of similar accuracy "
              "(Table 2: RegNetY-8GF 81.7 → 82.7, DeiT-B 81.8 → 81.9)", [gap(t, sc, twin, deit)],
              "The convnet's advantage in the paper is its inductive bias (locality) reaching the transformer "
              "through its labels.",
              note=f"Closest in accuracy: {twin} ({mean(t, twin, tc):.1f}) and the transformer "
                   f"({mean(t, deit, tc):.1f})" + (f", {gap_t:.1f} points apart, so 'similar' is loose."
                                                   if gap_t > 3 else ".")),
        claim("a more accurate convnet teacher gives a better student (Table 2: 82.7 → 83.1 from RegNetY-4GF to "
              "16GF)", [gap(t, sc, hi, lo) for lo, hi in zip(order_t, order_t[1:])],
              "Teachers trained for less time differ in more than accuracy (their mistakes are noisier), and "
              "the student gaps are small.",
              note="Teachers by accuracy: " + ", ".join(f"{mean(t, r, tc):.1f} → student {mean(t, r, sc):.1f}"
                                                        for r in order_t) + "."),
    ]

    def plot(fig, tables):
        ax, tab = fig.add_subplot(), tables["teachers"]
        for rows, marker, label in ((convnets, "o-", "convnet teachers"), ([deit], "*", "transformer teacher")):
            ax.errorbar([tab[r][tc]["mean"] for r in rows], [tab[r][sc]["mean"] for r in rows],
                        xerr=[tab[r][tc]["std"] for r in rows], yerr=[tab[r][sc]["std"] for r in rows],
                        fmt=marker, capsize=3, markersize=10 if marker == "*" else 6, label=label)
        ax.axhline(tab["no teacher"][sc]["mean"], color="gray", ls="--", label="no distillation")
        ax.set_xlabel("teacher top-1 (%)")
        ax.set_ylabel("DeiT⚗ student top-1 (%)")
        ax.legend()

    return dict(name="teachers", paper="Table 2", title="Convnet and transformer teachers",
                intro="The same DeiT-nano⚗ student, hard distillation, joint classifier; each teacher trained on the "
                      "same images. The convnet's strength is varied by training length, the transformer teacher "
                      "is the undistilled DeiT-nano of the distillation table (the students' length).",
                tables={"teachers": t}, claims=claims, plot=plot, digits={"teacher epochs": 0})


# ----------------------------------------------------------------------------------------------------------------
# Table 4: who agrees with whom, and how alike the two tokens are
# ----------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def predictions(lab: Lab, runs: dict[str, Run]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Predicted classes of every classifier on the validation set, and the cls/dist cosine per layer of the
    distilled model (``token_states``/``token_cosine`` over all validation images)."""
    from minideit.data.loader import build_loader
    from minideit.data.samplers import EvalSampler
    from minideit.distributed import init_distributed
    from minideit.engine import head_logits
    from minideit.train import build_data
    from minideit.vit import token_cosine
    dist = init_distributed("auto")
    some = next(iter(runs.values())).cfg
    val_set = build_data(some, dist)[1]
    loader = build_loader(val_set, 256, EvalSampler(len(val_set), 1, 0), 0, 0, 0, drop_last=False)
    preds: dict[str, list] = {"ground truth": []}
    cosine_sum, count = 0.0, 0
    models = {label: trained_model(r.cfg, r.weights).to(dist.device) for label, r in runs.items()}
    for images, targets in loader:
        images = images.to(dist.device)
        preds["ground truth"].append(targets)
        for label, m in models.items():
            heads = head_logits(m, images)
            for head, logits in heads.items():
                name = label if len(heads) == 1 else f"{label} {head}"
                preds.setdefault(name, []).append(logits.argmax(1).cpu())
            if getattr(m, "distilled", False):
                cosine_sum = cosine_sum + token_cosine(m.token_states(images)).cpu() * len(images)
                count += len(images)
    return {k: torch.cat(v) for k, v in preds.items()}, cosine_sum / max(count, 1)


def agreement(labs: list[Lab]) -> dict:
    """Table 4: disagreement (fraction of validation images classified differently) between the ground truth, the
    convnet teacher and the students; and the cosine of the class and distillation tokens through the layers."""
    per_seed, cos_seed = [], []
    for lab in labs:
        runs = {"teacher": lab.teacher(), "no distillation": lab.undistilled(), "DeiT⚗": lab.hard_distilled()}
        preds, cosine = predictions(lab, runs)
        rename = {"DeiT⚗ cls": "DeiT⚗ class", "DeiT⚗ dist": "DeiT⚗ distillation", "DeiT⚗ joint": "DeiT⚗ joint"}
        preds = {rename.get(k, k): v for k, v in preds.items()}
        per_seed.append({a: {b: (pa != pb).float().mean().item() for b, pb in preds.items()} for a, pa in preds.items()})
        cos_seed.append({f"layer {i}" if i else "input": {"cosine": v} for i, v in enumerate(cosine.tolist())})
    t, cos = merge(per_seed), merge(cos_seed)
    nd, tch = "no distillation", "teacher"
    cls, dst, jnt = "DeiT⚗ class", "DeiT⚗ distillation", "DeiT⚗ joint"
    layers = list(cos)
    last = mean(cos, layers[-1], "cosine")
    claims = [
        claim("the distilled model disagrees less with the teacher than the undistilled one (Table 4: 0.102 vs "
              "0.133)", [gap(t, tch, jnt, nd, higher=False, digits=3)],
              "A student that fits its own labels closely keeps the teacher's decisions only where they agree "
              "with the ground truth."),
        claim("the distillation head agrees more with the teacher than the class head (0.100 vs 0.112)",
              [gap(t, tch, dst, cls, higher=False, digits=3)],
              "The two heads read tokens that end up nearly parallel (table below), so they make almost the same "
              "decisions."),
        claim("the class and distillation tokens start different and converge (cosine 0.06 at the input, 0.93 "
              "at the last layer), without becoming identical",
              [gap(cos, "cosine", layers[-1], layers[0], digits=2)],
              "Both tokens are learned from the same small data; at initialisation they are random vectors.",
              condition=last < 0.999,
              note=f"The last layer's cosine is {last:.3f}, " +
                   ("below 0.999: not identical." if last < 0.999 else "the two tokens are the same vector.")),
    ]

    def plot(fig, tables):
        ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
        tab = tables["disagreement"]
        names = list(tab)
        grid = np.array([[tab[a][b]["mean"] for b in names] for a in names])
        ax1.imshow(grid, cmap="viridis")
        ax1.set_xticks(range(len(names)), names, rotation=60, ha="right")
        ax1.set_yticks(range(len(names)), names)
        for i in range(len(names)):
            for j in range(len(names)):
                ax1.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", color="w", fontsize=7)
        ax1.set_title("disagreement (fraction of images)")
        c = tables["token cosine"]
        ax2.errorbar(range(len(c)), [c[r]["cosine"]["mean"] for r in c], yerr=[c[r]["cosine"]["std"] for r in c],
                     marker="o", capsize=3)
        ax2.set_xticks(range(len(c)), list(c), rotation=45)
        ax2.set_ylabel("cosine(cls token, dist token)")
        ax2.set_title("DeiT⚗ tokens through the layers")

    return dict(name="agreement", paper="Table 4", title="Agreement between classifiers",
                intro="Disagreement = fraction of the validation images on which two classifiers predict different "
                      "classes (row vs column). The teacher is the RegNetY of `distillation`, the students are its "
                      "undistilled and hard-distilled DeiT-nano runs.",
                tables={"disagreement": t, "token cosine": cos}, claims=claims, plot=plot, figsize=(11, 4.8),
                digits={"disagreement": 3, "token cosine": 3})


# ----------------------------------------------------------------------------------------------------------------
# Figure 3: training length
# ----------------------------------------------------------------------------------------------------------------
# Fractions of the students' length; the full length is the shared students' run, so only the shorter one costs
# extra (a 2× length would cost as much as the rest of the core experiments' students together). No ¼: at ¼ of
# 75 epochs both students sat at chance (development.md, run 16), where a gain of distillation means nothing.
LENGTHS = {"½ length": 0.5, "full length": 1.0}


def epochs(labs: list[Lab]) -> dict:
    """Fig. 3: accuracy against training length, with and without distillation. Each length is its own run with
    its own cosine schedule (as in the paper), not an intermediate epoch of a longer run."""
    per_seed = []
    for lab in labs:
        rows = {}
        for label, fraction in LENGTHS.items():
            n = max(1, round(lab.scale.epochs * fraction))
            none = lab.student("deit-none", lab.nano, epochs=n)
            hard = lab.student("deit-distilled-hard", lab.nano_dist, "hard", lab.teacher(), epochs=n)
            rows[label] = {"epochs": n, "no distillation": none.stats["test_acc1"],
                           "DeiT⚗ hard (joint)": hard.stats["test_acc1"],
                           "gain": hard.stats["test_acc1"] - none.stats["test_acc1"]}
        per_seed.append(rows)
    t = merge(per_seed)
    first, last = list(t)[0], list(t)[-1]
    claims = [
        claim("distillation gains more from longer training (Fig. 3: the distilled model keeps improving where the "
              "undistilled one saturates)", [gap(t, "gain", last, first)],
              "At the shortest lengths neither model has fitted the training set, so the teacher's labels add "
              "little; the paper's effect is about runs long enough to saturate.",
              note="Gain of distillation: " + ", ".join(f"{r} {mean(t, r, 'gain'):+.1f}" for r in t) + "."),
    ]

    def plot(fig, tables):
        ax, tab = fig.add_subplot(), tables["training length"]
        x = [tab[r]["epochs"]["mean"] for r in tab]
        for col, colour in (("no distillation", "tab:gray"), ("DeiT⚗ hard (joint)", "tab:orange")):
            ax.errorbar(x, [tab[r][col]["mean"] for r in tab], yerr=[tab[r][col]["std"] for r in tab],
                        marker="o", capsize=3, label=col, color=colour)
        ax.set_xscale("log", base=2)
        ax.set_xticks(x, [f"{v:g}" for v in x])
        ax.set_xlabel("epochs")
        ax.set_ylabel("top-1 (%)")
        ax.legend()

    return dict(name="epochs", paper="Figure 3", title="Accuracy against training length",
                intro="DeiT-nano without distillation and DeiT-nano⚗ with hard distillation from the RegNetY "
                      "teacher, each length trained from scratch with its own schedule.",
                tables={"training length": t}, claims=claims, plot=plot, digits={"epochs": 0})
