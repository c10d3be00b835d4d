"""The ``ggnet`` faults of issue 23 (run in-process through ``cli.main``): flags that
cannot take effect, zero-length schedules, unwritable outputs, a missing GPU, non-
checkpoint files, interrupted evaluations, refused starts, and the paths by which the
CRF settings and ``--skip-existing`` reach the work."""
import errno
import json
import os
import tempfile

import numpy as np
import pytest
import torch
from PIL import Image

from ggnet_fast.cli import build_parser, config_from_args, main

SETUP = ["--data", "phantom", "--phantom-n", "24", "--phantom-size", "64", "--split", "holdout",
         "--backbone", "resnet18", "--image-size", "64", "--batch-size", "4", "--workers", "0",
         "--no-progress", "--no-tensorboard", "--backend", "reference"]
TINY = [*SETUP, "--schedule", "iterations", "--iterations", "2", "--lr-step-iters", "0",
        "--val-every", "2"]


def one_line_error(capsys, *needles) -> str:
    """The single stderr line of a user error, checked to contain ``needles``."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-iteration run on 24 tiny phantom images (best.pt at step 2)."""
    out = str(tmp_path_factory.mktemp("faults") / "run")
    assert main(["train", *TINY, "--out", out]) == 0
    return out


@pytest.fixture
def images(tmp_path):
    """Two grey scans of different sizes in ``tmp_path/imgs``."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, shape in enumerate([(50, 70), (81, 64)]):
        pixels = np.random.default_rng(i).integers(0, 255, shape).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"scan{i}.png")
    return folder


def _config(*flags):
    return config_from_args(build_parser().parse_args(["train", "--out", "x", *flags]))


# ---------------------------------------------------------------- 1, 2: schedule flags
def test_a_schedule_flag_selects_its_schedule_or_is_refused(tmp_path, capsys):
    """Item 1: --iterations without --schedule trained the preset's 100 epochs."""
    cfg = _config("--iterations", "200")
    assert (cfg.schedule, cfg.iterations) == ("iterations", 200)
    cfg = _config("--preset", "released", "--epochs", "3")
    assert (cfg.schedule, cfg.epochs) == ("epochs", 3)
    assert _config("--preset", "released", "--lr-step-iters", "50").lr_step_iters == 50
    for flags, needle in ((["--schedule", "epochs", "--iterations", "200"], "--iterations"),
                          (["--lr-step-iters", "50"], "--lr-step-iters"),
                          (["--preset", "released", "--lr-step-epochs", "5"], "--lr-step-epochs"),
                          (["--epochs", "3", "--iterations", "5"], "--iterations")):
        with pytest.raises(ValueError, match=f"{needle} cannot take effect"):
            _config(*flags)
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--schedule", "epochs", "--iterations", "200"]) == 2
    one_line_error(capsys, "--iterations cannot take effect", "--schedule iterations")
    assert not out.exists()
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "selects the iterations schedule" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("flags, needle", [
    (["--iterations", "0"], "iterations (--iterations) must be an integer >= 1"),
    (["--schedule", "epochs", "--epochs", "0"], "epochs (--epochs) must be an integer >= 1"),
    (["--val-every", "-1"], "--val-every"),
    (["--max-steps", "-2"], "--max-steps"),
    (["--split", "kfold", "--folds", "1"], "folds (--folds) must be an integer >= 2"),
])
def test_a_schedule_of_no_steps_is_refused(flags, needle, tmp_path, capsys):
    """Item 2: --iterations 0 exited 0 with a run folder and no checkpoint."""
    out = tmp_path / "run"
    base = SETUP if "--schedule" in flags else TINY
    assert main(["train", *base, *flags, "--out", str(out)]) == 2
    one_line_error(capsys, needle)
    assert not out.exists()


# ---------------------------------------------------------------- 3: unwritable outputs
@pytest.fixture
def read_only(monkeypatch, tmp_path):
    """Folders under ``tmp_path/ro`` behave as on a read-only file system for the atomic
    writers (every output of the package goes through them)."""
    ro = str(tmp_path / "ro")
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and os.path.abspath(dir).startswith(ro):
            raise OSError(errno.EROFS, "Read-only file system", os.path.join(dir, ".tmp_x"))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    return ro


def test_a_read_only_output_is_a_one_line_error(run, images, read_only, capsys):
    """Item 3: OSError [Errno 30] was a traceback (only PermissionError was handled)."""
    assert main(["eval", "--run", run, "--no-crf", "--no-progress", "--overlays", "1",
                 "--out", os.path.join(read_only, "report")]) == 2
    err = one_line_error(capsys, "Read-only file system", "--out", read_only)
    assert ".tmp_" not in err  # the file meant, not the writer's temporary
    assert main(["predict", "--checkpoint", os.path.join(run, "best.pt"), "--input",
                 str(images), "--out", os.path.join(read_only, "preds"), "--no-crf"]) == 2
    one_line_error(capsys, "Read-only file system", "--out")
    assert main(["train", *TINY, "--out", os.path.join(read_only, "run")]) == 2
    one_line_error(capsys, "Read-only file system", "--out")


