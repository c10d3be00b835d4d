"""GG-Net losses (Section 3.3, Eq. 6-9): Dice + BCE on logits, boundary MSE, boundary targets.

Everything takes logits and float masks ``[B, 1, H, W]`` with values in {0, 1}; the
computation is float32 for half/float32 inputs (autocast-safe) and float64 for float64.

* :func:`dice_bce_loss`: ``BCE-with-logits (mean) + Dice`` with Dice per image
  ``1 - (2 sum p g + s) / (sum p^k + sum g^k + s)`` (``k = 2``: Eq. 7's squared
  denominator; ``k = 1``: the released code), averaged over the batch.  ``s > 0`` makes an
  empty mask finite (an empty prediction of an empty mask costs 0).  Eq. 7 prints the
  cross-entropy term as ``P log G``; the standard BCE is meant and used.
* :func:`boundary_mse`: mean squared error (Eq. 8 writes a sum; its lambda = 10 only
  makes sense with the mean, which is also what the released code uses).
* :func:`canny_boundary` (the paper: OpenCV's Canny on the mask; OpenCV is imported on
  first use) and :func:`morphological_boundary` (the released code:
  ``|y - maxpool3x3(y)|``, the ring of pixels just outside the lesion).
* :class:`GGNetLoss`: Eq. 6, ``sum_i (l_seg L_seg^i + l_bnd L_bnd^i) + l_final L_seg^f``,
  over whatever side outputs and boundary maps the model returned.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.presets import PRESET_TABLE
from ..models.presets import preset as preset_row
from .registry import register_loss

BOUNDARY_TARGETS = ("canny", "morphological")

# Loss rows of the preset table (ggnet_fast.models.presets), by preset name.
LOSS_PRESETS: dict[str, dict] = {name: p.loss for name, p in PRESET_TABLE.items()}


def _compute(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32, or float64 if it is float64."""
    return x.double() if x.dtype == torch.float64 else x.float()


def _check_pair(name: str, pred, target) -> None:
    for n, t in ((name, pred), ("target", target)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{n} must be a torch.Tensor [B, 1, H, W], got {type(t).__name__}")
    if pred.dim() != 4 or pred.shape != target.shape:
        raise ValueError(f"{name} {tuple(pred.shape)} and target {tuple(target.shape)} must both "
                         "have shape [B, 1, H, W]")


DICE_FORMS = ("standard", "released")


def dice_loss(logits: torch.Tensor, target: torch.Tensor, *, squared: bool = False,
              smooth: float = 1.0, form: str = "standard") -> torch.Tensor:
    """Soft Dice loss of ``sigmoid(logits)``, per image then averaged.  [B,1,H,W] x2 -> scalar.

    ``form="standard"``: ``1 - (2 I + s) / (D + s)``; ``form="released"`` (the authors'
    train.py): ``1 - 2 (I + s) / (D + s)``, which on an empty mask with a near-empty
    prediction is -1 instead of 0 (I = intersection, D = the denominator sums)."""
    _check_pair("logits", logits, target)
    if not smooth > 0:
        raise ValueError(f"smooth must be > 0 (it keeps empty masks finite), got {smooth}")
    if form not in DICE_FORMS:
        raise ValueError(f"form must be one of {list(DICE_FORMS)}, got {form!r}")
    p = torch.sigmoid(_compute(logits)).flatten(1)
    g = target.to(p.dtype).flatten(1)
    inter = (p * g).sum(1)
    denom = (p * p).sum(1) + (g * g).sum(1) if squared else p.sum(1) + g.sum(1)
    numer = 2.0 * (inter + smooth) if form == "released" else 2.0 * inter + smooth
    return (1.0 - numer / (denom + smooth)).mean()


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor, *, squared: bool = False,
                  smooth: float = 1.0,
                  form: str = "standard") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dice + bce, dice, bce)`` for ``[B, 1, H, W]`` logits and masks."""
    dice = dice_loss(logits, target, squared=squared, smooth=smooth, form=form)
    x = _compute(logits)
    bce = F.binary_cross_entropy_with_logits(x, target.to(x.dtype))
    return dice + bce, dice, bce


def boundary_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between a boundary map and its target, ``[B,1,H,W]`` x2 -> scalar."""
    _check_pair("pred", pred, target)
    x = _compute(pred)
    return F.mse_loss(x, target.to(x.dtype))


def morphological_boundary(masks: torch.Tensor) -> torch.Tensor:
    """``|y - maxpool3x3(y)|``: 1 on the pixels just outside each region.  Same shape, float."""
    if not isinstance(masks, torch.Tensor) or masks.dim() != 4:
        raise ValueError("masks must be a [B, 1, H, W] tensor")
    y = masks.float()
    return (F.max_pool2d(y, 3, stride=1, padding=1) - y).abs()


