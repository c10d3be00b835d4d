"""Training loop: exact resume after a stop or a SIGKILL mid-epoch, run-folder safety,
schedules, early stopping, checkpoint contents."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from ggnet_fast.data import RawSample, SegmentationSource
from ggnet_fast.fileio import load_checkpoint
from ggnet_fast.train import TrainConfig, Trainer


def tiny_config(out_dir, **kw):
    base = dict(out_dir=str(out_dir), data="phantom", data_options={"n": 24, "size": 64},
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


def _assert_same_state(run_a, run_b):
    """The final checkpoints, best.pt and validation logs of two runs are identical."""
    a, b = _final_state(run_a), _final_state(run_b)
    # the whole progress: step, position, best score/step, bad validations, running loss
    assert a["progress"] == b["progress"]
    assert a["model"].keys() == b["model"].keys()
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    sa_all, sb_all = a["optimizer"]["state"], b["optimizer"]["state"]
    assert len(sa_all) == len(sb_all) > 0
    for (ka, sa), (kb, sb) in zip(sa_all.items(), sb_all.items()):
        assert ka == kb
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"]), ka
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]
    best_a = load_checkpoint(os.path.join(run_a, "best.pt"))
    best_b = load_checkpoint(os.path.join(run_b, "best.pt"))
    assert best_a["progress"] == best_b["progress"]
    for k, v in best_a["model"].items():
        assert torch.equal(v, best_b["model"][k]), k
    with (open(os.path.join(run_a, "val_log.csv")) as fa,
          open(os.path.join(run_b, "val_log.csv")) as fb):
        assert fa.read() == fb.read()


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
    _assert_same_state(uninterrupted, str(out))
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
        if trainer.progress.global_step == 7:   # last checkpoint was written at step 6
            os.kill(os.getpid(), signal.SIGKILL)
    Trainer(tiny_config({out!r}), callbacks=[kill_at_7]).fit()
""")


def test_resume_after_sigkill_mid_epoch(uninterrupted, tmp_path):
    out = str(tmp_path / "run")
    script = KILL_SCRIPT.format(threads=torch.get_num_threads(), tests=os.path.dirname(__file__),
                                out=out)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    ck = _final_state(out)
    assert ck["progress"]["global_step"] == 6 and ck["progress"]["step_in_epoch"] != 0
    cfg = tiny_config(out)
    Trainer(cfg, resume=True).fit()
    _assert_same_state(uninterrupted, out)


def test_resume_without_validation_split_keeps_running_loss(tmp_path):
    """val_fraction=0: the score is -train_loss, so the running loss must survive a resume
    (stopped at step 6, between the validations at 4 and 8) for best.pt to match."""
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    Trainer(tiny_config(full, val_fraction=0.0)).fit()
    cfg = tiny_config(part, val_fraction=0.0, max_steps=6)
    Trainer(cfg).fit()
    assert _final_state(part)["progress"]["running_n"] == 2
    cfg.max_steps = 0
    Trainer(cfg, resume=True).fit()
    _assert_same_state(full, part)


def test_resume_refuses_a_changed_setup(tmp_path):
    out = tmp_path / "run"
    Trainer(tiny_config(out, max_steps=3)).fit()
    for change, field in [({"batch_size": 2}, "batch_size"), ({"iterations": 10}, "iterations"),
                          ({"lr_step_iters": 5}, "lr_step_iters"), ({"seed": 4}, "seed"),
                          ({"fold_seed": 1}, "fold_seed"), ({"val_fraction": 0.3}, "val_fraction")]:
        with pytest.raises(ValueError, match=f"{field}: saved .*, now "):
            Trainer(tiny_config(out, **change), resume=True)
    # world size: the checkpoint records the number of processes
    ck = load_checkpoint(os.path.join(out, "last.pt"))
    assert ck["world_size"] == 1
    ck["world_size"] = 2
    torch.save(ck, out / "last.pt")
    with pytest.raises(ValueError, match=r"world_size differs \(saved 2, now 1\)"):
        Trainer(tiny_config(out), resume=True)


