"""Loss tests: Dice + BCE, boundary MSE, boundary targets, the total loss of Eq. 6."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ggnet_fast.losses import (LOSS_PRESETS, GGNetLoss, boundary_mse, canny_boundary, dice_bce_loss,
                               dice_loss, make_boundary_targets, morphological_boundary)
from ggnet_fast.models import GGNetOutput


def total_and_parts(loss, *args, **kwargs):
    """``loss(...)`` (a scalar tensor) and ``loss.terms(...)`` as floats; the totals agree."""
    total = loss(*args, **kwargs)
    terms = loss.terms(*args, **kwargs)
    torch.testing.assert_close(total, terms["total"], rtol=0, atol=0)
    return total, {k: float(v.detach()) for k, v in terms.items()}


def disk(size: int = 64, radius: float = 15.0, center=(31.0, 33.0)):
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    dist = np.hypot(yy - center[0], xx - center[1])
    mask = torch.from_numpy(dist <= radius).float()[None, None]
    return mask, dist


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("smooth", [1e-5, 1.0])
def test_perfect_prediction_near_zero(squared, smooth):
    mask, _ = disk()
    masks = torch.cat([mask, torch.flip(mask, dims=[-1])])
    logits = (2 * masks - 1) * 30.0                       # sigmoid = 1 - 1e-13 or 1e-13
    total, dice, bce = dice_bce_loss(logits, masks, squared=squared, smooth=smooth)
    assert dice.item() < 1e-6 and bce.item() < 1e-6 and total.item() < 2e-6
    wrong = dice_loss(-logits, masks, squared=squared, smooth=smooth)
    assert wrong.item() > 0.99


def test_dice_matches_formula_and_gradcheck(seed):
    logits = torch.randn(3, 1, 6, 7, dtype=torch.float64, requires_grad=True)
    masks = (torch.rand(3, 1, 6, 7, dtype=torch.float64) > 0.5).double()
    p = torch.sigmoid(logits)
    for squared in (False, True):
        inter = (p * masks).sum((1, 2, 3))
        den = ((p ** 2).sum((1, 2, 3)) + (masks ** 2).sum((1, 2, 3)) if squared
               else p.sum((1, 2, 3)) + masks.sum((1, 2, 3)))
        ref = (1 - (2 * inter + 0.5) / (den + 0.5)).mean()
        torch.testing.assert_close(dice_loss(logits, masks, squared=squared, smooth=0.5), ref,
                                   rtol=1e-12, atol=1e-12)

        def seg_loss(x, squared=squared):  # checked in this iteration; binds ``squared``
            return dice_bce_loss(x, masks, squared=squared, smooth=0.5)[0]

        assert torch.autograd.gradcheck(seg_loss, (logits,))
    bce_ref = -(masks * torch.log(p) + (1 - masks) * torch.log(1 - p)).mean()
    torch.testing.assert_close(dice_bce_loss(logits, masks)[2], bce_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("preset", ["paper", "released"])
def test_empty_masks_are_finite(preset, seed):
    masks = torch.zeros(2, 1, 32, 32)
    opts = LOSS_PRESETS[preset]
    for logits in (torch.randn(2, 1, 32, 32), torch.full((2, 1, 32, 32), -40.0),
                   torch.full((2, 1, 32, 32), 40.0), torch.zeros(2, 1, 32, 32)):
        logits.requires_grad_(True)
        total, dice, bce = dice_bce_loss(logits, masks, squared=opts["dice_squared"],
                                         smooth=opts["smooth"])
        total.backward()
        assert torch.isfinite(total) and torch.isfinite(logits.grad).all()
    empty_right = dice_loss(torch.full((2, 1, 32, 32), -40.0), masks, smooth=opts["smooth"])
    assert empty_right.item() < 1e-6                     # an empty prediction of an empty mask
    side = torch.randn(2, 1, 32, 32, requires_grad=True)
    out = GGNetOutput(torch.randn(2, 1, 32, 32), (side,), (torch.randn(2, 1, 32, 32),))
    total, parts = total_and_parts(GGNetLoss(preset), out, masks)
    total.backward()
    assert math.isfinite(total.item()) and all(math.isfinite(v) for v in parts.values())
    assert torch.isfinite(side.grad).all()


def test_bce_stable_for_huge_logits():
    masks = torch.tensor([1.0, 0.0]).view(2, 1, 1, 1)
    logits = torch.tensor([-1e4, 1e4]).view(2, 1, 1, 1).requires_grad_(True)
    total, _, bce = dice_bce_loss(logits, masks)
    total.backward()
    assert torch.isfinite(total) and abs(bce.item() - 1e4) < 1 and torch.isfinite(logits.grad).all()


def test_canny_target_of_a_disk_is_a_ring():
    radius = 15.0
    mask, dist = disk(radius=radius)
    edge = canny_boundary(mask)[0, 0].numpy()
    assert set(np.unique(edge)) <= {0.0, 1.0}
    on = edge > 0
    assert (np.abs(dist[on] - radius) <= 1.5).all(), "edge pixels off the circle"
    assert not on[np.abs(dist - radius) > 1.5].any()
    # thin and closed: about 2 pi r pixels, present in every angular sector
    assert 0.7 * 2 * math.pi * radius < on.sum() < 1.6 * 2 * math.pi * radius
    yy, xx = np.nonzero(on)
    angles = np.arctan2(yy - 31.0, xx - 33.0)
    hist, _ = np.histogram(angles, bins=16, range=(-math.pi, math.pi))
    assert (hist > 0).all()


def test_morphological_target_of_a_disk_is_the_outer_ring():
    radius = 12.0
    mask, dist = disk(radius=radius)
    ring = morphological_boundary(mask)[0, 0].numpy()
    on = ring > 0
    assert set(np.unique(ring)) == {0.0, 1.0}
    assert (dist[on] > radius).all() and (dist[on] <= radius + 1.5).all()
    outside_near = (dist > radius) & (dist <= radius + 1.0)
    assert on[outside_near].all()
    assert torch.equal(make_boundary_targets(mask, "morphological"), morphological_boundary(mask))
    with pytest.raises(ValueError, match="boundary_target"):
        make_boundary_targets(mask, "sobel")


@pytest.mark.parametrize("preset", ["paper", "released"])
def test_total_loss_is_eq6(preset, seed):
    o = LOSS_PRESETS[preset]
    masks = torch.zeros(2, 1, 40, 40)
    masks[:, :, 10:30, 8:25] = 1
    final = torch.randn(2, 1, 40, 40, requires_grad=True)
    sides = tuple(torch.randn(2, 1, 40, 40) for _ in range(4))
    edges = tuple(torch.rand(2, 1, 40, 40) for _ in range(5))
    total, parts = total_and_parts(GGNetLoss(preset), GGNetOutput(final, sides, edges), masks)

    def seg(x):
        return dice_bce_loss(x, masks, squared=o["dice_squared"], smooth=o["smooth"])[0]

    target = make_boundary_targets(masks, o["boundary_target"])
    expected = (o["lambda_final"] * seg(final) + o["lambda_seg"] * sum(seg(s) for s in sides)
                + o["lambda_boundary"] * sum(boundary_mse(e, target) for e in edges))
    torch.testing.assert_close(total, expected, rtol=1e-6, atol=1e-6)
    assert parts["total"] == pytest.approx(expected.item(), rel=1e-5)
    assert parts["seg_final"] == pytest.approx(seg(final).item(), rel=1e-5)
    assert parts["boundary"] == pytest.approx(
        o["lambda_boundary"] * sum(boundary_mse(e, target) for e in edges).item(), rel=1e-5)
    total.backward()
    assert final.grad is not None
    # overrides, a precomputed target, a model without boundaries, a bare tensor
    loss = GGNetLoss(preset, lambda_boundary=0.0, lambda_seg=2.0)
    t2, p2 = total_and_parts(loss, GGNetOutput(final, sides, edges), masks, boundary_targets=target)
    assert p2["boundary"] == 0.0 and p2["seg_sides"] == pytest.approx(
        2 * sum(seg(s) for s in sides).item(), rel=1e-5)
    t3, p3 = total_and_parts(GGNetLoss(preset), GGNetOutput(final, sides, ()), masks)
    assert p3["boundary"] == 0.0
    t4, p4 = total_and_parts(GGNetLoss(preset), final, masks)
    assert p4["total"] == pytest.approx(seg(final).item(), rel=1e-5)


def test_paper_and_released_presets():
    assert LOSS_PRESETS["paper"]["lambda_boundary"] == 10.0
    assert LOSS_PRESETS["paper"]["boundary_target"] == "canny"
    assert LOSS_PRESETS["released"]["boundary_target"] == "morphological"


def test_loss_bad_arguments():
    with pytest.raises(ValueError, match="preset"):
        GGNetLoss("nope")
    with pytest.raises(TypeError, match="unknown GGNetLoss option"):
        GGNetLoss(lambda_foo=1)
    with pytest.raises(ValueError, match="boundary_target"):
        GGNetLoss(boundary_target="sobel")
    with pytest.raises(ValueError, match="smooth"):
        dice_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), smooth=0.0)
    with pytest.raises(ValueError, match="logits"):
        GGNetLoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
    with pytest.raises(TypeError, match="target"):
        dice_loss(torch.zeros(1, 1, 2, 2), [[0.0]])


def test_half_precision_logits_are_computed_in_float32():
    masks = (torch.rand(2, 1, 16, 16) > 0.5).float()
    logits = torch.randn(2, 1, 16, 16)
    a = dice_bce_loss(logits.half(), masks)[0]
    b = dice_bce_loss(logits.half().float(), masks)[0]
    assert a.dtype == torch.float32
    torch.testing.assert_close(a, b)
    assert F.mse_loss(logits, masks).item() == pytest.approx(boundary_mse(logits, masks).item())


def _eq7_by_hand(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Eq. 7 for one batch, written out in float64 without the library or the preset
    table: per image ``1 - (2 sum p g + 1) / (sum p^2 + sum g^2 + 1)`` (the squared
    denominator of Eq. 7; the + 1 keeps empty masks finite), averaged over the batch, plus
    the mean binary cross-entropy ``-(g log p + (1 - g) log(1 - p))``."""
    p = 1.0 / (1.0 + torch.exp(-logits.double()))
    g = masks.double()
    dice = []
    for pi, gi in zip(p, g):
        num = 2.0 * (pi * gi).sum() + 1.0
        den = (pi ** 2).sum() + (gi ** 2).sum() + 1.0
        dice.append(1.0 - num / den)
    bce = -(g * torch.log(p) + (1.0 - g) * torch.log(1.0 - p)).mean()
    return torch.stack(dice).mean() + bce


