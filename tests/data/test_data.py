"""BUSI/folder loaders (every PIL mode, mask union, clear errors), transforms, folds, sampler."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from ggnet_fast.data import (BUSIDataset, FolderDataset, SegTransform, TrainingView,
                             kfold_indices, split_train_val)
from ggnet_fast.data.base import read_image, read_mask
from ggnet_fast.train.sampler import ResumableSampler


def _save(path, arr, mode):
    arr = np.asarray(arr)
    if mode == "1":
        Image.fromarray((arr > 0).astype(np.uint8) * 255).convert("1").save(path)
    elif mode == "L":
        Image.fromarray(arr.astype(np.uint8), "L").save(path)
    elif mode == "RGB":
        Image.fromarray(np.repeat(arr[..., None], 3, 2).astype(np.uint8), "RGB").save(path)
    elif mode == "RGBA":
        rgba = np.zeros(arr.shape + (4,), np.uint8)
        rgba[..., 0] = arr
        rgba[..., 3] = 255
        Image.fromarray(rgba, "RGBA").save(path)


def _fake_busi(root, with_normal=True):
    base = os.path.join(root, "Dataset_BUSI_with_GT")
    rng = np.random.default_rng(0)
    expected = {}
    for cls, n in (("benign", 3), ("malignant", 2), ("normal", 2 if with_normal else 0)):
        if n:
            os.makedirs(os.path.join(base, cls), exist_ok=True)
        for i in range(1, n + 1):
            h, w = 20 + i, 30 + 2 * i
            img = rng.integers(0, 255, (h, w)).astype(np.uint8)
            _save(os.path.join(base, cls, f"{cls} ({i}).png"), img, "RGB" if i == 2 else "L")
            mask = np.zeros((h, w), np.uint8)
            if cls != "normal":
                mask[2:8, 3:9] = 255
            mode = {1: "1", 2: "RGB", 3: "RGBA"}[i]
            _save(os.path.join(base, cls, f"{cls} ({i})_mask.png"), mask, mode)
            union = mask > 0
            if cls == "benign" and i == 3:  # extra masks, united
                extra = np.zeros((h, w), np.uint8)
                extra[10:14, 20:25] = 128
                _save(os.path.join(base, cls, f"{cls} ({i})_mask_1.png"), extra, "L")
                extra2 = np.zeros((h, w), np.uint8)
                extra2[15:17, 1:3] = 1
                _save(os.path.join(base, cls, f"{cls} ({i})_mask_2.png"), extra2, "1")
                union = union | (extra > 0) | (extra2 > 0)
            expected[f"{cls}/{cls} ({i})"] = union.astype(np.uint8)
    return base, expected


def test_busi_loader_modes_and_union(tmp_path):
    base, expected = _fake_busi(tmp_path)
    ds = BUSIDataset(str(tmp_path))  # parent of Dataset_BUSI_with_GT works too
    assert len(ds) == 5 and set(ds.labels) == {"benign", "malignant"}
    for i in range(len(ds)):
        s = ds[i]
        assert s.image.dtype == np.uint8 and s.image.shape[2] == 3
        np.testing.assert_array_equal(s.mask, expected[s.name], err_msg=s.name)
    assert ds.names[:3] == ["benign/benign (1)", "benign/benign (2)", "benign/benign (3)"]
    with_normal = BUSIDataset(base, include_normal=True)
    assert len(with_normal) == 7 and with_normal.labels.count("normal") == 2
    assert with_normal[6].mask.sum() == 0


def test_busi_errors_name_the_file(tmp_path):
    base, _ = _fake_busi(tmp_path, with_normal=False)
    with pytest.raises(FileNotFoundError, match="normal"):
        BUSIDataset(base, include_normal=True)
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        BUSIDataset(str(tmp_path / "nowhere"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="expected folders 'benign/'"):
        BUSIDataset(str(tmp_path / "empty"))
    os.remove(os.path.join(base, "malignant", "malignant (2)_mask.png"))
    with pytest.raises(FileNotFoundError, match=r"malignant \(2\)_mask\.png"):
        BUSIDataset(base)
    _save(os.path.join(base, "malignant", "malignant (2)_mask.png"), np.zeros((5, 5)), "L")
    ds = BUSIDataset(base)
    with pytest.raises(ValueError, match=r"malignant \(2\)_mask\.png.*size"):
        ds[ds.names.index("malignant/malignant (2)")]
    with open(os.path.join(base, "benign", "benign (1).png"), "wb") as fh:
        fh.write(b"not a png")
    with pytest.raises(ValueError, match=r"benign \(1\)\.png"):
        BUSIDataset(base)[0]
    os.remove(os.path.join(base, "benign", "benign (2).png"))
    with pytest.raises(FileNotFoundError, match=r"benign \(2\)_mask\.png has no image"):
        BUSIDataset(base)


@pytest.mark.parametrize("mode", ["1", "L", "RGB", "RGBA"])
def test_read_mask_every_mode(tmp_path, mode):
    m = np.zeros((9, 11), np.uint8)
    m[2:5, 3:7] = 200
    _save(tmp_path / "m.png", m, mode)
    np.testing.assert_array_equal(read_mask(str(tmp_path / "m.png")), (m > 0).astype(np.uint8))
    img = read_image(str(tmp_path / "m.png"))
    assert img.shape == (9, 11, 3) and img.dtype == np.uint8


def test_folder_dataset(tmp_path):
    os.makedirs(tmp_path / "images")
    os.makedirs(tmp_path / "masks")
    for i in range(3):
        _save(tmp_path / "images" / f"case{i}.png", np.full((12, 10), 40 * i), "L")
        m = np.zeros((12, 10))
        m[i:i + 3, 2:5] = 255
        _save(tmp_path / "masks" / (f"case{i}_mask.png" if i == 2 else f"case{i}.png"), m, "L")
    ds = FolderDataset(str(tmp_path))
    assert ds.names == ["case0", "case1", "case2"]
    assert ds[2].mask[2:5, 2:5].all() and ds[2].mask.sum() == 9
    _save(tmp_path / "images" / "orphan.png", np.zeros((4, 4)), "L")
    with pytest.raises(FileNotFoundError, match="orphan"):
        FolderDataset(str(tmp_path))


def test_transform_shapes_normalisation_and_alignment(seed):
    rng = np.random.default_rng(seed)
    mask = np.zeros((50, 70), np.uint8)
    mask[10:30, 5:25] = 1
    image = np.repeat((mask * 255)[..., None], 3, 2).astype(np.uint8)
    tr = SegTransform(32, train=True, rotation=10)
    torch.manual_seed(int(rng.integers(1 << 31)))
    for _ in range(5):
        x, m = tr(image, mask)
        assert x.shape == (3, 32, 32) and m.shape == (1, 32, 32) and x.dtype == torch.float32
        assert set(torch.unique(m).tolist()) <= {0.0, 1.0}
        # image and mask moved together: bright pixels coincide with the mask
        bright = x[0] > 0.5
        agreement = (bright == (m[0] > 0.5)).float().mean()
        assert agreement > 0.93, (seed, agreement)
    x, _ = SegTransform(32, train=False)(np.zeros((20, 20, 3), np.uint8),
                                         np.zeros((20, 20), np.uint8))
    np.testing.assert_allclose(x[:, 0, 0].numpy(), [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225],
                               rtol=1e-5)


def test_training_view_seeded_augmentation_is_key_deterministic():
    from ggnet_fast.data import PhantomDataset
    view = TrainingView(PhantomDataset(4, seed=1, size=48), SegTransform(32, train=True), [1, 3])
    a = view[(0, 123)]
    torch.manual_seed(999)  # the global RNG must not matter
    b = view[(0, 123)]
    c = view[(0, 124)]
    assert a["index"] == 1
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert not torch.equal(a["image"], c["image"])


def test_kfold_partition_deterministic_stratified():
    labels = ["b"] * 20 + ["m"] * 10 + ["n"] * 7
    folds = kfold_indices(37, 3, seed=42, labels=labels)
    allidx = np.concatenate(folds)
    assert sorted(allidx.tolist()) == list(range(37))
    assert all(len(f) in (12, 13) for f in folds)
    for f in folds:
        counts = [sum(labels[i] == c for i in f) for c in "bmn"]
        assert max(abs(counts[0] - 20 / 3), abs(counts[1] - 10 / 3), abs(counts[2] - 7 / 3)) <= 1
    again = kfold_indices(37, 3, seed=42, labels=labels)
    assert all(np.array_equal(a, b) for a, b in zip(folds, again))
    other = kfold_indices(37, 3, seed=7, labels=labels)
    assert not all(np.array_equal(a, b) for a, b in zip(folds, other))
    with pytest.raises(ValueError, match="k"):
        kfold_indices(5, 1)
    train, val = split_train_val(np.arange(50), 0.1, seed=3)
    assert len(val) == 5 and not set(train) & set(val) and len(train) + len(val) == 50


def test_resumable_sampler_skips_without_changing_order():
    ds = list(range(23))
    s = ResumableSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=5)
    s.set_epoch(2)
    full = list(s)
    s.set_start(7)
    assert list(s) == full[7:] and len(s) == 16
    s.set_start(0)
    s.set_epoch(3)
    assert [k[0] for k in s] != [k[0] for k in full]
    shards = []
    for r in range(2):
        sr = ResumableSampler(ds, num_replicas=2, rank=r, shuffle=True, seed=5, drop_last=True)
        sr.set_epoch(2)
        shards.append([k[0] for k in sr])
    assert not set(shards[0]) & set(shards[1]) and len(shards[0]) == 11


def _damage_busi(base):
    """Three bad files in a fake BUSI tree: a truncated image, a mask of another size, a
    CMYK mask (in which black is not zero); returns their paths."""
    truncated = os.path.join(base, "benign", "benign (1).png")
    with open(truncated, "rb") as fh:
        data = fh.read()
    with open(truncated, "wb") as fh:
        fh.write(data[: len(data) // 2])
    wrong_size = os.path.join(base, "malignant", "malignant (2)_mask.png")
    Image.new("L", (7, 5)).save(wrong_size)
    cmyk = os.path.join(base, "benign", "benign (3)_mask_1.png")
    Image.open(cmyk).convert("CMYK").save(cmyk.replace(".png", ".tif"))
    os.replace(cmyk.replace(".png", ".tif"), cmyk)
    return truncated, wrong_size, cmyk


def test_scan_reports_every_bad_file_in_one_error(tmp_path):
    from ggnet_fast.data import DataConfig, DataError, scan_source

    base, _ = _fake_busi(tmp_path)
    scan_source(BUSIDataset(base), progress=False)  # a sound tree passes
    truncated, wrong_size, cmyk = _damage_busi(base)
    with pytest.raises(DataError) as info:
        scan_source(BUSIDataset(base), progress=False)
    msg = str(info.value)
    assert msg.startswith("3 of 5 images in ") and isinstance(info.value, ValueError)
    assert f"{truncated}: cannot be read" in msg
    assert f"{wrong_size}: mask is 7x5 but its image malignant (2).png is 34x22" in msg
    assert f"{cmyk}: mask in PIL mode 'CMYK'" in msg
    assert len(msg.splitlines()) == 4 and "benign (2)" not in msg
    # training and evaluation build their dataset through DataConfig: scanned there
    with pytest.raises(DataError, match="3 of 5 images"):
        DataConfig(data="busi", data_root=base).validate().build_source(progress=False)


@pytest.mark.parametrize("workers", [0, 2])
def test_worker_errors_are_the_one_line_message(tmp_path, workers):
    """A file that breaks after the scan fails in a DataLoader worker with the message it
    has with 0 workers, not torch's traceback text."""
    from ggnet_fast.data import DataError

    base, _ = _fake_busi(tmp_path)
    ds = BUSIDataset(base)
    truncated, _, _ = _damage_busi(base)
    view = TrainingView(ds, SegTransform(16), [0])
    loader = torch.utils.data.DataLoader(view, batch_size=1, num_workers=workers)
    with pytest.raises(DataError) as info:
        next(iter(loader))
    msg = str(info.value)
    assert msg.startswith(f"cannot read image file {truncated}: ") and "\n" not in msg
    assert "Traceback (most recent call last)" not in msg and "Caught" not in msg
    os.unlink(truncated)  # an OSError other than a DataError is wrapped the same way
    with pytest.raises(DataError, match=r"^sample benign/benign \(1\): image file not found"):
        next(iter(torch.utils.data.DataLoader(view, batch_size=1, num_workers=workers)))


