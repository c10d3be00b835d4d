"""Where the repository and the optional shared data are, for tests in any subfolder."""
import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
"""The repository root (the folder holding setup.py)."""


def busi_root():
    """The BUSI folder: ``GGNET_BUSI_ROOT`` if set, else ``shared/data/busi`` in the first
    folder above the repository that has one; None when neither exists (tests then skip)."""
    env = os.environ.get("GGNET_BUSI_ROOT")
    if env:
        return env if os.path.isdir(env) else None
    for parent in (ROOT, *ROOT.parents):
        cand = parent / "shared" / "data" / "busi"
        if cand.is_dir():
            return str(cand)
    return None
