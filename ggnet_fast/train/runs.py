"""Driving the Trainer over run folders: every fold of a k-fold run, and resuming a run
(or every fold run under a folder) from its checkpoints."""
from __future__ import annotations

import json
import os

from ..fileio import (FOLD_PLAN, atomic_write_text, fold_folder, read_json, read_run_config,
                      run_folders, unstarted_folds)
from .config import TrainConfig
from .loop import Trainer
from .run_dir import EVAL_REPORTS, OPERATIONAL_FIELDS, check_resume_config, remove_artifacts


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


def write_fold_plan(parent: str, cfg: TrainConfig, folds) -> None:
    """Record in ``parent`` (:data:`~ggnet_fast.fileio.FOLD_PLAN`) that the folds ``folds``
    of ``cfg`` are to be trained, once the first fold is validated: a resume after a kill
    then starts the folds that had not begun (no folder yet) instead of skipping them."""
    plan = {"folds": [int(k) for k in folds], "config": cfg.run_dict()}
    atomic_write_text(os.path.join(parent, FOLD_PLAN),
                      json.dumps(plan, indent=2, sort_keys=True) + "\n")


def planned_runs(root: str) -> list[tuple[str, dict]]:
    """``(run folder, saved configuration)`` of the run in ``root`` or each fold run under
    it, plus the folds ``root``'s fold plan lists that have not started (configuration:
    the plan's, for that fold), in fold order."""
    missing = unstarted_folds(root)
    found = {}
    try:
        found = {run_dir: read_run_config(run_dir) for run_dir in run_folders(root)}
    except FileNotFoundError:
        if not missing:
            raise
    if missing:
        config = read_json(os.path.join(root, FOLD_PLAN))["config"]
        for k, run_dir in missing.items():
            found[run_dir] = {**config, "fold": k, "out_dir": run_dir}
    return sorted(found.items(), key=lambda item: (item[1].get("fold", 0), item[0]))


def train_folds(cfg: TrainConfig, folds, parent: str | None = None, *,
                overwrite: bool = False) -> list[dict]:
    """Train ``cfg`` once per test fold in ``folds``; with ``parent``, fold ``k`` goes to
    ``parent/fold<k>`` (``--fold all``), else to ``cfg.out_dir``. Returns the summaries.
    With ``overwrite``, the parent's evaluation reports (of the replaced folds) go too."""
    summaries, source = [], None
    for k in folds:
        cfg.fold = k
        if parent is not None:
            cfg.out_dir = fold_folder(parent, k)
        trainer = Trainer(cfg, overwrite=overwrite, source=source)  # validates, or refuses
        if parent is not None and source is None:  # the first fold: settings validated
            write_fold_plan(parent, cfg, folds)
        _echo(f"training {cfg.model_name} ({cfg.backbone}) fold {k} -> {cfg.out_dir}")
        source = trainer.source  # the folds share one dataset: it is opened and scanned once
        if parent is not None and overwrite:
            remove_artifacts(parent, EVAL_REPORTS)
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
    without a checkpoint yet, or a fold of the fold plan that had not begun, is started).

    operational: new values of :data:`OPERATIONAL_FIELDS`.
    settings: other settings given with the resume (command-line flags); each must equal
        the saved value, or ``ValueError`` names every difference before anything runs.
    max_steps: stop this invocation at that global step (0: the end of the schedule).

    Returns the summaries of the runs trained."""
    runs = []
    for run_dir, saved in planned_runs(root):
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
