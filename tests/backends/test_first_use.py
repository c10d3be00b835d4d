"""The first-use check of backends that have never run on a device kind
(``ggnet_fast/backends/first_use.py``).

On CUDA it guards ``triton`` and ``cuda``; here (no GPU) it is exercised on CPU tensors
with test backends registered with ``verify_on=("cpu",)``: one that is right, one that
is wrong (the joint softmax over the wrong axis), and Triton under the interpreter.  A wrong
backend is disabled with one warning naming the mismatch, ``auto`` takes the next backend,
an explicit request raises, each kind of call is checked once, and
``GGNET_VERIFY_KERNELS=0`` turns the check off.
"""
from __future__ import annotations

import types
import warnings

import pytest
import torch

from contract import spatial_inputs
from ggnet_fast import guided_channel_attention, guided_spatial_attention
from ggnet_fast.backends import first_use, record_dispatch, reference, registry


def _fake(spatial_fn, calls):
    def spatial(theta, phi, eta, rho, mu, *, combine="product", out_dtype=None):
        calls.append(theta.shape[1])
        return spatial_fn(theta, phi, eta, rho, mu, combine=combine, out_dtype=out_dtype)

    return types.SimpleNamespace(
        is_available=lambda: None,
        unsupported=lambda op, dev, dtype, options: None if op == "spatial" else "spatial only",
        spatial=spatial, channel=reference.channel)


def _wrong_axis(theta, phi, eta, rho, mu, *, combine="product", out_dtype=None):
    a = theta @ phi.transpose(-1, -2) + eta @ rho.transpose(-1, -2)
    return (a.softmax(-2) @ mu).to(out_dtype or theta.dtype)  # softmax over the queries


@pytest.fixture
def fakes(monkeypatch):
    """Backends "good" (the reference) and "bad" registered for auto on the CPU above every
    other backend, both checked on first use there."""
    calls = {"good": [], "bad": []}
    module = types.ModuleType("ggnet_fake_backends")
    module.GOOD = _fake(reference.spatial, calls["good"])
    module.BAD = _fake(_wrong_axis, calls["bad"])
    monkeypatch.setitem(__import__("sys").modules, "ggnet_fake_backends", module)
    saved = dict(registry._REGISTRY)
    registry.register_backend("good", "ggnet_fake_backends:GOOD", {"cpu": 100},
                              verify_on=("cpu",))
    registry.register_backend("bad", "ggnet_fake_backends:BAD", {"cpu": 200}, verify_on=("cpu",))
    monkeypatch.delenv("GGNET_VERIFY_KERNELS", raising=False)
    first_use.reset()
    yield calls
    for name in ("good", "bad"):
        registry._REGISTRY.pop(name, None)
        registry._LOADED.pop(name, None)
    registry._REGISTRY.update(saved)
    first_use.reset()


def test_a_wrong_backend_is_disabled_with_one_warning(fakes):
    inputs = spatial_inputs((1, 30, 4, 4, 6), torch.float32, scale=1.0)
    with pytest.warns(RuntimeWarning,
                      match=r"'bad' backend failed its first-use check.*differs from the float64"):
        with record_dispatch() as calls:
            guided_spatial_attention(*inputs, combine="joint")
    assert calls == [("spatial", "good")]  # auto took the next backend, which passed
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one warning, not one per call
        with record_dispatch() as calls:
            guided_spatial_attention(*inputs, combine="joint")
    assert calls == [("spatial", "good")]
    with pytest.raises(RuntimeError, match="'bad' is disabled for this spatial call"):
        guided_spatial_attention(*inputs, combine="joint", backend="bad")


def test_each_kind_of_call_is_checked_once(fakes):
    inputs = spatial_inputs((1, 30, 4, 4, 6), torch.float32, scale=1.0)
    for _ in range(3):
        guided_spatial_attention(*inputs, combine="joint", backend="good")
    assert fakes["good"].count(67) == 1  # the check's own case (N = 67), once
    guided_spatial_attention(*inputs, combine="product", backend="good")
    guided_spatial_attention(*(x.double() for x in inputs), combine="product", backend="good")
    assert fakes["good"].count(67) == 3  # a new mode, a new dtype class: checked again


def test_the_check_can_be_turned_off(fakes, monkeypatch):
    monkeypatch.setenv("GGNET_VERIFY_KERNELS", "0")
    inputs = spatial_inputs((1, 30, 4, 4, 6), torch.float32, scale=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with record_dispatch() as calls:
            guided_spatial_attention(*inputs, combine="joint")
    assert calls == [("spatial", "bad")] and 67 not in fakes["bad"]
    monkeypatch.setenv("GGNET_VERIFY_KERNELS", "yes")
    with pytest.raises(ValueError, match="GGNET_VERIFY_KERNELS must be one of"):
        guided_spatial_attention(*inputs, combine="joint")


def test_the_check_runs_in_inference_mode_and_leaves_the_rng_alone(fakes):
    inputs = spatial_inputs((1, 30, 4, 4, 6), torch.float32, scale=1.0)
    state = torch.get_rng_state()
    with torch.inference_mode(), pytest.warns(RuntimeWarning, match="'bad' backend"):
        guided_spatial_attention(*inputs, combine="joint")
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
def test_triton_passes_the_check(monkeypatch, dtype):
    """The real kernels (interpreted here) pass, every spatial mode and the channel."""
    from ggnet_fast.backends import unavailable_reason
    if unavailable_reason("triton") is not None:
        pytest.skip(unavailable_reason("triton"))
    impl = registry.get_backend("triton")
    for op, options in (("spatial", {"combine": "product"}), ("spatial", {"combine": "joint"}),
                        ("channel", {"combine": "matmul", "stabilize": "max-minus"})):
        assert first_use._compare(op, impl, torch.device("cpu"), dtype, options) is None, op
    y = torch.randn(2, 13, 67)
    assert guided_channel_attention(y, y, backend="triton").shape == y.shape
