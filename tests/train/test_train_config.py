"""The command line hands the preset's own guidance-block stride to the model."""
import pytest

from ggnet_fast.cli import build_parser, config_from_args
from ggnet_fast.models.config import resolve_config


@pytest.mark.parametrize("preset,stride", [("paper", 8), ("released", 4)])
def test_preset_stride_is_kept_unless_overridden(preset, stride, tmp_path):
    parser = build_parser()
    cfg = config_from_args(parser.parse_args(["train", "--preset", preset, "--out", str(tmp_path)]))
    resolved = resolve_config(cfg.preset, cfg.variant, cfg.backbone, cfg.ggb_stride)
    assert resolved.ggb_stride == stride
    other = 12 - stride
    cfg = config_from_args(parser.parse_args(["train", "--preset", preset, "--out", str(tmp_path),
                                              "--ggb-stride", str(other)]))
    assert resolve_config(cfg.preset, cfg.variant, cfg.backbone, cfg.ggb_stride).ggb_stride == other


def test_a_config_saved_before_the_dataset_registry_still_loads_and_resumes():
    """config.json / checkpoint configs of older runs hold phantom_n, include_normal...:
    they load into data_options, and resuming compares them as such."""
    from ggnet_fast.train import TrainConfig
    from ggnet_fast.train.run_dir import check_resume_config

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


def test_a_step_limit_and_a_relative_root_are_not_saved_as_such(tmp_path, monkeypatch):
    """Issue 13.3 and 13.9: max_steps belongs to one invocation (never in config.json, and
    dropped from older ones); data_root is saved absolute."""
    import json

    from ggnet_fast.train import TrainConfig

    (tmp_path / "scans" / "benign").mkdir(parents=True)
    (tmp_path / "scans" / "malignant").mkdir()
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(data="busi", data_root="scans", max_steps=5).validate()
    assert cfg.data_root == str(tmp_path / "scans")
    cfg.save(str(tmp_path / "config.json"))
    saved = json.loads((tmp_path / "config.json").read_text())
    assert "max_steps" not in saved and saved["data_root"] == str(tmp_path / "scans")
    assert TrainConfig.from_saved({**saved, "max_steps": 1}).max_steps == 0


def test_a_root_for_a_dataset_that_reads_none_is_refused():
    """Issue 13.1: a --data-root next to --data phantom is not silently ignored."""
    from ggnet_fast.train import TrainConfig

    with pytest.raises(ValueError, match="data_root .* data='phantom' reads no folder"):
        TrainConfig(data="phantom", data_root="/somewhere").validate()


def test_root_without_data_selects_the_dataset_of_its_layout(tmp_path, capsys):
    """Issue 13.1: --data-root alone trains on the dataset its layout shows, never on the
    default phantom."""
    for d in ("busi/Dataset_BUSI_with_GT/benign", "busi/Dataset_BUSI_with_GT/malignant",
              "own/images", "own/masks", "other/x"):
        (tmp_path / d).mkdir(parents=True)
    parser = build_parser()
    for root, name in (("busi", "busi"), ("own", "folder")):
        cfg = config_from_args(parser.parse_args(["train", "--out", "o", "--data-root",
                                                  str(tmp_path / root)]))
        assert cfg.data == name
    with pytest.raises(ValueError, match=r"none of the known layouts \(busi: .*; folder: "):
        config_from_args(parser.parse_args(["train", "--out", "o", "--data-root",
                                            str(tmp_path / "other")]))


def test_resume_compares_every_result_setting():
    """Issue 13.2: settings outside the operational ones are compared on resume (the
    image size and model too, not only the split and schedule)."""
    from ggnet_fast.train import TrainConfig
    from ggnet_fast.train.run_dir import check_resume_config

    saved = TrainConfig().run_dict()
    cfg = TrainConfig(image_size=96, backbone="resnet18", workers=0, device="cpu",
                      progress=False, max_steps=3)
    with pytest.raises(ValueError) as exc:
        check_resume_config(saved, cfg)
    text = str(exc.value)
    assert "image_size: saved 256, now 96" in text and "backbone: saved" in text
    assert "workers" not in text.split("only")[0] and "max_steps:" not in text