def test_busi_names_in_natural_order(tmp_path):
    """BUSI files sort as 1, 2, 10 (the order the paper's folds are dealt from), not
    lexicographically as 1, 10, 2; extra ``_mask_1`` files are masks, not images."""
    base = tmp_path / "Dataset_BUSI_with_GT"
    for cls in ("benign", "malignant"):
        (base / cls).mkdir(parents=True)
        for i in (10, 2, 1, 21, 3):
            Image.new("L", (8, 6)).save(base / cls / f"{cls} ({i}).png")
            Image.new("L", (8, 6)).save(base / cls / f"{cls} ({i})_mask.png")
        Image.new("L", (8, 6)).save(base / cls / f"{cls} (10)_mask_1.png")
    ds = BUSIDataset(str(base))
    assert ds.names == [f"{cls}/{cls} ({i})" for cls in ("benign", "malignant")
                        for i in (1, 2, 3, 10, 21)]
    assert [len(m) for _, m, _ in ds.items] == [1, 1, 1, 2, 1] * 2


@pytest.mark.parametrize("module", ["ggnet_fast.data", "ggnet_fast.metrics", "ggnet_fast.crf"])
def test_data_and_metrics_import_no_kernels(module):
    """A data script or a metrics notebook does not pay for torch, Triton or the compiled
    kernels: importing these modules loads none of them (the transforms, which need torch,
    load on first use)."""
    import subprocess
    import sys

    code = (f"import sys, {module}\n"
            "print(' '.join(m for m in ('torch', 'torchvision', 'triton', 'ggnet_fast._C')\n"
            "               if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [], f"import {module} loaded {out}"
    if module == "ggnet_fast.data":
        code = "import ggnet_fast.data as d; print(d.TrainingView.__module__)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout.strip()
        assert out == "ggnet_fast.data.transforms"
