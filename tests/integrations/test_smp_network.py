"""smp networks trained and evaluated by ggnet_fast's pipeline (``--network smp:...``)."""
import json
import os

import pytest
import torch

smp = pytest.importorskip("segmentation_models_pytorch")

from ggnet_fast.cli import main as cli_main
from ggnet_fast.eval.predict import load_model
from ggnet_fast.integrations.smp_network import SmpNetwork, architecture_of
from ggnet_fast.models import GGNetOutput
from ggnet_fast.models.networks import build_from_config
from ggnet_fast.nn import GuidedNonLocal
from ggnet_fast.train.config import TrainConfig


def test_calling_convention_and_rebuild(seed):
    model = SmpNetwork("smp:unet", "resnet18", retrofit="guided", backend="reference").eval()
    assert model.config == {"network": "smp:Unet", "backbone": "resnet18", "retrofit": "guided"}
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out = model(images)
        logits = model(images, final_only=True)
    assert isinstance(out, GGNetOutput) and out.side_logits == () and out.boundaries == ()
    assert out.logits.shape == (2, 1, 64, 96)
    torch.testing.assert_close(out.logits, logits, rtol=0, atol=0)
    blocks = [m for m in model.modules() if isinstance(m, GuidedNonLocal)]
    assert len(blocks) == 1 and blocks[0].combine == "joint"
    with torch.no_grad():  # a trained block attends: gamma away from its initial 0
        blocks[0].gamma.fill_(0.5)
    rebuilt = build_from_config(json.loads(json.dumps(model.config)), backend="reference")
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(images, final_only=True),
                                   model(images, final_only=True), rtol=0, atol=0)
    model.set_backend("auto")
    assert blocks[0].backend == "auto"
    with pytest.raises(ValueError, match="images"):
        model(torch.randn(2, 4, 64, 64))


def test_retrofit_starts_as_the_plain_network(seed):
    """gamma starts at 0: the retrofitted U-Net computes what the plain one does until it
    trains (same initialisation, same output)."""
    torch.manual_seed(seed)
    plain = SmpNetwork("smp:Unet", "resnet18").eval()
    torch.manual_seed(seed)
    guided = SmpNetwork("smp:Unet", "resnet18", retrofit="guided", backend="reference").eval()
    guided.load_state_dict(plain.state_dict(), strict=False)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(guided(images, final_only=True),
                                   plain(images, final_only=True), rtol=0, atol=0)


def _config(**kw):
    base = dict(data="phantom", network="smp:Unet", backbone="resnet18", image_size=64)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("settings,message", [
    ({"network": "smp:Nope"}, "no such architecture"),
    ({"network": "unet"}, "'ggnet' or 'smp:<architecture>'"),
    ({"backbone": "resnext101_32x8d_nope"}, "not an encoder"),
    ({"retrofit": "nope"}, "retrofit must be one of"),
    ({"image_size": 80}, "multiple of 32"),
    ({"variant": "gap"}, "--variant describe GG-Net"),
    ({"ggb_stride": 8, "weights": "w.pth"}, "--ggb-stride, --weights describe GG-Net"),
    ({"network": "ggnet", "retrofit": "guided"}, "GG-Net has its own"),
])
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        _config(**settings).validate()


def test_architecture_names():
    assert architecture_of("smp:fpn") == "FPN"
    assert architecture_of("smp:DeepLabV3Plus") == "DeepLabV3Plus"
    assert _config(retrofit="guided").model_name == "smp:Unet + guided"
    assert TrainConfig(variant="gap").model_name == "gap"


def test_command_line_train_resume_eval(tmp_path, capsys):
    run = str(tmp_path / "run")
    tiny = ["--data", "phantom", "--phantom-n", "12", "--phantom-size", "64", "--split",
            "holdout", "--network", "smp:Unet", "--retrofit", "guided", "--backbone",
            "resnet18", "--image-size", "64", "--schedule", "iterations", "--iterations", "2",
            "--lr-step-iters", "0", "--batch-size", "2", "--workers", "0", "--no-progress",
            "--no-tensorboard", "--backend", "reference"]
    assert cli_main(["train", *tiny, "--max-steps", "1", "--out", run]) == 0
    assert cli_main(["train", "--resume", "--out", run, "--no-progress",
                     "--no-tensorboard"]) == 0
    with open(os.path.join(run, "summary.json"), encoding="utf-8") as fh:
        assert json.load(fh)["global_step"] == 2
    model, cfg = load_model(os.path.join(run, "last.pt"), backend="reference")
    assert isinstance(model, SmpNetwork) and model.config["retrofit"] == "guided"
    assert cfg["network"] == "smp:Unet"
    assert cli_main(["eval", "--run", run, "--no-crf", "--overlays", "0",
                     "--no-progress"]) == 0
    assert os.path.isfile(os.path.join(run, "eval", "per_image.csv"))
    with open(os.path.join(run, "eval", "metrics.md"), encoding="utf-8") as fh:
        assert "smp:Unet + guided (resnet18)" in fh.read()  # named by its network
    # a resume that changes the network is refused
    capsys.readouterr()
    assert cli_main(["train", "--resume", "--out", run, "--network", "ggnet",
                     "--no-progress", "--no-tensorboard"]) == 2
    assert "network" in capsys.readouterr().err


def test_exported_smp_run_matches_pytorch(tmp_path, capsys):
    """``ggnet export`` takes an smp run's checkpoint like a GG-Net one (it checks
    onnxruntime against PyTorch itself and fails when they differ)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = SmpNetwork("smp:Unet", "resnet18", retrofit="guided")
    with torch.no_grad():
        model.net.guided_attention.block.gamma.fill_(0.5)
    ckpt = str(tmp_path / "last.pt")
    torch.save({"model": model.state_dict(), "model_config": model.config,
                "config": {"image_size": 64}}, ckpt)
    out = str(tmp_path / "unet.onnx")
    assert cli_main(["export", "--checkpoint", ckpt, "--out", out]) == 0
    assert os.path.getsize(out) > 0 and "max abs error" in capsys.readouterr().out


def test_missing_smp_names_the_extra(monkeypatch, tmp_path, capsys):
    """Without segmentation_models_pytorch, --network smp:... is a one-line error naming
    the pip extra that installs it (and nothing is written)."""
    import sys

    monkeypatch.setitem(sys.modules, "segmentation_models_pytorch", None)
    out = tmp_path / "run"
    assert cli_main(["train", "--data", "phantom", "--network", "smp:Unet", "--backbone",
                     "resnet18", "--image-size", "64", "--out", str(out)]) == 2
    assert "ggnet_fast[integrations]" in capsys.readouterr().err
    assert not out.exists()
