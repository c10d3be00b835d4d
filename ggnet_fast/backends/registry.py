"""Backend registry for the two guided attention operators.

A backend is any object (usually a module) that implements :class:`Backend`.  It is
registered under a name with an import path (``"package.module"`` or
``"package.module:ATTRIBUTE"``) and the devices on which ``backend="auto"`` may pick it;
the contract it must meet is ``docs/kernels.md``, how to add one is ``docs/backends.md``.

Loading.  Every registered backend is imported when ``ggnet_fast.backends`` is imported
(:func:`load_all`).  Only a missing dependency makes a backend unavailable: an
``ImportError``/``OSError`` while importing it, or a reason returned by its
``is_available()``.  Any other exception (a configuration error such as a bad value of
an environment variable, or a bug) propagates, so a typo can never make ``auto``
silently fall back to a slower backend.

Dispatch.  ``backend="auto"`` tries the backends registered for the tensors' device in
priority order and skips those whose ``unsupported()`` gives a reason; an explicit name
that cannot run the call raises ``ValueError`` (``RuntimeError`` when the backend is not
available in this process) with the backend's own reason.

Environment switches (one rule): runtime switches are read on every operator call, so a
change of ``os.environ`` takes effect at the next call, and a bad value raises
``ValueError`` naming the variable at that call.  ``GGNET_BACKEND`` (read here) replaces
``"auto"`` with an explicit name.  The exceptions are fixed before any kernel exists:
build switches (``GGNET_CUDA``, ``GGNET_CPU_EXT``, read by ``setup.py``) and
``TRITON_INTERPRET`` (Triton decides when a kernel is defined whether it is interpreted,
so it must be set before ``ggnet_fast`` is imported).  :func:`env_choice` implements
the rule for a switch with a fixed set of values.
"""
from __future__ import annotations

import contextlib
import importlib
import os
from dataclasses import dataclass
from typing import Iterator, Protocol, runtime_checkable

import torch

OPS = ("spatial", "channel")


@runtime_checkable
class Backend(Protocol):
    """What every backend implements, with these exact option defaults.

    ``spatial`` and ``channel`` receive inputs the public operators have already checked
    (shapes, dtypes, devices, option values; see ``ggnet_fast/ops``) and only calls
    for which ``unsupported`` returned ``None``.  ``out_dtype=None`` means the inputs'
    dtype.  Both must be differentiable in every input (autograd or a custom op).
    """

    def is_available(self) -> str | None:
        """``None`` when usable in this process, else why not (a missing dependency)."""

    def unsupported(self, op: str, device_type: str, dtype: torch.dtype,
                    options: dict) -> str | None:
        """``None`` when this call can run, else why not.  ``options``: ``combine``,
        ``stabilize``, ``scale`` (channel), ``out_dtype`` and ``shape`` (a dict of the
        sizes ``B, N, d, dg, C`` (spatial) or ``B, C, N`` (channel), possibly empty)."""

    def spatial(self, theta: torch.Tensor, phi: torch.Tensor, eta: torch.Tensor,
                rho: torch.Tensor, mu: torch.Tensor, *, combine: str = "product",
                out_dtype: torch.dtype | None = None) -> torch.Tensor:
        """[B,N,d], [B,N,d], [B,N,dg], [B,N,dg], [B,N,C] -> [B,N,C]."""

    def channel(self, y: torch.Tensor, g: torch.Tensor, *, combine: str = "product",
                stabilize: str | None = None, scale: float | None = None,
                out_dtype: torch.dtype | None = None) -> torch.Tensor:
        """[B,C,N], [B,C,N] -> [B,C,N]."""


@dataclass(frozen=True)
class BackendSpec:
    """How to find a backend and where ``auto`` may pick it.

    ``target`` is ``"package.module"`` or ``"package.module:ATTRIBUTE"``;
    ``auto_devices`` maps a device type to the backend's priority there (higher is tried
    first); devices not listed are never chosen automatically.  ``verify_on``: device
    types on which the backend's kernels have never run, so each kind of call is checked
    against the reference before its first use there (``first_use.py``).
    """

    name: str
    target: str
    auto_devices: dict
    verify_on: tuple = ()


_REGISTRY: dict[str, BackendSpec] = {}
_LOADED: dict[str, Backend] = {}
_LOAD_ERRORS: dict[str, str] = {}
_DISPATCH_LOG: list[list[tuple[str, str]]] = []


