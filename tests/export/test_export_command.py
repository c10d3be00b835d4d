"""``ggnet export`` (ggnet_fast/export/command.py) end to end: a training-style checkpoint
to an ONNX file that onnxruntime runs like PyTorch; an existing file is refused without
--overwrite (one line, exit 2, file untouched)."""
from __future__ import annotations

import argparse
import re

import onnx
import pytest
import torch

from export_checks import float32_tolerance
from ggnet_fast.backends import extension
from ggnet_fast.cli import main as ggnet_main
from ggnet_fast.export.command import add_arguments, main, run
from ggnet_fast.models import build_ggnet


@pytest.fixture
def checkpoint(tmp_path, seed):
    """What ggnet train writes (best.pt): weights, the model config, the training config."""
    model = build_ggnet(preset="paper", variant="full", backbone="resnet18")
    path = tmp_path / "best.pt"
    torch.save({"model": model.state_dict(), "model_config": model.config,
                "config": {"image_size": 64}}, path)
    return path


def test_export_command_writes_a_checked_onnx_model(tmp_path, checkpoint, capsys):
    if extension.load() is None:
        pytest.skip("the compiled extension is not built")
    out = tmp_path / "model.onnx"
    out.write_bytes(b"an older export")
    assert main(["--checkpoint", str(checkpoint), "--out", str(out), "--overwrite"]) == 0
    printed = capsys.readouterr().out
    err = float(re.search(r"max abs error (\S+)", printed).group(1))
    onnx.checker.check_model(onnx.load(str(out)))
    # the command's own check ran the checkpoint's model at its training size (64)
    from ggnet_fast.eval.predict import load_model
    model, _ = load_model(str(checkpoint))
    with torch.no_grad():
        ref = model(torch.randn(1, 3, 64, 64), final_only=True)
    assert err <= float32_tolerance(model, 64, ref)
    assert "dynamic" in printed


def test_export_command_refuses_to_overwrite(tmp_path, checkpoint, capsys):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"keep me")
    for command in (main, lambda argv: ggnet_main(["export", *argv])):  # standalone, ggnet
        assert command(["--checkpoint", str(checkpoint), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "already exists" in err and "--overwrite" in err
        assert out.read_bytes() == b"keep me"
    # what `ggnet export` calls: add_arguments + run raise the error for the CLI to print
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(FileExistsError, match="--overwrite"):
        run(parser.parse_args(["--checkpoint", str(checkpoint), "--out", str(out)]))


def test_export_command_reports_an_unreadable_checkpoint(tmp_path, capsys):
    bad = tmp_path / "best.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["--checkpoint", str(bad), "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not readable" in err
    assert not (tmp_path / "m.onnx").exists()
