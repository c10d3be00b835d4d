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


def test_a_config_saved_before_the_dataset_registry_still_loads_and_resumes():
    """config.json / checkpoint configs of older runs hold phantom_n, include_normal...:
    they load into data_options, and resuming compares them as such."""
    from ggnet_fast.train import TrainConfig
    from ggnet_fast.train.runs import check_resume_config

    old = {**{k: v for k, v in TrainConfig().to_dict().items() if k != "data_options"},
           "data": "phantom", "phantom_n": 24, "phantom_seed": 0, "phantom_size": 64,
           "phantom_jitter": 0.0, "include_normal": False}
    cfg = TrainConfig.from_dict(old).validate()
    assert cfg.data_options == {"n": 24, "seed": 0, "size": 64, "size_jitter": 0.0}
    check_resume_config(old, cfg)
    cfg.data_options["n"] = 30
    with pytest.raises(ValueError, match="data_options: saved .*'n': 24.*now .*'n': 30"):
        check_resume_config(old, cfg)
    busi = TrainConfig.from_dict({**old, "data": "busi", "include_normal": True})
    assert busi.data_options == {"include_normal": True}
