"""The drop-in modules: shapes, guidance handling, residual modes, compile, autocast."""
import pytest
import torch
from torch import nn

from ggnet_fast import GlobalGuidanceBlock, GuidedChannelAttention, GuidedNonLocal
from ggnet_fast.backends import record_dispatch
from ggnet_fast.ops import guided_spatial_attention


def test_guided_non_local_matches_the_operator_on_projections(seed):
    block = GuidedNonLocal(6, guide_channels=4, key_channels=3, residual="fixed").double()
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    g = torch.randn(2, 4, 5, 7, dtype=torch.float64)
    flat = lambda t: t.flatten(2).transpose(1, 2)  # noqa: E731
    expected = guided_spatial_attention(flat(block.theta(x)), flat(block.phi(x)),
                                        flat(block.eta(g)), flat(block.rho(g)), flat(block.mu(x)),
                                        combine="joint", backend="reference")
    expected = expected.transpose(1, 2).reshape(2, 6, 5, 7) + x
    torch.testing.assert_close(block(x, g), expected, rtol=1e-12, atol=1e-12)


def test_learnable_gamma_starts_at_identity_and_gets_gradient(seed):
    block = GuidedNonLocal(4, guide_channels=3)
    x, g = torch.randn(2, 4, 6, 5), torch.randn(2, 3, 6, 5)
    y = block(x, g)
    torch.testing.assert_close(y, x)
    y.square().sum().backward()
    assert block.gamma.grad is not None and block.gamma.grad.abs().item() > 0
    assert "gamma" in dict(block.named_parameters())
    fixed = GuidedNonLocal(4, guide_channels=3, residual="fixed")
    assert "gamma" not in dict(fixed.named_parameters()) and fixed.gamma.item() == 1.0


def test_guide_size_mismatch_raises_unless_resize_requested(seed):
    x, g = torch.randn(1, 4, 8, 8), torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError, match="resize_guide=True"):
        GuidedNonLocal(4, 3)(x, g)
    with pytest.raises(ValueError, match="resize_guide=True"):
        GuidedChannelAttention(4, 3)(x, g)
    assert GuidedNonLocal(4, 3, resize_guide=True)(x, g).shape == x.shape
    assert GuidedChannelAttention(4, 3, resize_guide=True)(x, g).shape == x.shape


@pytest.mark.parametrize("module", [GuidedNonLocal, GuidedChannelAttention])
def test_bad_feature_maps_are_named(module):
    block = module(4, 3)
    with pytest.raises(ValueError, match=r"x must have shape \[B, 4, H, W\]|y must have shape"):
        block(torch.randn(4, 8, 8), torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"guide must have 3 channels"):
        block(torch.randn(1, 4, 8, 8), torch.randn(1, 5, 8, 8))
    with pytest.raises(ValueError, match="guide has batch 2 but"):
        block(torch.randn(1, 4, 8, 8), torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="residual must be one of"):
        module(4, 3, residual="none")


def test_channel_block_se_and_projection(seed):
    block = GuidedChannelAttention(6, guide_channels=10, residual="fixed")
    assert isinstance(block.guide_proj, nn.Conv2d)
    y, g = torch.randn(2, 6, 5, 3), torch.randn(2, 10, 5, 3)
    out = block(y, g)
    assert out.shape == y.shape
    out.sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    plain = GuidedChannelAttention(6, use_se=False, gram_normalization="positions")
    assert isinstance(plain.se, nn.Identity)
    with pytest.raises(ValueError, match="gram_normalization"):
        GuidedChannelAttention(6, gram_normalization="sqrt")


def test_global_guidance_block_runs_both_blocks(seed):
    block = GlobalGuidanceBlock(8, 5, spatial={"key_channels": 4},
                                channel={"stabilize": "max-minus"}, resize_guide=True)
    x, g = torch.randn(2, 8, 6, 7), torch.randn(2, 5, 12, 14)
    with record_dispatch() as calls:
        out = block(x, g)
    assert out.shape == x.shape
    assert [op for op, _ in calls] == ["spatial", "channel"]
    out.mean().backward()
    assert block.spatial.gamma.grad is not None and block.channel.gamma.grad is not None
    unguided = GlobalGuidanceBlock(8, spatial=None, channel=None)
    assert unguided(x, torch.randn(2, 8, 6, 7)).shape == x.shape


