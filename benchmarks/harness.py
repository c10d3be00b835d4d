"""Shared benchmark helpers: providers, timing with synchronisation, peak memory.

Providers are the registry's backends that accept the call (its public
``backends_for`` / ``get_backend``; ``docs/backends.md``) plus the two compositions a
user would write by hand.  FLOPs: ``ggnet_fast.ops.spatial_flops`` (one convention for
every provider, see its docstring).

Peak memory is *measured*, never estimated:

* CUDA: ``torch.cuda.max_memory_allocated`` above what was allocated before the call
  (inputs already on the device are excluded);
* CPU: the process's peak resident set (``VmHWM`` in ``/proc/self/status``), reset
  through ``/proc/self/clear_refs`` before the call, minus the resident set before it.
"""
from __future__ import annotations

import functools
import os

import torch

from ggnet_fast import ops
from ggnet_fast.backends import backends_for, get_backend
from ggnet_fast.backends.registry import call_options
from ggnet_fast.backends import eager as eager_backend


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def synchronize(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_extra_bytes(fn, dev: torch.device) -> int | None:
    """Run ``fn()`` once; return the peak memory it needed above what existed before."""
    if dev.type == "cuda":
        synchronize(dev)
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        fn()
        synchronize(dev)
        return torch.cuda.max_memory_allocated(dev) - before
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident set
    before = _proc_status_kb("VmRSS")
    fn()
    return max(0, (_proc_status_kb("VmHWM") - before) * 1024)


def eager_spatial(theta, phi, eta, rho, mu):
    """What a user writes by hand, following the released code (input dtype throughout)."""
    sx = torch.softmax(theta @ phi.transpose(-1, -2), dim=-1)
    sg = torch.softmax(eta @ rho.transpose(-1, -2), dim=-1)
    return torch.softmax(sx * sg, dim=-1) @ mu


#: The joint softmax as a user writes it, ``softmax(a + b) @ mu`` in the input dtype: the
#: registry's ``eager`` backend is exactly that composition.
eager_joint = functools.partial(eager_backend.spatial, combine="joint")


def eager_channel(y, g):
    sz = torch.softmax(y @ y.transpose(-1, -2), dim=-1)
    sg = torch.softmax(g @ g.transpose(-1, -2), dim=-1)
    return torch.softmax(sz * sg, dim=-1) @ y


def compiled(fn):
    """A fresh static-shape ``torch.compile`` of ``fn`` for one benchmark case.

    Dynamo's cache is reset first: Dynamo caches per code object, so one compiled
    function shared by every case would recompile per shape until the recompile limit (8)
    and then fall back to eager (with a warning), and later cases would not measure what
    ``torch.compile`` does for that one shape."""
    torch._dynamo.reset()
    return torch.compile(fn, dynamic=False)


def providers(op: str, dev: torch.device, dtype: torch.dtype) -> list[str]:
    """Every backend that can run ``op`` here, plus the two user baselines."""
    # the registry's "eager" backend is the formula of the "eager" provider below
    names = [n for n in backends_for(op, dev.type, dtype) if n != "eager"]
    return names + ["eager", "compile"]


def unsupported_reason(provider: str, op: str, dev: torch.device, dtype: torch.dtype,
                       shape: dict, **options) -> str | None:
    """Why ``provider`` cannot run this exact case (None if it can); baselines always can."""
    if provider in ("eager", "compile"):
        return None
    opts = call_options(dtype, shape=shape, **options)
    return get_backend(provider).unsupported(op, dev.type, dtype, opts)


def op_fn(op: str, provider: str):
    """What ``provider`` runs for ``op`` ("spatial", "spatial-joint" or "channel"): a
    backend through the public operator, or the hand-written formula eagerly or under
    torch.compile."""
    eager, public = {
        "spatial": (eager_spatial, ops.guided_spatial_attention),
        "spatial-joint": (eager_joint,
                          functools.partial(ops.guided_spatial_attention, combine="joint")),
        "channel": (eager_channel, ops.guided_channel_attention)}[op]
    if provider == "eager":
        return eager
    if provider == "compile":
        return compiled(eager)
    return functools.partial(public, backend=provider)


def spatial_fn(provider: str):
    return op_fn("spatial", provider)
