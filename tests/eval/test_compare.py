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


def _pooled(rows, metric="dice"):
    return next(r for r in rows if r["scope"] == "pooled" and r["metric"] == metric)


def test_images_are_paired_by_name_not_by_row_order(three, tmp_path):
    """The second CSV lists its images in reverse order: the pairs, and so every
    statistic, are those of the images' names."""
    root, a, b, c = three
    reverse = _write(str(tmp_path / "reverse.csv"), _rows(2, 0.0)[::-1])
    ma, mb = cmp.load_scores(a), cmp.load_scores(reverse)
    row = _pooled(cmp.compare([ma, mb]))
    names = sorted(ma.scores)
    va = np.array([ma.scores[i]["dice"] for i in names])
    vb = np.array([mb.scores[i]["dice"] for i in names])
    assert row["wilcoxon_p"] == pytest.approx(stats.wilcoxon(va, vb).pvalue, rel=1e-12)
    assert row["ttest_p"] == pytest.approx(stats.ttest_rel(va, vb).pvalue, rel=1e-12)
    same = _pooled(cmp.compare([ma, cmp.load_scores(b)]))
    assert {k: row[k] for k in cmp.CSV_FIELDS if k not in ("method_b", "holm_p")} == \
        {k: same[k] for k in cmp.CSV_FIELDS if k not in ("method_b", "holm_p")}


def test_no_per_fold_tables_when_the_fold_labels_differ(three, tmp_path):
    root, a, b, c = three
    rows = _rows(2, 0.0)
    for r in rows:
        r["fold"] = (r["fold"] + 1) % 3  # the same images, other fold labels
    relabelled = _write(str(tmp_path / "relabelled.csv"), rows)
    scopes = {r["scope"] for r in cmp.compare([cmp.load_scores(a), cmp.load_scores(relabelled)])}
    assert scopes == {"pooled"}
    for r in rows:
        r["fold"] = ""  # no fold labels at all
    unlabelled = _write(str(tmp_path / "unlabelled.csv"), rows)
    scopes = {r["scope"] for r in cmp.compare([cmp.load_scores(a), cmp.load_scores(unlabelled)])}
    assert scopes == {"pooled"}


def test_wilcoxon_drops_zero_differences(tmp_path):
    """Images where both methods score the same are dropped from the signed-rank test
    (``zero_method="wilcox"``), not split between the signs (``zsplit``) nor counted
    (``pratt``): a fixed case where the three differ."""
    a = np.round(np.linspace(0.5, 0.9, 20), 4)
    b = a.copy()
    b[:12] += np.array([0.03, -0.01, 0.02, 0.04, 0.01, 0.05, -0.02, 0.06, 0.015, 0.025,
                        0.035, -0.005])  # 12 non-zero differences, 8 zero
    rows_a = [{"name": f"img{i}", **{m: f"{a[i]:.6g}" for m in ALL_METRICS}} for i in range(20)]
    rows_b = [{"name": f"img{i}", **{m: f"{b[i]:.6g}" for m in ALL_METRICS}} for i in range(20)]
    row = _pooled(cmp.compare([cmp.load_scores(_write(str(tmp_path / "a.csv"), rows_a)),
                               cmp.load_scores(_write(str(tmp_path / "b.csv"), rows_b))]))
    va = np.array([float(f"{x:.6g}") for x in a])
    vb = np.array([float(f"{x:.6g}") for x in b])
    want = {z: stats.wilcoxon(va, vb, zero_method=z).pvalue for z in ("wilcox", "zsplit", "pratt")}
    assert row["wilcoxon_p"] == pytest.approx(want["wilcox"], rel=1e-12)
    assert abs(want["wilcox"] - want["zsplit"]) > 1e-3
    assert abs(want["wilcox"] - want["pratt"]) > 1e-3
    assert row["n"] == 20  # the mean difference and the t-test still use every image


def test_a_method_column_holds_several_methods(tmp_path):
    """``ggnet demo``'s per_image.csv: one method per value of its method column."""
    path = str(tmp_path / "per_image.csv")
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, ["name", "method", *ALL_METRICS])
        w.writeheader()
        for method, seed, shift in (("ours", 5, 0.1), ("trivial", 6, 0.0)):
            for r in _rows(seed, shift):
                w.writerow({"name": r["name"], "method": method,
                            **{m: r[m] for m in ALL_METRICS}})
    methods = cmp.load_methods(path)
    assert [m.name for m in methods] == ["ours", "trivial"]
    assert all(len(m.scores) == N_IMAGES for m in methods)
    assert [m.name for m in cmp.load_methods(f"demo={path}")] == ["demo/ours", "demo/trivial"]
    row = _pooled(cmp.compare(methods))
    assert row["mean_diff"] == pytest.approx(0.1, abs=0.03)
    with pytest.raises(ValueError, match="2 methods"):
        cmp.load_scores(path)
