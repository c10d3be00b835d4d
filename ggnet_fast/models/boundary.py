"""Boundary detection (BD) module of GG-Net (Section 3.2), in the paper's and the released form.

Applied to a one-channel logit map ``F`` (``[B, 1, H, W]``) with a 3x3 max-pool
(stride 1, padding 1):

* ``"paper"``:    ``E = F - maxpool(F)``,       segmentation ``F + E = 2F - maxpool(F)``.
* ``"released"``: ``E = |F - maxpool(F)|``,     segmentation ``F + E = maxpool(F)``.

The boundary map that is returned (and supervised) is ``|F - maxpool(F)|`` in both forms:
the logit drop towards the largest neighbour, large just outside a region of high
logits, which is where the boundary targets are 1.  The paper's ``E`` itself is never
positive, so supervising it against a {0, 1} Canny target could only be minimised by
flat logits (``E = 0``); its magnitude is what the BD module is meant to detect.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BOUNDARY_FORMS = ("paper", "released")


def boundary_map(logits: torch.Tensor, form: str) -> torch.Tensor:
    """``E`` for ``logits`` ``[B, C, H, W]`` (see the module docstring); same shape."""
    if form not in BOUNDARY_FORMS:
        raise ValueError(f"boundary_form must be one of {list(BOUNDARY_FORMS)}, got {form!r}")
    diff = logits - F.max_pool2d(logits, kernel_size=3, stride=1, padding=1)
    return diff if form == "paper" else diff.abs()


class BoundaryDetection(nn.Module):
    """``F -> (F + E, E)``: the enhanced segmentation logits and the boundary map.

    Parameter-free (the 1x1 convolution that makes ``F`` is the caller's side head).
    Shapes: ``[B, 1, H, W]`` -> two ``[B, 1, H, W]``.
    """

    def __init__(self, form: str = "paper") -> None:
        super().__init__()
        if form not in BOUNDARY_FORMS:
            raise ValueError(f"boundary_form must be one of {list(BOUNDARY_FORMS)}, got {form!r}")
        self.form = form

    def forward(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(F + E, |E|)``: the segmentation logits and the supervised boundary map."""
        edge = boundary_map(logits, self.form)
        return logits + edge, edge.abs()

    def extra_repr(self) -> str:
        return f"form={self.form!r}"
