"""Recompute the tables of docs/results.md from the per-image CSVs committed next to
this script (no training, no data needed):

    python docs/results/busi_cv/summarize.py            # Markdown to stdout

For each method and evaluation (without / with the dense CRF): one row per fold (mean
+- std over that fold's images), the mean +- std of the three fold means (the paper's
Table 5 convention) and the pooled mean +- std over all 647 images.
"""
from __future__ import annotations

import pathlib

from ggnet_fast.eval.compare import load_scores
from ggnet_fast.eval.report import fold_table, image_level, markdown_table

HERE = pathlib.Path(__file__).resolve().parent
METHODS = {"ggnet": "GG-Net (paper)", "baseline": "DeepLabV3+", "gap": "GAP for spatial GGB",
           "joint": "GG-Net, joint softmax", "released": "GG-Net, released preset"}
EVALS = {"per_image.csv": "no CRF", "per_image_crf.csv": "dense CRF"}


def read_rows(path: pathlib.Path) -> list[dict]:
    """Per-image rows (``fold`` as int, the metrics as floats, ``nan`` for undefined
    HD/ABD), read by ``ggnet compare``'s own reader."""
    method = load_scores(str(path))
    return [{"fold": int(method.folds[name]), **scores} for name, scores in method.scores.items()]


def tables() -> str:
    out = []
    for csv_name, label in EVALS.items():
        pooled, per_fold = {}, []
        for key, name in METHODS.items():
            path = HERE / key / csv_name
            if not path.exists():
                continue
            rows = read_rows(path)
            folds = sorted({r["fold"] for r in rows})
            table, _ = fold_table([[r for r in rows if r["fold"] == k] for k in folds], name)
            per_fold.append(table)
            pooled[f"{name} ({len(rows)} images)"] = image_level(rows)
        if not pooled:
            continue
        out += [f"### {label}: pooled over images (mean ± std)", "", markdown_table(pooled), "",
                f"### {label}: per fold, and mean ± std of the fold means", ""]
        for table in per_fold:
            out += [table, ""]
    return "\n".join(out)


if __name__ == "__main__":
    print(tables())
