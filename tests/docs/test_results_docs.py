"""docs/results.md and the README describe the committed per-image CSVs of the BUSI
study: every table line that docs/results/busi_cv/summarize.py computes from them appears
in the document (and the README's summary in the README), so a rerun that changes the
CSVs without the documents (or the reverse) fails here. The verdict rule of the paired
tests is checked on synthetic runs."""
import importlib.util

import numpy as np
import pytest
import repo_paths

ROOT = repo_paths.ROOT
STUDY = ROOT / "docs" / "results" / "busi_cv"


@pytest.fixture(scope="module")
def summarize():
    spec = importlib.util.spec_from_file_location("busi_summarize", STUDY / "summarize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_study_files_are_committed(summarize):
    """Every run has both evaluations, seed 0 of every method exists, and no checkpoint
    or image is committed."""
    for key in summarize.METHODS:
        seeds = {crf: {s for s in summarize.SEEDS if summarize.csv_path(key, s, crf).is_file()}
                 for crf in summarize.EVALS}
        assert seeds[""] == seeds["_crf"], f"{key}: seeds {seeds} differ between evaluations"
    for key in ("baseline", "ggnet", "gap", "joint", "released"):
        assert summarize.csv_path(key, 0).is_file(), f"{key} seed 0 missing"
    for pattern in ("*.pt", "*.pth", "*.jpg"):
        assert not list(STUDY.rglob(pattern)), f"{pattern} committed under {STUDY}"


def test_tables_in_the_documents_match_the_csvs(summarize):
    """Each table sits in its ``<!-- summarize:NAME -->`` block of docs/results.md (the
    README's in README.md) exactly as summarize.py computes it now."""
    tables = summarize.sections()
    docs = {"docs/results.md": tables, "README.md": {"readme": summarize.readme_table()}}
    for rel, expected in docs.items():
        text = (ROOT / rel).read_text(encoding="utf-8")
        blocks = [m["name"] for m in summarize.BLOCK.finditer(text)]
        assert sorted(blocks) == sorted(expected), f"{rel}: blocks {blocks}"
        assert summarize.fill(text, expected) == text, (
            f"{rel} is out of date: run python docs/results/busi_cv/summarize.py --write")
    assert sum(t.count("\n| ") for t in tables.values()) > 40


def _run(rng, n, offset, fold_of):
    return {f"img{i}": {"fold": fold_of[i], "dice": float(np.clip(0.7 + offset + 0.01 *
                                                                   rng.standard_normal(), 0, 1)),
                        "hd": float(50 - 100 * offset + rng.standard_normal())}
            for i in range(n)}


def test_a_result_needs_holm_and_the_same_sign_in_every_seed(summarize, monkeypatch, seed):
    """A large seed-averaged difference is not a result when one seed disagrees in sign;
    a difference with agreeing seeds is; identical methods are not."""
    rng = np.random.default_rng(seed)
    n = 300
    fold_of = [i % 3 for i in range(n)]
    offsets = {"ggnet": [0.05, 0.05, -0.01], "baseline": [0.0, 0.0, 0.0],
               "joint": [0.06, 0.06, 0.06]}
    data = {m: {s: _run(rng, n, o, fold_of) for s, o in enumerate(offs)}
            for m, offs in offsets.items()}
    data["gap"] = data["baseline"]  # identical scores: every difference is 0
    monkeypatch.setattr(summarize, "runs", lambda method, crf="": data.get(method, {}))
    monkeypatch.setattr(summarize, "PAIRS", [("ggnet", "baseline", ""), ("joint", "baseline", ""),
                                             ("gap", "baseline", "")])
    rows = {(r["a"], r["metric"]): r for r in summarize.paired_rows("")}
    mixed, agreeing, null = rows["ggnet", "dice"], rows["joint", "dice"], rows["gap", "dice"]
    assert mixed["holm_p"] < 1e-6 and not mixed["result"]
    assert summarize.verdict(mixed) == "not distinguishable at this budget"
    assert agreeing["result"] and summarize.verdict(agreeing) == "**joint better**"
    assert summarize.verdict(rows["joint", "hd"]) == "**joint better**"  # lower HD
    assert null["holm_p"] == 1.0 and not null["result"]
    assert mixed["per_seed"][2] < 0 < mixed["per_seed"][0]
