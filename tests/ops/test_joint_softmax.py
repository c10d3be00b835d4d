"""``combine="joint"``: softmax(a + b) @ mu in the module and the model, through the backend
``auto`` picks on the CPU (the fused ``cpu`` kernels; ``sdpa`` without the extension).  The
operator itself (forward and every gradient against float64, every dtype) is in the contract
suite (tests/backends/test_backend_contract.py) and the NumPy check
(tests/backends/test_reference_backend.py)."""
from __future__ import annotations

import pytest
import torch

from ggnet_fast.backends import record_dispatch, unavailable_reason
from ggnet_fast.models import build_ggnet
from ggnet_fast.models.config import resolve_config
from ggnet_fast.nn import GuidedNonLocal

#: What ``auto`` runs combine="joint" on here: the fused C++ kernels, measured faster than
#: PyTorch's flash kernel (docs/cpu_backend.md), else sdpa.
JOINT_ON_CPU = "cpu" if unavailable_reason("cpu") is None else "sdpa"


@pytest.mark.parametrize("d_plus_dg_vs_c", ["narrower", "wider"])
def test_guided_non_local_joint_matches_float64_reference(seed, d_plus_dg_vs_c):
    channels, guide = (16, 8) if d_plus_dg_vs_c == "narrower" else (6, 10)
    key = 4 if d_plus_dg_vs_c == "narrower" else 8  # d + dg = 8 < C = 16, or 16 > C = 6
    block = GuidedNonLocal(channels, guide, combine="joint", key_channels=key,
                           guide_key_channels=key, residual="fixed").double()
    x = torch.randn(2, channels, 7, 5, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, guide, 7, 5, dtype=torch.float64, requires_grad=True)
    with record_dispatch() as calls:
        out = block(x, g)
    assert calls == [("spatial", JOINT_ON_CPU)]
    block.backend = "reference"
    ref = block(x, g)
    assert torch.allclose(out, ref, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(out.sum(), [x, g, *block.parameters()], allow_unused=True)
    refs = torch.autograd.grad(ref.sum(), [x, g, *block.parameters()], allow_unused=True)
    for a, b in zip(grads, refs):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_joint_variant_is_preset_independent_and_overridable():
    for preset in ("paper", "released"):
        assert resolve_config(preset, "joint", "resnet18").spatial_combine == "joint"
        assert resolve_config(preset, "full", "resnet18").spatial_combine != "joint"
    assert resolve_config("paper", "full", "resnet18",
                          spatial_combine="joint").spatial_combine == "joint"
    assert resolve_config("paper", "joint", "resnet18",
                          spatial_combine="product").spatial_combine == "product"


def test_joint_model_runs_the_fused_joint_backend_and_trains():
    torch.manual_seed(0)
    model = build_ggnet(preset="paper", variant="joint", backbone="resnet18", weights=None,
                        ggb_stride=8)
    x = torch.randn(2, 3, 64, 64)
    with record_dispatch() as calls:
        out = model(x)
    assert ("spatial", JOINT_ON_CPU) in calls
    out.logits.mean().backward()
    spatial = [p for n, p in model.named_parameters() if "theta" in n or "phi" in n]
    assert spatial and all(p.grad is not None and torch.isfinite(p.grad).all() for p in spatial)
