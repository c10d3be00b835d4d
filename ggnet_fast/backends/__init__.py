"""Implementations of the guided attention operators and the registry that picks one.

Priority for ``backend="auto"`` (higher first) on each device:

========== ===== ====  ===========================================================
backend    cuda  cpu   what it is
========== ===== ====  ===========================================================
sdpa        40   15    ``combine="joint"`` only: PyTorch's fused attention (``backends/sdpa.py``)
triton      30    -    fused Triton kernels, O(N) memory (``backends/triton/``)
cuda        25    -    fused CUDA C++ kernels (``csrc/cuda``)
cpu          -   20    fused C++/OpenMP kernels in the compiled extension (``csrc/cpu``)
reference   10   10    plain PyTorch, materialising, float32/float64 internally
eager        -    -    the released code's formula in the input dtype (a baseline)
========== ===== ====  ===========================================================

``triton`` and ``cuda`` have never run on a GPU: each kind of call is checked against the
reference before its first use on CUDA (``first_use.py``; ``GGNET_VERIFY_KERNELS=0``
turns it off), and a backend that fails is disabled with one warning.

Every backend implements :class:`Backend` and meets the contract of ``docs/kernels.md``;
``docs/backends.md`` says how to add one (one registration line below, and the contract
suite ``tests/backends/test_backend_contract.py`` tests it).
"""
from .registry import (
    Backend,
    auto_order,
    available_backends,
    backends_for,
    env_choice,
    get_backend,
    load_all,
    record_dispatch,
    register_backend,
    registered_backends,
    resolve,
    unavailable_reason,
)

register_backend("reference", "ggnet_fast.backends.reference", {"cuda": 10, "cpu": 10})
register_backend("eager", "ggnet_fast.backends.eager", {})
# Neither has run on a GPU yet (compiled, interpreted and host-emulated in CI): on CUDA
# each kind of call is checked against the reference before its first use
# (first_use.py), and a mismatch disables the backend with one warning.
register_backend("triton", "ggnet_fast.backends.triton", {"cuda": 30}, verify_on=("cuda",))
register_backend("cuda", "ggnet_fast.backends.extension:CUDA", {"cuda": 25},
                 verify_on=("cuda",))
register_backend("cpu", "ggnet_fast.backends.extension:CPU", {"cpu": 20})
# combine="joint": on the CPU our fused kernels measured faster than ATen's flash kernel
# (docs/cpu_backend.md, "Joint softmax"), so sdpa is their fallback there; on CUDA it stays
# first until a GPU run of benchmarks/gpu_check.sh has timed Triton's joint kernels.
register_backend("sdpa", "ggnet_fast.backends.sdpa", {"cuda": 40, "cpu": 15})
load_all()

__all__ = [
    "Backend",
    "auto_order",
    "available_backends",
    "backends_for",
    "env_choice",
    "get_backend",
    "record_dispatch",
    "register_backend",
    "registered_backends",
    "resolve",
    "unavailable_reason",
]
