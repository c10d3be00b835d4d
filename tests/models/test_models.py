"""GG-Net model tests: shapes for every preset/variant, config, weights, backends, gradients.

CPU-sized: resnet18 backbone throughout (the architecture above the backbone is the same
for every backbone; the ResNeXt-101 parameter counts are checked by construction only).
"""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet as tv_resnet

from ggnet_fast.backends import record_dispatch, unavailable_reason
from ggnet_fast.backends import registry
from ggnet_fast.losses import GGNetLoss
from ggnet_fast.models import (PRESETS, VARIANT_SPECS, VARIANTS, GGNetOutput, build_ggnet,
                               count_parameters, parameter_table)
from ggnet_fast.models.ablation_blocks import (ChannelMeanBlock, ChannelNonLocalBlock,
                                               MeanPoolBlock, NonLocalBlock)
from ggnet_fast.models.boundary import BoundaryDetection, boundary_map

CASES = [(p, v) for p in PRESETS for v in VARIANTS]
CONTRACT_VARIANTS = ("baseline", "snlb", "cnlb", "snlb+guidance", "cnlb+guidance", "ggb", "full",
                     "bd-output", "no-boundary-supervision", "gap", "pooled")


def expected_counts(preset: str, variant: str) -> tuple[int, int]:
    """(number of side logits, number of boundary maps) a variant must return."""
    spec = VARIANT_SPECS[variant]
    output_bd = (preset == "released") if spec.output_bd == "preset" else bool(spec.output_bd)
    sides = 4 if spec.side_bd else 0
    edges = (sides + int(output_bd)) if spec.boundary_supervision else 0
    return sides, edges


def check_output(out, batch: int, size) -> None:
    assert isinstance(out, GGNetOutput)
    shape = (batch, 1, *size)
    assert tuple(out.logits.shape) == shape
    assert isinstance(out.side_logits, tuple) and isinstance(out.boundaries, tuple)
    for t in (out.logits, *out.side_logits, *out.boundaries):
        assert tuple(t.shape) == shape
        assert torch.isfinite(t).all()


def test_contract_names():
    assert PRESETS == ("paper", "released")
    assert set(CONTRACT_VARIANTS) <= set(VARIANTS)


def _matmul_at_stride4(preset: str, variant: str) -> bool:
    return preset == "released" and VARIANT_SPECS[variant].spatial == "guided"


@pytest.mark.parametrize("preset,variant", CASES)
def test_forward_backward_256(preset, variant, seed):
    """2x3x256x256 forward and backward through the preset's own loss.

    The released preset's guided spatial block is the O(N^3) matrix-product form at
    N = 4096 (~10 s per backward on 2 cores): at this size only ``full`` runs the backward
    among those variants, the other four run forward only; their backward is covered at
    61x90 (``test_forward_backward_non_square``) and 64x64 (``test_every_parameter_...``).
    """
    torch.manual_seed(seed)
    model = build_ggnet(preset=preset, variant=variant, backbone="resnet18", backend="reference")
    images = torch.randn(2, 3, 256, 256)
    masks = (torch.rand(2, 1, 256, 256) > 0.6).float()
    backward = variant == "full" or not _matmul_at_stride4(preset, variant)
    with torch.set_grad_enabled(backward):
        out = model(images)
    check_output(out, 2, (256, 256))
    assert (len(out.side_logits), len(out.boundaries)) == expected_counts(preset, variant), seed
    loss = GGNetLoss(preset)
    total = loss(out, masks)
    parts = {k: float(v.detach()) for k, v in loss.terms(out, masks).items()}
    assert torch.isfinite(total)
    assert abs(parts["total"] - total.item()) < 1e-4 * max(1, total.item())
    if not backward:
        return
    total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads), seed


@pytest.mark.parametrize("preset,variant", CASES)
@pytest.mark.parametrize("size", [(61, 90)])
def test_forward_backward_non_square(preset, variant, size, seed):
    """Non-square sizes that are not multiples of the strides: outputs at the input size."""
    model = build_ggnet(preset=preset, variant=variant, backbone="resnet18", backend="reference")
    out = model(torch.randn(2, 3, *size))
    check_output(out, 2, size)
    assert (len(out.side_logits), len(out.boundaries)) == expected_counts(preset, variant)
    loss = out.logits.square().mean() + sum(t.mean() for t in out.side_logits + out.boundaries)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("preset", PRESETS)
def test_eval_final_only(preset, seed):
    model = build_ggnet(preset=preset, variant="full", backbone="resnet18").eval()
    images = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        final = model(images, final_only=True)
        full = model(images)
    assert isinstance(final, torch.Tensor) and final.shape == (2, 1, 64, 80)
    torch.testing.assert_close(final, full.logits, rtol=0, atol=0)


