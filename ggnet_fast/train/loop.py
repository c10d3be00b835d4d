"""The training loop: SGD with the paper (epoch step) or released (iteration step + early
stopping) schedule, AMP on CUDA, per-epoch (or every ``val_every``) validation, CSV and
TensorBoard logs, atomic resumable checkpoints, DDP under ``torchrun``.

Exact resume: every training step re-seeds the global torch RNG from (seed, rank, step),
augmentation is seeded per (seed, epoch, sample), the sampler skips the samples already
seen in the current epoch, and the checkpoint holds model, optimizer, scheduler, grad
scaler, RNG states and the position; a run killed at any point and resumed from its last
checkpoint therefore ends with the same weights as an uninterrupted run (bit for bit on
a deterministic CPU).
"""
from __future__ import annotations

import csv
import math
import os
import random
import shutil
import time
import warnings

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data import SegTransform, TrainingView
from ..metrics import batch_dice
from .checkpoint import (atomic_save, atomic_write_csv, atomic_write_text, load_checkpoint,
                         rng_state, set_rng_state)
from .config import TrainConfig
from .distributed import all_reduce_mean, barrier, broadcast_flag, setup_distributed
from .sampler import ResumableSampler
from .setup import build_loss, build_model, build_source, resolve_device, split_indices

ARTIFACTS = ("config.json", "last.pt", "best.pt", "train_log.csv", "val_log.csv",
             "summary.json", "splits.json", "tb")

# Config fields that fix the data split and the optimisation schedule: a resumed run must
# have the same values as the checkpoint's run, or it would not continue the same run.
RESUME_FIELDS = ("data", "include_normal", "phantom_n", "phantom_seed", "phantom_size",
                 "phantom_jitter", "split", "folds", "fold", "fold_seed", "test_fraction",
                 "val_fraction", "batch_size", "schedule", "lr", "lr_gamma", "bias_lr_mult",
                 "momentum", "weight_decay", "val_every", "early_stop_patience", "seed")
RESUME_SCHEDULE_FIELDS = {"epochs": ("epochs", "lr_step_epochs"),
                          "iterations": ("iterations", "lr_step_iters")}


def check_overrides(cfg: TrainConfig) -> None:
    """Validate the model and loss settings (``model_overrides``/``loss_overrides``
    included) without building the network; raises ``ValueError`` on a bad value."""
    from ..models.config import resolve_config

    try:
        resolve_config(cfg.preset, cfg.variant, cfg.backbone, cfg.ggb_stride, cfg.backend,
                       **cfg.model_overrides)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"invalid model setting: {exc}") from exc
    try:
        build_loss(cfg)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"invalid loss setting: {exc}") from exc


def check_resume_config(saved: dict, cfg: TrainConfig) -> None:
    """Raise ``ValueError`` if ``cfg`` changes a split/schedule field of the saved run."""
    now = cfg.to_dict()
    fields = RESUME_FIELDS + RESUME_SCHEDULE_FIELDS.get(cfg.schedule, ())
    diff = [f"{k}: saved {saved[k]!r}, now {now[k]!r}" for k in fields
            if k in saved and k in now and saved[k] != now[k]]
    if diff:
        raise ValueError("cannot resume: the configuration differs from the checkpoint's run "
                         "(" + "; ".join(diff) + "); start a new run (--overwrite or another "
                         "--out) instead")


def step_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, rank, step, 17]).generate_state(1)[0])


def unwrap(model):
    return model.module if hasattr(model, "module") else model


def param_groups(model, lr: float, weight_decay: float, bias_lr_mult: float):
    """Two SGD groups: weights, and biases with ``bias_lr_mult`` x lr (released code: 2)."""
    weights, biases = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (biases if name.endswith("bias") else weights).append(p)
    groups = [{"params": weights, "lr": lr, "weight_decay": weight_decay, "name": "weights"}]
    if biases:
        groups.append({"params": biases, "lr": lr * bias_lr_mult, "weight_decay": weight_decay,
                       "name": "biases"})
    return groups


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


class _CSVLog:
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
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


