"""The library-independent parts of ggnet_fast.integrations: the attention registry,
the dispatcher's errors and the lazy imports."""
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from ggnet_fast.integrations import ATTENTIONS, build_attention, register_attention, retrofit
from ggnet_fast.nn import GuidedNonLocal


def test_registry_builds_the_guided_blocks(seed):
    joint = build_attention("guided", 32, 16)
    assert isinstance(joint, GuidedNonLocal)
    assert (joint.combine, joint.resize_guide, joint.guide_channels) == ("joint", True, 16)
    assert build_attention("guided-product", 8, 8, resize_guide=False).combine == "product"
    x, guide = torch.randn(2, 32, 4, 5), torch.randn(2, 16, 8, 10)
    assert torch.equal(joint(x, guide), x)                  # gamma = 0 at initialisation
    with pytest.raises(ValueError, match=r"unknown attention 'nonlocal'; known: \['guided', "):
        build_attention("nonlocal", 8, 8)


class _Scaled(nn.Module):
    """A toy block: ``x + gamma * mean(guide)``."""

    def __init__(self, in_channels, guide_channels):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x, guide):
        return x + self.gamma * guide.mean()


def test_register_attention(monkeypatch):
    monkeypatch.setattr("ggnet_fast.integrations.registry.ATTENTIONS", dict(ATTENTIONS))
    from ggnet_fast.integrations import registry

    register_attention("scaled", _Scaled)
    assert isinstance(registry.build_attention("scaled", 4, 2), _Scaled)
    with pytest.raises(ValueError, match="already registered"):
        register_attention("scaled", _Scaled)
    register_attention("scaled", _Scaled, overwrite=True)
    assert "scaled" not in ATTENTIONS                       # monkeypatched copy only


def test_unsupported_model_is_a_type_error():
    with pytest.raises(TypeError, match="supported: segmentation_models_pytorch models"):
        retrofit(nn.Conv2d(3, 3, 1))


def test_libraries_are_imported_lazily_and_missing_ones_name_the_extra():
    """In a fresh interpreter where smp and timm cannot be imported: ggnet_fast and
    ggnet_fast.integrations import, retrofit's dispatch raises TypeError, and
    retrofit_smp / retrofit_timm raise ImportError naming the pip extra."""
    code = textwrap.dedent("""
        import sys
        for name in ("segmentation_models_pytorch", "timm"):
            sys.modules[name] = None                 # makes 'import name' raise ImportError
        import torch
        import ggnet_fast, ggnet_fast.integrations as I
        try:
            I.retrofit(torch.nn.Conv2d(1, 1, 1))
        except TypeError:
            pass
        for fn in (I.retrofit_smp, I.retrofit_timm):
            try:
                fn(torch.nn.Conv2d(1, 1, 1))
            except ImportError as err:
                assert "pip install ggnet_fast[integrations]" in str(err), err
            else:
                raise AssertionError(fn.__name__)
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