def test_output_bd_is_applied(seed):
    """Released preset: final logits = maxpool3x3 of the decoder logits (F + |F - maxpool F|)."""
    model = build_ggnet(preset="released", variant="full", backbone="resnet18").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    edge = out.boundaries[-1]
    raw = out.logits - edge                      # F
    torch.testing.assert_close(out.logits, F.max_pool2d(raw, 3, 1, 1), rtol=1e-5, atol=1e-5)
    assert (edge >= 0).all()
    for side, e in zip(out.side_logits, out.boundaries[:4]):
        torch.testing.assert_close(side, F.max_pool2d(side - e, 3, 1, 1), rtol=1e-5, atol=1e-5)


def test_boundary_forms():
    x = torch.zeros(1, 1, 9, 9)
    x[..., 3:6, 3:6] = 2.0
    paper, released = boundary_map(x, "paper"), boundary_map(x, "released")
    assert (paper <= 0).all() and (released >= 0).all()
    torch.testing.assert_close(released, -paper)
    ring = (F.max_pool2d(x, 3, 1, 1) > 0) & (x == 0)       # pixels just outside the square
    assert torch.equal(released > 0, ring)
    seg, edge = BoundaryDetection("paper")(x)
    torch.testing.assert_close(seg, 2 * x - F.max_pool2d(x, 3, 1, 1))
    # The supervised map is |E| in both forms: positive on the ring, so a {0, 1}
    # boundary target can be matched (the paper's E <= 0 itself could not).
    torch.testing.assert_close(edge, released)
    seg_r, edge_r = BoundaryDetection("released")(x)
    torch.testing.assert_close(seg_r, F.max_pool2d(x, 3, 1, 1))
    torch.testing.assert_close(edge_r, released)
    with pytest.raises(ValueError, match="boundary_form"):
        BoundaryDetection("nope")


def test_config_round_trip(seed):
    model = build_ggnet(preset="released", variant="gap", backbone="resnet18", ggb_stride=8,
                        key_channels=64, use_se=True)
    config = json.loads(json.dumps(model.config))
    assert config["ggb_stride"] == 8 and config["key_channels"] == 64 and config["use_se"] is True
    assert config["weights"] is None
    rebuilt = build_ggnet(**config)
    assert rebuilt.config == model.config
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes
    rebuilt.load_state_dict(model.state_dict())


def test_preset_options_reach_the_blocks():
    paper = build_ggnet(preset="paper", variant="full", backbone="resnet18")
    released = build_ggnet(preset="released", variant="full", backbone="resnet18")
    assert paper.config["ggb_stride"] == 8 and released.config["ggb_stride"] == 4
    ps, pc = paper.ggb.spatial, paper.ggb.channel
    rs, rc = released.ggb.spatial, released.ggb.channel
    assert (ps.combine, pc.combine, pc.stabilize, ps.residual) == ("product", "product", None,
                                                                   "fixed")
    assert (rs.combine, rc.combine, rc.stabilize, rs.residual) == ("matmul", "matmul", "max-minus",
                                                                   "learnable")
    assert not isinstance(pc.se, nn.Identity) and isinstance(rc.se, nn.Identity)
    assert paper.bd.form == "paper" and released.bd.form == "released"
    assert isinstance(build_ggnet(variant="gap", backbone="resnet18").ggb.spatial, MeanPoolBlock)
    assert isinstance(build_ggnet(variant="snlb", backbone="resnet18").ggb.spatial, NonLocalBlock)
    assert build_ggnet(variant="baseline", backbone="resnet18").ggb is None
    pooled = build_ggnet(variant="pooled", backbone="resnet18")
    assert isinstance(pooled.ggb.spatial, MeanPoolBlock)
    assert isinstance(pooled.ggb.channel, ChannelMeanBlock)
    assert pooled.guidance is None and pooled.side_heads is not None  # no MLIF, side BD kept


def test_bad_arguments():
    with pytest.raises(ValueError, match="preset"):
        build_ggnet(preset="nope")
    with pytest.raises(ValueError, match="variant"):
        build_ggnet(variant="nope", backbone="resnet18")
    with pytest.raises(ValueError, match="backbone"):
        build_ggnet(backbone="vgg16")
    with pytest.raises(ValueError, match="ggb_stride"):
        build_ggnet(backbone="resnet18", ggb_stride=5)
    with pytest.raises(ValueError, match="spatial_combine"):
        build_ggnet(backbone="resnet18", spatial_combine="sum")
    with pytest.raises(TypeError, match="unknown GG-Net option"):
        build_ggnet(backbone="resnet18", not_an_option=1)
    model = build_ggnet(variant="baseline", backbone="resnet18")
    with pytest.raises(ValueError, match="images"):
        model(torch.randn(2, 1, 64, 64))
    with pytest.raises(TypeError, match="images"):
        model([1, 2, 3])


