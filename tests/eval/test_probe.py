"""``ggnet_fast.eval.probe``: the split of the spatial GGB's addition into its global-
average-pooling part and its modulation, and of the channel GGB's into its channel mean
and the rest, checked against dense float64 computations."""
import copy
import csv
import json
import os

import pytest
import torch

from ggnet_fast.cli import main as cli_main
from ggnet_fast.eval import probe
from ggnet_fast.models import build_ggnet
from ggnet_fast.nn import GuidedChannelAttention, GuidedNonLocal


@torch.no_grad()
def _dense_parts(block, x, g):
    """gamma * o, gamma * mean(mu), gamma * (o - mean(mu)) and gamma * (o - mean_i(o_i))
    from the formulas, float64."""
    block, x, g = copy.deepcopy(block).double(), x.double(), g.double()
    flat = lambda conv, t: conv(t).flatten(2).transpose(1, 2)  # noqa: E731  [B, N, k]
    sx = torch.softmax(flat(block.theta, x) @ flat(block.phi, x).transpose(1, 2), -1)
    sg = torch.softmax(flat(block.eta, g) @ flat(block.rho, g).transpose(1, 2), -1)
    if block.combine == "joint":
        weights = (sx * sg) / (sx * sg).sum(-1, keepdim=True)
    else:
        weights = torch.softmax(sx * sg, -1)
    mu = flat(block.mu, x)                                            # [B, N, C]
    o = weights @ mu
    gamma = block.gamma.detach()
    mean_mu = mu.mean(1, keepdim=True)
    return (gamma * o, gamma * mean_mu.expand_as(o), gamma * (o - mean_mu),
            gamma * (o - o.mean(1, keepdim=True)))


@pytest.mark.parametrize("combine", ["product", "joint"])
def test_terms_match_dense_float64(seed, combine):
    block = GuidedNonLocal(6, 5, key_channels=4, guide_key_channels=3, combine=combine,
                           residual="fixed")
    x, g = torch.randn(2, 6, 5, 7), torch.randn(2, 5, 5, 7)
    terms = probe.spatial_ggb_terms(block, x, g)
    added, gap, modulation, varying = _dense_parts(block, x, g)
    norm = lambda t: t.flatten(1).norm(dim=1).numpy()  # noqa: E731
    for name, ref in (("added", added), ("gap", gap), ("modulation", modulation),
                      ("varying", varying)):
        assert terms[name] == pytest.approx(norm(ref), rel=1e-9), name
    assert terms["x"] == pytest.approx(norm(x.double()), rel=1e-12)
    assert terms["gamma"] == 1.0
    # the float64 recomputation agrees with the block's own float32 forward
    with torch.no_grad():
        y = block(x, g)
    assert terms["added"] == pytest.approx(norm((y - x).double()), rel=1e-4)


@pytest.mark.parametrize("combine", ["product", "joint"])
def test_every_term_scales_with_gamma(seed, combine):
    """A learnable residual weight (trained models have gamma != 1): every part of the
    addition is gamma times the attention's, against the dense float64 formulas."""
    block = GuidedNonLocal(6, 5, key_channels=4, guide_key_channels=3, combine=combine,
                           residual="learnable")
    with torch.no_grad():
        block.gamma.fill_(-0.37)
    x, g = torch.randn(2, 6, 5, 7), torch.randn(2, 5, 5, 7)
    terms = probe.spatial_ggb_terms(block, x, g)
    assert terms["gamma"] == pytest.approx(-0.37)
    norm = lambda t: t.flatten(1).norm(dim=1).numpy()  # noqa: E731
    for name, ref in zip(("added", "gap", "modulation", "varying"), _dense_parts(block, x, g)):
        assert terms[name] == pytest.approx(norm(ref), rel=1e-9), name
    with torch.no_grad():
        y = block(x, g)
    assert terms["added"] == pytest.approx(norm((y - x).double()), rel=1e-4)


def test_paper_softmax_acts_as_pooling_and_joint_does_not(seed):
    """Sharp, agreeing score maps: the paper's outer softmax still leaves o within a few
    percent of mean(mu) (every weight within a factor e of 1/N); the joint softmax follows
    the scores, so its position-varying part is of the order of the whole addition."""
    torch.manual_seed(seed)
    parts = {}
    for combine in ("product", "joint"):
        torch.manual_seed(seed)
        block = GuidedNonLocal(8, key_channels=8, combine=combine, residual="fixed")
        with torch.no_grad():
            for conv in (block.theta, block.phi, block.eta, block.rho):
                conv.weight.mul_(4.0)
        x = torch.randn(1, 8, 9, 9)
        parts[combine] = probe.spatial_ggb_terms(block, x, x)
    paper, joint = parts["product"], parts["joint"]
    assert paper["modulation"][0] < 0.1 * paper["gap"][0]
    assert joint["varying"][0] > 0.3 * joint["added"][0]
    assert joint["varying"][0] > 10 * paper["varying"][0]


@torch.no_grad()
def _dense_channel_parts(block, y, g):
    """Q, gamma * Q y, gamma * mean_c(y), gamma * (Q y - mean_c(y)) and
    gamma * (Q y - mean_c(Q y)) from Eq. 4-5 written out, float64."""
    block, y, g = copy.deepcopy(block).double(), y.double(), g.double()
    yf = y.flatten(2)                                                 # [B, C, N]
    g_hat = block.se(block.guide_proj(g)).flatten(2)
    inner = torch.softmax(yf @ yf.transpose(1, 2), -1) * torch.softmax(
        g_hat @ g_hat.transpose(1, 2), -1)
    q = torch.softmax(inner, -1)                                      # [B, C, C]
    o = (q @ yf).reshape(y.shape)
    gamma = block.gamma.detach()
    mean = y.mean(1, keepdim=True)
    return q, (gamma * o, gamma * mean.expand_as(o), gamma * (o - mean),
               gamma * (o - o.mean(1, keepdim=True)))


