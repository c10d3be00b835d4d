"""Backend registry for the two guided attention operators.

Every implementation (``reference``, ``eager``, ``triton``, ``cpu``, ``cuda``) is a
module that exposes

* ``spatial(theta, phi, eta, rho, mu, *, combine, out_dtype) -> Tensor``
* ``channel(y, g, *, combine, stabilize, scale, out_dtype) -> Tensor``
* ``unsupported(op, device_type, dtype, options) -> str | None`` - ``None`` when the
  backend can run this call, otherwise the reason it cannot.
* ``is_available() -> str | None`` - ``None`` when it can be used at all in this
  process, otherwise why not (e.g. the extension was not compiled).

Backends are imported when ``ggnet_fast.backends`` is imported (see ``load_all``).  ``backend="auto"``
tries the backends registered as defaults for the tensors' device in priority order
and silently skips the ones that cannot run the call; an explicit request for a
backend that cannot run it raises ``ValueError`` (or ``RuntimeError`` when it is not
available in this process) with the real reason.  The environment variable
``GGNET_BACKEND`` replaces ``"auto"`` with an explicit name.
"""
from __future__ import annotations

import contextlib
import importlib
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Iterator

import torch

OPS = ("spatial", "channel")


@dataclass(frozen=True)
class BackendSpec:
    """How to find a backend and where ``auto`` may pick it.

    ``auto_devices`` maps a device type to the backend's priority there (higher is
    tried first); devices not listed are never chosen automatically.
    """

    name: str
    module: str
    auto_devices: dict


_REGISTRY: dict[str, BackendSpec] = {}
_LOADED: dict[str, ModuleType] = {}
_LOAD_ERRORS: dict[str, str] = {}
_DISPATCH_LOG: list[list[tuple[str, str]]] = []


def register_backend(name: str, module: str, auto_devices: dict | None = None) -> None:
    """Register (or replace) a backend implemented by the importable ``module``."""
    _REGISTRY[name] = BackendSpec(name, module, dict(auto_devices or {}))
    _LOADED.pop(name, None)
    _LOAD_ERRORS.pop(name, None)


def registered_backends() -> list[str]:
    """Names of all registered backends, available or not."""
    return list(_REGISTRY)


def _load(name: str) -> ModuleType | None:
    """The backend's module, importing it on first use (None if it cannot load)."""
    if name not in _LOADED and name not in _LOAD_ERRORS:
        spec = _REGISTRY[name]
        try:
            module = importlib.import_module(spec.module)
            reason = module.is_available()
        except Exception as exc:  # an optional dependency may be missing
            reason = f"import of {spec.module} failed: {type(exc).__name__}: {exc}"
        if reason is None:
            _LOADED[name] = module
        else:
            _LOAD_ERRORS[name] = reason
    return _LOADED.get(name)


def load_all() -> None:
    """Import every registered backend now.

    Called once when ``ggnet_fast.backends`` is imported, so that a first operator
    call made while ``torch.compile`` traces (where imports cannot be traced) finds
    every backend already resolved.
    """
    for name in _REGISTRY:
        _load(name)


def unavailable_reason(name: str) -> str | None:
    """``None`` when backend ``name`` can be used in this process, else why not."""
    if name not in _REGISTRY:
        return f"unknown backend {name!r}; registered: {registered_backends()}"
    _load(name)
    return _LOAD_ERRORS.get(name)


def available_backends() -> list[str]:
    """Registered backends that load in this process."""
    return [n for n in _REGISTRY if unavailable_reason(n) is None]


def auto_order(device_type: str) -> list[str]:
    """Backends ``auto`` tries for ``device_type``, best first."""
    ranked = [s for s in _REGISTRY.values() if device_type in s.auto_devices]
    ranked.sort(key=lambda s: -s.auto_devices[device_type])
    return [s.name for s in ranked]


def resolve(op: str, backend: str, device: torch.device, dtype: torch.dtype, options: dict):
    """Pick the implementation of ``op`` for this call; returns ``(name, module)``."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")
    if backend == "auto":
        backend = os.environ.get("GGNET_BACKEND", "auto") or "auto"
    if backend != "auto":
        reason = unavailable_reason(backend)
        if reason is not None:
            if backend not in _REGISTRY:
                raise ValueError(f"backend: {reason}")
            raise RuntimeError(f"backend {backend!r} is not available: {reason}")
        module = _LOADED[backend]
        why = module.unsupported(op, device.type, dtype, options)
        if why is not None:
            raise ValueError(f"backend {backend!r} cannot run this {op} call: {why}")
        return backend, module
    for name in auto_order(device.type):
        module = _load(name)
        if module is not None and module.unsupported(op, device.type, dtype, options) is None:
            return name, module
    raise RuntimeError(
        f"no backend can run {op} on {device.type} {dtype} with {options}; "
        f"tried {auto_order(device.type)}"
    )


def _record(op: str, name: str) -> None:
    for log in _DISPATCH_LOG:
        log.append((op, name))


@contextlib.contextmanager
def record_dispatch() -> Iterator[list[tuple[str, str]]]:
    """Collect ``(op, backend)`` for every operator call made inside the block.

    Tests use it to assert which backend really ran (no silent fallback)::

        with record_dispatch() as calls:
            model(x)
        assert {b for _, b in calls} == {"triton"}
    """
    log: list[tuple[str, str]] = []
    _DISPATCH_LOG.append(log)
    try:
        yield log
    finally:
        _DISPATCH_LOG.remove(log)
