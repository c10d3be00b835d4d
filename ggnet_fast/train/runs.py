"""Run folders: starting one safely, training every fold, resuming, and the one place
where a resumed run's configuration is compared with the saved one."""
from __future__ import annotations

import json
import os
import shutil

from ..data.config import migrate_legacy_keys
from ..data.registry import resolve_dataset_options
from ..fileio import read_json, remove_stale_temporaries, run_folders
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
        d["data_root"] = os.path.abspath(os.path.expanduser(d["data_root"]))
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


def _remove(folder: str, names) -> None:
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
        _remove(out_dir, ARTIFACTS + EVAL_REPORTS)
    remove_stale_temporaries(out_dir)
    os.makedirs(out_dir, exist_ok=True)


class TrainingInterrupted(Exception):
    """Training stopped on Ctrl-C after writing a checkpoint; the message says how to
    continue."""


def _echo(text: str) -> None:
    print(text, flush=True)


def _fit(trainer, resume_root: str) -> dict:
    """Run ``trainer``; after a Ctrl-C (its summary says ``interrupted``) raise
    :class:`TrainingInterrupted` telling how to continue from ``resume_root``."""
    summary = trainer.fit()
    if summary.get("interrupted"):
        raise TrainingInterrupted(
            f"interrupted at step {summary['global_step']}; checkpoint written to "
            f"{os.path.join(trainer.cfg.out_dir, 'last.pt')}; continue with: "
            f"ggnet train --resume --out {resume_root}")
    return summary


def train_folds(cfg: TrainConfig, folds, parent: str | None = None, *,
                overwrite: bool = False) -> list[dict]:
    """Train ``cfg`` once per test fold in ``folds``; with ``parent``, fold ``k`` goes to
    ``parent/fold<k>`` (``--fold all``), else to ``cfg.out_dir``. Returns the summaries.
    With ``overwrite``, the parent's evaluation reports (of the replaced folds) go too."""
    from .loop import Trainer

    summaries, source = [], None
    for k in folds:
        cfg.fold = k
        if parent is not None:
            cfg.out_dir = os.path.join(parent, f"fold{k}")
        trainer = Trainer(cfg, overwrite=overwrite, source=source)  # validates, or refuses
        _echo(f"training {cfg.variant} ({cfg.backbone}) fold {k} -> {cfg.out_dir}")
        source = trainer.source  # the folds share one dataset: it is opened and scanned once
        if parent is not None and overwrite:
            _remove(parent, EVAL_REPORTS)
        summaries.append(_fit(trainer, parent if parent is not None else cfg.out_dir))
        _echo(json.dumps(summaries[-1]))
    return summaries


def is_finished(summary: dict | None, max_steps: int | None = None) -> bool:
    """Whether a run whose ``summary.json`` holds ``summary`` has nothing left to train
    (it stopped early or reached its last step; a ``max_steps`` beyond its last step
    counts as more to train)."""
    if not summary or summary.get("halted_at_max_steps") or summary.get("interrupted"):
        return False
    done = summary.get("stopped_early") or summary["global_step"] >= summary["total_steps"]
    return bool(done) and not (max_steps and max_steps > summary["global_step"])


def _apply(cfg: TrainConfig, settings: dict) -> None:
    """Set ``settings`` on ``cfg``; the dict-valued ones are merged into the saved dicts."""
    for key, value in settings.items():
        if isinstance(value, dict):
            value = {**getattr(cfg, key), **value}
        setattr(cfg, key, value)


def resume_runs(root: str, operational: dict, settings: dict | None = None,
                max_steps: int = 0) -> list[dict]:
    """Continue the run in ``root`` or every fold run under it from its ``last.pt`` (one
    without a checkpoint yet is started).

    operational: new values of :data:`OPERATIONAL_FIELDS`.
    settings: other settings given with the resume (command-line flags); each must equal
        the saved value, or ``ValueError`` names every difference before anything runs.
    max_steps: stop this invocation at that global step (0: the end of the schedule).

    Returns the summaries of the runs trained."""
    from .loop import Trainer

    runs = []
    for run_dir in run_folders(root):
        path = os.path.join(run_dir, "config.json")
        saved = read_json(path)
        if not isinstance(saved, dict):
            raise ValueError(f"{path} is not a readable run configuration")
        cfg = TrainConfig.from_saved(saved)
        cfg.out_dir = run_dir  # where the run is now, even if it was moved
        _apply(cfg, settings or {})
        check_resume_config(saved, cfg)
        cfg.validate()
        for key in operational:
            if key not in OPERATIONAL_FIELDS:
                raise ValueError(f"{key} cannot change on resume (only {OPERATIONAL_FIELDS})")
        _apply(cfg, operational)
        cfg.max_steps = max_steps
        runs.append((run_dir, cfg))
    summaries = []
    for run_dir, cfg in runs:
        if not os.path.exists(os.path.join(run_dir, "last.pt")):
            _echo(f"{run_dir}: no checkpoint yet, starting it")
            summaries.append(_fit(Trainer(cfg, overwrite=True), root))
            continue
        if is_finished(read_json(os.path.join(run_dir, "summary.json")), max_steps):
            _echo(f"{run_dir}: already finished")
            continue
        summaries.append(_fit(Trainer(cfg, resume=True), root))
        _echo(json.dumps(summaries[-1]))
    return summaries
