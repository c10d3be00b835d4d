"""The ``ggnet`` command line: help texts, train / resume / refuse, eval, predict, demo."""
import os

import numpy as np
import pytest
from PIL import Image

from ggnet_fast.cli import build_parser, main

TINY = ["--data", "phantom", "--phantom-n", "24", "--phantom-size", "64", "--split", "holdout",
        "--backbone", "resnet18", "--image-size", "64", "--schedule", "iterations",
        "--iterations", "3", "--lr-step-iters", "0", "--val-every", "2", "--batch-size", "4",
        "--workers", "0", "--no-progress", "--no-tensorboard", "--backend", "reference"]


@pytest.mark.parametrize("cmd", [[], ["train"], ["eval"], ["predict"], ["demo"], ["bench"]])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        main(cmd + ["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "usage: ggnet" in text
    if not cmd:
        for sub in ("train", "eval", "predict", "demo", "bench"):
            assert sub in text


def test_every_flag_has_help():
    """Issue 13.10: every option of every sub-command explains itself in --help."""
    import argparse
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {'/'.join(a.option_strings) or a.dest}"
               for name, parser in sub.choices.items() for a in parser._actions
               if not a.help and not isinstance(a, argparse._HelpAction)]
    assert not missing, missing


def test_train_resume_eval_predict(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["train", *TINY, "--out", run, "--max-steps", "2"]) == 0
    assert os.path.exists(os.path.join(run, "config.json"))
    # a second start into the same folder is refused, naming the options
    assert main(["train", *TINY, "--out", run]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", run, "--no-progress"]) == 0
    import json
    summary = json.load(open(os.path.join(run, "summary.json")))
    assert summary["global_step"] == 3 and not summary["halted_at_max_steps"]

    assert main(["eval", "--run", run, "--overlays", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "Dice %" in out and "HD" in out
    ev = os.path.join(run, "eval_crf")
    assert os.path.exists(os.path.join(ev, "metrics.md"))
    lines = open(os.path.join(ev, "per_image.csv")).read().splitlines()
    assert lines[0].startswith("name,fold,label,dice") and len(lines) == 1 + 5  # 20% of 24
    assert len(os.listdir(os.path.join(ev, "overlays"))) == 2
    # a second evaluation into the same report folder is refused, then allowed with --overwrite
    before = open(os.path.join(ev, "metrics.md")).read()
    capsys.readouterr()
    assert main(["eval", "--run", run, "--overlays", "2", "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert open(os.path.join(ev, "metrics.md")).read() == before
    assert main(["eval", "--run", run, "--overlays", "2", "--no-progress", "--overwrite",
                 "--backend", "reference"]) == 0
    assert open(os.path.join(ev, "metrics.md")).read() == before  # same numbers again
    assert "fold holdout" not in before and "holdout (5 images" in before  # real fold label
    assert "Dense CRF: iterations=5, gauss_sxy=3," in before  # the settings are recorded
    # CRF settings from the command line (tuned on a validation split, say)
    custom = os.path.join(run, "eval_custom_crf")
    assert main(["eval", "--run", run, "--overlays", "0", "--no-progress", "--out", custom,
                 "--crf-param", "iterations=2", "--crf-param", "bilateral_srgb=5"]) == 0
    text = open(os.path.join(custom, "metrics.md")).read()
    assert "Dense CRF: iterations=2, gauss_sxy=3," in text and "bilateral_srgb=5," in text
    capsys.readouterr()
    assert main(["eval", "--run", run, "--no-progress", "--out", custom, "--overwrite",
                 "--crf-param", "sigma=3"]) == 2
    assert "--crf-param expects NAME=VALUE" in capsys.readouterr().err

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i, shape in enumerate([(50, 70), (81, 64)]):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, shape).astype(np.uint8)).save(
            imgs / f"scan{i}.png")
    preds = str(tmp_path / "preds")
    ckpt = os.path.join(run, "best.pt")
    assert main(["predict", "--checkpoint", ckpt, "--input", str(imgs / "scan1.png"),
                 "--out", preds]) == 0
    # scan1's mask/overlay exist now: refused without --overwrite, nothing written
    capsys.readouterr()
    assert main(["predict", "--checkpoint", ckpt, "--input", str(imgs), "--out", preds,
                 "--no-crf"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(preds, "masks", "scan0.png"))
    assert main(["predict", "--checkpoint", ckpt, "--input", str(imgs), "--out", preds,
                 "--no-crf", "--overwrite", "--backend", "auto"]) == 0
    for i, shape in enumerate([(50, 70), (81, 64)]):
        m = np.asarray(Image.open(os.path.join(preds, "masks", f"scan{i}.png")))
        assert m.shape == shape and set(np.unique(m)) <= {0, 255}
        assert os.path.exists(os.path.join(preds, "overlays", f"scan{i}.png"))
    # two inputs with one stem would write the same files: refused, naming both
    Image.open(imgs / "scan0.png").convert("RGB").save(imgs / "scan0.jpg")
    assert main(["predict", "--checkpoint", ckpt, "--input", str(imgs), "--out",
                 str(tmp_path / "preds2"), "--no-crf"]) == 2
    err = capsys.readouterr().err
    assert "scan0.jpg" in err and "scan0.png" in err
    assert not os.path.exists(tmp_path / "preds2")


def test_eval_refuses_a_changed_test_split(tmp_path, capsys):
    import json
    run = str(tmp_path / "run")
    assert main(["train", *TINY, "--out", run, "--iterations", "2"]) == 0
    splits = json.load(open(os.path.join(run, "splits.json")))
    splits["test"][0] = "someone_else.png"
    with open(os.path.join(run, "splits.json"), "w") as fh:
        json.dump(splits, fh)
    capsys.readouterr()
    assert main(["eval", "--run", run, "--no-crf", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "differs from the one used in training" in err and "someone_else.png" in err


def test_config_merging(tmp_path):
    from ggnet_fast.cli import config_from_args

    args = build_parser().parse_args(["train", "--preset", "released", "--out", "x",
                                      "--lr", "0.02", "--model-opt", "residual=\"learnable\""])
    cfg = config_from_args(args)
    assert cfg.schedule == "iterations" and cfg.iterations == 13400 and cfg.bias_lr_mult == 2.0
    assert cfg.early_stop_patience == 30 and cfg.lr == 0.02
    assert cfg.model_overrides == {"residual": "learnable"}
    # an invalid value (valid: learnable, fixed) or an unknown option is refused by the one
    # validation (TrainConfig.validate, run by the Trainer before anything is written)
    for opt in (["--model-opt", "residual=learned"], ["--model-opt", "nope=1"],
                ["--loss-opt", "nope=1"]):
        with pytest.raises(ValueError, match="residual|nope"):
            config_from_args(build_parser().parse_args(["train", "--out", "x", *opt])).validate()
    assert main(["train", "--out", str(tmp_path / "bad"), "--model-opt", "residual=learned"]) == 2
    assert not os.path.exists(tmp_path / "bad")
    paper = config_from_args(build_parser().parse_args(["train", "--out", "y"]))
    assert paper.schedule == "epochs" and paper.epochs == 100 and paper.lr_step_epochs == 50
    cfg.save(str(tmp_path / "c.json"))
    again = config_from_args(build_parser().parse_args(
        ["train", "--config", str(tmp_path / "c.json"), "--out", "z", "--batch-size", "8"]))
    assert again.schedule == "iterations" and again.lr == 0.02 and again.batch_size == 8


def test_demo_quick(tmp_path, capsys):
    out = str(tmp_path / "demo")
    assert main(["demo", "--quick", "--out", out, "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "trivial all-background" in text and "GG-Net + CRF" in text
    assert os.path.exists(os.path.join(out, "metrics.md"))
    assert len(os.listdir(os.path.join(out, "overlays"))) > 0
    assert main(["demo", "--quick", "--out", out, "--no-progress"]) == 2  # refuses to overwrite


def test_fold_table_uses_the_rows_fold_field():
    from ggnet_fast.eval.report import fold_table

    def rows(fold, d):
        return [{"fold": fold, "dice": x, "jaccard": x, "recall": 1.0, "precision": 1.0,
                 "specificity": 1.0, "accuracy": 1.0, "hd": 1.0, "abd": 1.0} for x in d]

    # only folds 2 and 0 were evaluated (e.g. fold1/ missing): labels are the real indices
    md, numbers = fold_table([rows(2, [0.8]), rows(0, [0.6])], "GG-Net")
    assert "GG-Net, fold 2 (1 images" in md and "GG-Net, fold 0 (1 images" in md
    assert "fold 1" not in md
    assert [f["fold"] for f in numbers["folds"]] == [2, 0]
