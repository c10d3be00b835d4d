"""The rules of a run folder, used by the Trainer: what a run writes there, when a folder
may be started, overwritten or resumed, and the one place where a resumed run's
configuration is compared with the saved one."""
from __future__ import annotations

import os
import shutil

from ..data.config import migrate_legacy_keys
from ..data.layout import absolute_root
from ..data.registry import resolve_dataset_options
from ..fileio import remove_stale_temporaries
from .config import INVOCATION_FIELDS, TrainConfig

ARTIFACTS = ("config.json", "last.pt", "best.pt", "train_log.csv", "val_log.csv",
             "summary.json", "splits.json", "tb")
# Default report folders of ``ggnet eval`` in a run (or fold parent): stale once retrained.
EVAL_REPORTS = ("eval", "eval_crf")

# Settings that do not change what a run computes: ``ggnet train --resume`` takes them from
# the command line. Every other setting of a resumed run must equal the saved one.
OPERATIONAL_FIELDS = ("device", "workers", "progress", "tensorboard", "ckpt_every",
                      "log_every")
NOT_COMPARED = OPERATIONAL_FIELDS + INVOCATION_FIELDS + ("out_dir",)


def _comparable(d: dict) -> dict:
    """A saved or current configuration dict with the dataset options completed and the
    data root absolute, so that equal settings compare equal."""
    d = migrate_legacy_keys(d)
    if "data" in d:
        try:
            d["data_options"] = resolve_dataset_options(d["data"], d.get("data_options") or {})
        except (TypeError, ValueError):
            pass  # options of another dataset: they differ, and are reported as they are
    if d.get("data_root"):
        d["data_root"] = absolute_root(d["data_root"])
    return d


def check_resume_config(saved: dict, cfg: TrainConfig) -> None:
    """Raise ``ValueError`` naming every setting (saved and current value) in which ``cfg``
    differs from the saved run (``saved``: its ``config.json`` or checkpoint configuration,
    older layouts included); the :data:`OPERATIONAL_FIELDS` may differ."""
    saved, now = _comparable(saved), _comparable(cfg.to_dict())
    diff = [f"{k}: saved {saved[k]!r}, now {now[k]!r}" for k in now
            if k not in NOT_COMPARED and k in saved and saved[k] != now[k]]
    if diff:
        raise ValueError("cannot resume: the settings differ from the saved run's ("
                         + "; ".join(diff) + "); only " + ", ".join(OPERATIONAL_FIELDS)
                         + " and --max-steps may change on resume. Start a new run "
                         "(--overwrite or another --out) instead")


def check_run_dir(out_dir: str, resume: bool, overwrite: bool) -> None:
    """Refuse a non-empty ``out_dir`` unless resuming or told to overwrite; a resume needs
    ``out_dir/last.pt``. Writes nothing."""
    if resume:
        if not os.path.isfile(os.path.join(out_dir, "last.pt")):
            raise FileNotFoundError(f"--resume: no checkpoint {os.path.join(out_dir, 'last.pt')}")
    elif os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
        raise FileExistsError(
            f"run folder {out_dir} exists and is not empty; pass --resume to continue "
            f"that run or --overwrite to replace its checkpoints and logs")


def remove_artifacts(folder: str, names) -> None:
    """Delete the files or folders ``names`` in ``folder`` that exist."""
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.unlink(path)


def prepare_run_dir(out_dir: str, resume: bool, overwrite: bool) -> None:
    """:func:`check_run_dir`, then create ``out_dir`` (called once the inputs are
    validated). ``overwrite`` deletes only this package's own artifacts and the default
    evaluation reports; the temporaries of a killed checkpoint write are always removed."""
    check_run_dir(out_dir, resume, overwrite)
    if not resume and overwrite and os.path.isdir(out_dir):
        remove_artifacts(out_dir, ARTIFACTS + EVAL_REPORTS)
    remove_stale_temporaries(out_dir)
    os.makedirs(out_dir, exist_ok=True)
