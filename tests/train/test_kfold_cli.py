"""The default k-fold path end to end, from the command line (a subprocess, as a user runs
it): ``ggnet train --fold all --folds 3`` on a small BUSI-layout tree made here, then
``ggnet eval --run``; and a damaged copy of the tree refused up front (exit 2, nothing
written)."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

# BUSI names: spaces, parentheses, natural order 1, 2, 10; "_mask_1" extra masks
NAMES = {"benign": (1, 2, 3, 10, 11), "malignant": (1, 2, 10, 12)}
TRAIN = ["--data", "busi", "--folds", "3", "--fold", "all", "--backbone", "resnet18",
         "--image-size", "64", "--schedule", "iterations", "--iterations", "2",
         "--lr-step-iters", "0", "--val-every", "2", "--batch-size", "2", "--workers", "0",
         "--device", "cpu", "--backend", "reference", "--no-progress", "--no-tensorboard"]


def ggnet(*args, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != "GGNET_DEBUG"}
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run([sys.executable, "-m", "ggnet_fast.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=timeout)


def make_busi(root) -> list[str]:
    """``root/Dataset_BUSI_with_GT/{benign,malignant,normal}`` of 64x64 images with a dark
    disk lesion each (one normal image, excluded by default); returns the lesion names."""
    base = root / "Dataset_BUSI_with_GT"
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    names = []
    for cls, numbers in {**NAMES, "normal": (1,)}.items():
        (base / cls).mkdir(parents=True)
        for i in numbers:
            cy, cx, r = rng.integers(20, 44, 2).tolist() + [int(rng.integers(6, 12))]
            mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.uint8)
            if cls == "normal":
                mask[:] = 0
            image = np.clip(rng.normal(120, 30, (64, 64)) - 70 * mask, 0, 255).astype(np.uint8)
            stem = f"{cls} ({i})"
            Image.fromarray(image).save(base / cls / f"{stem}.png")
            Image.fromarray(mask * 255).save(base / cls / f"{stem}_mask.png")
            if i == 2:  # a second lesion in an extra mask
                extra = np.zeros_like(mask)
                extra[2:6, 2:6] = 255
                Image.fromarray(extra).save(base / cls / f"{stem}_mask_1.png")
            if cls != "normal":
                names.append(f"{cls}/{stem}")
    return names


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("kfold")
    names = make_busi(root / "data")
    out = root / "run"
    res = ggnet("train", *TRAIN, "--data-root", root / "data", "--out", out)
    assert res.returncode == 0, res.stderr[-3000:]
    return root, out, names


def test_train_fold_all_tests_every_image_once(trained):
    _, out, names = trained
    tests = []
    for k in range(3):
        with open(out / f"fold{k}" / "splits.json", encoding="utf-8") as fh:
            splits = json.load(fh)
        assert set(splits["train"]) | set(splits["val"]) | set(splits["test"]) == set(names)
        assert not set(splits["test"]) & (set(splits["train"]) | set(splits["val"]))
        with open(out / f"fold{k}" / "config.json", encoding="utf-8") as fh:
            assert json.load(fh)["fold"] == k
        tests.append(set(splits["test"]))
    for a in range(3):
        for b in range(a + 1, 3):
            assert not tests[a] & tests[b], (a, b)
    assert set().union(*tests) == set(names)          # every lesion image, no normal one
    assert sorted(len(t) for t in tests) == [3, 3, 3]  # stratified: 5 benign + 4 malignant


def test_eval_run_per_fold_rows_and_one_overlay_per_image(trained):
    _, out, names = trained
    res = ggnet("eval", "--run", out, "--overlays", "-1", "--no-crf", "--no-progress",
                "--device", "cpu")
    assert res.returncode == 0, res.stderr[-3000:]
    report = out / "eval"
    with open(report / "per_image.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["name"] for r in rows) == sorted(names)
    for k in range(3):
        with open(out / f"fold{k}" / "splits.json", encoding="utf-8") as fh:
            test = json.load(fh)["test"]
        assert sorted(r["name"] for r in rows if r["fold"] == str(k)) == sorted(test)
    table = (report / "metrics.md").read_text(encoding="utf-8")
    for k in range(3):
        assert f"fold {k} (3 images" in table
    assert "mean ± std over 3 folds" in table
    numbers = json.loads((report / "metrics.json").read_text(encoding="utf-8"))
    assert [f["fold"] for f in numbers["folds"]] == [0, 1, 2]
    assert numbers["mean"]["dice"]["std"] is not None
    overlays = report / "overlays"
    entries = sorted(os.listdir(overlays))
    assert entries == sorted(n.replace("/", "_") + ".png" for n in names)
    assert all((overlays / e).is_file() for e in entries)  # "benign/..." made no folder


def test_bad_files_refused_before_anything_is_written(trained, tmp_path):
    """Issue 13.4 from the command line: train and eval scan the data first, list every
    bad file in one message, exit 2 and write nothing."""
    root, out, _ = trained
    import shutil
    data = tmp_path / "data"
    shutil.copytree(root / "data", data)
    base = data / "Dataset_BUSI_with_GT"
    truncated = base / "benign" / "benign (10).png"
    truncated.write_bytes(truncated.read_bytes()[:200])
    small = base / "malignant" / "malignant (12)_mask.png"
    Image.new("L", (32, 64)).save(small)
    res = ggnet("train", *TRAIN, "--data-root", data, "--out", tmp_path / "new_run")
    assert res.returncode == 2, res.stderr[-3000:]
    err = res.stderr.strip()
    assert "Traceback" not in err and "2 of 9 images" in err, err
    assert f"{truncated}: cannot be read" in err and f"{small}: mask is 32x64" in err, err
    assert not (tmp_path / "new_run").exists()
    res = ggnet("eval", "--run", out, "--data-root", data, "--out", tmp_path / "report",
                "--no-crf", "--no-progress", "--device", "cpu")
    assert res.returncode == 2 and "2 of 9 images" in res.stderr, res.stderr[-3000:]
    assert "Traceback" not in res.stderr and not (tmp_path / "report").exists()


def test_predict_folder_continues_past_unreadable_files(trained, tmp_path):
    """Issue 13.5: every readable file is predicted, the unreadable ones are listed at the
    end (exit 2); a rerun with --skip-existing completes the rest and touches nothing else."""
    root, out, _ = trained
    src = root / "data" / "Dataset_BUSI_with_GT" / "benign"
    images = tmp_path / "scans"
    images.mkdir()
    for i in (1, 2, 3, 10):
        (images / f"scan ({i}).png").write_bytes((src / f"benign ({i}).png").read_bytes())
    good = (images / "scan (2).png").read_bytes()
    (images / "scan (2).png").write_bytes(good[:150])      # truncated
    (images / "scan (3).png").write_bytes(b"not an image")  # garbage
    preds = tmp_path / "preds"
    args = ["predict", "--checkpoint", out / "fold0" / "best.pt", "--input", images,
            "--out", preds, "--no-crf", "--device", "cpu"]
    res = ggnet(*args)
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr and "2 of 4 inputs could not be read" in res.stderr
    assert str(images / "scan (2).png") in res.stderr and str(images / "scan (3).png") in res.stderr
    for kind in ("masks", "overlays"):
        assert sorted(os.listdir(preds / kind)) == ["scan (1).png", "scan (10).png"]
    first = {p: (preds / "masks" / p).stat().st_mtime_ns for p in os.listdir(preds / "masks")}
    res = ggnet(*args)  # the outputs written are not replaced silently
    assert res.returncode == 2 and "--skip-existing" in res.stderr, res.stderr[-3000:]
    (images / "scan (2).png").write_bytes(good)
    (images / "scan (3).png").write_bytes((src / "benign (3).png").read_bytes())
    res = ggnet(*args, "--skip-existing")
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("lesion") == 2  # only the two missing ones were predicted
    for kind in ("masks", "overlays"):
        assert len(os.listdir(preds / kind)) == 4
    assert first == {p: (preds / "masks" / p).stat().st_mtime_ns for p in first}


def test_resume_trains_the_folds_a_killed_fold_all_run_never_reached(trained, tmp_path):
    """``--fold all`` killed during fold 0 leaves no fold1/ or fold2/: ``--resume`` must
    start them (from the parent's fold plan), and ``eval`` must refuse the partial run
    rather than average one fold."""
    import shutil

    root, out, _ = trained
    partial = tmp_path / "run"
    shutil.copytree(out, partial)
    for k in (1, 2):
        shutil.rmtree(partial / f"fold{k}")
    shutil.rmtree(partial / "eval_crf", ignore_errors=True)
    shutil.rmtree(partial / "eval", ignore_errors=True)
    res = ggnet("eval", "--run", partial, "--no-crf", "--overlays", "0", "--no-progress")
    assert res.returncode == 2 and "fold1, fold2" in res.stderr and "--resume" in res.stderr, \
        res.stderr[-2000:]
    res = ggnet("train", "--resume", "--out", partial, "--workers", "0", "--no-progress",
                "--no-tensorboard")
    assert res.returncode == 0, res.stderr[-3000:]
    for k in (1, 2):
        summary = json.loads((partial / f"fold{k}" / "summary.json").read_text())
        assert summary["global_step"] == summary["total_steps"] == 2
        saved = json.loads((partial / f"fold{k}" / "config.json").read_text())
        assert saved["fold"] == k and saved["folds"] == 3
    assert json.loads((partial / "fold0" / "summary.json").read_text()) == \
        json.loads((out / "fold0" / "summary.json").read_text())  # finished: not retrained
