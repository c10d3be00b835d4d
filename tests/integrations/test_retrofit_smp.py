"""Retrofitting GuidedNonLocal into segmentation_models_pytorch models."""
import copy

import pytest
import torch

smp = pytest.importorskip("segmentation_models_pytorch")

from retrofit_checks import (
    block_of,
    check_attends,
    check_gamma_gradient_at_init,
    retrofit_copy,
    same,
    set_gamma,
)

from ggnet_fast.integrations import retrofit, retrofit_smp
from ggnet_fast.nn import GuidedNonLocal

#: name, constructor kwargs, input side.  Narrow decoders keep the suite fast on two CPU
#: cores (the hook does not depend on them); PAN's feature pyramid attention pools the
#: stride-16 map three more times, so it needs a 128 input.
UNET_DECODER = {"decoder_channels": (32, 16, 16, 8, 8)}
ARCHITECTURES = [
    ("Unet", UNET_DECODER, 64),
    ("UnetPlusPlus", UNET_DECODER, 64),
    ("FPN", {"decoder_pyramid_channels": 32, "decoder_segmentation_channels": 32}, 64),
    ("DeepLabV3", {"decoder_channels": 32}, 64),
    ("DeepLabV3Plus", {"decoder_channels": 32}, 64),
    ("Linknet", {}, 64),
    ("PSPNet", {"psp_out_channels": 32}, 64),
    ("MAnet", {**UNET_DECODER, "decoder_pab_channels": 16}, 64),
    ("PAN", {"decoder_channels": 16}, 128),
    ("UPerNet", {"decoder_channels": 32}, 64),
    ("Segformer", {"decoder_segmentation_channels": 32}, 64),
]

def build(name, encoder="resnet18", **kwargs):
    return getattr(smp, name)(encoder, encoder_weights=None, in_channels=3, classes=2, **kwargs)


@pytest.mark.parametrize("name, kwargs, side", ARCHITECTURES, ids=[a[0] for a in ARCHITECTURES])
def test_identity_at_init_then_attends(name, kwargs, side, seed):
    original = build(name, **kwargs)
    x = torch.randn(1, 3, side, side)
    model, expected, got = retrofit_copy(original, x, retrofit)
    assert same(expected, got), f"{name}: output changed at gamma = 0 (seed {seed})"

    block = block_of(model)
    channels = model.encoder.out_channels
    assert isinstance(block, GuidedNonLocal) and any(m is block for m in model.modules())
    assert (block.in_channels, block.guide_channels) == (channels[-1], channels[-2])
    assert block.combine == "joint" and block.resize_guide

    check_attends(model, x, expected)


def test_mix_transformer_segformer_and_its_empty_level(seed):
    # mit_b0's out_channels are (3, 0, 32, 64, 160, 256): level 1 is an empty placeholder
    original = build("Segformer", encoder="mit_b0", decoder_segmentation_channels=32)
    x = torch.randn(1, 3, 64, 64)
    model, expected, got = retrofit_copy(original, x, retrofit)
    assert same(expected, got)
    assert block_of(model).guide_channels == 160
    with pytest.raises(ValueError, match="empty placeholder") as err:
        retrofit(build("Segformer", encoder="mit_b0"), guide_level=1)
    assert "256 ch" in str(err.value)


def test_dpt_vit_encoder(seed):
    pytest.importorskip("timm")
    original = smp.DPT("tu-vit_tiny_patch16_224", encoder_weights=None, dynamic_img_size=True)
    x = torch.randn(1, 3, 64, 64)
    model, expected, got = retrofit_copy(original, x, retrofit)
    assert same(expected, got)
    set_gamma(model, 1.0)
    with torch.no_grad():
        assert not torch.allclose(model(x), expected)


def test_chosen_levels_and_block_options(seed):
    original = build("Unet", **UNET_DECODER)
    x = torch.randn(1, 3, 64, 64)
    model, expected, got = retrofit_copy(original, x, retrofit_smp, level=3, guide_level=1,
                                         key_channels=16, combine="joint")
    assert same(expected, got)
    block = block_of(model)
    assert (model.guided_attention.level, model.guided_attention.guide_level) == (3, 1)
    assert (block.in_channels, block.guide_channels, block.theta.out_channels) == (128, 64, 16)
    check_gamma_gradient_at_init(model, x)
    check_attends(model, x, expected)


def test_guided_product_and_combine_choice():
    assert block_of(retrofit(build("FPN"), attention="guided-product")).combine == "product"
    assert block_of(retrofit(build("FPN"), combine="product")).combine == "product"
    with pytest.raises(ValueError, match="product"):
        retrofit(build("FPN"), attention="guided-product", combine="joint")


def test_errors_name_what_exists():
    model = build("Unet")
    with pytest.raises(ValueError, match="available levels") as err:
        retrofit(model, level=9)
    assert "512 ch" in str(err.value) and "input image" in str(err.value)
    with pytest.raises(ValueError, match="guide_level=-7"):
        retrofit(model, guide_level=-7)
    with pytest.raises(ValueError, match="guided-product"):
        retrofit(model, attention="cbam")
    assert not hasattr(model, "guided_attention") and not model.encoder._forward_hooks
    retrofit(model)
    with pytest.raises(ValueError, match="already retrofitted"):
        retrofit(model)
    with pytest.raises(TypeError, match="segmentation_models_pytorch"):
        retrofit_smp(torch.nn.Conv2d(3, 3, 1))


def test_state_dict_round_trip_and_deepcopy(seed):
    x = torch.randn(1, 3, 64, 64)
    trained = retrofit(build("DeepLabV3Plus", decoder_channels=32)).eval()
    with torch.no_grad():                               # as if it had trained
        for p in block_of(trained).parameters():
            p.add_(torch.randn_like(p) * 0.1)
        set_gamma(trained, 0.3)
        expected = trained(x)
    state = trained.state_dict()
    assert "guided_attention.block.gamma" in state and "encoder.conv1.weight" in state

    fresh = retrofit(build("DeepLabV3Plus", decoder_channels=32)).eval()
    fresh.load_state_dict(state, strict=True)
    with torch.no_grad():
        assert torch.equal(fresh(x), expected)

    twin = copy.deepcopy(trained)                       # the hook follows the copy's block
    set_gamma(twin, 0.0)
    with torch.no_grad():
        assert torch.equal(trained(x), expected)
        assert not torch.allclose(twin(x), expected)


def test_frozen_encoder_leaves_block_trainable():
    model = retrofit(build("Linknet"))
    model.freeze_encoder()
    assert all(p.requires_grad for p in block_of(model).parameters())


def test_torch_compile_matches_eager(seed):
    """``torch.compile(backend="aot_eager", fullgraph=True)``: the hook and the block
    trace into one graph.  Inductor works too but takes ~55 s to compile on a 2-core
    CPU.  float32 tolerance: rtol = atol = 1e-4 (measured differences ~2e-6)."""
    model = retrofit(build("Unet", **UNET_DECODER), key_channels=64).eval()
    set_gamma(model, 0.5)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        eager = model(x)
        compiled = torch.compile(model, backend="aot_eager", fullgraph=True)(x)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
