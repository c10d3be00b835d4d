"""Checks shared by the retrofit tests (tests/integrations/test_retrofit_*.py)."""
from __future__ import annotations

import copy

import torch


def flatten(output) -> list[torch.Tensor]:
    """A model's output (tensor, list/tuple, dict) as a list of tensors."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        return [t for key in output for t in flatten(output[key])]
    return [t for item in output for t in flatten(item)]


def same(a, b) -> bool:
    """Bit-identical outputs (same structure, dict keys and values)."""
    if isinstance(a, dict) and list(a) != list(b):
        return False
    fa, fb = flatten(a), flatten(b)
    return len(fa) == len(fb) and all(torch.equal(x, y) for x, y in zip(fa, fb))


def retrofit_copy(original: torch.nn.Module, x: torch.Tensor, retrofit, **kwargs):
    """``(retrofitted deepcopy, original output, retrofitted output)``, both in eval mode
    without grad, the copy retrofitted by ``retrofit(copy, **kwargs)``."""
    original.eval()
    model = copy.deepcopy(original)
    assert retrofit(model, **kwargs) is model, "retrofit must modify the model in place"
    model.eval()              # a deepcopied fx GraphModule (timm's FeatureGraphNet) loses it
    with torch.no_grad():
        return model, original(x), model(x)


def block_of(model: torch.nn.Module) -> torch.nn.Module:
    return model.guided_attention.block


def set_gamma(model: torch.nn.Module, value: float) -> None:
    with torch.no_grad():
        block_of(model).gamma.fill_(value)


def check_attends(model: torch.nn.Module, x: torch.Tensor, expected) -> None:
    """With gamma != 0 the block changes the output and every projection of it receives
    a gradient (one forward and backward in eval mode: BatchNorm statistics untouched)."""
    block = block_of(model)
    model.eval()
    set_gamma(model, 0.5)
    model.zero_grad(set_to_none=True)
    output = model(x)
    assert not all(torch.allclose(a, b) for a, b in zip(flatten(output), flatten(expected))), \
        "gamma != 0 changed nothing"
    sum(t.float().square().mean() for t in flatten(output)).backward()
    for name in ("theta", "phi", "mu", "eta", "rho"):
        grad = getattr(block, name).weight.grad
        assert grad is not None and torch.isfinite(grad).all(), name
        assert grad.abs().max().item() > 0, f"{name}.weight receives no gradient"
    assert block.gamma.grad is not None and block.gamma.grad.abs().item() > 0


def check_gamma_gradient_at_init(model: torch.nn.Module, x: torch.Tensor) -> None:
    """At gamma = 0 the block is still on the loss's path: gamma gets a gradient."""
    block = block_of(model)
    assert block.gamma.item() == 0
    model.zero_grad(set_to_none=True)
    sum(t.float().square().mean() for t in flatten(model(x))).backward()
    assert block.gamma.grad is not None and block.gamma.grad.abs().item() > 0
