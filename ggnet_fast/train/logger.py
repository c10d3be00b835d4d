"""The record of a run, written by rank 0: ``config.json``, ``splits.json``,
``train_log.csv``, ``val_log.csv``, TensorBoard (``tb/``) and ``summary.json``."""
from __future__ import annotations

import csv
import json
import os
import warnings

from ..fileio import atomic_write_csv, atomic_write_text, csv_row
from .config import TrainConfig

TRAIN_FIELDS = ("step", "epoch", "lr", "loss", "time_s")
VAL_FIELDS = ("step", "epoch", "train_loss", "val_loss", "val_dice", "best_dice", "lr")


class CSVLog:
    """Append-only CSV that, on resume, drops rows written after the checkpoint's step
    (the kept rows are rewritten atomically: a crash here never loses the old log)."""

    def __init__(self, path: str, fields, keep_until_step: int | None):
        self.path, self.fields = path, list(fields)
        rows = []
        if keep_until_step is not None and os.path.exists(path):
            with open(path, newline="", encoding="utf-8") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= keep_until_step]
        atomic_write_csv(path, self.fields, rows)

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="", encoding="utf-8") as fh:
            csv.DictWriter(fh, self.fields, extrasaction="ignore").writerow(
                csv_row(row))


class RunLogger:
    """Writes a run's files into ``cfg.out_dir``; on other ranks than 0 (``enabled``
    false) every method does nothing.

    ``resume_step``: the checkpoint's step when resuming (log rows after it are dropped,
    TensorBoard purges later events), ``None`` for a new run.
    """

    def __init__(self, cfg: TrainConfig, enabled: bool, resume_step: int | None):
        self.enabled, self.out_dir = enabled, cfg.out_dir
        self.tb = None
        if not enabled:
            return
        self.train_log = CSVLog(os.path.join(self.out_dir, "train_log.csv"), TRAIN_FIELDS,
                                resume_step)
        self.val_log = CSVLog(os.path.join(self.out_dir, "val_log.csv"), VAL_FIELDS, resume_step)
        if cfg.tensorboard is not False:
            self.tb = self._tensorboard((resume_step or 0) + 1, required=bool(cfg.tensorboard))

    def _tensorboard(self, purge_step: int, required: bool):
        """A SummaryWriter into ``tb/``; ``None`` when tensorboard is not installed (with a
        warning only if it was asked for explicitly: ``tensorboard=True``)."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            if not required:
                return None
            warnings.warn(f"TensorBoard logging is off: tensorboard is not installed ({exc}); "
                          f"pip install tensorboard, or pass --no-tensorboard "
                          f"(tensorboard=False) to silence this", RuntimeWarning, stacklevel=3)
            return None
        return SummaryWriter(os.path.join(self.out_dir, "tb"), purge_step=purge_step)

    def write_setup(self, cfg: TrainConfig, split_names: dict[str, list[str]]) -> None:
        """``config.json`` and ``splits.json`` (the image names of every split)."""
        if self.enabled:
            cfg.save(os.path.join(self.out_dir, "config.json"))
            atomic_write_text(os.path.join(self.out_dir, "splits.json"),
                              json.dumps(split_names, indent=1))

    def log_train(self, step: int, epoch: int, lr: float, loss: float, time_s: float) -> None:
        if self.enabled:
            self.train_log.write({"step": step, "epoch": epoch, "lr": lr, "loss": loss,
                                  "time_s": time_s})
            if self.tb:
                self.tb.add_scalar("train/loss", loss, step)
                self.tb.add_scalar("train/lr", lr, step)

    def log_validation(self, row: dict) -> None:
        """``row`` has the :data:`VAL_FIELDS`."""
        if self.enabled:
            self.val_log.write(row)
            if self.tb:
                self.tb.add_scalar("val/loss", row["val_loss"], row["step"])
                self.tb.add_scalar("val/dice", row["val_dice"], row["step"])

    def write_summary(self, summary: dict) -> None:
        """``summary.json`` (strict JSON: no NaN/Infinity), then closes TensorBoard."""
        if self.enabled:
            atomic_write_text(os.path.join(self.out_dir, "summary.json"),
                              json.dumps(summary, indent=2, allow_nan=False) + "\n")
            if self.tb:
                self.tb.close()
