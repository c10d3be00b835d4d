"""Backend selection: auto, explicit names, GGNET_BACKEND, and honest failures."""
import pytest
import torch

from ggnet_fast import guided_spatial_attention
from ggnet_fast.backends import (auto_order, available_backends, record_dispatch,
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
    assert auto_order("cuda")[0] == "triton"


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
