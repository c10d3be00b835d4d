"""One check shared by the compiled backends' tests: torch.compile(fullgraph=True) traces
both public operators on a backend and matches eager, forward and every input gradient."""
import torch

from ggnet_fast import guided_channel_attention, guided_spatial_attention


def assert_compile_matches_eager(backend: str, spatial_inputs, y, g, seed) -> None:
    """``spatial_inputs``: theta, phi, eta, rho, mu; ``y``, ``g``: [B, C, N] (float32)."""
    torch._dynamo.reset()

    def both(theta, phi, eta, rho, mu, y, g):
        o = guided_spatial_attention(theta, phi, eta, rho, mu, backend=backend)
        z = guided_channel_attention(y, g, stabilize="max-minus", backend=backend)
        return o.sum() + z.square().sum()

    compiled = torch.compile(both, fullgraph=True, backend="aot_eager")
    leaves = [x.clone().requires_grad_() for x in (*spatial_inputs, y, g)]
    eager_leaves = [x.clone().requires_grad_() for x in (*spatial_inputs, y, g)]
    out = compiled(*leaves)
    out.backward()
    ref = both(*eager_leaves)
    ref.backward()
    assert torch.allclose(out, ref, rtol=1e-6, atol=1e-6), f"seed={seed}"
    for a, b in zip(leaves, eager_leaves):
        assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-7), f"seed={seed}"
