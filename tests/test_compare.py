"""``ggnet compare``: paired tests between methods on per-image CSVs (Table 8)."""
from __future__ import annotations

import csv
import math
import os

import numpy as np
import pytest

pytest.importorskip("scipy")
from scipy import stats  # noqa: E402

from ggnet_fast.eval import compare as cmp  # noqa: E402
from ggnet_fast.metrics import ALL_METRICS  # noqa: E402

N_IMAGES = 30


def _write(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, ["fold", "name", "label", *ALL_METRICS])
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return path


def _rows(seed, shift, nan_hd=()):
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(0).uniform(0.5, 0.9, N_IMAGES)  # shared per-image difficulty
    rows = []
    for i in range(N_IMAGES):
        r = {"fold": i % 3, "name": f"benign/benign ({i + 1})", "label": "benign"}
        for m in ALL_METRICS:
            v = base[i] + shift + rng.normal(0, 0.03)
            r[m] = f"{v * (20 if m in ('hd', 'abd') else 1):.6g}"
        if i in nan_hd:
            r["hd"] = r["abd"] = "nan"
        rows.append(r)
    return rows


@pytest.fixture
def three(tmp_path):
    a = _write(str(tmp_path / "ggnet" / "eval_crf" / "per_image.csv"), _rows(1, 0.05))
    b = _write(str(tmp_path / "baseline" / "eval_crf" / "per_image.csv"), _rows(2, 0.0))
    c = _write(str(tmp_path / "gap.csv"), _rows(3, 0.01, nan_hd=(3, 7)))
    return tmp_path, a, b, c


def test_statistics_match_scipy_and_hand_holm(three):
    root, a, b, c = three
    methods = [cmp.load_scores(str(root / "ggnet")), cmp.load_scores(str(root / "baseline")),
               cmp.load_scores(c)]
    assert [m.name for m in methods] == ["ggnet", "baseline", "gap"]
    rows = cmp.compare(methods, reference="ggnet")
    pooled = [r for r in rows if r["scope"] == "pooled"]
    assert len(pooled) == 8 * 2  # 8 metrics x (ggnet vs baseline, ggnet vs gap)
    r = next(x for x in pooled if x["metric"] == "dice" and x["method_b"] == "baseline")
    va = np.array([methods[0].scores[i]["dice"] for i in sorted(methods[0].scores)])
    vb = np.array([methods[1].scores[i]["dice"] for i in sorted(methods[0].scores)])
    assert r["n"] == N_IMAGES and r["dropped"] == 0
    assert r["mean_diff"] == pytest.approx(float((va - vb).mean()), rel=1e-12)
    assert r["wilcoxon_p"] == pytest.approx(stats.wilcoxon(va, vb).pvalue, rel=1e-12)
    assert r["ttest_p"] == pytest.approx(stats.ttest_rel(va, vb).pvalue, rel=1e-12)
    half = stats.t.ppf(0.975, N_IMAGES - 1) * (va - vb).std(ddof=1) / math.sqrt(N_IMAGES)
    assert r["ci_low"] == pytest.approx(r["mean_diff"] - half, rel=1e-12)
    assert r["ci_low"] > 0  # a 0.05 shift over 30 images with 0.03 noise is significant
    # Holm over the whole pooled table, checked against a direct step-down.
    p = np.array([x["wilcoxon_p"] for x in pooled])
    order, m, running, want = np.argsort(p), len(p), 0.0, np.empty_like(p)
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[i]))
        want[i] = running
    assert np.allclose([x["holm_p"] for x in pooled], want, rtol=1e-12)
    assert cmp.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_undefined_values_dropped_pairwise_and_counted(three):
    root, a, b, c = three
    rows = cmp.compare([cmp.load_scores(a), cmp.load_scores(c)])
    hd = next(r for r in rows if r["scope"] == "pooled" and r["metric"] == "hd")
    assert (hd["n"], hd["dropped"]) == (N_IMAGES - 2, 2)
    assert math.isfinite(hd["wilcoxon_p"])


def test_per_fold_tables(three):
    root, a, b, c = three
    rows = cmp.compare([cmp.load_scores(a), cmp.load_scores(b)])
    scopes = {r["scope"] for r in rows}
    assert scopes == {"pooled", "fold 0", "fold 1", "fold 2"}
    assert all(r["n"] == N_IMAGES // 3 for r in rows if r["scope"] == "fold 1")


def test_different_test_sets_refused_naming_images(three, tmp_path):
    root, a, b, c = three
    short = _write(str(tmp_path / "short.csv"), _rows(4, 0.0)[:-2])
    with pytest.raises(ValueError, match=r"short .*lacks 2 image\(s\): benign/benign \(29\)"):
        cmp.compare([cmp.load_scores(a), cmp.load_scores(short)])


def test_same_names_and_bad_reference_refused(three):
    root, a, b, c = three
    with pytest.raises(ValueError, match="same method name"):
        cmp.compare([cmp.load_scores(f"x={a}"), cmp.load_scores(f"x={b}")])
    with pytest.raises(ValueError, match="--reference 'nope'"):
        cmp.compare([cmp.load_scores(a), cmp.load_scores(b)], reference="nope")


def test_run_compare_writes_files_and_refuses_overwrite(three, tmp_path):
    root, a, b, c = three
    out = str(tmp_path / "cmp")
    res = cmp.run_compare([f"GG-Net={a}", f"DeepLabV3+={b}"], out, reference="GG-Net")
    for f in res["files"].values():
        assert os.path.getsize(f) > 0
    with open(res["files"]["csv"]) as f:
        header = next(csv.reader(f))
    assert set(cmp.CSV_FIELDS) <= set(header)
    assert "| dice | " in res["markdown"] and "GG-Net vs. DeepLabV3+" in res["markdown"]
    with pytest.raises(FileExistsError, match="--overwrite"):
        cmp.run_compare([f"GG-Net={a}", f"DeepLabV3+={b}"], out)
    cmp.run_compare([f"GG-Net={a}", f"DeepLabV3+={b}"], out, overwrite=True)
