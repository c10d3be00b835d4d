"""K-fold cross-validation splits with a fixed seed (paper: 3 folds on BUSI)."""
from __future__ import annotations

import numpy as np


def kfold_indices(n: int, k: int = 3, seed: int = 42, labels=None) -> list[np.ndarray]:
    """Split ``range(n)`` into ``k`` disjoint test folds after a seeded shuffle.

    With ``labels`` the split is stratified (each class is dealt round-robin over the
    folds), so benign/malignant/normal proportions match across folds. Returns ``k``
    sorted index arrays whose union is ``range(n)``; the same (n, k, seed, labels)
    always gives the same folds.
    """
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    if n < k:
        raise ValueError(f"cannot split n={n} samples into k={k} folds")
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    if labels is None:
        groups = [np.arange(n)]
    else:
        if len(labels) != n:
            raise ValueError(f"labels has {len(labels)} entries, expected n={n}")
        labels = np.asarray(labels)
        groups = [np.flatnonzero(labels == c) for c in sorted(set(labels.tolist()))]
    offset = 0
    for g in groups:
        perm = g[rng.permutation(len(g))]
        for j, idx in enumerate(perm):
            folds[(j + offset) % k].append(int(idx))
        offset += len(g)
    return [np.array(sorted(f), dtype=np.int64) for f in folds]


def split_train_val(indices, val_fraction: float, seed: int = 42):
    """Hold out ``val_fraction`` of ``indices`` (seeded) for validation / early stopping.

    Returns (train, val) sorted arrays; ``val`` is empty when ``val_fraction == 0``.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = int(round(len(indices) * val_fraction))
    if val_fraction > 0:
        n_val = max(n_val, 1)
    perm = np.random.default_rng(seed + 7919).permutation(len(indices))
    val = np.sort(indices[perm[:n_val]])
    train = np.sort(indices[perm[n_val:]])
    return train, val
