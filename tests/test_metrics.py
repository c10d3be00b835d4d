"""Metrics against hand-computed cases, the empty-mask policy, and MONAI cross-checks."""
import math

import numpy as np
import pytest
import torch

from ggnet_fast.metrics import batch_dice, binary_metrics, summarize


def _square(shape, top, left, side):
    m = np.zeros(shape, dtype=np.uint8)
    m[top:top + side, left:left + side] = 1
    return m


def test_two_shifted_squares_hand_computed():
    # GT: 10x10 square at (5,5); prediction: the same square shifted 5 columns right.
    # overlap 10x5 = 50 px, |A| = |B| = 100, union 150, image 40x40 = 1600 px.
    gt = _square((40, 40), 5, 5, 10)
    pred = _square((40, 40), 5, 10, 10)
    m = binary_metrics(pred, gt)
    assert m["dice"] == pytest.approx(2 * 50 / 200)
    assert m["jaccard"] == pytest.approx(50 / 150)
    assert m["recall"] == pytest.approx(0.5)
    assert m["precision"] == pytest.approx(0.5)
    assert m["specificity"] == pytest.approx(1450 / 1500)
    assert m["accuracy"] == pytest.approx(1500 / 1600)
    # Each square's boundary (36 px) is at most 5 px from the other's: HD = 5.
    assert m["hd"] == pytest.approx(5.0)
    # Sum of distances from A's boundary to B's: left column 10 x 5 = 50, top and bottom
    # rows (cols 6..9) 2 x (4+3+2+1) = 20, right column (rows 6..13) 1+2+3+4+4+3+2+1 = 20;
    # 90 over 36 points, the same in the other direction: ABD = 180 / 72 = 2.5.
    assert m["abd"] == pytest.approx(2.5)


def test_single_pixels_known_distance():
    a = np.zeros((20, 20), np.uint8)
    b = np.zeros((20, 20), np.uint8)
    a[2, 3] = 1
    b[5, 7] = 1  # (3, 4) apart
    m = binary_metrics(a, b)
    assert m["hd"] == pytest.approx(5.0) and m["abd"] == pytest.approx(5.0)
    assert m["dice"] == 0.0 and m["jaccard"] == 0.0


def test_identical_masks_are_perfect():
    gt = _square((30, 25), 3, 4, 9)
    m = binary_metrics(gt, gt)
    for k in ("dice", "jaccard", "recall", "precision", "specificity", "accuracy"):
        assert m[k] == 1.0
    assert m["hd"] == 0.0 and m["abd"] == 0.0


def test_empty_prediction():
    gt = _square((20, 20), 5, 5, 4)  # 16 px
    m = binary_metrics(np.zeros_like(gt), gt)
    assert m["dice"] == 0.0 and m["jaccard"] == 0.0 and m["recall"] == 0.0
    assert m["precision"] == 0.0          # 0/0, prediction != ground truth -> 0
    assert m["specificity"] == 1.0
    assert m["accuracy"] == pytest.approx(1 - 16 / 400)
    assert math.isnan(m["hd"]) and math.isnan(m["abd"])


def test_empty_ground_truth():
    empty = np.zeros((20, 20), np.uint8)
    both = binary_metrics(empty, empty)
    assert all(both[k] == 1.0
               for k in ("dice", "jaccard", "recall", "precision", "specificity", "accuracy"))
    assert both["hd"] == 0.0 and both["abd"] == 0.0
    fp = binary_metrics(_square((20, 20), 0, 0, 2), empty)
    assert fp["dice"] == 0.0 and fp["recall"] == 0.0 and fp["precision"] == 0.0
    assert fp["specificity"] == pytest.approx(396 / 400)
    assert math.isnan(fp["hd"])


def test_full_image_ground_truth_specificity_policy():
    full = np.ones((8, 8), np.uint8)
    assert binary_metrics(full, full)["specificity"] == 1.0
    assert binary_metrics(_square((8, 8), 0, 0, 4), full)["specificity"] == 0.0


def test_matches_brute_force_on_random_blobs(seed):
    rng = np.random.default_rng(seed)
    from scipy import ndimage
    for _ in range(3):
        a = ndimage.gaussian_filter(rng.standard_normal((37, 29)), 3) > 0.05
        b = ndimage.gaussian_filter(rng.standard_normal((37, 29)), 3) > 0.05
        if not a.any() or not b.any():
            continue
        m = binary_metrics(a, b)
        # brute force: boundary = mask pixels with a 4-neighbour outside (border counts)
        def bnd(x):
            p = np.pad(x, 1)
            inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
            return np.argwhere(x & ~inner)
        pa, pb = bnd(a), bnd(b)
        d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
        assert m["hd"] == pytest.approx(max(d.min(1).max(), d.min(0).max())), seed
        abd = (d.min(1).sum() + d.min(0).sum()) / (len(pa) + len(pb))
        assert m["abd"] == pytest.approx(abd), seed
        tp = (a & b).sum()
        assert m["dice"] == pytest.approx(2 * tp / (a.sum() + b.sum())), seed


