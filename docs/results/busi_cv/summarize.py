"""Recompute every table of docs/results.md from the per-image CSVs committed next to
this script (no training, no data needed):

    python docs/results/busi_cv/summarize.py                 # Markdown to stdout
    python docs/results/busi_cv/summarize.py --figure F.png  # and the per-method figure
    python docs/results/busi_cv/summarize.py --write         # update the documents

``--write`` replaces each ``<!-- summarize:NAME -->`` block of docs/results.md and
README.md by its table and writes ``dice_seeds.png`` / ``dice_seeds_crf.png`` here.

Inputs: ``<method>/per_image_seed<s>.csv`` (no CRF) and ``per_image_crf_seed<s>.csv``
(``ggnet eval`` of ``last.pt``; columns name, fold, the metrics), and the probes
``probe/<method>_seed<s>.csv`` (spatial GGB) and ``probe/<method>_channel_seed<s>.csv``.

The score of one run (method, seed) is the mean of its three fold means (the paper's
Table 5 convention). Per method: that score per seed, their mean and the seed-to-seed
standard deviation. The paired tests compare two methods image by image on scores
averaged over the seeds both have (Wilcoxon signed-rank and paired t-test, Holm over the
rows of one table); a difference is called a result only when its Holm-adjusted
Wilcoxon p is below 0.05 and every seed's own mean difference has the same sign.
"""
from __future__ import annotations

import argparse
import csv
import math
import pathlib
import re

import numpy as np

from ggnet_fast.eval.compare import holm, load_scores, paired_test
from ggnet_fast.eval.report import TABLE_COLUMNS, markdown_table

HERE = pathlib.Path(__file__).resolve().parent
METHODS = {
    "baseline": "DeepLabV3+",
    "ggnet": "GG-Net (paper)",
    "gap": "GG-Net, GAP for spatial GGB",
    "pooled": "GG-Net, both GGBs pooled",
    "joint": "GG-Net, joint softmax",
    "released": "GG-Net, released preset",
    "unet": "U-Net",
    "unet-guided": "U-Net + guided joint attention",
}
SEEDS = (0, 1, 2)
EVALS = {"": "no CRF", "_crf": "dense CRF"}
#: (a, b, question): the paired tests, a - b; one table per evaluation, Holm over it.
PAIRS = [
    ("ggnet", "baseline", "does GG-Net beat DeepLabV3+?"),
    ("pooled", "baseline", "do pooled means (no attention) beat DeepLabV3+?"),
    ("ggnet", "pooled", "does GG-Net's attention beat its pooled means?"),
    ("ggnet", "gap", "does the paper's spatial GGB beat mean pooling?"),
    ("joint", "ggnet", "does the joint softmax beat the paper's?"),
    ("released", "ggnet", "released preset vs paper (seed 0 only)"),
    ("ggnet", "unet", "does GG-Net beat a U-Net?"),
    ("ggnet", "unet-guided", "does GG-Net beat a U-Net with guided attention?"),
    ("joint", "unet", "does GG-Net with the joint softmax beat a U-Net?"),
    ("unet-guided", "unet", "does guided attention help a U-Net?"),
]
TESTED_METRICS = ("dice", "hd")
ALPHA = 0.05
SCALE = {key: scale for key, _, scale in TABLE_COLUMNS}
PROBE_SPATIAL = ("gap", "modulation", "varying")
PROBE_CHANNEL = ("mean", "modulation", "varying")


def csv_path(method: str, seed: int, crf: str = "") -> pathlib.Path:
    return HERE / method / f"per_image{crf}_seed{seed}.csv"


def runs(method: str, crf: str = "") -> dict[int, dict]:
    """``{seed: {image: {"fold": int, metric: value}}}`` for the committed seeds."""
    out = {}
    for seed in SEEDS:
        path = csv_path(method, seed, crf)
        if path.exists():
            scores = load_scores(str(path))
            out[seed] = {name: {"fold": int(scores.folds[name]), **values}
                         for name, values in scores.scores.items()}
    return out


def fold_means(run: dict, metric: str) -> dict[int, float]:
    """``{fold: mean over its images}`` (NaN values, undefined HD/ABD, left out)."""
    by_fold: dict[int, list[float]] = {}
    for row in run.values():
        by_fold.setdefault(row["fold"], []).append(row[metric])
    return {k: float(np.nanmean(v)) for k, v in sorted(by_fold.items())}


def run_score(run: dict, metric: str) -> float:
    """The mean of the fold means."""
    return float(np.mean(list(fold_means(run, metric).values())))


