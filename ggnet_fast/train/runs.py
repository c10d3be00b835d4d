"""Run folders: starting one safely, training every fold, resuming, and the one place
where a resumed run's configuration is compared with the saved one."""
from __future__ import annotations

import json
import os
import shutil

from ..data.config import migrate_legacy_keys
from ..fileio import read_json, run_folders
from .config import TrainConfig

ARTIFACTS = ("config.json", "last.pt", "best.pt", "train_log.csv", "val_log.csv",
             "summary.json", "splits.json", "tb")

# Config fields that fix the data split and the optimisation schedule: a resumed run must
# have the same values as the checkpoint's run, or it would not continue the same run.
RESUME_FIELDS = ("data", "data_options", "split", "folds", "fold", "fold_seed",
                 "test_fraction", "val_fraction", "batch_size", "schedule", "lr", "lr_gamma",
                 "bias_lr_mult", "momentum", "weight_decay", "val_every",
                 "early_stop_patience", "seed")
RESUME_SCHEDULE_FIELDS = {"epochs": ("epochs", "lr_step_epochs"),
                          "iterations": ("iterations", "lr_step_iters")}
# Settings of one invocation that ``ggnet train --resume`` takes from the command line.
OPERATIONAL_FIELDS = ("device", "workers", "max_steps", "progress", "tensorboard")


def check_resume_config(saved: dict, cfg: TrainConfig) -> None:
    """Raise ``ValueError`` if ``cfg`` changes a split/schedule field of the saved run
    (``saved``: the checkpoint's configuration dict, older layouts included)."""
    saved, now = migrate_legacy_keys(saved), cfg.to_dict()
    fields = RESUME_FIELDS + RESUME_SCHEDULE_FIELDS.get(cfg.schedule, ())
    diff = [f"{k}: saved {saved[k]!r}, now {now[k]!r}" for k in fields
            if k in saved and k in now and saved[k] != now[k]]
    if diff:
        raise ValueError("cannot resume: the configuration differs from the checkpoint's run "
                         "(" + "; ".join(diff) + "); start a new run (--overwrite or another "
                         "--out) instead")


def prepare_run_dir(out_dir: str, resume: bool, overwrite: bool) -> None:
    """Refuse to write into a non-empty folder unless resuming or told to overwrite
    (``overwrite`` deletes only this package's own artifacts)."""
    if resume:
        if not os.path.isfile(os.path.join(out_dir, "last.pt")):
            raise FileNotFoundError(f"--resume: no checkpoint {os.path.join(out_dir, 'last.pt')}")
        return
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        if not overwrite:
            raise FileExistsError(
                f"run folder {out_dir} exists and is not empty; pass --resume to continue "
                f"that run or --overwrite to replace its checkpoints and logs")
        for name in ARTIFACTS:
            path = os.path.join(out_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.unlink(path)
    os.makedirs(out_dir, exist_ok=True)


def _echo(text: str) -> None:
    print(text, flush=True)


def train_folds(cfg: TrainConfig, folds, parent: str | None = None, *,
                overwrite: bool = False) -> list[dict]:
    """Train ``cfg`` once per test fold in ``folds``; with ``parent``, fold ``k`` goes to
    ``parent/fold<k>`` (``--fold all``), else to ``cfg.out_dir``. Returns the summaries."""
    from .loop import Trainer

    summaries = []
    for k in folds:
        cfg.fold = k
        if parent is not None:
            cfg.out_dir = os.path.join(parent, f"fold{k}")
        _echo(f"training {cfg.variant} ({cfg.backbone}) fold {k} -> {cfg.out_dir}")
        summaries.append(Trainer(cfg, overwrite=overwrite).fit())
        _echo(json.dumps(summaries[-1]))
    return summaries


def is_finished(summary: dict | None, max_steps: int | None = None) -> bool:
    """Whether a run whose ``summary.json`` holds ``summary`` has nothing left to train
    (it stopped early or reached its last step; a ``max_steps`` beyond its last step
    counts as more to train)."""
    if not summary or summary.get("halted_at_max_steps"):
        return False
    done = summary.get("stopped_early") or summary["global_step"] >= summary["total_steps"]
    return bool(done) and not (max_steps and max_steps > summary["global_step"])


def resume_runs(root: str, operational: dict) -> list[dict]:
    """Continue the run in ``root`` or every fold run under it from its ``last.pt`` (one
    without a checkpoint yet is started); ``operational`` replaces the saved values of
    :data:`OPERATIONAL_FIELDS`. Returns the summaries of the runs trained."""
    from .loop import Trainer

    summaries = []
    for run_dir in run_folders(root):
        cfg = TrainConfig.load(os.path.join(run_dir, "config.json"))
        for key, value in operational.items():
            if key not in OPERATIONAL_FIELDS:
                raise ValueError(f"{key} cannot change on resume (only {OPERATIONAL_FIELDS})")
            setattr(cfg, key, value)
        if not os.path.exists(os.path.join(run_dir, "last.pt")):
            _echo(f"{run_dir}: no checkpoint yet, starting it")
            summaries.append(Trainer(cfg, overwrite=True).fit())
            continue
        if is_finished(read_json(os.path.join(run_dir, "summary.json")),
                       operational.get("max_steps")):
            _echo(f"{run_dir}: already finished")
            continue
        summaries.append(Trainer(cfg, resume=True).fit())
        _echo(json.dumps(summaries[-1]))
    return summaries

