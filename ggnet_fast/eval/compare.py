"""Paired significance tests between segmentation methods (the paper's Table 8).

Input: per-image CSVs (``per_image.csv`` written by ``ggnet eval``: columns ``name``,
optionally ``fold``, and the metrics of :data:`ggnet_fast.metrics.ALL_METRICS`). A CSV
with a ``method`` column (``ggnet demo``'s) holds one method per value of that column.
Images are matched by name; methods evaluated on different test sets are refused.

For every metric and every pair of methods (or every method against a reference), over
the images where both values are defined (HD/ABD are undefined when exactly one mask is
empty; such pairs are dropped and counted):

* ``n`` paired images, ``mean_a``, ``mean_b``, ``mean_diff = mean(a - b)`` with a 95%
  confidence interval from the t distribution of the paired differences;
* ``wilcoxon_p``: two-sided Wilcoxon signed-rank test (SciPy, ``zero_method="wilcox"``:
  zero differences dropped; 1.0 when every difference is zero);
* ``ttest_p``: two-sided paired t-test (SciPy; NaN when it is undefined, e.g. n < 2);
* ``holm_p``: the Wilcoxon p-value after Holm's step-down correction over all the
  comparisons (metric x pair) of one table. Each scope is one table: ``pooled`` (every
  test image once, folds of a k-fold run pooled) and, when all methods share the same
  fold assignment, one table per fold.

Sign convention: ``method_a`` is the reference when one is given (else the earlier
method on the command line) and differences are ``a - b``; for HD and ABD lower is
better, so a negative difference favours ``method_a`` there.
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from ..metrics import ALL_METRICS
from .report import TABLE_COLUMNS

#: Table-8 rows: the paper's metric order (Table 5's columns), then the extra metric;
#: the scale shown (percent for overlap metrics, pixels for HD/ABD).
TABLE8_SCALE = {key: scale for key, _, scale in TABLE_COLUMNS}
CSV_FIELDS = ["scope", "metric", "method_a", "method_b", "n", "dropped", "mean_a", "mean_b",
              "mean_diff", "ci_low", "ci_high", "wilcoxon_p", "ttest_p", "holm_p"]


@dataclass
class MethodScores:
    """Per-image metrics of one method: ``scores[image_name] = {metric: value}``;
    ``folds[image_name]`` is the image's fold label (``None`` when the CSV has none)."""

    name: str
    path: str
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    folds: dict[str, str | None] = field(default_factory=dict)

    @property
    def metrics(self) -> list[str]:
        first = next(iter(self.scores.values()), {})
        return [m for m in ALL_METRICS if m in first]


