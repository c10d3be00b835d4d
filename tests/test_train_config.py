"""The command line hands the preset's own guidance-block stride to the model."""
import pytest

from ggnet_fast.cli import build_parser, config_from_args
from ggnet_fast.models.config import resolve_config


@pytest.mark.parametrize("preset,stride", [("paper", 8), ("released", 4)])
def test_preset_stride_is_kept_unless_overridden(preset, stride, tmp_path):
    parser = build_parser()
    cfg = config_from_args(parser.parse_args(["train", "--preset", preset, "--out", str(tmp_path)]))
    assert resolve_config(cfg.preset, cfg.variant, cfg.backbone, cfg.ggb_stride).ggb_stride == stride
    other = 12 - stride
    cfg = config_from_args(parser.parse_args(["train", "--preset", preset, "--out", str(tmp_path),
                                              "--ggb-stride", str(other)]))
    assert resolve_config(cfg.preset, cfg.variant, cfg.backbone, cfg.ggb_stride).ggb_stride == other
