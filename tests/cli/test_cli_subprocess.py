"""The installed ``ggnet`` console script, run as a user runs it (a subprocess): exit codes
(0, 2 for every user error with one line on stderr and no traceback, 130 after Ctrl-C),
and the faults of issue 13 on a tiny images/ + masks/ tree made here."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

GGNET = os.path.join(os.path.dirname(sys.executable), "ggnet")
FAST = ["--split", "holdout", "--backbone", "resnet18", "--image-size", "64",
        "--schedule", "iterations", "--iterations", "4", "--lr-step-iters", "0",
        "--val-every", "2", "--batch-size", "4", "--lr", "0.01", "--workers", "0",
        "--no-progress", "--backend", "reference"]


def ggnet(*args, cwd=None, timeout=300):
    """Run the console script; returns the CompletedProcess (text stdout/stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "GGNET_DEBUG"}
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run([GGNET, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


def assert_user_error(res, *needles):
    """Exit code 2, one line on stderr naming ``needles`` (after argparse's usage lines, for
    its own errors), no traceback."""
    err = res.stderr.strip()
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    lines = [line for line in err.splitlines() if not line.startswith(("usage: ", " "))]
    assert "Traceback" not in err and len(lines) == 1, err
    err = lines[0]
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def make_folder_tree(root, n=12):
    """``root/images/case (i).png`` (64x64 grey) and ``root/masks/case (i)_mask.png``."""
    rng = np.random.default_rng(0)
    os.makedirs(root / "images")
    os.makedirs(root / "masks")
    yy, xx = np.mgrid[:64, :64]
    for i in range(1, n + 1):
        cy, cx, r = rng.integers(20, 44), rng.integers(20, 44), rng.integers(6, 14)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.uint8)
        image = np.clip(rng.normal(120, 30, (64, 64)) - 70 * mask, 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"case ({i}).png")
        Image.fromarray(mask * 255).save(root / "masks" / f"case ({i})_mask.png")


def test_console_script_is_installed():
    assert os.access(GGNET, os.X_OK), f"{GGNET}: install the package (pip install -e .)"
    res = ggnet("--help")
    assert res.returncode == 0 and "usage: ggnet" in res.stdout and "compare" in res.stdout
    res = ggnet("train", "--help")
    assert res.returncode == 0 and "--no-tensorboard" in res.stdout


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    make_folder_tree(base / "scans")
    return base


def test_user_errors_exit_2_with_one_line(data, tmp_path):
    out = tmp_path / "run"
    assert_user_error(ggnet("train"), "--out")
    assert_user_error(ggnet("predict", "--checkpoint", "x.pt", "--out", out), "--input")
    # a wrong BUSI root: refused before the run folder is created
    assert_user_error(ggnet("train", "--data", "busi", "--data-root", tmp_path / "nope",
                            "--out", out), "nope", "does not exist")
    assert not out.exists()
    # a root with no known layout; a root given to a dataset that reads none (issue 13.1)
    (tmp_path / "empty").mkdir()
    assert_user_error(ggnet("train", "--data-root", tmp_path / "empty", "--out", out), "--data")
    assert_user_error(ggnet("train", "--data", "phantom", "--data-root", data / "scans",
                            "--out", out), "data_root", "phantom")
    assert not out.exists()
    # a folder dataset whose mask folder is missing: no empty run folder left (issue 13.9)
    bad = tmp_path / "bad"
    shutil.copytree(data / "scans" / "images", bad / "images")
    (bad / "masks").mkdir()
    assert_user_error(ggnet("train", "--data", "folder", "--data-root", bad, "--out", out,
                            *FAST), "has no mask")
    assert not out.exists()
    assert_user_error(ggnet("compare", data / "scans", "--out", tmp_path / "cmp"))
    # a value of the wrong type in a --config file
    (tmp_path / "c.json").write_text(json.dumps({"data": "phantom", "data_options": {"n": "x"}}))
    assert_user_error(ggnet("train", "--config", tmp_path / "c.json", "--out", out), "'n'")
    assert not out.exists()


@pytest.fixture(scope="module")
def run(data):
    """A folder-dataset run started with a relative --data-root and no --data, halted by
    --max-steps 3 (of 4; validated at step 2)."""
    res = ggnet("train", "--data-root", "scans", "--out", "run", "--max-steps", "3",
                "--no-tensorboard", *FAST, cwd=data)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "folder layout" in res.stdout
    summary = json.loads((data / "run" / "summary.json").read_text())
    assert summary["halted_at_max_steps"] and summary["global_step"] == 3
    return data / "run"


def test_root_selects_its_dataset_and_is_saved_absolute(run, data):
    """Issue 13.1 and 13.9: the layout of --data-root chose data=folder; the saved root is
    absolute; max_steps is not saved (13.3)."""
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["data"] == "folder" and cfg["data_root"] == str(data / "scans")
    assert "max_steps" not in cfg


def test_resume_refuses_changed_settings_then_finishes(run, tmp_path):
    """Issue 13.2, 13.3, 13.7: changed result settings are refused naming field, old and
    new value; a plain resume after --max-steps trains to the end; stale temporaries of a
    killed checkpoint write are removed."""
    r = tmp_path / "r"
    shutil.copytree(run, r)
    before = (r / "last.pt").read_bytes()
    assert_user_error(ggnet("train", "--resume", "--out", r, "--lr", "0.5"),
                      "lr: saved 0.01, now 0.5")
    assert_user_error(ggnet("train", "--resume", "--out", r, "--data", "busi"),
                      "data: saved 'folder', now 'busi'")
    assert_user_error(ggnet("train", "--resume", "--out", r, "--image-size", "96",
                            "--batch-size", "2"),
                      "image_size: saved 64, now 96", "batch_size: saved 4, now 2")
    assert (r / "last.pt").read_bytes() == before
    (r / ".tmp_abc123last.pt").write_bytes(b"\0" * 1000)
    # the copy (saved out_dir "run", relative to another folder) resumes where it is now
    res = ggnet("train", "--resume", "--out", r, "--lr", "0.01", "--workers", "0",
                "--no-progress", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((r / "summary.json").read_text())
    assert summary["global_step"] == 4 and not summary["halted_at_max_steps"]
    assert not [f for f in os.listdir(r) if f.startswith(".tmp_")]


def test_unreadable_checkpoints_are_named(run, tmp_path):
    """Issue 13.6: an empty last.pt (resume) and a truncated best.pt (eval, predict)."""
    r = tmp_path / "r"
    shutil.copytree(run, r)
    (r / "last.pt").write_bytes(b"")
    assert_user_error(ggnet("train", "--resume", "--out", r), str(r / "last.pt"), "truncated")
    data = (run / "best.pt").read_bytes()
    (r / "best.pt").write_bytes(data[: len(data) // 2])
    assert_user_error(ggnet("eval", "--run", r, "--no-crf", "--no-progress"),
                      str(r / "best.pt"), "truncated")
    assert_user_error(ggnet("predict", "--checkpoint", r / "best.pt", "--no-crf", "--input",
                            run.parent / "scans" / "images", "--out", tmp_path / "p"),
                      "best.pt", "truncated")


def test_overwrite_removes_the_old_eval_report_and_eval_runs_elsewhere(run, tmp_path):
    """Issue 13.9: eval from another working directory finds the data (absolute root);
    --overwrite retraining removes the report of the replaced model."""
    r = tmp_path / "r"
    shutil.copytree(run, r)
    res = ggnet("eval", "--run", r, "--no-crf", "--no-progress", "--overlays", "0", cwd="/")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (r / "eval" / "metrics.md").exists()
    res = ggnet("train", "--data-root", run.parent / "scans", "--out", r, "--overwrite",
                "--max-steps", "1", "--no-tensorboard", *FAST)
    assert res.returncode == 0, res.stderr[-3000:]
    assert not (r / "eval").exists()
    # a dataset that moved: the error points at --data-root, which is honoured
    shutil.copytree(run.parent / "scans", tmp_path / "moved")
    cfg = json.loads((r / "config.json").read_text())
    (r / "config.json").write_text(json.dumps({**cfg, "data_root": "scans"}))
    assert_user_error(ggnet("eval", "--run", r, "--no-crf", "--no-progress", cwd=tmp_path),
                      "scans", "--data-root")
    res = ggnet("eval", "--run", r, "--no-crf", "--no-progress", "--overlays", "0",
                "--data-root", "moved", "--checkpoint", "last.pt", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]


def test_ctrl_c_writes_a_checkpoint_and_exits_130(data, tmp_path):
    """Issue 13.8 (and 13.10: the default TensorBoard setting does not warn when
    tensorboard is not installed)."""
    out = tmp_path / "run"
    args = [*FAST, "--iterations", "400"]  # the later flag wins
    env = {k: v for k, v in os.environ.items() if k != "GGNET_DEBUG"}
    proc = subprocess.Popen([GGNET, "train", "--data-root", str(data / "scans"), "--out",
                             str(out), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    log = out / "train_log.csv"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) > 1:  # step 1 is logged
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "TensorBoard" not in err, err
    assert "--resume --out" in err.strip().splitlines()[-1]
    summary = json.loads((out / "summary.json").read_text())
    ck = torch.load(out / "last.pt", weights_only=True)
    assert summary["interrupted"] and 1 <= ck["progress"]["global_step"] < 400
    assert ck["progress"]["global_step"] == summary["global_step"]
    # the printed command continues the run
    step = summary["global_step"]
    res = ggnet("train", "--resume", "--out", out, "--max-steps", step + 1, "--no-progress")
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["global_step"] == step + 1


def test_compare_subcommand(tmp_path):
    """``ggnet compare`` writes the paired tests of two per-image CSVs."""
    rng = np.random.default_rng(1)
    fields = ("dice", "jaccard", "recall", "precision", "specificity", "accuracy", "hd", "abd")
    for name, shift in (("a", 0.0), ("b", 0.05)):
        rows = ["name," + ",".join(fields)]
        for i in range(8):
            rows.append(f"img{i}," + ",".join(f"{rng.uniform(0.5, 0.9) + shift:.4f}"
                                              for _ in fields))
        (tmp_path / f"{name}.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "cmp"
    res = ggnet("compare", f"A={tmp_path / 'a.csv'}", f"B={tmp_path / 'b.csv'}", "--out", out,
                "--reference", "A")
    assert res.returncode == 0, res.stderr[-3000:]
    assert {"compare.csv", "compare.md", "compare.png"} <= set(os.listdir(out))
    assert_user_error(ggnet("compare", tmp_path / "a.csv", tmp_path / "b.csv", "--out", out),
                      "--overwrite")
    assert_user_error(ggnet("compare", f"A={tmp_path / 'a.csv'}", f"B={tmp_path / 'b.csv'}",
                            "--out", tmp_path / "c2", "--reference", "Z"), "--reference")