def test_hausdorff_matches_monai(seed):
    import monai.metrics as monai_metrics     # in the test extras: the check must not skip
    from scipy import ndimage
    rng = np.random.default_rng(seed)
    a = b = np.zeros((48, 40), dtype=bool)
    while not a.any() or not b.any():         # redraw degenerate (empty) random masks
        a = ndimage.gaussian_filter(rng.standard_normal((48, 40)), 3) > 0
        b = ndimage.gaussian_filter(rng.standard_normal((48, 40)), 3) > 0
    ours = binary_metrics(a, b)
    t = lambda x: torch.from_numpy(x)[None, None].float()  # noqa: E731
    hd = monai_metrics.compute_hausdorff_distance(t(a), t(b), include_background=True)
    assert ours["hd"] == pytest.approx(float(hd), abs=1e-5), seed


def test_per_image_rows_and_aggregation():
    gt = _square((20, 20), 5, 5, 4)
    rows = [{"name": "a", **binary_metrics(torch.from_numpy(gt), torch.from_numpy(gt))},
            {"name": "b",
             **binary_metrics(torch.from_numpy(np.zeros_like(gt)), torch.from_numpy(gt))}]
    agg = summarize(rows)
    assert agg["dice"]["mean"] == pytest.approx(0.5) and agg["dice"]["std"] == pytest.approx(0.5)
    assert agg["hd"]["n"] == 1 and agg["hd"]["undefined"] == 1 and agg["hd"]["mean"] == 0.0
    assert [r["name"] for r in rows] == ["a", "b"]
    s = summarize([{"dice": 1.0}, {"dice": 0.0}], ("dice",))
    assert s["dice"]["mean"] == 0.5


def test_batch_dice_matches_binary_metrics(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 1, 16, 16, generator=g)
    masks = (torch.rand(3, 1, 16, 16, generator=g) > 0.6).float()
    masks[2] = 0
    logits[2] = -1
    fast = batch_dice(logits, masks)
    for i in range(3):
        assert fast[i] == pytest.approx(binary_metrics(logits[i, 0] > 0, masks[i, 0])["dice"])


def test_bad_inputs():
    with pytest.raises(ValueError, match="pred shape"):
        binary_metrics(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="pred"):
        binary_metrics(np.zeros((2, 2, 4, 4)), np.zeros((2, 2, 4, 4)))


def test_fold_table_layout_and_fold_statistics():
    from ggnet_fast.eval.report import TABLE_NOTE, fold_table

    def rows(d):
        return [{"dice": x, "jaccard": x, "recall": 1.0, "precision": 1.0, "specificity": 1.0,
                 "accuracy": 1.0, "hd": 10 * x, "abd": math.nan} for x in d]

    md, numbers = fold_table([rows([0.8, 0.6]), rows([0.9, 0.9])], "GG-Net")
    header = md.splitlines()[0]
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols[:8] == ["Method", "Jaccard %", "Dice %", "Accuracy %", "Recall %",
                        "Precision %", "HD", "ABD"]
    # fold means 0.7 and 0.9 -> 80.0 +- 10.0 (std over folds), per-fold rows +- over images
    assert "| GG-Net, mean ± std over 2 folds | 80.0 ± 10.0 | 80.0 ± 10.0 |" in md
    assert "GG-Net, fold 0 (2 images; ± over images) | 70.0 ± 10.0" in md
    assert numbers["mean"]["hd"]["mean"] == pytest.approx(8.0)
    assert "n/a" in md  # ABD undefined everywhere
    assert "pixels" in TABLE_NOTE and "original resolution" in TABLE_NOTE


def test_probability_maps_are_refused():
    gt = np.zeros((8, 8), dtype=np.uint8)
    gt[2:5, 2:5] = 255                       # integer masks: any non-zero is lesion
    with pytest.raises(ValueError, match="pred must be a binary mask"):
        binary_metrics(np.full((8, 8), 0.7), gt)
    assert binary_metrics(gt > 0, gt)["dice"] == 1.0


@pytest.mark.parametrize("swap", [False, True])
def test_hausdorff_is_symmetric_on_a_fixed_case(swap):
    """One pixel at the centre of a 7x7 square, worked out by hand. The square's
    boundary is its 24 outer pixels; the pixel is its own boundary. Pixel -> square
    boundary: 3 (to the middle of a side); square boundary -> pixel: up to sqrt(18) (a
    corner). The symmetric HD is sqrt(18); either one-way distance alone is 3 or
    sqrt(18) depending on the argument order, so both orders are checked. ABD: the pixel
    contributes 3; each side contributes 3 (its middle), 2 sqrt(10) and 2 sqrt(13) and the
    4 corners sqrt(18) each: (3 + 4 (3 + 2 sqrt(10) + 2 sqrt(13)) + 4 sqrt(18)) / 25."""
    square = _square((11, 11), 2, 2, 7)        # rows and columns 2..8
    pixel = np.zeros((11, 11), np.uint8)
    pixel[5, 5] = 1
    pred, gt = (square, pixel) if swap else (pixel, square)
    m = binary_metrics(pred, gt)
    assert m["hd"] == pytest.approx(math.sqrt(18), rel=1e-12)
    want_abd = (3 + 4 * (3 + 2 * math.sqrt(10) + 2 * math.sqrt(13)) + 4 * math.sqrt(18)) / 25
    assert m["abd"] == pytest.approx(want_abd, rel=1e-12)
