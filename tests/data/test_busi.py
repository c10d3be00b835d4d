"""The real BUSI copy (skipped when absent): counts, mask union, every PIL mode, folds.

Found through ``GGNET_BUSI_ROOT`` or a ``shared/data/busi`` folder next to any parent of
this file (``/work/shared/data/busi`` here, ``../shared/data/busi`` from a CI clone).
"""
import numpy as np
import pytest

from ggnet_fast.data import BUSIDataset, kfold_indices
from ggnet_fast.data.base import read_mask

import repo_paths


ROOT = repo_paths.busi_root()
pytestmark = pytest.mark.skipif(ROOT is None, reason="BUSI not found (set GGNET_BUSI_ROOT)")


def test_counts_and_labels():
    ds = BUSIDataset(ROOT)
    assert len(ds) == 647
    assert ds.labels.count("benign") == 437 and ds.labels.count("malignant") == 210
    full = BUSIDataset(ROOT, include_normal=True)
    assert len(full) == 780 and full.labels.count("normal") == 133
    n_multi = sum(len(m) > 1 for _, m, _ in full.items)
    assert n_multi == 17  # 17 images with _mask_1, one of them also with _mask_2


def test_union_of_extra_masks_and_modes():
    ds = BUSIDataset(ROOT)
    multi = [i for i, (_, m, _) in enumerate(ds.items) if len(m) > 1]
    three = [i for i in multi if len(ds.items[i][1]) == 3]
    assert len(three) == 1
    for i in multi[:3] + three:
        s = ds[i]
        parts = [read_mask(p) for p in ds.items[i][1]]
        np.testing.assert_array_equal(s.mask, np.maximum.reduce(parts))
        assert s.mask.sum() > max(p.sum() for p in parts) or any(
            (p <= parts[0]).all() for p in parts[1:])
    from PIL import Image
    modes = set()
    for _, masks, _ in ds.items[::7]:
        with Image.open(masks[0]) as im:
            modes.add(im.mode)
    assert "1" in modes


def test_every_image_loads_with_matching_mask_sample():
    ds = BUSIDataset(ROOT, include_normal=True)
    for i in range(0, len(ds), 37):
        s = ds[i]
        assert s.image.ndim == 3 and s.image.shape[2] == 3 and s.mask.shape == s.image.shape[:2]
        if s.label == "normal":
            assert s.mask.sum() == 0
        else:
            assert 0 < s.mask.mean() < 0.9


def test_three_fold_protocol():
    ds = BUSIDataset(ROOT)
    folds = kfold_indices(len(ds), 3, seed=42, labels=ds.labels)
    assert sorted(len(f) for f in folds) == [215, 216, 216]


# sha256 of the sorted test-image names of each fold (3 folds, fold seed 42, the 647 lesion
# images): the paper's splits; a change of file order, stratification or shuffle moves them
FOLD_TEST_SHA256 = (
    "7ac4b3ba174ec6becf7ff6b1b4a1ad8ae714ecc9a9f0e3c7dc75795b517ca4b4",
    "92a43da9403bfc70c581493071a919aff8f82171bace38cbbd872eb843af689b",
    "b067183339009ca0d39a84c3ce0a3ac41bd08819b700293d0441a918e003d773",
)


def test_fold_test_names_are_pinned():
    import hashlib

    from ggnet_fast.data import DataConfig

    ds = BUSIDataset(ROOT)
    assert ds.names[:11] == [f"benign/benign ({i})" for i in range(1, 12)]  # natural order
    for k, expected in enumerate(FOLD_TEST_SHA256):
        cfg = DataConfig(data="busi", data_root=ROOT, folds=3, fold=k, fold_seed=42).validate()
        test = sorted(ds.names[i] for i in cfg.split_indices(ds)["test"])
        assert hashlib.sha256("\n".join(test).encode()).hexdigest() == expected, f"fold {k}"
