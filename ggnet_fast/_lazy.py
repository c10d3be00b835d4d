"""Lazy public names for a package ``__init__`` (PEP 562): a name is imported from its
submodule on first access, then cached in the package, so importing the package (or one
of its other submodules) does not pay for torch, Triton or the compiled kernels."""
from __future__ import annotations

import importlib
import sys


def lazy_attributes(package: str, where: dict[str, str]):
    """``(__getattr__, __dir__)`` for ``package``, whose public name ``n`` lives in the
    relative submodule ``where[n]`` (e.g. ``".nn"``); a name equal to its submodule's
    (``"ops": ".ops"``) is the submodule itself."""

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(where[name], package)
        value = module if where[name].lstrip(".") == name else getattr(module, name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *where})

    return __getattr__, __dir__
