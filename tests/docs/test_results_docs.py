"""docs/results.md describes the committed per-image CSVs of the BUSI study: every table
line that docs/results/busi_cv/summarize.py computes from them appears in the document,
so a rerun that changes the CSVs without the document (or the reverse) fails here."""
import importlib.util
import repo_paths

ROOT = repo_paths.ROOT
STUDY = ROOT / "docs" / "results" / "busi_cv"


def _summarize():
    spec = importlib.util.spec_from_file_location("busi_summarize", STUDY / "summarize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_study_files_are_committed():
    mod = _summarize()
    for key in mod.METHODS:
        for name in mod.EVALS:
            assert (STUDY / key / name).is_file(), f"{key}/{name} missing"
    assert not list(STUDY.rglob("*.pt")) and not list(STUDY.rglob("*.pth")), "no checkpoints"


def test_tables_in_the_document_match_the_csvs():
    text = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    lines = [ln for ln in _summarize().tables().splitlines() if ln.startswith("| ")]
    assert len(lines) > 40
    missing = [ln for ln in lines if ln not in text]
    assert not missing, ("docs/results.md is out of date; rerun summarize.py:\n"
                         + "\n".join(missing[:5]))
