"""Binary segmentation metrics, per image and aggregated.

Overlap metrics come from the confusion counts of one image (TP, FP, FN, TN):

    Dice = 2TP / (2TP + FP + FN)        Jaccard = TP / (TP + FP + FN)
    Recall = TP / (TP + FN)             Precision = TP / (TP + FP)
    Specificity = TN / (TN + FP)        Accuracy = (TP + TN) / (H W)

Distances are in pixels between the boundaries of the two masks (the boundary of a
mask is its set of foreground pixels with a 4-neighbour in the background or the image
border), computed with ``scipy.ndimage.distance_transform_edt``:

    HD  = max(max_{a in dA} d(a, dB), max_{b in dB} d(b, dA))   (symmetric Hausdorff)
    ABD = (sum_{a in dA} d(a, dB) + sum_{b in dB} d(b, dA)) / (|dA| + |dB|)
          (average symmetric boundary distance)

Empty-mask policy (``EMPTY_POLICY``):

* a ratio whose denominator is zero (e.g. Recall with an empty ground truth, Precision
  with an empty prediction, Dice when both are empty) is 1.0 when prediction and ground
  truth are identical and 0.0 otherwise;
* HD and ABD are 0.0 when both masks are empty and NaN (undefined) when exactly one is
  empty; aggregation uses ``nanmean``/``nanstd`` and reports how many were undefined.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

OVERLAP = ("dice", "jaccard", "recall", "precision", "specificity", "accuracy")
DISTANCE = ("hd", "abd")
ALL_METRICS = OVERLAP + DISTANCE
EMPTY_POLICY = ("0/0 ratios: 1.0 if prediction == ground truth else 0.0; "
                "HD/ABD: 0 if both empty, NaN (excluded from means) if one is empty")


def _as_bool(x, name: str) -> np.ndarray:
    try:
        import torch
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    arr = np.asarray(x)
    if arr.ndim != 2:
        arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D mask [H, W], got shape {np.shape(x)}")
    if np.issubdtype(arr.dtype, np.floating) and not np.isin(arr, (0.0, 1.0)).all():
        raise ValueError(f"{name} must be a binary mask (bool, integer, or float with values "
                         "in {0, 1}); threshold probability maps first")
    return arr.astype(bool)


def _ratio(num: float, den: float, identical: bool) -> float:
    if den == 0:
        return 1.0 if identical else 0.0
    return float(num) / float(den)


def boundary(mask: np.ndarray) -> np.ndarray:
    """Foreground pixels with a 4-neighbour outside the mask (image border counts as outside)."""
    if not mask.any():
        return mask.copy()
    eroded = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(2, 1),
                                    border_value=0)
    return mask & ~eroded


def boundary_distances(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances (pixels) from each boundary pixel of ``pred`` to the boundary of ``gt``, and
    back."""
    bp, bg = boundary(pred), boundary(gt)
    d_to_g = ndimage.distance_transform_edt(~bg)
    d_to_p = ndimage.distance_transform_edt(~bp)
    return d_to_g[bp], d_to_p[bg]


def binary_metrics(pred, gt) -> dict[str, float]:
    """All metrics of one image; ``pred``/``gt`` are 2-D arrays or tensors (non-zero = lesion)."""
    p, g = _as_bool(pred, "pred"), _as_bool(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred shape {p.shape} != gt shape {g.shape}")
    tp = int(np.count_nonzero(p & g))
    fp = int(np.count_nonzero(p & ~g))
    fn = int(np.count_nonzero(~p & g))
    tn = p.size - tp - fp - fn
    same = fp == 0 and fn == 0
    out = {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, same),
        "jaccard": _ratio(tp, tp + fp + fn, same),
        "recall": _ratio(tp, tp + fn, same),
        "precision": _ratio(tp, tp + fp, same),
        "specificity": _ratio(tn, tn + fp, same),
        "accuracy": (tp + tn) / p.size,
    }
    if not p.any() and not g.any():
        out["hd"], out["abd"] = 0.0, 0.0
    elif not p.any() or not g.any():
        out["hd"], out["abd"] = math.nan, math.nan
    else:
        a, b = boundary_distances(p, g)
        out["hd"] = float(max(a.max(), b.max()))
        out["abd"] = float((a.sum() + b.sum()) / (a.size + b.size))
    return out


def summarize(rows, metrics=ALL_METRICS) -> dict[str, dict[str, float]]:
    """Mean, std (population), and count of defined values of each metric over ``rows``."""
    out = {}
    for m in metrics:
        vals = np.array([r[m] for r in rows], dtype=np.float64)
        ok = ~np.isnan(vals)
        out[m] = {
            "mean": float(vals[ok].mean()) if ok.any() else math.nan,
            "std": float(vals[ok].std()) if ok.any() else math.nan,
            "n": int(ok.sum()),
            "undefined": int((~ok).sum()),
        }
    return out


def batch_dice(logits, masks, threshold: float = 0.0) -> list[float]:
    """Fast per-image Dice at network resolution for validation (torch, ``[B,1,H,W]``)."""
    pred = logits > threshold
    gt = masks > 0.5
    tp = (pred & gt).flatten(1).sum(1).double()
    fp = (pred & ~gt).flatten(1).sum(1).double()
    fn = (~pred & gt).flatten(1).sum(1).double()
    den = 2 * tp + fp + fn
    out = []
    for t, d, e in zip(tp.tolist(), den.tolist(), (fp + fn).tolist()):
        out.append(2 * t / d if d > 0 else (1.0 if e == 0 else 0.0))
    return out