def _pm(values, scale: float, digits: int = 1) -> str:
    """``mean ± sd`` over seeds (sd with ddof 1; just the mean for one seed)."""
    v = np.asarray(values, np.float64) * scale
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def seed_table(crf: str) -> str:
    """Dice per seed (mean of the fold means), mean ± sd over seeds, and the range."""
    lines = ["| Method | seeds | seed 0 | seed 1 | seed 2 | mean ± sd over seeds | "
             "max - min |", "|---|---:|---:|---:|---:|---:|---:|"]
    for key, label in METHODS.items():
        r = runs(key, crf)
        if not r:
            continue
        scores = {s: run_score(r[s], "dice") * 100 for s in r}
        cells = [f"{scores[s]:.1f}" if s in scores else "-" for s in SEEDS]
        vals = list(scores.values())
        spread = f"{max(vals) - min(vals):.1f}" if len(vals) > 1 else "-"
        lines.append(f"| {label} | {len(vals)} | " + " | ".join(cells)
                     + f" | {_pm(vals, 1)} | {spread} |")
    return "\n".join(lines)


def fold_table(crf: str) -> str:
    """Dice per fold of every run (mean over the fold's images)."""
    lines = ["| Method | seed | fold 0 | fold 1 | fold 2 | mean of folds |",
             "|---|---:|---:|---:|---:|---:|"]
    for key, label in METHODS.items():
        for seed, run in runs(key, crf).items():
            folds = fold_means(run, "dice")
            cells = " | ".join(f"{v * 100:.1f}" for v in folds.values())
            lines.append(f"| {label} | {seed} | {cells} | {run_score(run, 'dice') * 100:.1f} |")
    return "\n".join(lines)


def metrics_table(crf: str) -> str:
    """Every metric: the mean over seeds of each run's mean of fold means, ± sd over seeds."""
    rows = {}
    for key, label in METHODS.items():
        r = runs(key, crf)
        if not r:
            continue
        per_seed = {m: [run_score(run, m) for run in r.values()] for m in SCALE}
        rows[f"{label} ({len(r)} seed{'s' if len(r) > 1 else ''})"] = {
            m: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else None)
            for m, v in per_seed.items()}
    return markdown_table(rows)


def seed_average(run_list: list[dict], images: list[str], metric: str) -> np.ndarray:
    """Per image, the mean of ``metric`` over the runs where it is defined (NaN if none)."""
    values = np.array([[run[i][metric] for i in images] for run in run_list], np.float64)
    with np.errstate(invalid="ignore"):
        counts = np.isfinite(values).sum(0)
        sums = np.where(np.isfinite(values), values, 0.0).sum(0)
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def paired_rows(crf: str) -> list[dict]:
    """One row per (pair, metric) with both methods present: the test on seed-averaged
    per-image scores, the per-seed mean differences, Holm over the table and the verdict."""
    rows = []
    for a, b, question in PAIRS:
        ra, rb = runs(a, crf), runs(b, crf)
        seeds = sorted(set(ra) & set(rb))
        if not seeds:
            continue
        images = sorted(ra[seeds[0]])
        for s in seeds:
            if sorted(ra[s]) != images or sorted(rb[s]) != images:
                raise ValueError(f"{a} and {b} seed {s} were evaluated on different images")
        for metric in TESTED_METRICS:
            va = seed_average([ra[s] for s in seeds], images, metric)
            vb = seed_average([rb[s] for s in seeds], images, metric)
            per_seed = [float(np.nanmean(np.array([ra[s][i][metric] - rb[s][i][metric]
                                                   for i in images])))
                        for s in seeds]
            rows.append({"a": a, "b": b, "question": question, "metric": metric,
                         "seeds": seeds, "per_seed": per_seed, **paired_test(va, vb)})
    for row, p in zip(rows, holm([r["wilcoxon_p"] for r in rows])):
        row["holm_p"] = p
        signs = {np.sign(d) for d in row["per_seed"]}
        consistent = len(signs) == 1 and np.sign(row["mean_diff"]) in signs
        row["result"] = bool(p < ALPHA and consistent)
    return rows


def _p(p: float) -> str:
    if not math.isfinite(p):
        return "n/a"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def verdict(row: dict) -> str:
    """Which method is better, in words, or "not distinguishable at this budget"."""
    if not row["result"]:
        return "not distinguishable at this budget"
    lower_is_better = row["metric"] in ("hd", "abd")
    a_better = (row["mean_diff"] < 0) if lower_is_better else (row["mean_diff"] > 0)
    one_seed = f" (seed {row['seeds'][0]} only)" if len(row["seeds"]) == 1 else ""
    return f"**{row['a'] if a_better else row['b']} better**{one_seed}"