def env_choice(name: str, choices: tuple[str, ...], default: str) -> str:
    """The value of environment switch ``name`` (``default`` when unset or empty);
    ``ValueError`` naming the variable when it is not one of ``choices``."""
    value = os.environ.get(name, "") or default
    if value not in choices:
        raise ValueError(f"environment variable {name} must be one of {list(choices)}, "
                         f"got {value!r}")
    return value


def register_backend(name: str, target: str, auto_devices: dict | None = None,
                     verify_on: tuple = ()) -> None:
    """Register (or replace) backend ``name`` implemented at import path ``target``
    (``"package.module"`` or ``"package.module:ATTRIBUTE"``); it is loaded on first use.
    ``verify_on``: device types where each kind of call is checked once against the
    reference before it runs (``first_use.py``)."""
    _REGISTRY[name] = BackendSpec(name, target, dict(auto_devices or {}), tuple(verify_on))
    _LOADED.pop(name, None)
    _LOAD_ERRORS.pop(name, None)


def registered_backends() -> list[str]:
    """Names of all registered backends, available or not."""
    return list(_REGISTRY)


def _import(target: str) -> Backend:
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attribute) if attribute else module


def _load(name: str) -> Backend | None:
    """The backend, importing it on first use (``None`` when it is unavailable)."""
    if name not in _LOADED and name not in _LOAD_ERRORS:
        spec = _REGISTRY[name]
        try:
            impl = _import(spec.target)
        except (ImportError, OSError) as exc:  # a missing optional dependency
            reason = f"import of {spec.target} failed: {type(exc).__name__}: {exc}"
        else:
            reason = impl.is_available()
        if reason is None:
            _LOADED[name] = impl
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


def get_backend(name: str) -> Backend:
    """The implementation of backend ``name``: ``ValueError`` for an unknown name,
    ``RuntimeError`` with the reason when it is not available in this process."""
    reason = unavailable_reason(name)
    if reason is not None:
        if name not in _REGISTRY:
            raise ValueError(f"backend: {reason}")
        raise RuntimeError(f"backend {name!r} is not available: {reason}")
    return _LOADED[name]


def backends_for(op: str, device_type: str, dtype: torch.dtype,
                 options: dict | None = None) -> list[str]:
    """Available backends (registration order) that accept ``op`` on this device and
    dtype with ``options`` (missing options take the operators' defaults)."""
    opts = call_options(dtype, **(options or {}))
    return [n for n in available_backends()
            if _LOADED[n].unsupported(op, device_type, dtype, opts) is None]


def call_options(dtype: torch.dtype, **options) -> dict:
    """The ``options`` dict ``unsupported`` receives for a call with the operators'
    defaults, overridden by ``options``."""
    return {"combine": "product", "stabilize": None, "scale": None, "out_dtype": dtype,
            "shape": {}, **options}


def auto_order(device_type: str) -> list[str]:
    """Backends ``auto`` tries for ``device_type``, best first."""
    ranked = [s for s in _REGISTRY.values() if device_type in s.auto_devices]
    ranked.sort(key=lambda s: -s.auto_devices[device_type])
    return [s.name for s in ranked]


def resolve(op: str, backend: str, device: torch.device, dtype: torch.dtype,
            options: dict) -> tuple[str, Backend]:
    """Pick the implementation of ``op`` for this call; returns ``(name, backend)``."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")
    if backend == "auto":
        backend = env_choice("GGNET_BACKEND", ("auto", *_REGISTRY), "auto")
    if backend != "auto":
        impl = get_backend(backend)
        why = impl.unsupported(op, device.type, dtype, options)
        if why is not None:
            raise ValueError(f"backend {backend!r} cannot run this {op} call: {why}")
        why = _first_use(backend, impl, op, device, dtype, options)
        if why is not None:
            raise RuntimeError(f"backend {backend!r} is disabled for this {op} call: {why}")
        return backend, impl
    for name in auto_order(device.type):
        impl = _load(name)
        if (impl is not None and impl.unsupported(op, device.type, dtype, options) is None
                and _first_use(name, impl, op, device, dtype, options) is None):
            return name, impl
    raise RuntimeError(
        f"no backend can run {op} on {device.type} {dtype} with {options}; "
        f"tried {auto_order(device.type)}"
    )


def _first_use(name, impl, op, device, dtype, options) -> str | None:
    """Why backend ``name`` failed its first-use check for this kind of call (None when it
    passed, or is not checked on this device type)."""
    if device.type not in _REGISTRY[name].verify_on:
        return None
    from . import first_use
    return first_use.check(name, impl, op, device, dtype, options)


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