# ---------------------------------------------------------------- 4: no GPU
def test_a_missing_gpu_is_a_one_line_error(run, images, tmp_path, monkeypatch, capsys):
    """Item 4: predict, eval and bench with --device cuda on a machine without a GPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ckpt = os.path.join(run, "best.pt")
    commands = [["predict", "--checkpoint", ckpt, "--input", str(images), "--out",
                 str(tmp_path / "p"), "--no-crf"],
                ["eval", "--run", run, "--no-crf", "--no-progress", "--out", str(tmp_path / "e")],
                ["bench"], ["train", *TINY, "--out", str(tmp_path / "t")]]
    for command in commands:
        assert main([*command, "--device", "cuda"]) == 2, command
        one_line_error(capsys, "--device cuda", "no CUDA device")
    assert main([*commands[0], "--device", "gpu"]) == 2
    one_line_error(capsys, "--device 'gpu' is not a device")
    assert not any((tmp_path / d).exists() for d in ("p", "e", "t"))


# ---------------------------------------------------------------- 5: not a checkpoint
class Opaque:
    """An object weights-only loading refuses."""


def test_a_file_that_is_not_a_checkpoint_is_named_without_unsafe_advice(images, tmp_path,
                                                                        capsys):
    """Item 5: --checkpoint some.png quoted torch's advice to load with weights_only=False
    and pointed at --overwrite."""
    pickled = tmp_path / "objects.pt"
    torch.save({"model": Opaque()}, pickled)
    for path, reason in ((images / "scan0.png", "is not a PyTorch checkpoint"),
                         (pickled, "Python objects other than tensors")):
        assert main(["predict", "--checkpoint", str(path), "--input", str(images), "--out",
                     str(tmp_path / "p"), "--no-crf"]) == 2
        err = one_line_error(capsys, str(path), reason, "best.pt or last.pt")
        assert "weights_only" not in err and "--overwrite" not in err, err
    assert not (tmp_path / "p").exists()


# ---------------------------------------------------------------- 6: demo CSV
def test_compare_reads_the_demos_per_image_csv(tmp_path, capsys):
    """Item 6: ggnet compare refused the demo's own per_image.csv (four methods in one
    file: "image appears twice")."""
    demo = str(tmp_path / "demo")
    assert main(["demo", "--quick", "--no-crf", "--out", demo, "--no-progress"]) == 0
    out = str(tmp_path / "cmp")
    assert main(["compare", demo, "--out", out, "--reference", "GG-Net (no CRF)"]) == 0
    with open(os.path.join(out, "compare.csv")) as fh:
        rows = fh.read()
    for method in ("trivial: all background", "trivial: central ellipse"):
        assert f"GG-Net (no CRF),{method}" in rows
    assert main(["compare", f"demo={demo}", "--out", str(tmp_path / "cmp2")]) == 0
    assert "demo/GG-Net (no CRF) vs. demo/trivial: all background" in capsys.readouterr().out


# ---------------------------------------------------------------- 7: interrupted eval
def test_an_interrupted_eval_leaves_nothing_that_blocks_the_rerun(run, tmp_path, monkeypatch,
                                                                   capsys):
    """Item 7: after Ctrl-C during eval, the partial overlays/ refused the same command
    until --overwrite."""
    import ggnet_fast.eval.evaluate as evaluate

    real, calls = evaluate.save_overlay, []

    def interrupted_after_one(*args):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(evaluate, "save_overlay", interrupted_after_one)
    report = tmp_path / "report"
    command = ["eval", "--run", run, "--no-crf", "--no-progress", "--overlays", "-1",
               "--out", str(report)]
    assert main(command) == 130
    assert not os.path.exists(calls[0]) and not report.exists()
    monkeypatch.setattr(evaluate, "save_overlay", real)
    report.mkdir()
    (report / "notes.txt").write_text("mine")  # a user's file is never removed
    monkeypatch.setattr(evaluate, "save_overlay", interrupted_after_one)
    calls.clear()
    assert main(command) == 130
    assert sorted(os.listdir(report)) == ["notes.txt"]
    monkeypatch.setattr(evaluate, "save_overlay", real)
    assert main(command) == 0
    assert (report / "metrics.md").exists() and len(os.listdir(report / "overlays")) == 5


# ---------------------------------------------------------------- 9: refused start
def test_a_refused_train_announces_nothing(run, capsys):
    """Item 9: a refused train first printed "training full (resnet18) fold 0 -> ..."."""
    capsys.readouterr()
    assert main(["train", *TINY, "--out", run]) == 2
    captured = capsys.readouterr()
    assert "training" not in captured.out, captured.out
    assert "--overwrite" in captured.err


# ---------------------------------------------------------------- planted bugs
@pytest.mark.parametrize("flag, option, field", [
    ("--loss-opt", "lambda_boundary=5", "loss_overrides"),
    ("--model-opt", 'residual="learnable"', "model_overrides"),
])
def test_resume_refuses_changed_model_or_loss_options(flag, option, field, tmp_path, capsys):
    """A resume must not accept other --loss-opt / --model-opt values than the run's.
    (The saved run is one step long, so a resume that wrongly accepts them ends at once.)"""
    from ggnet_fast.train import TrainConfig

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = config_from_args(build_parser().parse_args(["train", *TINY, "--iterations", "1",
                                                      "--out", str(run_dir)]))
    cfg.validate().save(str(run_dir / "config.json"))
    assert TrainConfig.load(str(run_dir / "config.json")).iterations == 1
    assert main(["train", "--resume", "--out", str(run_dir), flag, option]) == 2
    one_line_error(capsys, f"{field}: saved {{}}, now {{")


def _recording_crf(monkeypatch):
    """Replace the dense CRF the predictor calls by one recording its inputs."""
    import ggnet_fast.eval.predict as predict

    calls = []

    def dense_crf(image, prob, **params):
        calls.append((image.shape[:2], prob.shape, params))
        return prob

    monkeypatch.setattr(predict, "dense_crf", dense_crf)
    monkeypatch.setattr("ggnet_fast.crf.crf_available", lambda: None)
    return calls


def test_crf_runs_at_each_images_resolution_with_the_given_params(run, images, tmp_path,
                                                                   monkeypatch):
    """--crf-param reaches dense_crf (predict and eval), which runs on the image and the
    probability at the image's own size, not at the network's."""
    calls = _recording_crf(monkeypatch)
    assert main(["predict", "--checkpoint", os.path.join(run, "best.pt"), "--input",
                 str(images), "--out", str(tmp_path / "p"), "--crf-param", "iterations=2",
                 "--crf-param", "bilateral_srgb=7"]) == 0
    want = {"iterations": 2, "bilateral_srgb": 7.0}
    assert calls == [((50, 70), (50, 70), want), ((81, 64), (81, 64), want)]
    calls.clear()
    assert main(["eval", "--run", run, "--no-progress", "--overlays", "0", "--out",
                 str(tmp_path / "e"), "--crf-param", "gauss_sxy=2"]) == 0
    with open(os.path.join(run, "splits.json")) as fh:
        n_test = len(json.load(fh)["test"])
    assert len(calls) == n_test and all(c[2] == {"gauss_sxy": 2.0} for c in calls)
    assert all(image == prob for image, prob, _ in calls)


def test_skip_existing_completes_an_input_with_a_mask_but_no_overlay(run, images, tmp_path,
                                                                       capsys):
    """--skip-existing predicts an input whose overlay is missing (a run stopped between
    its two files) and writes only that file; complete inputs are left alone."""
    out = tmp_path / "p"
    command = ["predict", "--checkpoint", os.path.join(run, "best.pt"), "--input",
               str(images), "--out", str(out), "--no-crf"]
    assert main(command) == 0
    (out / "overlays" / "scan1.png").unlink()
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    capsys.readouterr()
    assert main([*command, "--skip-existing"]) == 0
    assert capsys.readouterr().out.count("lesion") == 1
    assert (out / "overlays" / "scan1.png").exists()
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}


# ---------------------------------------------------------------- 10: start-up
def test_help_imports_nothing_beyond_the_package(tmp_path):
    """Item 10: ``ggnet --help`` (and a command's argument errors) built every
    sub-command's options, importing the registries (data, losses, models, backends) and
    torch. Measured in a fresh interpreter: the modules ``main`` adds to those that
    ``import ggnet_fast`` loads (today that import loads torch itself; once it is lazy,
    this checks that the CLI adds no torch either)."""
    import subprocess
    import sys

    script = (
        "import sys, contextlib, io\n"
        "import ggnet_fast\n"
        "before = set(sys.modules)\n"
        "from ggnet_fast.cli import main\n"
        "for argv in (['--help'], ['compare', '--help'], ['demo', '--out']):\n"
        "    sink = io.StringIO()\n"
        "    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit:\n"
        "            pass\n"
        "print(' '.join(sorted(set(sys.modules) - before)))\n")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300, cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr[-2000:]
    added = res.stdout.split()
    heavy = [m for m in added if m.split(".")[0] in ("torch", "cv2", "scipy", "PIL")
             or m.startswith(("ggnet_fast.models", "ggnet_fast.data", "ggnet_fast.losses",
                              "ggnet_fast.train", "ggnet_fast.eval", "ggnet_fast.backends"))]
    assert not heavy, heavy
