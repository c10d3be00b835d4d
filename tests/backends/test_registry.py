"""Backend selection: auto, explicit names, GGNET_BACKEND, registration of a new backend,
and honest failures (a missing dependency is a reason, a configuration error an error)."""
import pytest
import torch

from ggnet_fast import guided_spatial_attention
from ggnet_fast.backends import (auto_order, available_backends, backends_for, record_dispatch,
                                 registered_backends, unavailable_reason)


def inputs():
    return [torch.randn(1, 10, k) for k in (3, 3, 2, 2, 4)]


def test_all_backends_registered_and_reference_available():
    assert {"reference", "eager", "triton", "cuda", "cpu"} <= set(registered_backends())
    assert {"reference", "eager"} <= set(available_backends())
    assert unavailable_reason("reference") is None


def test_auto_picks_the_first_backend_that_can_run(monkeypatch):
    monkeypatch.delenv("GGNET_BACKEND", raising=False)
    with record_dispatch() as calls:
        guided_spatial_attention(*inputs(), combine="matmul")
    # Only the reference implements combine="matmul" (the O(N^3) released variant).
    assert calls == [("spatial", "reference")]
    order = auto_order("cpu")
    assert order.index("cpu") < order.index("reference")
    assert "eager" not in order and "triton" not in auto_order("cpu")
    # sdpa runs only combine="joint", so the product operator's first choice on CUDA is triton.
    assert auto_order("cuda")[:2] == ["sdpa", "triton"]
    with record_dispatch() as calls:
        guided_spatial_attention(*inputs(), combine="joint")
        guided_spatial_attention(*inputs())
    # combine="joint" on the CPU: the fused cpu kernels first (measured faster), sdpa next
    assert calls == [("spatial", "cpu"), ("spatial", "cpu")]
    assert order.index("cpu") < order.index("sdpa") < order.index("reference")


def test_environment_variable_overrides_auto(monkeypatch):
    monkeypatch.setenv("GGNET_BACKEND", "eager")
    with record_dispatch() as calls:
        guided_spatial_attention(*inputs())
    assert calls == [("spatial", "eager")]
    # An explicit argument wins over the environment.
    with record_dispatch() as calls:
        guided_spatial_attention(*inputs(), backend="reference")
    assert calls == [("spatial", "reference")]


def test_unavailable_backend_raises_with_reason(monkeypatch):
    monkeypatch.setattr("ggnet_fast.backends.registry._LOAD_ERRORS",
                        {"cuda": "the extension was built without CUDA"})
    monkeypatch.setattr("ggnet_fast.backends.registry._LOADED", {})
    with pytest.raises(RuntimeError, match="backend 'cuda' is not available: the extension"):
        guided_spatial_attention(*inputs(), backend="cuda")


def test_record_dispatch_nests():
    with record_dispatch() as outer:
        guided_spatial_attention(*inputs(), backend="reference")
        with record_dispatch() as inner:
            guided_spatial_attention(*inputs(), backend="eager")
    assert outer == [("spatial", "reference"), ("spatial", "eager")]
    assert inner == [("spatial", "eager")]


def test_a_new_backend_is_used_by_registering_it(monkeypatch):
    """One registration line: ``auto`` picks it where it ranks first, the public lists show it."""
    from ggnet_fast.backends import get_backend, register_backend, registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.delenv("GGNET_BACKEND", raising=False)
    register_backend("copy-of-reference", "ggnet_fast.backends.reference", {"cpu": 99})
    assert auto_order("cpu")[0] == "copy-of-reference"
    with record_dispatch() as calls:
        guided_spatial_attention(*inputs())
    assert calls == [("spatial", "copy-of-reference")]
    assert "copy-of-reference" in backends_for("spatial", "cpu", torch.float32)
    assert get_backend("copy-of-reference") is get_backend("reference")


def test_missing_dependency_makes_a_backend_unavailable_with_the_reason(monkeypatch):
    from ggnet_fast.backends import register_backend, registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    register_backend("needs-a-package", "a_package_that_is_not_installed", {"cpu": 99})
    reason = unavailable_reason("needs-a-package")
    assert "ModuleNotFoundError" in reason and "a_package_that_is_not_installed" in reason
    with record_dispatch() as calls:
        guided_spatial_attention(*inputs())
    assert calls[0][1] != "needs-a-package"  # auto skips it
    with pytest.raises(RuntimeError, match="backend 'needs-a-package' is not available"):
        guided_spatial_attention(*inputs(), backend="needs-a-package")


def test_configuration_error_is_raised_not_swallowed(monkeypatch):
    """Anything but a missing dependency propagates: auto must never fall back silently."""
    from ggnet_fast.backends import register_backend, registry

    def misconfigured(name):
        raise ValueError("environment variable GGNET_SOMETHING must be one of ['a'], got 'b'")

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    register_backend("misconfigured", "somewhere", {"cpu": 99})
    monkeypatch.setattr(registry.importlib, "import_module", misconfigured)
    with pytest.raises(ValueError, match="GGNET_SOMETHING"):
        guided_spatial_attention(*inputs())


def test_a_typo_in_a_triton_switch_raises_naming_the_variable():
    """GGNET_TRITON_R_MODE=typo used to make the whole triton backend 'unavailable', so that
    auto silently ran the O(N^2) reference instead."""
    import os
    import subprocess
    import sys

    code = ("import torch, ggnet_fast\n"
            "x = [torch.randn(1, 9, 2) for _ in range(5)]\n"
            "ggnet_fast.guided_spatial_attention(*x, backend='triton')\n")
    env = {**os.environ, "GGNET_TRITON_R_MODE": "o3", "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0
    assert "ValueError" in proc.stderr and "GGNET_TRITON_R_MODE" in proc.stderr, proc.stderr[-2000:]


def test_bad_backend_variable_names_the_variable(monkeypatch):
    monkeypatch.setenv("GGNET_BACKEND", "referense")
    with pytest.raises(ValueError, match="GGNET_BACKEND"):
        guided_spatial_attention(*inputs())


def test_env_choice_reads_now_and_names_the_variable(monkeypatch):
    from ggnet_fast.backends import env_choice

    monkeypatch.delenv("GGNET_TEST_SWITCH", raising=False)
    assert env_choice("GGNET_TEST_SWITCH", ("a", "b"), "a") == "a"
    monkeypatch.setenv("GGNET_TEST_SWITCH", "b")
    assert env_choice("GGNET_TEST_SWITCH", ("a", "b"), "a") == "b"
    monkeypatch.setenv("GGNET_TEST_SWITCH", "c")
    with pytest.raises(ValueError, match="GGNET_TEST_SWITCH must be one of"):
        env_choice("GGNET_TEST_SWITCH", ("a", "b"), "a")