def _csv_of(path: str) -> str:
    """The per-image CSV named by ``path``: the file itself, an evaluation folder holding
    ``per_image.csv``, or a run folder holding exactly one of ``eval_crf/``, ``eval/``."""
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such per-image CSV or run folder")
    direct = os.path.join(path, "per_image.csv")
    if os.path.isfile(direct):
        return direct
    found = [os.path.join(path, d, "per_image.csv") for d in ("eval_crf", "eval")]
    found = [f for f in found if os.path.isfile(f)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise FileNotFoundError(f"{path} holds no per_image.csv (nor eval_crf/ or eval/ with "
                                f"one): run `ggnet eval --run {path}` first")
    raise ValueError(f"{path} holds both {found[0]} and {found[1]}: pass the CSV you mean")


def _default_name(csv_path: str) -> str:
    folder = os.path.dirname(os.path.abspath(csv_path))
    stem = os.path.splitext(os.path.basename(csv_path))[0]
    if stem != "per_image":
        return stem
    if os.path.basename(folder).startswith("eval"):
        folder = os.path.dirname(folder)
    return os.path.basename(folder)


def _value(text: str, where: str) -> float:
    text = (text or "").strip()
    if text == "" or text.lower() == "nan":
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{where}: {text!r} is not a number") from None


def _split_spec(spec: str) -> tuple[str, str]:
    """``NAME=PATH`` -> ``(NAME, PATH)``; a plain path (or an existing file whose name
    holds ``=``) -> ``("", PATH)``."""
    name, sep, path = spec.partition("=")
    if not sep or not name or os.path.exists(spec):
        return "", spec
    return name, path


def _read_rows(csv_path: str) -> tuple[list[str], list[tuple[int, dict]]]:
    """The metric columns and ``(line number, row)`` of a per-image CSV."""
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        if "name" not in columns:
            raise ValueError(f"{csv_path}: no 'name' column (columns: {columns})")
        metrics = [m for m in ALL_METRICS if m in columns]
        if not metrics:
            raise ValueError(f"{csv_path}: none of the metric columns {list(ALL_METRICS)}")
        rows = list(enumerate(reader, start=2))
    if not rows:
        raise ValueError(f"{csv_path}: no images")
    return metrics, rows


def _add_row(out: MethodScores, metrics: list[str], line: int, row: dict) -> None:
    image = row["name"]
    if image in out.scores:
        raise ValueError(f"{out.path}: image {image!r} appears twice"
                         + (f" for method {row['method']!r}" if "method" in row else "")
                         + f" (line {line})")
    out.scores[image] = {m: _value(row[m], f"{out.path}:{line} {m}") for m in metrics}
    fold = row.get("fold")
    out.folds[image] = fold if fold not in (None, "") else None


def load_methods(spec: str) -> list[MethodScores]:
    """The methods in ``spec`` = ``PATH`` or ``NAME=PATH`` (see :func:`_csv_of`): one,
    named ``NAME`` or after the file; or, for a CSV with a ``method`` column, one per
    value of that column, named by it (``NAME/value`` with a ``NAME``)."""
    name, path = _split_spec(spec)
    csv_path = _csv_of(path)
    metrics, rows = _read_rows(csv_path)
    methods: dict[str, MethodScores] = {}
    for line, row in rows:
        key = row.get("method")
        if key is None:
            label = name or _default_name(csv_path)
        else:
            label = f"{name}/{key}" if name else key
        if label not in methods:
            methods[label] = MethodScores(label, csv_path)
        _add_row(methods[label], metrics, line, row)
    return list(methods.values())


def load_scores(spec: str) -> MethodScores:
    """The one method in ``spec`` (:func:`load_methods`; ``ValueError`` if the CSV's
    ``method`` column names several)."""
    methods = load_methods(spec)
    if len(methods) > 1:
        raise ValueError(f"{methods[0].path} holds {len(methods)} methods "
                         f"({', '.join(m.name for m in methods)}); use load_methods")
    return methods[0]


def check_same_images(methods: list[MethodScores]) -> list[str]:
    """The common image names, sorted; ``ValueError`` naming the images that only some
    methods were evaluated on."""
    every = set().union(*(m.scores for m in methods))
    problems = []
    for m in methods:
        missing = sorted(every - set(m.scores))
        if missing:
            shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8
                                              else "")
            problems.append(f"{m.name} ({m.path}) lacks {len(missing)} image(s): {shown}")
    if problems:
        raise ValueError("the methods were evaluated on different test images:\n  "
                         + "\n  ".join(problems))
    return sorted(every)