def canny_boundary(masks: torch.Tensor, low: float = 100.0, high: float = 200.0) -> torch.Tensor:
    """OpenCV's Canny edges of each binary mask (threshold 0.5), as a {0,1} float tensor.

    ``[B, 1, H, W]`` -> ``[B, 1, H, W]`` on the masks' device.  Runs on the CPU (one small
    uint8 image per mask).
    """
    if not isinstance(masks, torch.Tensor) or masks.dim() != 4 or masks.shape[1] != 1:
        raise ValueError("masks must be a [B, 1, H, W] tensor")
    try:
        import cv2
    except ImportError as exc:  # an optional dependency (extra "pipeline")
        raise ImportError("boundary_target='canny' needs OpenCV: pip install opencv-python-"
                          "headless (or use boundary_target='morphological')") from exc
    binary = (masks.detach() > 0.5).to(torch.uint8).mul_(255).cpu().numpy()
    edges = np.stack([cv2.Canny(np.ascontiguousarray(m[0]), low, high)[None] for m in binary])
    return torch.from_numpy(edges > 0).to(device=masks.device, dtype=torch.float32)


def make_boundary_targets(masks: torch.Tensor, kind: str) -> torch.Tensor:
    """The boundary ground truth of ``masks`` by ``kind`` (``"canny"`` or ``"morphological"``)."""
    if kind == "canny":
        return canny_boundary(masks)
    if kind == "morphological":
        return morphological_boundary(masks)
    raise ValueError(f"boundary_target must be one of {list(BOUNDARY_TARGETS)}, got {kind!r}")


class GGNetLoss(nn.Module):
    """The total loss of Eq. 6 for a :class:`~ggnet_fast.models.GGNetOutput`.

    Args:
        preset: ``"paper"`` or ``"released"`` (:data:`LOSS_PRESETS`); keyword arguments
            override single entries: ``lambda_seg`` (side segmentation terms),
            ``lambda_boundary`` (boundary terms), ``lambda_final`` (final segmentation),
            ``boundary_target`` (``"canny"`` / ``"morphological"``), ``dice_squared``,
            ``smooth``, ``dice_form`` (``"standard"`` / ``"released"``, :func:`dice_loss`).

    ``loss(out, masks, boundary_targets=None) -> total``: ``out`` is a ``GGNetOutput``
    (or a bare logits tensor), ``masks`` float ``[B, 1, H, W]`` in {0, 1};
    ``boundary_targets`` may be precomputed (same shape).  ``total`` is a scalar tensor
    with grad.  :meth:`terms` returns every term (``total``, ``seg_final``,
    ``dice_final``, ``bce_final``, ``seg_sides``, ``boundary``; weighted sums) as scalar
    tensors on the input's device, for logging or inspection.
    """

    def __init__(self, preset: str = "paper", **overrides) -> None:
        super().__init__()
        defaults = preset_row(preset).loss  # ValueError naming the presets if unknown
        unknown = sorted(set(overrides) - set(defaults))
        if unknown:
            raise TypeError(f"unknown GGNetLoss option(s) {unknown}; known: {sorted(defaults)}")
        opts = {**defaults, **overrides}
        if opts["boundary_target"] not in BOUNDARY_TARGETS:
            raise ValueError(f"boundary_target must be one of {list(BOUNDARY_TARGETS)}, "
                             f"got {opts['boundary_target']!r}")
        for name in ("lambda_seg", "lambda_boundary", "lambda_final"):
            if not isinstance(opts[name], (int, float)) or opts[name] < 0:
                raise ValueError(f"{name} must be a number >= 0, got {opts[name]!r}")
        if not opts["smooth"] > 0:
            raise ValueError(f"smooth must be > 0, got {opts['smooth']}")
        if opts["dice_form"] not in DICE_FORMS:
            raise ValueError(f"dice_form must be one of {list(DICE_FORMS)}, "
                             f"got {opts['dice_form']!r}")
        self.preset = preset
        self.options = opts

    def forward(self, out, masks: torch.Tensor,
                boundary_targets: torch.Tensor | None = None) -> torch.Tensor:
        return self.terms(out, masks, boundary_targets)["total"]

    def terms(self, out, masks: torch.Tensor,
              boundary_targets: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Every term of Eq. 6 as a scalar tensor (with grad), ``"total"`` their sum."""
        o = self.options
        logits = out if isinstance(out, torch.Tensor) else out.logits
        sides = () if isinstance(out, torch.Tensor) else tuple(out.side_logits)
        edges = () if isinstance(out, torch.Tensor) else tuple(out.boundaries)
        _check_pair("logits", logits, masks)

        def seg(x):
            return dice_bce_loss(x, masks, squared=o["dice_squared"], smooth=o["smooth"],
                                 form=o["dice_form"])

        seg_final, dice_final, bce_final = seg(logits)
        zero = seg_final.new_zeros(())
        seg_sides = sum((seg(s)[0] for s in sides), zero)
        boundary = zero
        if edges:
            if boundary_targets is None:
                boundary_targets = make_boundary_targets(masks, o["boundary_target"])
            boundary = sum((boundary_mse(e, boundary_targets) for e in edges), zero)
        seg_sides = o["lambda_seg"] * seg_sides
        boundary = o["lambda_boundary"] * boundary
        total = o["lambda_final"] * seg_final + seg_sides + boundary
        return {"total": total, "seg_final": seg_final, "dice_final": dice_final,
                "bce_final": bce_final, "seg_sides": seg_sides, "boundary": boundary}

    def extra_repr(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"preset={self.preset!r}, {opts}"


register_loss("ggnet", GGNetLoss)
