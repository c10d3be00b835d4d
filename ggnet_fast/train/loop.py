"""The training loop: SGD with the paper (epoch step) or released (iteration step + early
stopping) schedule, AMP on CUDA, per-epoch (or every ``val_every``) validation, CSV and
TensorBoard logs, atomic resumable checkpoints, DDP under ``torchrun``.

Exact resume: every training step re-seeds the global torch RNG from (seed, rank, step),
augmentation is seeded per (seed, epoch, sample), the sampler skips the samples already
seen in the current epoch, and the checkpoint holds model, optimizer, scheduler, grad
scaler and the position (no RNG state: nothing draws from the global RNGs between the
per-step reseeds, so restoring them could not change a result; checkpoints of older
versions that hold one load as before); a run killed at any point and resumed from its last
checkpoint therefore ends with the same weights as an uninterrupted run (bit for bit on
a deterministic CPU).
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import threading
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data import SegTransform, TrainingView
from ..fileio import atomic_save, load_checkpoint
from ..metrics import batch_dice
from .build import build_loss, build_model, resolve_device
from .config import TrainConfig
from .distributed import all_reduce_mean, barrier, broadcast_flag, setup_distributed
from .logger import RunLogger
from .progress import Progress
from .run_dir import check_resume_config, check_run_dir, prepare_run_dir
from .sampler import ResumableSampler
from .schedule import Schedule, build_optimizer


def step_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, rank, step, 17]).generate_state(1)[0])


def unwrap(model):
    return model.module if hasattr(model, "module") else model


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Train one model described by ``cfg`` into ``cfg.out_dir``.

    Args:
        cfg: the run configuration (validated here; saved to ``config.json``).
        resume: continue from ``out_dir/last.pt``.
        overwrite: allow a non-empty ``out_dir`` (deletes previous checkpoints/logs).
        source: optional dataset overriding ``cfg.data`` (tests).
        callbacks: callables ``cb(trainer)`` run after every optimizer step.

    Its parts: ``progress`` (:class:`Progress`), ``schedule`` (:class:`Schedule`),
    ``logger`` (:class:`RunLogger`), ``model``, ``loss_fn``, ``optimizer``, ``scheduler``.
    """

    def __init__(self, cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False,
                 source=None, callbacks=()):
        self.cfg = cfg.validate()  # a bad setting fails before anything is written
        self.callbacks = list(callbacks)
        self._setup_runtime()
        if self.main:
            check_run_dir(cfg.out_dir, resume, overwrite)
        seed_everything(cfg.seed + self.dist.rank)
        self._setup_data(source)
        self._setup_model()
        if self.main:  # the inputs are valid: only now is the run folder created
            prepare_run_dir(cfg.out_dir, resume, overwrite)
        barrier(self.dist)
        self.progress = Progress()
        self._stop_requested = False
        if resume:
            self._load(os.path.join(cfg.out_dir, "last.pt"))
        self.logger = RunLogger(cfg, self.main, self.progress.global_step if resume else None)
        self.logger.write_setup(cfg, {k: [self.source.names[i] for i in v]
                                      for k, v in self.splits.items()})

    # ------------------------------------------------------------------ setup
    def _setup_runtime(self) -> None:
        """Device, processes, mixed precision and determinism."""
        cfg = self.cfg
        device = resolve_device(cfg.device)
        self.dist = setup_distributed(device.type)
        if device.type == "cuda" and self.dist.enabled:
            device = torch.device("cuda", self.dist.local_rank)
        self.device, self.main = device, self.dist.is_main
        self.amp = cfg.amp == "on" or (cfg.amp == "auto" and device.type == "cuda")
        if self.amp and device.type != "cuda":
            raise ValueError("amp='on' needs a CUDA device")
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def _setup_data(self, source) -> None:
        """Dataset, splits, the resumable training loader and the schedule."""
        cfg = self.cfg
        scan_bar = None if cfg.progress else False  # --no-progress silences the data scan too
        self.source = source if source is not None else cfg.build_source(progress=scan_bar)
        self.splits = cfg.split_indices(self.source)
        train_view = TrainingView(self.source, SegTransform(cfg.image_size, True, cfg.rotation,
                                                            cfg.hflip), self.splits["train"])
        self.val_view = TrainingView(self.source, SegTransform(cfg.image_size, False),
                                     self.splits["val"])
        if len(train_view) < cfg.batch_size * self.dist.world_size:
            raise ValueError(f"{len(train_view)} training images are fewer than one batch "
                             f"({cfg.batch_size} x {self.dist.world_size} processes)")
        self.sampler = ResumableSampler(train_view, self.dist.world_size, self.dist.rank,
                                        shuffle=True, seed=cfg.seed, drop_last=True)
        self.loader_gen = torch.Generator()
        self.loader = DataLoader(train_view, batch_size=cfg.batch_size, sampler=self.sampler,
                                 num_workers=cfg.workers, drop_last=True,
                                 pin_memory=self.device.type == "cuda",
                                 generator=self.loader_gen, persistent_workers=False)
        self.schedule = Schedule.from_config(cfg, self.sampler.num_samples // cfg.batch_size)

    def _setup_model(self) -> None:
        """Model (DDP-wrapped when distributed), loss, optimizer, lr scheduler, grad scaler."""
        cfg = self.cfg
        model = build_model(cfg).to(self.device)
        self.model_config = dict(getattr(model, "config", {}))
        if self.dist.enabled:
            if self.device.type == "cuda" and cfg.sync_bn:
                model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.model = model
        self.loss_fn = build_loss(cfg)
        self.optimizer, self.scheduler = build_optimizer(unwrap(model), cfg, self.schedule)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

    # ------------------------------------------------------------------ state
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
            "progress": self.progress.to_dict(running_loss),
            "config": self.cfg.run_dict(),
        }

    def _load(self, path: str) -> None:
        ck = load_checkpoint(path, map_location=self.device,
                             advice="resume from an intact copy of the run, or start it "
                                    "again with --overwrite")
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
        self.progress = Progress.from_dict(ck["progress"])

    def save_checkpoint(self, name: str = "last.pt") -> None:
        # every process calls this at the same step: the running loss sum is averaged over
        # processes so that the resumed all-reduced training loss is the same
        running = all_reduce_mean(self.progress.running_loss, self.dist, self.device)
        if self.main:
            atomic_save(self.state_dict(running), os.path.join(self.cfg.out_dir, name))
        barrier(self.dist)

    def _save_best(self) -> None:
        if self.main:
            p = self.progress
            atomic_save({"format": 1, "model": unwrap(self.model).state_dict(),
                         "model_config": self.model_config, "config": self.cfg.run_dict(),
                         "progress": {"global_step": p.global_step, "best_score": p.best_score}},
                        os.path.join(self.cfg.out_dir, "best.pt"))

    # ------------------------------------------------------------------ steps
    def train_step(self, batch) -> float:
        self.model.train()
        torch.manual_seed(step_seed(self.cfg.seed, self.dist.rank, self.progress.global_step))
        images = batch["image"].to(self.device, non_blocking=True)
        masks = batch["mask"].to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            out = self.model(images)
        loss = self.loss_fn(_float_output(out) if self.amp else out, masks)
        if not torch.isfinite(loss) and not self.amp:
            raise FloatingPointError(f"non-finite loss {loss.item()} at step "
                                     f"{self.progress.global_step}")
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
            losses.append(float(self.loss_fn(out, masks)) * len(images))
            dices.extend(batch_dice(out.logits, masks))
        model.train()
        n = max(len(dices), 1)
        return sum(losses) / n, sum(dices) / n

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict:
        """Train to the end of the schedule (or early stop, or ``max_steps``, or Ctrl-C);
        returns the summary also written to ``summary.json``.

        Ctrl-C (SIGINT) lets the current step and its validation finish, writes
        ``last.pt`` and returns with ``interrupted`` set in the summary; a second Ctrl-C
        raises ``KeyboardInterrupt`` at once."""
        with self._sigint_stops_after_step():
            return self._fit()

    @contextlib.contextmanager
    def _sigint_stops_after_step(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum, frame):
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True

        previous = signal.signal(signal.SIGINT, request_stop)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _fit(self) -> dict:
        from tqdm.auto import tqdm

        p, cfg = self.progress, self.cfg
        bar = tqdm(total=self.schedule.total_steps, initial=p.global_step, dynamic_ncols=True,
                   disable=not (self.main and cfg.progress), desc="train", unit="it")
        t0 = time.time()
        stop = p.stopped_early or p.global_step >= self.schedule.total_steps
        halted = interrupted = False
        while not stop:
            self.sampler.set_epoch(p.epoch)
            self.sampler.set_start(p.step_in_epoch * cfg.batch_size)
            self.loader_gen.manual_seed(cfg.seed * 1000 + p.epoch)
            for batch in self.loader:
                p.record_step(self.train_step(batch), keep_window=self.main)
                bar.update(1)
                for cb in self.callbacks:
                    cb(self)
                if self.main and (p.global_step % cfg.log_every == 0 or p.global_step == 1):
                    self._log_train(bar, time.time() - t0)
                stop, halted = self._after_step()
                if not stop and broadcast_flag(self._stop_requested, self.dist, self.device):
                    self.save_checkpoint("last.pt")  # the step is complete: safe to resume
                    stop = interrupted = True
                if stop:
                    break
            if not stop:
                p.next_epoch()
        bar.close()
        return self._finish(halted, interrupted, time.time() - t0)

    def _log_train(self, bar, seconds: float) -> None:
        avg = self.progress.take_window_mean()
        lr = self.optimizer.param_groups[0]["lr"]
        bar.set_postfix(loss=f"{avg:.4f}", lr=f"{lr:.2e}")
        self.logger.log_train(self.progress.global_step, self.progress.epoch, lr, avg, seconds)

    def _after_step(self) -> tuple[bool, bool]:
        """Validate and checkpoint when due; returns ``(stop, halted at max_steps)``."""
        p, cfg = self.progress, self.cfg
        stop = False
        if self.schedule.validates_at(p.global_step):
            train_loss = all_reduce_mean(p.take_running_mean(), self.dist, self.device)
            stop = self._after_validation(train_loss) or p.global_step >= self.schedule.total_steps
            self.save_checkpoint("last.pt")
        elif cfg.ckpt_every and p.global_step % cfg.ckpt_every == 0:
            self.save_checkpoint("last.pt")
        if cfg.max_steps and p.global_step >= cfg.max_steps and not stop:
            self.save_checkpoint("last.pt")
            return True, True
        return stop, False

    def _after_validation(self, train_loss: float) -> bool:
        """Validate on rank 0, log, keep ``best.pt``; returns whether to stop early."""
        p = self.progress
        if self.main:
            if len(self.val_view):
                val_loss, score = self.validate()
            else:
                val_loss, score = math.nan, -train_loss
            if p.record_score(score, self.cfg.early_stop_patience):
                self._save_best()
            self.logger.log_validation({
                "step": p.global_step, "epoch": p.epoch, "train_loss": train_loss,
                "val_loss": val_loss, "val_dice": score, "best_dice": p.best_score,
                "lr": self.optimizer.param_groups[0]["lr"]})
        p.stopped_early = broadcast_flag(p.stopped_early, self.dist, self.device)
        return p.stopped_early

    def _finish(self, halted: bool, interrupted: bool, seconds: float) -> dict:
        p = self.progress
        # no validation yet (or a non-finite score): null, never -Infinity (invalid JSON)
        best = p.best_score if math.isfinite(p.best_score) else None
        summary = {"global_step": p.global_step, "total_steps": self.schedule.total_steps,
                   "best_val_dice": best, "best_step": p.best_step if best is not None else None,
                   "stopped_early": p.stopped_early, "halted_at_max_steps": halted,
                   "interrupted": interrupted, "seconds": seconds}
        self.logger.write_summary(summary)
        barrier(self.dist)
        return summary


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
