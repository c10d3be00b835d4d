"""Lazy imports of the optional libraries (segmentation_models_pytorch, timm,
torchvision): ``ggnet_fast`` imports without them."""
from __future__ import annotations

import importlib
import sys
from types import ModuleType

#: What to install when a library is missing.
INSTALL_HINT = "pip install ggnet_fast[integrations]"


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (e.g. ``"timm"``) or raise ``ImportError`` naming the pip extra."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{purpose} needs the {module.split('.')[0]!r} package, which is not installed: "
            f"{INSTALL_HINT}") from err


def loaded(module: str) -> ModuleType | None:
    """``module`` if it has been imported in this process, else ``None``.

    A model can only be an instance of a library's class if that library has been
    imported, so :func:`ggnet_fast.integrations.retrofit` dispatches on this without
    importing anything."""
    return sys.modules.get(module)