def paired_table(crf: str) -> str:
    rows = paired_rows(crf)
    lines = ["| a vs. b | metric | seeds | mean a - b [95% CI] | per seed | Wilcoxon p | "
             "t-test p | Holm p | verdict |", "|---|---|---:|---|---|---:|---:|---:|---|"]
    for r in rows:
        s = SCALE[r["metric"]]
        d = 2 if s == 100 else 1
        per_seed = ", ".join(f"{x * s:+.{d}f}" for x in r["per_seed"])
        seeds = ",".join(map(str, r["seeds"]))
        lines.append(f"| {r['a']} vs. {r['b']} | {r['metric']} | {seeds} | "
                     f"{r['mean_diff'] * s:+.{d}f} [{r['ci_low'] * s:+.{d}f}, "
                     f"{r['ci_high'] * s:+.{d}f}] | {per_seed} | {_p(r['wilcoxon_p'])} | "
                     f"{_p(r['ttest_p'])} | {_p(r['holm_p'])} | {verdict(r)} |")
    return "\n".join(lines)


def _probe_rows(path: pathlib.Path) -> dict[str, np.ndarray]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0] if k not in ("name",)}


def probe_files(kind: str) -> list[tuple[str, int, pathlib.Path]]:
    """``(method, seed, path)`` of the committed probes of ``kind`` (spatial, channel)."""
    pattern = re.compile(r"^(?P<m>.+?)_channel_seed(?P<s>\d+)\.csv$" if kind == "channel"
                         else r"^(?P<m>.+?)_seed(?P<s>\d+)\.csv$")
    found = []
    for path in sorted((HERE / "probe").glob("*.csv")):
        match = pattern.match(path.name)
        if match and (kind == "channel" or "_channel_" not in path.name):
            found.append((match["m"], int(match["s"]), path))
    order = list(METHODS)
    return sorted(found, key=lambda t: (order.index(t[0]) if t[0] in order else 99, t[1]))


def probe_table(kind: str) -> str:
    """Median (and max) over the test images of each term's norm as a ratio to ``||x||``;
    for the channel GGB also the extreme weights times C."""
    terms = PROBE_CHANNEL if kind == "channel" else PROBE_SPATIAL
    head = "| Method | seed | images | gamma | " + " | ".join(
        f"{t} / x: median (max)" for t in terms) + " |"
    extra = " C·w min / median max / max |" if kind == "channel" else ""
    lines = [head[:-1] + ("|" + extra if extra else "|"),
             "|---|---:|---:|---:|" + "---:|" * len(terms) + ("---:|" if extra else "")]
    for method, seed, path in probe_files(kind):
        p = _probe_rows(path)
        cells = [f"{np.median(p[t] / p['x']):.3g} ({np.max(p[t] / p['x']):.3g})"
                 for t in terms]
        gammas = ", ".join(f"{g:.3g}" for g in sorted(set(np.round(p["gamma"], 6))))
        line = (f"| {METHODS.get(method, method)} | {seed} | {len(p['x'])} | {gammas} | "
                + " | ".join(cells) + " |")
        if kind == "channel":
            line += (f" {p['w_min'].min():.4f} / {np.median(p['w_max']):.3f} / "
                     f"{p['w_max'].max():.3f} |")
        lines.append(line)
    return "\n".join(lines)


def cost_table() -> str:
    """Training cost per method from ``timings.csv`` (collect_timings.py): per CPU, the
    median seconds per step over the folds (the uncontended speed), the wall minutes of
    a 3-fold run (mean over seeds) and the seeds measured."""
    path = HERE / "timings.csv"
    if not path.exists():
        return ""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    lines = ["| method | CPU | seeds | median s / step | wall min per 3-fold run (mean) |",
             "|---|---|---:|---:|---:|"]
    for key in METHODS:
        for cpu in dict.fromkeys(r["cpu"] for r in rows if r["method"] == key):
            mine = [r for r in rows if r["method"] == key and r["cpu"] == cpu]
            seeds = sorted({int(r["seed"]) for r in mine})
            steps = [float(r["median_step_s"]) for r in mine if r["median_step_s"]]
            step = f"{np.median(steps):.3f}" if steps else "-"
            complete = [s for s in seeds if sum(int(r["seed"]) == s for r in mine) == 3]
            walls = [sum(float(r["wall_s"]) for r in mine if int(r["seed"]) == s) / 60
                     for s in complete]
            wall = f"{np.mean(walls):.1f}" if walls else "-"
            lines.append(f"| {key} | {cpu} | {','.join(map(str, seeds))} | {step} | {wall} |")
    return "\n".join(lines)


