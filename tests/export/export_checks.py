"""Float32 tolerances for comparing an exported graph with PyTorch, derived from the model.

Two float32 implementations of the same network (onnxruntime's kernels and PyTorch's) sum
in different orders.  A dot product of length K carries a rounding error of typically
``sqrt(K) eps`` relative to the sum of its terms' magnitudes (the probabilistic bound,
Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., sec. 3.5 / Higham &
Mary 2019), so two implementations differ by up to twice that per layer; along a path
of L such layers (normalised layers pass an error on with a gain of about 1) the
relative errors add.  The bound used is

    tol = 2 * L * sqrt(K_max) * eps32 * max|reference output|

with L the number of reductions (convolutions, linear layers, two per attention
operator: scores and values) and K_max the longest one (a convolution's fan-in, or N
positions for the attention and channel Gram products).  It is an upper estimate: the
measured differences (docs/export.md) are 10-1000x below it.
"""
from __future__ import annotations

import math

import torch
from torch import nn

EPS32 = torch.finfo(torch.float32).eps

#: the attention modules (two reductions each: scores, values); imported lazily
_ATTENTION = ("GuidedNonLocal", "GuidedChannelAttention", "NonLocalBlock", "ChannelNonLocalBlock")


def reductions(model: nn.Module, positions: int) -> tuple[int, int]:
    """``(L, K_max)`` of ``model``: every conv/linear layer counts once with its fan-in,
    every attention module twice with ``positions`` (the largest N it sees)."""
    count, longest = 0, 1
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            count += 1
            longest = max(longest, m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1])
        elif isinstance(m, nn.Linear):
            count += 1
            longest = max(longest, m.in_features)
        elif type(m).__name__ in _ATTENTION:
            count += 2
            longest = max(longest, positions)
    return max(count, 1), longest


def float32_tolerance(model: nn.Module, positions: int, reference: torch.Tensor) -> float:
    """The bound of the module docstring for ``model`` and its output ``reference``."""
    count, longest = reductions(model, positions)
    return 2 * count * math.sqrt(longest) * EPS32 * float(reference.detach().abs().max())


def rel_err(x, y) -> float:
    """``||x - y|| / ||y||`` (Frobenius, float64)."""
    x, y = (torch.as_tensor(v).detach().double() for v in (x, y))
    return float((x - y).norm() / y.norm().clamp_min(1e-300))