def paired_test(a: np.ndarray, b: np.ndarray) -> dict:
    """Statistics of the paired samples ``a``, ``b`` (same length; NaN pairs dropped)."""
    from scipy import stats

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    n, diff = len(a), a - b
    out = {"n": n, "dropped": int((~keep).sum()), "mean_a": math.nan, "mean_b": math.nan,
           "mean_diff": math.nan, "ci_low": math.nan, "ci_high": math.nan,
           "wilcoxon_p": math.nan, "ttest_p": math.nan}
    if n == 0:
        return out
    out.update(mean_a=float(a.mean()), mean_b=float(b.mean()), mean_diff=float(diff.mean()))
    if n >= 2:
        sem = float(diff.std(ddof=1)) / math.sqrt(n)
        half = float(stats.t.ppf(0.975, n - 1)) * sem
        out.update(ci_low=out["mean_diff"] - half, ci_high=out["mean_diff"] + half)
        if sem > 0:
            out["ttest_p"] = float(stats.ttest_rel(a, b).pvalue)
    if np.all(diff == 0):
        out["wilcoxon_p"] = 1.0
    else:
        out["wilcoxon_p"] = float(stats.wilcoxon(a, b, zero_method="wilcox").pvalue)
    return out


def holm(pvalues) -> list[float]:
    """Holm's step-down adjusted p-values (NaN entries stay NaN and are not counted)."""
    p = np.asarray(pvalues, np.float64)
    out = np.full_like(p, math.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    running = 0.0
    for rank, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def _pairs(methods: list[MethodScores], reference: str | None):
    if reference is None:
        return list(combinations(methods, 2))
    by_name = {m.name: m for m in methods}
    if reference not in by_name:
        raise ValueError(f"--reference {reference!r} is none of the methods {list(by_name)}")
    ref = by_name[reference]
    return [(ref, m) for m in methods if m is not ref]


def _shared_folds(methods: list[MethodScores], images: list[str]) -> dict[str, list[str]] | None:
    """``{fold: images}`` when every method assigns every image the same fold, else None."""
    first = methods[0]
    if any(first.folds[i] is None for i in images):
        return None
    for m in methods[1:]:
        if any(m.folds[i] != first.folds[i] for i in images):
            return None
    groups: dict[str, list[str]] = {}
    for i in images:
        groups.setdefault(first.folds[i], []).append(i)
    return groups if len(groups) > 1 else None


def compare(methods: list[MethodScores], reference: str | None = None) -> list[dict]:
    """Every (scope, metric, pair) row of :data:`CSV_FIELDS` (see the module docstring)."""
    if len(methods) < 2:
        raise ValueError(f"need at least two methods to compare, got {len(methods)}")
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ValueError(f"two inputs have the same method name ({names}); name them "
                         f"NAME=PATH")
    images = check_same_images(methods)
    metrics = [m for m in TABLE8_SCALE if all(m in x.metrics for x in methods)]
    scopes = {"pooled": images}
    folds = _shared_folds(methods, images)
    for fold, imgs in sorted((folds or {}).items()):
        scopes[f"fold {fold}"] = imgs
    rows = []
    for scope, imgs in scopes.items():
        table = []
        for metric in metrics:
            for a, b in _pairs(methods, reference):
                va = np.array([a.scores[i][metric] for i in imgs])
                vb = np.array([b.scores[i][metric] for i in imgs])
                table.append({"scope": scope, "metric": metric, "method_a": a.name,
                              "method_b": b.name, **paired_test(va, vb)})
        for row, p in zip(table, holm([r["wilcoxon_p"] for r in table])):
            row["holm_p"] = p
        rows.extend(table)
    return rows


def _fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "n/a"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


def markdown(rows: list[dict]) -> str:
    """Table 8's layout per scope: a row per metric, a column per pair; each cell holds
    ``mean_diff [95% CI]``, the Holm-adjusted Wilcoxon p and n (dropped pairs noted)."""
    out = [("Paired comparisons per image. Cell: mean difference a - b [95% CI]; "
            "p = Wilcoxon signed-rank, Holm-adjusted over the table (raw Wilcoxon and "
            "paired t-test p in compare.csv); n = paired images (+k dropped: undefined "
            "in one method). Overlap metrics in %, HD/ABD in pixels (lower is better).")]
    for scope in dict.fromkeys(r["scope"] for r in rows):
        part = [r for r in rows if r["scope"] == scope]
        pairs = list(dict.fromkeys((r["method_a"], r["method_b"]) for r in part))
        out += ["", f"### {scope}", "",
                "| Metric | " + " | ".join(f"{a} vs. {b}" for a, b in pairs) + " |",
                "|---|" + "---|" * len(pairs)]
        for metric in dict.fromkeys(r["metric"] for r in part):
            scale = TABLE8_SCALE[metric]
            cells = []
            for a, b in pairs:
                r = next(x for x in part if x["metric"] == metric
                         and (x["method_a"], x["method_b"]) == (a, b))
                drop = f" (+{r['dropped']} dropped)" if r["dropped"] else ""
                cells.append(f"{r['mean_diff'] * scale:+.2f} [{r['ci_low'] * scale:+.2f}, "
                             f"{r['ci_high'] * scale:+.2f}], p = {_fmt_p(r['holm_p'])}, "
                             f"n = {r['n']}{drop}")
            out.append(f"| {metric} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def figure(methods: list[MethodScores], path: str, reference: str | None = None,
           metric: str = "dice") -> str:
    """Per-image ``metric`` per method (box + strip plot) and a paired scatter of the
    reference (or first method) against the next method; written to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = check_same_images(methods)
    ref = next((m for m in methods if m.name == reference), methods[0])
    other = next(m for m in methods if m is not ref)
    values = [np.array([m.scores[i][metric] for i in images]) for m in methods]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(4 + 1.2 * len(methods) + 4.5, 4.5),
                                   gridspec_kw={"width_ratios": [max(2, len(methods)), 2]})
    ax1.boxplot([v[np.isfinite(v)] for v in values], showfliers=False)
    rng = np.random.default_rng(0)
    for k, v in enumerate(values, start=1):
        v = v[np.isfinite(v)]
        ax1.scatter(k + rng.uniform(-0.15, 0.15, len(v)), v, s=6, alpha=0.4)
    ax1.set_xticks(range(1, len(methods) + 1), [m.name for m in methods], rotation=20)
    ax1.set_ylabel(f"{metric} per image")
    ax1.set_title(f"{metric}, {len(images)} test images")
    a = np.array([ref.scores[i][metric] for i in images])
    b = np.array([other.scores[i][metric] for i in images])
    ax2.scatter(b, a, s=8, alpha=0.5)
    lo = float(np.nanmin([a.min(), b.min()])) if len(a) else 0.0
    hi = float(np.nanmax([a.max(), b.max()])) if len(a) else 1.0
    ax2.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax2.set_xlabel(other.name)
    ax2.set_ylabel(ref.name)
    ax2.set_title(f"paired {metric}: points above the line favour {ref.name}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_compare(inputs: list[str], out_dir: str, *, reference: str | None = None,
                overwrite: bool = False) -> dict:
    """Load ``inputs`` (``PATH`` or ``NAME=PATH``), compare, and write ``compare.csv``,
    ``compare.md`` and ``compare.png`` into ``out_dir`` (refused if they exist, unless
    ``overwrite``). Returns ``{"rows", "markdown", "files"}``."""
    from ..fileio import atomic_write_csv, atomic_write_text

    methods = [m for spec in inputs for m in load_methods(spec)]
    rows = compare(methods, reference)
    files = {k: os.path.join(out_dir, f"compare.{k}") for k in ("csv", "md", "png")}
    existing = [f for f in files.values() if os.path.exists(f)]
    if existing and not overwrite:
        held = ", ".join(map(os.path.basename, existing))
        raise FileExistsError(f"{out_dir} already holds {held}"
                              f"; pass --overwrite to replace them or choose another --out")
    os.makedirs(out_dir, exist_ok=True)
    text = markdown(rows)
    atomic_write_csv(files["csv"], CSV_FIELDS, rows)
    atomic_write_text(files["md"], "# Paired comparison\n\n" + text)
    figure(methods, files["png"], reference)
    return {"rows": rows, "markdown": text, "files": files}