@pytest.mark.parametrize("residual", ["fixed", "learnable"])
def test_channel_terms_match_dense_float64(seed, residual):
    c = 7
    block = GuidedChannelAttention(c, 5, residual=residual)
    if residual == "learnable":
        with torch.no_grad():
            block.gamma.fill_(0.61)
    y, g = torch.randn(2, c, 5, 6), torch.randn(2, 5, 5, 6)
    terms = probe.channel_ggb_terms(block, y, g)
    q, parts = _dense_channel_parts(block, y, g)
    norm = lambda t: t.flatten(1).norm(dim=1).numpy()  # noqa: E731
    for name, ref in zip(("added", "mean", "modulation", "varying"), parts):
        assert terms[name] == pytest.approx(norm(ref), rel=1e-9), name
    assert terms["x"] == pytest.approx(norm(y.double()), rel=1e-12)
    assert terms["w_min"] == pytest.approx((c * q.flatten(1).amin(1)).numpy(), rel=1e-12)
    assert terms["w_max"] == pytest.approx((c * q.flatten(1).amax(1)).numpy(), rel=1e-12)
    # every weight within a factor e of 1/C: the outer softmax sees values in [0, 1]
    assert (terms["w_min"] >= 1 / torch.e - 1e-12).all() and (terms["w_max"] <= torch.e).all()
    assert terms["gamma"] == pytest.approx(float(block.gamma.detach()))
    with torch.no_grad():
        z = block(y, g)
    assert terms["added"] == pytest.approx(norm((z - y).double()), rel=1e-4)


def test_models_without_a_guided_block_are_refused():
    gap = build_ggnet(variant="gap", backbone="resnet18", backend="reference").eval()
    with pytest.raises(ValueError, match="no guided spatial block"):
        probe.probe_model(gap, torch.randn(1, 3, 64, 64))
    assert set(probe.probe_blocks(gap, torch.randn(2, 3, 64, 64))) == {"channel"}
    for variant in ("baseline", "pooled"):
        model = build_ggnet(variant=variant, backbone="resnet18", backend="reference").eval()
        with pytest.raises(ValueError, match="no guided block"):
            probe.probe_blocks(model, torch.randn(2, 3, 64, 64))
    with pytest.raises(TypeError, match="GuidedNonLocal"):
        probe.spatial_ggb_terms(torch.nn.Identity(), torch.randn(1, 2, 3, 3),
                                torch.randn(1, 2, 3, 3))
    with pytest.raises(TypeError, match="GuidedChannelAttention"):
        probe.channel_ggb_terms(torch.nn.Identity(), torch.randn(1, 2, 3, 3),
                                torch.randn(1, 2, 3, 3))
    with pytest.raises(ValueError, match="block must be one of"):
        probe.probe_model(gap, torch.randn(1, 3, 64, 64), block="both")


def test_probe_hooks_the_models_block(seed):
    model = build_ggnet(variant="full", backbone="resnet18", backend="reference").eval()
    terms = probe.probe_blocks(model, torch.randn(2, 3, 64, 64))
    assert set(terms) == {"spatial", "channel"}
    for block in ("spatial", "channel"):
        assert terms[block]["x"].shape == (2,) and (terms[block]["x"] > 0).all()
        assert terms[block]["gamma"] == float(getattr(model.ggb, block).gamma)
    # the channel block's input is the spatial block's output after the convs between them
    assert terms["channel"]["x"][0] != pytest.approx(terms["spatial"]["x"][0])


def test_command_line_on_a_tiny_run(tmp_path):
    run = str(tmp_path / "run")
    tiny = ["--data", "phantom", "--phantom-n", "12", "--phantom-size", "64", "--split",
            "holdout", "--backbone", "resnet18", "--image-size", "64", "--schedule",
            "iterations", "--iterations", "1", "--lr-step-iters", "0", "--batch-size", "2",
            "--workers", "0", "--no-progress", "--no-tensorboard", "--backend", "reference"]
    assert cli_main(["train", *tiny, "--out", run]) == 0
    out = str(tmp_path / "probe")
    assert cli_main(["probe", "--run", run, "--out", out]) == 0
    with open(os.path.join(out, "probe.csv"), encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    with open(os.path.join(run, "splits.json"), encoding="utf-8") as fh:
        test_names = json.load(fh)["test"]
    assert [r["name"] for r in rows] == test_names and set(probe.TERMS) <= set(rows[0])
    with open(os.path.join(out, "probe_channel.csv"), encoding="utf-8") as fh:
        channel_rows = list(csv.DictReader(fh))
    assert [r["name"] for r in channel_rows] == test_names
    assert set(probe.CHANNEL_TERMS + probe.CHANNEL_WEIGHTS) <= set(channel_rows[0])
    report = open(os.path.join(out, "probe.md"), encoding="utf-8").read()
    assert "median ratio to x" in report and "## channel GGB" in report
    before = open(os.path.join(out, "probe.csv"), encoding="utf-8").read()
    assert cli_main(["probe", "--run", run, "--out", out]) == 2  # not without --overwrite
    assert open(os.path.join(out, "probe.csv"), encoding="utf-8").read() == before
