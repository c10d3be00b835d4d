"""Load the compiled extension ``ggnet_fast._C`` once and say why it is unavailable.

Importing ``ggnet_fast._C`` registers the ``torch.ops.ggnet_fast`` operators (schemas,
autograd, Meta kernels, and the CPU / CUDA kernels it was compiled with).  The ``cpu``
and ``cuda`` backends share this loader so the library is opened exactly once.
"""
from __future__ import annotations

import importlib
from types import ModuleType

import torch

#: Every operator the extension defines (see csrc/ggnet_ops.h).
OPS = ("spatial", "spatial_fwd", "spatial_bwd", "channel", "channel_fwd", "channel_bwd")

_MODULE: ModuleType | None = None
_ERROR: str | None = None
_TRIED = False

_HOW_TO_BUILD = ("build it with `pip install --no-build-isolation -e .` "
                 "(without GGNET_CPU_EXT=0) against the installed torch")


def load() -> ModuleType | None:
    """Import ``ggnet_fast._C`` (once); ``None`` when it cannot be loaded."""
    global _MODULE, _ERROR, _TRIED
    if not _TRIED:
        _TRIED = True
        try:
            _MODULE = importlib.import_module("ggnet_fast._C")
        except ModuleNotFoundError as exc:
            _ERROR = f"the compiled extension ggnet_fast._C is not built ({exc}); {_HOW_TO_BUILD}"
        except (ImportError, OSError) as exc:  # e.g. built against another torch version
            _ERROR = (f"the compiled extension ggnet_fast._C failed to load "
                      f"({type(exc).__name__}: {exc}); rebuild: {_HOW_TO_BUILD}")
        else:
            missing = [op for op in OPS if not hasattr(torch.ops.ggnet_fast, op)]
            if missing:
                _ERROR = f"ggnet_fast._C loaded but does not define {missing}; {_HOW_TO_BUILD}"
                _MODULE = None
    return _MODULE


def unavailable_reason() -> str | None:
    """``None`` when the extension is loaded, otherwise why it is not."""
    load()
    return _ERROR


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether ``torch.ops.ggnet_fast.<op>`` has a kernel for ``dispatch_key`` (e.g. "CPU")."""
    if load() is None:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"ggnet_fast::{op}", dispatch_key)


def with_cuda() -> bool:
    """Whether the loaded extension was compiled with the CUDA kernels."""
    module = load()
    return bool(module is not None and getattr(module, "WITH_CUDA", 0))


def spatial(theta, phi, eta, rho, mu, *, combine: str, out_dtype: torch.dtype,
            backend: str) -> torch.Tensor:
    """The extension's spatial op (either device): [B,N,d], [B,N,d], [B,N,dg], [B,N,dg],
    [B,N,C] -> [B,N,C]; ``combine="product"`` only."""
    if combine != "product":
        raise ValueError(f"combine must be 'product' for the {backend} backend, got {combine!r}")
    return torch.ops.ggnet_fast.spatial(theta, phi, eta, rho, mu).to(out_dtype)


def channel(y, g, *, combine: str, stabilize, scale, out_dtype: torch.dtype) -> torch.Tensor:
    """The extension's channel op (either device): [B,C,N], [B,C,N] -> Q @ y, [B,C,N]."""
    return torch.ops.ggnet_fast.channel(y, g, combine, stabilize, scale).to(out_dtype)
