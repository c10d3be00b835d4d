"""Per-image CSV and Markdown tables in the layout of the paper's Table 5."""
from __future__ import annotations

import math

import numpy as np

from ..fileio import atomic_write_csv
from ..metrics import ALL_METRICS, EMPTY_POLICY, summarize

# Table 5 column order, then the extra Specificity column.
TABLE_COLUMNS = [("jaccard", "Jaccard %", 100), ("dice", "Dice %", 100),
                 ("accuracy", "Accuracy %", 100), ("recall", "Recall %", 100),
                 ("precision", "Precision %", 100), ("hd", "HD", 1), ("abd", "ABD", 1),
                 ("specificity", "Specificity %", 100)]

TABLE_NOTE = ("Metrics per image at its original resolution (predictions resized back), "
              "HD = symmetric Hausdorff and ABD = average symmetric boundary distance in "
              "pixels; empty masks: " + EMPTY_POLICY + ".")


def write_per_image_csv(path: str, rows, extra_fields=()) -> str:
    """Write the per-image rows atomically (temporary file + ``os.replace``)."""
    fields = ["name", *extra_fields, *ALL_METRICS]
    atomic_write_csv(path, fields, rows)
    return path


def _fmt(mean: float, std: float | None, scale: float) -> str:
    if math.isnan(mean):
        return "n/a"
    if std is None or math.isnan(std):
        return f"{mean * scale:.1f}"
    return f"{mean * scale:.1f} ± {std * scale:.1f}"


def markdown_table(rows_by_method: dict[str, dict[str, tuple[float, float | None]]]) -> str:
    """``{method: {metric: (mean, std)}}`` -> a Markdown table with Table 5's columns."""
    head = "| Method | " + " | ".join(c[1] for c in TABLE_COLUMNS) + " |"
    sep = "|---|" + "---:|" * len(TABLE_COLUMNS)
    lines = [head, sep]
    for method, vals in rows_by_method.items():
        cells = [_fmt(*vals.get(k, (math.nan, None)), scale) for k, _, scale in TABLE_COLUMNS]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def image_level(rows) -> dict[str, tuple[float, float]]:
    """Mean +- std over images."""
    s = summarize(rows)
    return {k: (v["mean"], v["std"]) for k, v in s.items()}


def fold_table(rows_per_fold: list[list[dict]], method: str = "GG-Net") -> tuple[str, dict]:
    """Per-fold rows (mean over that fold's images) and a final row with the mean +- std of
    the fold means (the paper's Table 5 convention). Returns (markdown, numbers).

    Each fold is labelled by its rows' ``fold`` field (the run's real fold index, or
    ``"holdout"``), falling back to its position only for rows without one."""
    table, numbers = {}, {"folds": []}
    fold_means = []
    for k, rows in enumerate(rows_per_fold):
        labels = {r["fold"] for r in rows if "fold" in r}
        if len(labels) > 1:
            raise ValueError("rows of one fold carry several fold labels: "
                             f"{sorted(map(str, labels))}")
        fold = labels.pop() if labels else k
        s = summarize(rows)
        means = {m: s[m]["mean"] for m in ALL_METRICS}
        fold_means.append(means)
        numbers["folds"].append({"fold": fold, **{m: s[m] for m in ALL_METRICS}})
        name = f"fold {fold}" if isinstance(fold, int) or str(fold).isdigit() else str(fold)
        table[f"{method}, {name} ({len(rows)} images; ± over images)"] = {
            m: (s[m]["mean"], s[m]["std"]) for m in ALL_METRICS}
    agg = {}
    for m in ALL_METRICS:
        vals = np.array([f[m] for f in fold_means], dtype=np.float64)
        vals = vals[~np.isnan(vals)]
        agg[m] = (float(vals.mean()) if len(vals) else math.nan,
                  float(vals.std()) if len(vals) > 1 else None)
    numbers["mean"] = {m: {"mean": v[0], "std": v[1]} for m, v in agg.items()}
    if len(rows_per_fold) > 1:
        table[f"{method}, mean ± std over {len(rows_per_fold)} folds"] = agg
    return markdown_table(table), numbers