def test_paper_loss_is_eq6_with_a_hand_written_eq7(seed):
    """``GGNetLoss("paper")`` against Eq. 6-8 typed from the paper: lambda_1 = 1 on the four
    side Dice+BCE terms (Eq. 7, squared Dice denominator), lambda_2 = 10 on the mean squared
    error of each boundary map against OpenCV's Canny edges of the mask, 1 on the final
    term. A plain (non-squared) Dice, another lambda or another boundary target fails."""
    import cv2

    masks = torch.zeros(2, 1, 40, 40, dtype=torch.float64)
    masks[0, :, 10:30, 8:25] = 1
    masks[1, :, 5:12, 20:36] = 1
    final = 1.5 * torch.randn(2, 1, 40, 40, dtype=torch.float64)
    sides = tuple(1.5 * torch.randn(2, 1, 40, 40, dtype=torch.float64) for _ in range(4))
    edges = tuple(torch.rand(2, 1, 40, 40, dtype=torch.float64) for _ in range(4))
    canny = torch.from_numpy(np.stack([
        cv2.Canny((m[0].numpy() * 255).astype(np.uint8), 100, 200)[None] > 0 for m in masks
    ])).double()
    expected = (_eq7_by_hand(final, masks) + sum(_eq7_by_hand(s, masks) for s in sides)
                + 10.0 * sum(((e - canny) ** 2).mean() for e in edges))
    got = GGNetLoss("paper")(GGNetOutput(final, sides, edges), masks)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    # the Dice of Eq. 7 alone, final output only: the squared denominator is what is pinned
    torch.testing.assert_close(GGNetLoss("paper")(final, masks), _eq7_by_hand(final, masks),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("preset", ["paper", "released"])
def test_build_loss_follows_the_preset(preset, seed):
    """The registry and the training run build the loss of the run's preset (its options
    and its value), with the run's overrides on top."""
    from ggnet_fast.losses import build_loss
    from ggnet_fast.train import TrainConfig
    from ggnet_fast.train.build import build_loss as build_run_loss

    other = {"paper": "released", "released": "paper"}[preset]
    assert LOSS_PRESETS[preset] != LOSS_PRESETS[other]
    built = [build_loss("ggnet", preset), build_run_loss(TrainConfig(preset=preset))]
    for loss in built:
        assert loss.options == LOSS_PRESETS[preset]
    tuned = build_run_loss(TrainConfig(preset=preset, loss_overrides={"lambda_seg": 3.0}))
    assert tuned.options == {**LOSS_PRESETS[preset], "lambda_seg": 3.0}
    masks, _ = disk(32, 8.0, (15.0, 16.0))
    g = torch.Generator().manual_seed(seed)
    out = GGNetOutput(torch.randn(1, 1, 32, 32, generator=g),
                      tuple(torch.randn(1, 1, 32, 32, generator=g) for _ in range(2)),
                      tuple(torch.randn(1, 1, 32, 32, generator=g) for _ in range(2)))
    want = GGNetLoss(preset)(out, masks)
    assert not torch.allclose(want, GGNetLoss(other)(out, masks))
    for loss in built:
        torch.testing.assert_close(loss(out, masks), want, rtol=0, atol=0)