def test_parameter_counts_resnext101():
    """The paper's backbone family, built with weights=None (counts: docs/model.md)."""
    full = build_ggnet(preset="paper", variant="full", backbone="resnext101_32x8d")
    base = build_ggnet(preset="paper", variant="baseline", backbone="resnext101_32x8d")
    n_full, n_base = count_parameters(full), count_parameters(base)
    table = parameter_table(full)
    assert sum(table.values()) == n_full
    # torchvision's ResNeXt-101 32x8d without layer4 and fc: 88,791,336 - 28,745,728 - 2,049,000.
    assert table["backbone"] == 57_996_608
    assert 3.5e6 < n_full - n_base < 4.5e6          # GGB + MLIF + side heads
    assert count_parameters(full, trainable_only=False) == n_full


# --- backbone weights -------------------------------------------------------------------

def _saved_resnet18(tmp_path, wrap: bool = False):
    net = tv_resnet.resnet18(weights=None)
    for p in net.parameters():
        nn.init.normal_(p, std=0.02)
    state = net.state_dict()
    path = tmp_path / "resnet18.pth"
    saved = {"state_dict": {"module." + k: v for k, v in state.items()}} if wrap else state
    torch.save(saved, path)
    return path, state


@pytest.mark.parametrize("wrap", [False, True])
def test_backbone_weights_from_file(tmp_path, seed, wrap):
    path, state = _saved_resnet18(tmp_path, wrap)
    model = build_ggnet(variant="full", backbone="resnet18", weights=str(path))
    own = model.backbone.state_dict()
    for key in ("conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer3.1.bn2.bias"):
        torch.testing.assert_close(own[key], state[key], rtol=0, atol=0)
    assert model.weights_source == str(path) and model.config["weights"] is None
    assert not any(k.startswith(("layer4", "fc")) for k in own)