def readme_table() -> str:
    """The README's summary: Dice without CRF per method, mean ± sd over seeds."""
    lines = ["| method | seeds | Dice % (mean ± sd over seeds) |", "|---|---:|---:|"]
    for key, label in METHODS.items():
        r = runs(key)
        if r:
            lines.append(f"| {label} | {len(r)} | "
                         f"{_pm([run_score(run, 'dice') for run in r.values()], 100)} |")
    return "\n".join(lines)


def sections() -> dict[str, str]:
    """Every table, by the name of its block in docs/results.md
    (``<!-- summarize:NAME -->`` ... ``<!-- /summarize -->``)."""
    out = {}
    for crf in EVALS:
        tag = "crf" if crf else "nocrf"
        out[f"seeds-{tag}"] = seed_table(crf)
        out[f"metrics-{tag}"] = metrics_table(crf)
        out[f"paired-{tag}"] = paired_table(crf)
        out[f"folds-{tag}"] = fold_table(crf)
    out["cost"] = cost_table()
    out["probe-spatial"] = probe_table("spatial")
    out["probe-channel"] = probe_table("channel")
    return out


def tables() -> str:
    """Every table of docs/results.md, as Markdown."""
    return "\n\n".join(f"### {name}\n\n{table}" for name, table in sections().items()) + "\n"


BLOCK = re.compile(r"(<!-- summarize:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /summarize -->)",
                   re.S)


def fill(text: str, tables_by_name: dict[str, str]) -> str:
    """``text`` with every ``summarize:NAME`` block replaced by ``tables_by_name[NAME]``
    (``KeyError`` for a block with no table)."""
    return BLOCK.sub(lambda m: m.group(1) + "\n" + tables_by_name[m["name"]] + "\n\n"
                     + m.group(4), text)


def update_documents() -> list[str]:
    """Rewrite the tables of docs/results.md and README.md in place; returns the files
    that changed."""
    from ggnet_fast.fileio import atomic_write_text

    root = HERE.parents[2]
    tables_by_name = {**sections(), "readme": readme_table()}
    changed = []
    for path in (root / "docs" / "results.md", root / "README.md"):
        text = path.read_text(encoding="utf-8")
        new = fill(text, tables_by_name)
        if new != text:
            atomic_write_text(str(path), new)
            changed.append(str(path))
    return changed


def figure(path: str, crf: str = "") -> str:
    """Left: each run's Dice (mean of the fold means), one marker per seed, and the mean
    over seeds (bar); right: the per-image Dice averaged over each method's seeds (box).
    Written to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [(label, r) for key, label in METHODS.items() if (r := runs(key, crf))]
    xs = np.arange(1, len(present) + 1)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(2.2 * len(present) + 1, 5.2))
    markers = {0: "o", 1: "s", 2: "^"}
    for x, (_, r) in zip(xs, present):
        scores = {seed: run_score(run, "dice") * 100 for seed, run in r.items()}
        ax1.hlines(np.mean(list(scores.values())), x - 0.3, x + 0.3, color="k", lw=2)
        for seed, value in scores.items():
            ax1.scatter(x + 0.12 * (seed - 1), value, marker=markers[seed], color=f"C{seed}",
                        s=36, zorder=3, label=f"seed {seed}" if x == 1 else None)
    ax1.set_ylabel("Dice % (mean of the 3 fold means)")
    ax1.set_title("per seed (markers) and mean over seeds (bar)")
    ax1.legend(loc="lower right", fontsize=8)
    boxes = []
    for _, r in present:
        images = sorted(next(iter(r.values())))
        boxes.append(seed_average(list(r.values()), images, "dice") * 100)
    ax2.boxplot(boxes, showfliers=False, widths=0.5)
    ax2.set_ylabel("Dice % per image (averaged over seeds)")
    ax2.set_title(f"{len(boxes[0])} test images (whiskers 1.5 IQR)")
    for ax in (ax1, ax2):
        ax.set_xticks(xs, [label for label, _ in present], rotation=30, ha="right")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"3-fold BUSI study, {EVALS[crf]}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--figure", help="also write the per-method Dice figure (PNG) here")
    parser.add_argument("--readme", action="store_true", help="print the README's table")
    parser.add_argument("--write", action="store_true",
                        help="rewrite the tables of docs/results.md and README.md in place "
                             "and the figures next to this script")
    args = parser.parse_args()
    print(readme_table() if args.readme else tables())
    if args.figure:
        figure(args.figure)
    if args.write:
        for crf in EVALS:
            figure(str(HERE / f"dice_seeds{crf}.png"), crf)
        print("updated:", ", ".join(update_documents()) or "nothing")