class Trainer:
    """Train one model described by ``cfg`` into ``cfg.out_dir``.

    Args:
        cfg: the run configuration (saved to ``config.json``).
        resume: continue from ``out_dir/last.pt``.
        overwrite: allow a non-empty ``out_dir`` (deletes previous checkpoints/logs).
        source: optional dataset overriding ``cfg.data`` (tests).
        callbacks: callables ``cb(trainer)`` run after every optimizer step.
    """

    def __init__(self, cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False,
                 source=None, callbacks=()):
        self.cfg = cfg.validate()
        check_overrides(cfg)  # a bad --model-opt/--loss-opt fails before anything is written
        self.callbacks = list(callbacks)
        device = resolve_device(cfg.device)
        self.dist = setup_distributed(device.type)
        if device.type == "cuda" and self.dist.enabled:
            device = torch.device("cuda", self.dist.local_rank)
        self.device = device
        self.main = self.dist.is_main
        self.amp = cfg.amp == "on" or (cfg.amp == "auto" and device.type == "cuda")
        if self.amp and device.type != "cuda":
            raise ValueError("amp='on' needs a CUDA device")
        if self.main:
            prepare_run_dir(cfg.out_dir, resume, overwrite)
        barrier(self.dist)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self._seed_everything(cfg.seed + self.dist.rank)

        self.source = source if source is not None else build_source(cfg)
        self.splits = split_indices(cfg, self.source)
        size = cfg.image_size
        train_view = TrainingView(self.source, SegTransform(size, True, cfg.rotation, cfg.hflip),
                                  self.splits["train"])
        self.val_view = TrainingView(self.source, SegTransform(size, False), self.splits["val"])
        if len(train_view) < cfg.batch_size * self.dist.world_size:
            raise ValueError(f"{len(train_view)} training images are fewer than one batch "
                             f"({cfg.batch_size} x {self.dist.world_size} processes)")
        self.sampler = ResumableSampler(train_view, self.dist.world_size, self.dist.rank,
                                        shuffle=True, seed=cfg.seed, drop_last=True)
        self.loader_gen = torch.Generator()
        self.loader = DataLoader(train_view, batch_size=cfg.batch_size, sampler=self.sampler,
                                 num_workers=cfg.workers, drop_last=True,
                                 pin_memory=device.type == "cuda", generator=self.loader_gen,
                                 persistent_workers=False)
        self.iters_per_epoch = self.sampler.num_samples // cfg.batch_size
        if cfg.schedule == "epochs":
            self.total_steps = cfg.epochs * self.iters_per_epoch
            milestones = [cfg.lr_step_epochs * self.iters_per_epoch * k
                          for k in range(1, cfg.epochs // max(cfg.lr_step_epochs, 1) + 1)]
            self.val_every = cfg.val_every or self.iters_per_epoch
        else:
            self.total_steps = cfg.iterations
            milestones = [cfg.lr_step_iters] if cfg.lr_step_iters > 0 else []
            self.val_every = cfg.val_every or self.iters_per_epoch
        milestones = [m for m in milestones if 0 < m < self.total_steps]

        model = build_model(cfg).to(device)
        self.model_config = dict(getattr(model, "config", {}))
        if self.dist.enabled:
            if device.type == "cuda" and cfg.sync_bn:
                model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        self.model = model
        self.loss_fn = build_loss(cfg)
        self.optimizer = torch.optim.SGD(
            param_groups(unwrap(model), cfg.lr, cfg.weight_decay, cfg.bias_lr_mult),
            lr=cfg.lr, momentum=cfg.momentum)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones,
                                                              gamma=cfg.lr_gamma)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

        self.global_step = self.epoch = self.step_in_epoch = 0
        self.best_score, self.best_step, self.bad_validations = -math.inf, 0, 0
        self.stopped_early = False
        # training-loss accumulators since the last validation (``running_loss`` is this
        # process's sum; ``loss_window`` the losses since the last train_log row, rank 0)
        self.running_loss, self.running_n, self.loss_window = 0.0, 0, []
        if resume:
            self._load(os.path.join(cfg.out_dir, "last.pt"))
        keep = self.global_step if resume else None
        if self.main:
            cfg.save(os.path.join(cfg.out_dir, "config.json"))
            import json
            atomic_write_text(os.path.join(cfg.out_dir, "splits.json"), json.dumps(
                {k: [self.source.names[i] for i in v] for k, v in self.splits.items()}, indent=1))
            self.train_log = _CSVLog(os.path.join(cfg.out_dir, "train_log.csv"),
                                     ["step", "epoch", "lr", "loss", "time_s"], keep)
            self.val_log = _CSVLog(os.path.join(cfg.out_dir, "val_log.csv"),
                                   ["step", "epoch", "train_loss", "val_loss", "val_dice",
                                    "best_dice", "lr"], keep)
            self.tb = self._tensorboard() if cfg.tensorboard else None
        else:
            self.tb = None

    # ------------------------------------------------------------------ state
    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            warnings.warn(f"TensorBoard logging is off: tensorboard is not installed ({exc}); "
                          f"pip install tensorboard, or pass --no-tensorboard "
                          f"(tensorboard=False) to silence this", RuntimeWarning, stacklevel=2)
            return None
        return SummaryWriter(os.path.join(self.cfg.out_dir, "tb"), purge_step=self.global_step + 1)

    def state_dict(self, running_loss: float | None = None) -> dict:
        """Everything needed to continue the run; ``running_loss`` (the running training
        loss sum, averaged over processes) defaults to this process's own."""
        return {
            "format": 1,
            "world_size": self.dist.world_size,
            "model": unwrap(self.model).state_dict(),
            "model_config": self.model_config,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "progress": {"global_step": self.global_step, "epoch": self.epoch,
                         "step_in_epoch": self.step_in_epoch, "best_score": self.best_score,
                         "best_step": self.best_step, "bad_validations": self.bad_validations,
                         "stopped_early": self.stopped_early,
                         "running_loss": (self.running_loss if running_loss is None
                                          else running_loss),
                         "running_n": self.running_n,
                         "loss_window": [float(x) for x in self.loss_window]},
            "config": self.cfg.to_dict(),
        }

    def _load(self, path: str) -> None:
        ck = load_checkpoint(path, map_location=self.device)
        saved_world = ck.get("world_size")
        if saved_world is not None and saved_world != self.dist.world_size:
            raise ValueError(f"cannot resume {path}: world_size differs (saved {saved_world}, "
                             f"now {self.dist.world_size}); the data shards, batch and "
                             f"schedule depend on the number of processes")
        check_resume_config(ck.get("config", {}), self.cfg)
        unwrap(self.model).load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        self.scaler.load_state_dict(ck["scaler"])
        set_rng_state(ck["rng"])
        p = ck["progress"]
        self.global_step, self.epoch, self.step_in_epoch = (
            p["global_step"], p["epoch"], p["step_in_epoch"])
        self.best_score, self.best_step = p["best_score"], p["best_step"]
        self.bad_validations, self.stopped_early = p["bad_validations"], p["stopped_early"]
        self.running_loss = float(p.get("running_loss", 0.0))
        self.running_n = int(p.get("running_n", 0))
        self.loss_window = [float(x) for x in p.get("loss_window", [])]

    def save_checkpoint(self, name: str = "last.pt") -> None:
        # every process calls this at the same step: the running loss sum is averaged over
        # processes so that the resumed all-reduced training loss is the same
        running = all_reduce_mean(self.running_loss, self.dist, self.device)
        if self.main:
            atomic_save(self.state_dict(running), os.path.join(self.cfg.out_dir, name))
        barrier(self.dist)

    def _save_best(self) -> None:
        if self.main:
            atomic_save({"format": 1, "model": unwrap(self.model).state_dict(),
                         "model_config": self.model_config, "config": self.cfg.to_dict(),
                         "progress": {"global_step": self.global_step,
                                      "best_score": self.best_score}},
                        os.path.join(self.cfg.out_dir, "best.pt"))

    # ------------------------------------------------------------------ steps
    def train_step(self, batch) -> float:
        self.model.train()
        torch.manual_seed(step_seed(self.cfg.seed, self.dist.rank, self.global_step))
        images = batch["image"].to(self.device, non_blocking=True)
        masks = batch["mask"].to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            out = self.model(images)
        loss, _parts = self.loss_fn(_float_output(out) if self.amp else out, masks)
        if not torch.isfinite(loss) and not self.amp:
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {self.global_step}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return float(loss.detach())

    @torch.no_grad()
    def validate(self) -> tuple[float, float]:
        """Mean loss and Dice on the validation split at network resolution (rank 0)."""
        model = unwrap(self.model)
        model.eval()
        loader = DataLoader(self.val_view, batch_size=self.cfg.batch_size, shuffle=False,
                            num_workers=self.cfg.workers)
        losses, dices = [], []
        for batch in loader:
            images = batch["image"].to(self.device)
            masks = batch["mask"].to(self.device)
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
                out = model(images)
            out = _float_output(out)
            loss, _ = self.loss_fn(out, masks)
            losses.append(float(loss) * len(images))
            dices.extend(batch_dice(out.logits, masks))
        model.train()
        n = max(len(dices), 1)
        return sum(losses) / n, sum(dices) / n

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict:
        cfg = self.cfg
        from tqdm.auto import tqdm

        bar = tqdm(total=self.total_steps, initial=self.global_step, dynamic_ncols=True,
                   disable=not (self.main and cfg.progress), desc="train", unit="it")
        t0 = time.time()
        stop = self.stopped_early or self.global_step >= self.total_steps
        halted = False
        while not stop:
            self.sampler.set_epoch(self.epoch)
            self.sampler.set_start(self.step_in_epoch * cfg.batch_size)
            self.loader_gen.manual_seed(cfg.seed * 1000 + self.epoch)
            for batch in self.loader:
                loss = self.train_step(batch)
                self.global_step += 1
                self.step_in_epoch += 1
                self.running_loss += loss
                self.running_n += 1
                if self.main:
                    self.loss_window.append(loss)
                bar.update(1)
                for cb in self.callbacks:
                    cb(self)
                if self.main and (self.global_step % cfg.log_every == 0 or self.global_step == 1):
                    avg = sum(self.loss_window) / len(self.loss_window)
                    self.loss_window = []
                    lr = self.optimizer.param_groups[0]["lr"]
                    bar.set_postfix(loss=f"{avg:.4f}", lr=f"{lr:.2e}")
                    self.train_log.write({"step": self.global_step, "epoch": self.epoch,
                                          "lr": lr, "loss": avg, "time_s": time.time() - t0})
                    if self.tb:
                        self.tb.add_scalar("train/loss", avg, self.global_step)
                        self.tb.add_scalar("train/lr", lr, self.global_step)
                finished = self.global_step >= self.total_steps
                if self.global_step % self.val_every == 0 or finished:
                    train_loss = all_reduce_mean(self.running_loss / max(self.running_n, 1),
                                                 self.dist, self.device)
                    self.running_loss, self.running_n = 0.0, 0
                    stop = self._after_validation(train_loss) or finished
                    self.save_checkpoint("last.pt")
                elif cfg.ckpt_every and self.global_step % cfg.ckpt_every == 0:
                    self.save_checkpoint("last.pt")
                if cfg.max_steps and self.global_step >= cfg.max_steps and not stop:
                    self.save_checkpoint("last.pt")
                    halted = stop = True
                if stop:
                    break
            if not stop:
                self.epoch += 1
                self.step_in_epoch = 0
        bar.close()
        # no validation yet (or a non-finite score): null, never -Infinity (invalid JSON)
        best = self.best_score if math.isfinite(self.best_score) else None
        summary = {"global_step": self.global_step, "total_steps": self.total_steps,
                   "best_val_dice": best, "best_step": self.best_step if best is not None else None,
                   "stopped_early": self.stopped_early, "halted_at_max_steps": halted,
                   "seconds": time.time() - t0}
        if self.main:
            import json
            atomic_write_text(os.path.join(cfg.out_dir, "summary.json"),
                              json.dumps(summary, indent=2, allow_nan=False) + "\n")
            if self.tb:
                self.tb.close()
        barrier(self.dist)
        return summary

    def _after_validation(self, train_loss: float) -> bool:
        """Validate on rank 0, log, keep ``best.pt``; returns whether to stop early."""
        stop = False
        if self.main:
            if len(self.val_view):
                val_loss, score = self.validate()
            else:
                val_loss, score = math.nan, -train_loss
            improved = score > self.best_score
            if improved:
                self.best_score, self.best_step, self.bad_validations = score, self.global_step, 0
                self._save_best()
            else:
                self.bad_validations += 1
            p = self.cfg.early_stop_patience
            if p and self.bad_validations >= p:
                self.stopped_early = stop = True
            lr = self.optimizer.param_groups[0]["lr"]
            self.val_log.write({"step": self.global_step, "epoch": self.epoch,
                                "train_loss": train_loss, "val_loss": val_loss,
                                "val_dice": score, "best_dice": self.best_score, "lr": lr})
            if self.tb:
                self.tb.add_scalar("val/loss", val_loss, self.global_step)
                self.tb.add_scalar("val/dice", score, self.global_step)
        stop = broadcast_flag(stop, self.dist, self.device)
        self.stopped_early = stop
        return stop


def _float_output(out):
    """Cast every tensor of a model output to float32 (losses are computed in fp32)."""
    if isinstance(out, torch.Tensor):
        return out.float()
    import dataclasses
    if dataclasses.is_dataclass(out):
        changes = {}
        for f in dataclasses.fields(out):
            v = getattr(out, f.name)
            if isinstance(v, torch.Tensor):
                changes[f.name] = v.float()
            elif isinstance(v, tuple):
                changes[f.name] = tuple(t.float() if isinstance(t, torch.Tensor) else t for t in v)
        return dataclasses.replace(out, **changes)
    return out


def train(cfg: TrainConfig, **kwargs) -> dict:
    """Build a :class:`Trainer` and run it; returns the run summary."""
    return Trainer(cfg, **kwargs).fit()