def test_summary_is_valid_json_without_validation(tmp_path):
    out = tmp_path / "run"
    s = Trainer(tiny_config(out, max_steps=2)).fit()  # first validation would be at step 4
    assert s["best_val_dice"] is None
    text = (out / "summary.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert data["best_val_dice"] is None and data["halted_at_max_steps"]


def test_bad_model_or_loss_override_is_refused_at_once(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="residual"):
        Trainer(tiny_config(out, model_overrides={"residual": "learned"}))
    with pytest.raises(ValueError, match="nope"):
        Trainer(tiny_config(out, loss_overrides={"nope": 1}))
    assert not out.exists()  # nothing was written


def test_missing_tensorboard_warns(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import -> ImportError
    with pytest.warns(RuntimeWarning, match="TensorBoard logging is off"):
        t = Trainer(tiny_config(tmp_path / "r", tensorboard=True))
    assert t.logger.tb is None


def test_tensorboard_default_is_silent_when_not_installed(tmp_path, monkeypatch, recwarn):
    """Issue 13.10: the default (tensorboard=None) logs to TensorBoard only when it is
    installed, without a warning on every run."""
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import -> ImportError
    t = Trainer(tiny_config(tmp_path / "r", tensorboard=None))
    assert t.logger.tb is None
    assert not [w for w in recwarn if "TensorBoard" in str(w.message)]


def test_overwriting_fold_runs_removes_the_parent_eval_report(tmp_path):
    """Issue 13.9: ``--fold all --overwrite`` retrains the folds; the fold parent's report
    of the old models goes with them."""
    from ggnet_fast.train.runs import train_folds

    parent = tmp_path / "folds"
    (parent / "eval_crf").mkdir(parents=True)
    (parent / "eval_crf" / "metrics.md").write_text("the old models' numbers")
    train_folds(tiny_config(parent / "x", iterations=1, split="kfold", folds=3), [0],
                str(parent), overwrite=True)
    assert (parent / "fold0" / "last.pt").exists() and not (parent / "eval_crf").exists()


def test_a_failed_setup_creates_no_run_folder(tmp_path):
    """Issue 13.9: the run folder is created only once data and model are set up."""
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="fewer than one batch"):
        Trainer(tiny_config(out, batch_size=64))
    assert not out.exists()


def test_checkpoint_contents_and_weights_only_load(uninterrupted):
    ck = torch.load(os.path.join(uninterrupted, "last.pt"), weights_only=True)
    assert {"model", "model_config", "optimizer", "scheduler", "scaler", "progress",
            "config"} <= set(ck)
    # no RNG state: each step reseeds, so the SIGKILL resume test is bit-exact without one
    assert "rng" not in ck
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
    (out / "eval_crf").mkdir()
    (out / "eval_crf" / "metrics.md").write_text("the old model's numbers")
    (out / ".tmp_x1last.pt").write_bytes(b"\0" * 100)  # left by a kill during a write
    t = Trainer(tiny_config(out, iterations=1), overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"   # user's file kept
    assert not (out / "last.pt").exists()              # our stale artifact removed
    assert not (out / "eval_crf").exists()             # so is the old model's report
    assert not (out / ".tmp_x1last.pt").exists()
    assert t.schedule.total_steps == 1


def test_paper_schedule_steps_per_epoch(tmp_path):
    t = Trainer(tiny_config(tmp_path / "r", schedule="epochs", epochs=4, lr_step_epochs=2,
                            val_every=0))
    ipe = t.schedule.iters_per_epoch
    assert ipe == len(t.splits["train"]) // 4
    assert t.schedule.total_steps == 4 * ipe and t.schedule.val_every == ipe
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


class Squares(SegmentationSource):
    """A toy dataset for the registry test: ``n`` bright squares on a dark background."""

    def __init__(self, n: int = 12, side: int = 48):
        self.side = side
        self.names = [f"square_{i:02d}" for i in range(n)]
        self.labels = [""] * n

    def load(self, index):
        mask = np.zeros((self.side, self.side), np.uint8)
        r, c = 6 + index % 5, self.side // 2 + index % 7 - 3
        mask[c - r:c + r, c - r:c + r] = 1
        image = np.where(mask[..., None] == 1, 200, 40).astype(np.uint8).repeat(3, 2)
        return RawSample(image=image, mask=mask, name=self.names[index])


class _MeanBCE(torch.nn.Module):
    """A toy loss for the registry test: BCE of the final logits only."""

    def __init__(self, preset, pos_weight: float = 1.0):
        super().__init__()
        self.pos_weight = torch.tensor(float(pos_weight))

    def forward(self, out, masks):
        return torch.nn.functional.binary_cross_entropy_with_logits(
            out.logits, masks, pos_weight=self.pos_weight)


def test_a_registered_dataset_and_loss_train_by_name(tmp_path, monkeypatch):
    """docs/pipeline.md, "Adding a dataset / a loss": one registration makes each usable
    by name in TrainConfig and on the command line."""
    from ggnet_fast.cli import build_parser, config_from_args
    from ggnet_fast.data import DatasetOption, register_dataset, registry
    from ggnet_fast.losses import register_loss
    from ggnet_fast.losses import registry as loss_registry

    monkeypatch.setattr(registry, "_DATASETS", dict(registry._DATASETS))
    monkeypatch.setattr(loss_registry, "_LOSSES", dict(loss_registry._LOSSES))
    register_dataset("squares", Squares, needs_root=False, help="toy squares",
                     options={"n": DatasetOption(12, "number of images")})
    register_loss("mean_bce", _MeanBCE)

    args = build_parser().parse_args(["train", "--data", "squares", "--squares-n", "10",
                                      "--loss", "mean_bce", "--loss-opt", "pos_weight=2",
                                      "--out", str(tmp_path / "run")])
    cfg = config_from_args(args)
    assert (cfg.data, cfg.data_options, cfg.loss) == ("squares", {"n": 10}, "mean_bce")
    for key, value in tiny_config(tmp_path / "run").to_dict().items():
        if key not in ("data", "data_options", "loss", "loss_overrides", "out_dir"):
            setattr(cfg, key, value)
    cfg.iterations, cfg.val_every = 1, 1
    trainer = Trainer(cfg)
    assert isinstance(trainer.loss_fn, _MeanBCE) and float(trainer.loss_fn.pos_weight) == 2.0
    assert len(trainer.source) == 10
    summary = trainer.fit()
    assert summary["global_step"] == 1
    saved = json.load(open(tmp_path / "run" / "config.json"))
    assert ((saved["data"], saved["data_options"], saved["loss"])
            == ("squares", {"n": 10}, "mean_bce"))
    with pytest.raises(ValueError, match="not options of dataset 'squares'"):
        TrainConfig(data="squares", data_options={"size": 3}).validate()
