"""Training loop: exact resume after a stop or a SIGKILL mid-epoch, run-folder safety,
schedules, early stopping, checkpoint contents."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from ggnet_fast.train import TrainConfig, Trainer
from ggnet_fast.train.checkpoint import load_checkpoint


def tiny_config(out_dir, **kw):
    base = dict(out_dir=str(out_dir), data="phantom", phantom_n=24, phantom_size=64,
                split="holdout", test_fraction=0.2, val_fraction=0.15, backbone="resnet18",
                image_size=64, schedule="iterations", iterations=8, lr_step_iters=7,
                val_every=4, batch_size=4, lr=0.01, bias_lr_mult=2.0, workers=0,
                ckpt_every=3, log_every=1, deterministic=True, progress=False,
                tensorboard=False, seed=3, backend="reference")
    # backend pinned: bitwise comparisons need the same attention kernel in every process
    base.update(kw)
    return TrainConfig(**base)


def _final_state(run_dir):
    ck = load_checkpoint(os.path.join(run_dir, "last.pt"))
    return ck


def _assert_same_state(a, b):
    assert a["progress"]["global_step"] == b["progress"]["global_step"]
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for (ka, sa), (kb, sb) in zip(a["optimizer"]["state"].items(), b["optimizer"]["state"].items()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"]), ka
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    summary = Trainer(tiny_config(out)).fit()
    assert summary["global_step"] == 8
    return str(out)


def test_resume_after_stop_is_bitwise_identical(uninterrupted, tmp_path):
    out = tmp_path / "run"
    cfg = tiny_config(out, max_steps=6)  # 4 iterations per epoch: stops mid-epoch 1
    s1 = Trainer(cfg).fit()
    assert s1["halted_at_max_steps"] and s1["global_step"] == 6
    ck = _final_state(out)
    assert ck["progress"]["step_in_epoch"] == 2  # mid-epoch
    cfg.max_steps = 0
    cfg.workers = 1  # worker count must not change the result
    s2 = Trainer(cfg, resume=True).fit()
    assert s2["global_step"] == 8
    _assert_same_state(_final_state(uninterrupted), _final_state(out))
    # the logs were continued, not duplicated
    with open(out / "train_log.csv") as fh:
        steps = [int(line.split(",")[0]) for line in fh.readlines()[1:]]
    assert steps == list(range(1, 9))


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys, torch
    torch.set_num_threads({threads})
    sys.path.insert(0, {tests!r})
    from test_train import tiny_config
    from ggnet_fast.train import Trainer
    def kill_at_7(trainer):
        if trainer.global_step == 7:   # last checkpoint was written at step 6
            os.kill(os.getpid(), signal.SIGKILL)
    Trainer(tiny_config({out!r}), callbacks=[kill_at_7]).fit()
""")


def test_resume_after_sigkill_mid_epoch(uninterrupted, tmp_path):
    out = str(tmp_path / "run")
    script = KILL_SCRIPT.format(threads=torch.get_num_threads(), tests=os.path.dirname(__file__),
                                out=out)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    ck = _final_state(out)
    assert ck["progress"]["global_step"] == 6 and ck["progress"]["step_in_epoch"] != 0
    cfg = tiny_config(out)
    Trainer(cfg, resume=True).fit()
    _assert_same_state(_final_state(uninterrupted), _final_state(out))


def test_checkpoint_contents_and_weights_only_load(uninterrupted):
    ck = torch.load(os.path.join(uninterrupted, "last.pt"), weights_only=True)
    assert {"model", "model_config", "optimizer", "scheduler", "scaler", "rng", "progress",
            "config"} <= set(ck)
    assert set(ck["rng"]) == {"torch", "cuda", "numpy", "python"}
    assert ck["model_config"]["backbone"] == "resnet18"
    best = torch.load(os.path.join(uninterrupted, "best.pt"), weights_only=True)
    assert "model" in best and "optimizer" not in best
    cfg = json.load(open(os.path.join(uninterrupted, "config.json")))
    assert cfg["iterations"] == 8 and cfg["backbone"] == "resnet18"
    # released schedule: lr x0.1 at iteration 7, biases at 2x
    groups = ck["optimizer"]["param_groups"]
    by_name = {g["name"]: g["lr"] for g in groups}
    assert by_name["weights"] == pytest.approx(0.001)
    assert by_name["biases"] == pytest.approx(0.002)
    splits = json.load(open(os.path.join(uninterrupted, "splits.json")))
    assert not set(splits["train"]) & set(splits["test"])
    assert not set(splits["val"]) & set(splits["test"])


def test_refuses_non_empty_run_dir(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--resume.*--overwrite"):
        Trainer(tiny_config(out, iterations=1))
    with pytest.raises(FileNotFoundError, match="last.pt"):
        Trainer(tiny_config(out, iterations=1), resume=True)
    (out / "last.pt").write_text("old")
    t = Trainer(tiny_config(out, iterations=1), overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"   # user's file kept
    assert not (out / "last.pt").exists()              # our stale artifact removed
    assert t.total_steps == 1


def test_paper_schedule_steps_per_epoch(tmp_path):
    t = Trainer(tiny_config(tmp_path / "r", schedule="epochs", epochs=4, lr_step_epochs=2,
                            val_every=0))
    ipe = t.iters_per_epoch
    assert ipe == len(t.splits["train"]) // 4
    assert t.total_steps == 4 * ipe and t.val_every == ipe
    assert list(t.scheduler.milestones) == [2 * ipe]


def test_early_stopping_counts_validations(tmp_path, monkeypatch):
    t = Trainer(tiny_config(tmp_path / "r", early_stop_patience=2, iterations=100, val_every=1))
    scores = iter([0.5, 0.4, 0.6, 0.6, 0.59, 0.9])
    monkeypatch.setattr(t, "validate", lambda: (1.0, next(scores)))
    monkeypatch.setattr(t, "train_step", lambda batch: 1.0)
    s = t.fit()
    # 0.5 best, 0.4 bad(1), 0.6 best, 0.6 bad(1), 0.59 bad(2) -> stop at validation 5
    assert s["stopped_early"] and s["global_step"] == 5
    assert s["best_val_dice"] == 0.6 and s["best_step"] == 3


def test_config_validation():
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=1).validate()
    with pytest.raises(ValueError, match="fold"):
        TrainConfig(folds=3, fold=3).validate()
    with pytest.raises(ValueError, match="unknown config keys"):
        TrainConfig.from_dict({"nope": 1})
