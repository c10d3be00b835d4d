"""The building blocks every module of the package shares (public, like smp's
``base/modules.py``): input checks of feature maps and module options, the guidance
resize, the residual weight gamma, the positions-major view and conv-BN-activation units."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..backends.registry import registered_backends
from ..ops.checks import FLOAT_DTYPES, check_choice

RESIDUAL_MODES = ("learnable", "fixed")


def check_feature_map(name: str, x, channels: int) -> None:
    """``x`` must be a non-empty floating NCHW tensor with ``channels`` channels."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [B, {channels}, H, W], "
                        f"got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must have shape [B, {channels}, H, W] (NCHW), "
                         f"got {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channels ([B, {channels}, H, W]), "
                         f"got {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty: shape [B, {channels}, H, W] with B, H, W "
                         f">= 1, got {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have a floating dtype (float16, bfloat16, float32 or "
                        f"float64), got {x.dtype}")


def check_options(*, backend: str, **choices: tuple[object, tuple]) -> None:
    """Validate a module's options when it is built, not at its first forward pass:
    ``backend`` must be ``"auto"`` or a registered backend name (available here or not:
    a module may be built on a CPU machine and run on a GPU); each ``name=(value,
    allowed)`` must have its value among the allowed ones.  ``ValueError`` naming it."""
    for name, (value, allowed) in choices.items():
        check_choice(name, value, allowed)
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")
    check_choice("backend", backend, ("auto", *registered_backends()))


def match_guide(x: torch.Tensor, guide: torch.Tensor, resize_guide: bool) -> torch.Tensor:
    """Return ``guide`` at ``x``'s spatial size (bilinear) if allowed, else raise."""
    if guide.shape[0] != x.shape[0]:
        raise ValueError(f"guide has batch {guide.shape[0]} but x has batch {x.shape[0]}")
    if guide.shape[-2:] == x.shape[-2:]:
        return guide
    if not resize_guide:
        raise ValueError(
            f"guide has spatial size {tuple(guide.shape[-2:])} but x has {tuple(x.shape[-2:])}; "
            "pass resize_guide=True to resize the guidance map bilinearly"
        )
    return F.interpolate(guide, size=x.shape[-2:], mode="bilinear", align_corners=False)


def make_gamma(residual: str) -> tuple[str, torch.Tensor]:
    """``("learnable", Parameter(0))`` or ``("fixed", buffer 1)``: y = gamma * attn + x."""
    if residual not in RESIDUAL_MODES:
        raise ValueError(f"residual must be one of {list(RESIDUAL_MODES)}, got {residual!r}")
    if residual == "learnable":
        return residual, nn.Parameter(torch.zeros(1))
    return residual, torch.ones(1)


def add_gamma(module: nn.Module, residual: str) -> None:
    """Give ``module`` the weight of ``y = gamma * attn + x`` (:func:`make_gamma`) as
    ``module.gamma`` (a parameter, or a buffer when fixed) and the mode as
    ``module.residual``."""
    module.residual, gamma = make_gamma(residual)
    if isinstance(gamma, nn.Parameter):
        module.gamma = gamma
    else:
        module.register_buffer("gamma", gamma)


def positions_major(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H*W, C] (a view when possible)."""
    return x.flatten(2).transpose(1, 2)


def conv_bn_act(in_ch: int, out_ch: int, kernel_size: int, act: str = "prelu") -> nn.Sequential:
    """Conv (``kernel_size``, same padding, no bias), BatchNorm, then ``act`` ("prelu" or
    "relu"): ``[B, in_ch, H, W]`` -> ``[B, out_ch, H, W]``."""
    acts = {"prelu": nn.PReLU, "relu": nn.ReLU}
    if act not in acts:
        raise ValueError(f"act must be one of {list(acts)}, got {act!r}")
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_ch),
        acts[act](),
    )


def conv_bn_prelu(in_ch: int, out_ch: int, kernel_size: int) -> nn.Sequential:
    """:func:`conv_bn_act` with PReLU (the guidance block's unit)."""
    return conv_bn_act(in_ch, out_ch, kernel_size, "prelu")


def conv_bn_relu(in_ch: int, out_ch: int, kernel_size: int) -> nn.Sequential:
    """:func:`conv_bn_act` with ReLU (the decoder's unit)."""
    return conv_bn_act(in_ch, out_ch, kernel_size, "relu")