def test_backbone_weights_errors(tmp_path, monkeypatch):
    wrong = tmp_path / "resnet34.pth"
    torch.save(tv_resnet.resnet34(weights=None).state_dict(), wrong)
    with pytest.raises(ValueError, match="do not fit backbone resnet18"):
        build_ggnet(backbone="resnet18", weights=wrong)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_ggnet(backbone="resnet18", weights=str(tmp_path / "missing.pth"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_ggnet(backbone="resnet18", weights=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="neither an existing file"):
        build_ggnet(backbone="resnet18", weights="IMAGENET_NOPE")
    with pytest.raises(TypeError, match="weights"):
        build_ggnet(backbone="resnet18", weights=3)


def test_backbone_weights_enum_uses_cache_only(tmp_path, monkeypatch):
    """A torchvision weights enum loads from torchvision's cache and never downloads."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))

    def no_download(*args, **kwargs):
        raise AssertionError("must not download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    enum = tv_resnet.ResNet18_Weights.IMAGENET1K_V1
    with pytest.raises(FileNotFoundError, match="never downloads"):
        build_ggnet(backbone="resnet18", weights=enum)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    path, state = _saved_resnet18(tmp_path)
    target = cache / enum.url.rsplit("/", 1)[-1]
    path.rename(target)
    for weights in (enum, "IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1"):
        model = build_ggnet(backbone="resnet18", variant="baseline", weights=weights)
        torch.testing.assert_close(model.backbone.conv1.weight, state["conv1.weight"])
        assert model.weights_source == str(target)


# --- ablation blocks against explicit float64 formulas ----------------------------------

def test_nonlocal_block_matches_formula(seed):
    block = NonLocalBlock(6, key_channels=4, residual="fixed").double()
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64, requires_grad=True)
    y = block(x)
    q = block.theta(x).flatten(2).transpose(1, 2)
    k = block.phi(x).flatten(2).transpose(1, 2)
    v = block.mu(x).flatten(2).transpose(1, 2)
    ref = (torch.softmax(q @ k.transpose(1, 2), -1) @ v).transpose(1, 2).reshape(2, 6, 5, 7) + x
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, block.theta.weight), g)
    want = torch.autograd.grad(ref, (x, block.theta.weight), g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("stabilize", [None, "max-minus"])
def test_channel_nonlocal_block_matches_formula(seed, stabilize):
    block = ChannelNonLocalBlock(5, stabilize=stabilize, residual="fixed").double()
    x = torch.randn(2, 5, 4, 3, dtype=torch.float64) * 0.3
    y_flat = x.flatten(2)
    energy = y_flat @ y_flat.transpose(1, 2)
    if stabilize:
        energy = energy.amax(-1, keepdim=True) - energy
    ref = (torch.softmax(energy, -1) @ y_flat).reshape_as(x) + x
    torch.testing.assert_close(block(x), ref, rtol=1e-12, atol=1e-12)


def test_mean_pool_block(seed):
    block = MeanPoolBlock(4, residual="learnable")
    x = torch.randn(2, 4, 3, 5)
    torch.testing.assert_close(block(x), x)            # gamma starts at 0
    with torch.no_grad():
        block.gamma.fill_(0.5)
    mu = block.mu(x)
    torch.testing.assert_close(block(x), 0.5 * mu.mean((2, 3), keepdim=True) + x)


# --- gradients reach every parameter ----------------------------------------------------

@pytest.mark.parametrize("preset,variant", CASES)
def test_every_parameter_gets_a_gradient(preset, variant, seed):
    """No dead parameters: after one SGD step every parameter has a finite, non-zero grad.

    With learnable gamma (released preset) gamma starts at 0, so at step 0 the attention
    projections get exactly zero gradient; that is checked too, then one step moves gamma
    off 0 and the next backward must reach them.
    """
    torch.manual_seed(seed)
    model = build_ggnet(preset=preset, variant=variant, backbone="resnet18", backend="reference")
    loss_fn = GGNetLoss(preset)
    images = torch.randn(2, 3, 64, 64)
    masks = torch.zeros(2, 1, 64, 64)
    masks[:, :, 16:44, 20:50] = 1
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)

    def step():
        opt.zero_grad()
        loss_fn(model(images), masks).backward()

    step()
    gammas = [m.gamma for m in model.modules()
              if isinstance(getattr(m, "gamma", None), nn.Parameter)]
    if model.config["residual"] == "learnable" and model.ggb is not None:
        assert gammas
        block = model.ggb.spatial if model.ggb.spatial is not None else model.ggb.channel
        if hasattr(block, "mu"):
            assert torch.count_nonzero(block.mu.weight.grad) == 0   # blocked by gamma = 0
        assert all(g.grad.abs().item() > 0 for g in gammas)
    opt.step()
    step()
    dead = [n for n, p in model.named_parameters()
            if p.grad is None or not torch.isfinite(p.grad).all()
            or torch.count_nonzero(p.grad) == 0]
    assert not dead, f"seed {seed}: parameters without a gradient: {dead}"


# --- the model does not care which backend runs the attention ----------------------------

@pytest.mark.parametrize("fused", ["triton", "cpu"])
@pytest.mark.parametrize("preset", PRESETS)
def test_model_same_output_with_fused_backend(fused, preset, seed):
    reason = unavailable_reason(fused)
    if reason is not None:
        pytest.skip(f"backend {fused!r} unavailable: {reason}")
    module = registry._load(fused)
    overrides = {}
    probe = {"combine": "matmul", "out_dtype": torch.float32, "stabilize": None, "scale": None,
             "shape": {"B": 2, "N": 64, "d": 32, "dg": 32, "C": 32}}
    if module.unsupported("spatial", "cpu", torch.float32, probe) is not None:
        overrides["spatial_combine"] = "product"      # the released O(N^3) form is reference-only
    torch.manual_seed(seed)
    model = build_ggnet(preset=preset, variant="full", backbone="resnet18", ggb_stride=8,
                        backend="reference", aspp_channels=32, guide_channels=32,
                        reduced_channels=16, **overrides)
    for m in model.modules():                          # gamma != 0 so the attention matters
        if isinstance(getattr(m, "gamma", None), nn.Parameter):
            with torch.no_grad():
                m.gamma.fill_(0.7)
    model.eval()
    images = torch.randn(2, 3, 64, 64)
    blocks = {"spatial": model.ggb.spatial, "channel": model.ggb.channel}
    inputs = {}
    for name, block in blocks.items():
        block.register_forward_pre_hook(lambda _m, args, name=name: inputs.__setitem__(name, args))

    @torch.no_grad()
    def modulations():
        """Each guidance block's operator output minus what a uniform attention would give
        (o - mean(mu) over positions; o - mean(y) over channels): the logits are dominated
        by that mean, the modulation is the attention's own contribution."""
        x, g = inputs["spatial"]
        sp = blocks["spatial"]
        o = sp.attention(x, g)
        spatial = (o - sp.mu(x).mean((2, 3), keepdim=True), o.abs().max())
        y, g = inputs["channel"]
        o = blocks["channel"].attention(y, g)
        channel = (o - y.mean(1, keepdim=True), o.abs().max())
        return {"spatial": spatial, "channel": channel}

    def run(backend):
        model.set_backend(backend)
        model.zero_grad()
        with record_dispatch() as calls:
            out = model(images)
        assert {b for _, b in calls} == {backend}, calls
        loss = (out.logits * torch.linspace(-1, 1, out.logits.numel()).view_as(out.logits)).sum()
        loss.backward()
        theta = model.ggb.spatial.theta.weight.grad.clone()
        return out, theta, modulations()

    ref, ref_theta, ref_mod = run("reference")
    got, got_theta, got_mod = run(fused)
    eps = torch.finfo(torch.float32).eps
    for name in blocks:
        # The product form keeps the spatial modulation tiny: 1e-5 to 1e-4 of |o| here,
        # depending on the seed, so float32's rounding of o (eps |o|, in both backends)
        # is 0.1-2% of it (floor).  Required: the modulation is resolved (> 16 eps |o|),
        # and the two backends agree to 1% plus 8 float32 roundings of o (at most 51%); a
        # backend returning the uniform mean has relative error 1.
        (ref_m, o_max), (got_m, _) = ref_mod[name], got_mod[name]
        scale = ref_m.abs().max()
        floor = eps * o_max / scale
        assert floor < 1 / 16, f"seed {seed}: the {name} attention is uniform (floor {floor:.3g})"
        err = (got_m - ref_m).abs().max() / scale
        assert err < 1e-2 + 8 * floor, \
            f"seed {seed}: {name} modulation relative error {err:.3g} (float32 floor {floor:.3g})"
    for a, b in zip((ref.logits, *ref.side_logits, *ref.boundaries),
                    (got.logits, *got.side_logits, *got.boundaries)):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4, msg=lambda m: f"seed {seed}: {m}")
    # theta's gradient depends only on the attention modulation: a strict check of the operator.
    err = (got_theta - ref_theta).abs().max() / ref_theta.abs().max().clamp_min(1e-30)
    assert err < 1e-2, f"seed {seed}: theta gradient relative error {err:.3g}"


@pytest.mark.parametrize("combine", ["product", "matmul"])
def test_spatial_ggb_is_within_the_gap_bound(combine, seed):
    """Why the "gap" ablation exists: the guided spatial block's attention output differs
    from mean_j(mu_j) by at most (e - 1)/N times the spread of mu, per channel."""
    from ggnet_fast.nn import GuidedNonLocal

    block = GuidedNonLocal(8, 6, combine=combine, key_bias=False, backend="reference").double()
    x = torch.randn(2, 8, 7, 9, dtype=torch.float64) * 3
    g = torch.randn(2, 6, 7, 9, dtype=torch.float64) * 3
    n = 7 * 9
    mu = block.mu(x).flatten(2)
    delta = block.attention(x, g).flatten(2) - mu.mean(-1, keepdim=True)
    spread = mu.amax(-1, keepdim=True) - mu.amin(-1, keepdim=True)
    assert (delta.abs() <= (math.e - 1) / n * spread + 1e-12).all(), seed
    assert delta.abs().max() > 0


@pytest.mark.parametrize("combine,stabilize", [("product", None), ("matmul", "max-minus")])
def test_channel_ggb_is_within_the_channel_mean_bound(combine, stabilize, seed):
    """Why the "pooled" ablation's channel block is the channel mean: the guided channel
    block's output differs from mean_c(y) by at most (e - 1)/C times the spread of y over
    channels, at every position; ChannelMeanBlock is that limit."""
    from ggnet_fast.nn import GuidedChannelAttention

    c = 11
    block = GuidedChannelAttention(c, 6, combine=combine, stabilize=stabilize,
                                   backend="reference").double()
    y = torch.randn(2, c, 7, 9, dtype=torch.float64) * 3
    g = torch.randn(2, 6, 7, 9, dtype=torch.float64) * 3
    mean = y.mean(1, keepdim=True)
    delta = block.attention(y, g) - mean
    spread = y.amax(1, keepdim=True) - y.amin(1, keepdim=True)
    assert (delta.abs() <= (math.e - 1) / c * spread + 1e-12).all(), seed
    assert delta.abs().max() > 0
    limit = ChannelMeanBlock(c, residual="fixed").double()
    torch.testing.assert_close(limit(y), y + mean.expand_as(y), rtol=0, atol=0)