class TinySegmenter(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.guide = nn.Conv2d(3, 4, 3, padding=1)
        self.attn = GuidedNonLocal(8, 4, key_channels=4, residual="fixed")
        self.head = nn.Conv2d(8, 1, 1)

    def forward(self, img):
        return self.head(self.attn(torch.relu(self.stem(img)), self.guide(img)))


def test_torch_compile_fullgraph_matches_eager(seed):
    model = TinySegmenter().eval()
    img = torch.randn(2, 3, 9, 11)
    compiled = torch.compile(model, fullgraph=True)  # inductor
    with torch.no_grad():
        torch.testing.assert_close(compiled(img), model(img), rtol=1e-5, atol=1e-5)


def test_autocast_runs_and_stays_close(seed):
    model = TinySegmenter()
    img = torch.randn(2, 3, 9, 11)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(img)
    out.float().sum().backward()
    torch.testing.assert_close(out.float(), model(img), rtol=0.05, atol=0.05)


@pytest.mark.parametrize("module", [GuidedNonLocal, GuidedChannelAttention, GlobalGuidanceBlock])
def test_empty_or_integer_feature_maps_are_named(module):
    """An empty map (H = 0 or B = 0) or integer input is a ValueError/TypeError naming the
    argument, not a raw convolution error."""
    block = module(4, 3)
    arg = "y" if module is GuidedChannelAttention else "x"
    with pytest.raises(ValueError, match=rf"^{arg} must not be empty.*\(1, 4, 0, 8\)"):
        block(torch.randn(1, 4, 0, 8), torch.randn(1, 3, 0, 8))
    with pytest.raises(ValueError, match=r"^guide must not be empty"):
        block(torch.randn(1, 4, 8, 8), torch.randn(1, 3, 8, 0))
    with pytest.raises(ValueError, match=rf"^{arg} must not be empty"):
        block(torch.randn(0, 4, 8, 8), torch.randn(0, 3, 8, 8))
    with pytest.raises(TypeError, match=rf"^{arg} must have a floating dtype.*torch.int64"):
        block(torch.ones(1, 4, 8, 8, dtype=torch.long), torch.randn(1, 3, 8, 8))
    with pytest.raises(TypeError, match=r"^guide must have a floating dtype.*torch.uint8"):
        block(torch.randn(1, 4, 8, 8), torch.ones(1, 3, 8, 8, dtype=torch.uint8))


def test_drop_in_modules_default_to_the_joint_softmax():
    """The form that attends is the default; the paper's product form stays one argument
    away (docs/results.md: on BUSI the product form is global average pooling)."""
    assert GuidedNonLocal(8, 4).combine == "joint"
    ggb = GlobalGuidanceBlock(8, 4, spatial={}, channel={})
    assert ggb.spatial.combine == "joint"
    assert GuidedNonLocal(8, 4, combine="product").combine == "product"


@pytest.mark.parametrize("preset,combine", [("paper", "product"), ("released", "matmul")])
def test_ggnet_presets_keep_their_spatial_combine(preset, combine):
    from ggnet_fast.models import build_ggnet
    model = build_ggnet(preset=preset, variant="full", backbone="resnet18", weights=None,
                        ggb_stride=16)
    assert model.ggb.spatial.combine == combine


@pytest.mark.parametrize("module,kwargs,name", [
    (GuidedNonLocal, {"combine": "prod"}, "combine"),
    (GuidedNonLocal, {"backend": "cpp"}, "backend"),
    (GuidedChannelAttention, {"combine": "joint"}, "combine"),
    (GuidedChannelAttention, {"stabilize": "max"}, "stabilize"),
    (GuidedChannelAttention, {"backend": "torch"}, "backend"),
    (GuidedChannelAttention, {"gram_normalization": "n"}, "gram_normalization"),
])
def test_bad_options_are_refused_when_the_module_is_built(module, kwargs, name):
    with pytest.raises(ValueError, match=f"^{name} must be one of"):
        module(8, 4, **kwargs)
    with pytest.raises(TypeError, match="backend must be a string"):
        module(8, 4, backend=None)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last],
                         ids=["nchw", "nhwc"])
def test_blocks_keep_the_input_memory_format(memory_format):
    """A block returns its input's layout (the attention output itself is channels-last):
    the layer after it picks the kernel it would without the block, so a gamma = 0 block
    leaves a network's output bit-identical."""
    x = torch.randn(2, 8, 5, 7).contiguous(memory_format=memory_format)
    g = torch.randn(2, 6, 5, 7).contiguous(memory_format=memory_format)
    for block in (GuidedNonLocal(8, 6, backend="reference"),
                  GuidedChannelAttention(8, 6, backend="reference")):
        y = block(x, g)
        assert y.is_contiguous(memory_format=memory_format), type(block).__name__
        assert torch.equal(y, x)  # gamma = 0 at initialisation
