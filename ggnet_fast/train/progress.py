"""Where a run stands: position, model-selection state and the running training loss
(saved in every checkpoint as ``progress``, restored on resume)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field


@dataclass
class Progress:
    """The training position and model-selection state of one process.

    ``running_loss``/``running_n``: this process's training-loss sum and count since the
    last validation; ``loss_window``: the losses since the last ``train_log.csv`` row
    (rank 0 only)."""

    global_step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    best_score: float = -math.inf
    best_step: int = 0
    bad_validations: int = 0
    stopped_early: bool = False
    running_loss: float = 0.0
    running_n: int = 0
    loss_window: list = field(default_factory=list)

    def record_step(self, loss: float, keep_window: bool) -> None:
        """Count one optimizer step with training loss ``loss``."""
        self.global_step += 1
        self.step_in_epoch += 1
        self.running_loss += loss
        self.running_n += 1
        if keep_window:
            self.loss_window.append(loss)

    def next_epoch(self) -> None:
        self.epoch += 1
        self.step_in_epoch = 0

    def take_window_mean(self) -> float:
        """Mean loss since the last call (the next ``train_log.csv`` row)."""
        mean = sum(self.loss_window) / len(self.loss_window)
        self.loss_window = []
        return mean

    def take_running_mean(self) -> float:
        """This process's mean training loss since the last validation; restarts the sum."""
        mean = self.running_loss / max(self.running_n, 1)
        self.running_loss, self.running_n = 0.0, 0
        return mean

    def record_score(self, score: float, patience: int) -> bool:
        """Count a validation with ``score``; returns whether it is a new best. After
        ``patience`` (> 0) validations in a row without one, ``stopped_early`` is set."""
        improved = score > self.best_score
        if improved:
            self.best_score, self.best_step, self.bad_validations = score, self.global_step, 0
        else:
            self.bad_validations += 1
        if patience and self.bad_validations >= patience:
            self.stopped_early = True
        return improved

    def to_dict(self, running_loss: float | None = None) -> dict:
        """The checkpoint's ``progress``; ``running_loss`` replaces this process's own sum
        (the average over processes, so that a resumed all-reduced loss is the same)."""
        d = dataclasses.asdict(self)
        if running_loss is not None:
            d["running_loss"] = running_loss
        d["loss_window"] = [float(x) for x in self.loss_window]
        return d

    @classmethod
    def from_dict(cls, p: dict) -> "Progress":
        """From a checkpoint's ``progress`` (older ones lack the running-loss fields)."""
        return cls(global_step=p["global_step"], epoch=p["epoch"],
                   step_in_epoch=p["step_in_epoch"], best_score=p["best_score"],
                   best_step=p["best_step"], bad_validations=p["bad_validations"],
                   stopped_early=p["stopped_early"],
                   running_loss=float(p.get("running_loss", 0.0)),
                   running_n=int(p.get("running_n", 0)),
                   loss_window=[float(x) for x in p.get("loss_window", [])])
