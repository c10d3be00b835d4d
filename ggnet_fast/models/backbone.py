"""The feature extractor: a torchvision ResNet/ResNeXt cut after ``layer3``.

GG-Net's "four CNN layers" are, as in the authors' released code, the stem
(conv1-bn-relu, stride 2), ``layer1`` (after the max-pool, stride 4), ``layer2``
(stride 8) and ``layer3`` (stride 16); the ASPP reads ``layer3``.  The released code
builds ``layer4`` (and the classifier) but never uses them, so they are not built here.

Submodule names are torchvision's (``conv1``, ``bn1``, ``layer1``...), so a
torchvision-format state dict loads directly (its ``layer4.*`` and ``fc.*`` entries are
ignored).  Nothing is ever downloaded: weights come from a local file, or from
torchvision's cache when a weights enum is given and its file is already there.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models import resnet as tv_resnet

# name -> (builder, stage channels (stem, layer1, layer2, layer3))
_BOTTLENECK = (64, 256, 512, 1024)
_BASIC = (64, 64, 128, 256)
BACKBONES: dict[str, tuple] = {
    "resnext101_32x8d": (lambda: tv_resnet.resnext101_32x8d(weights=None), _BOTTLENECK),
    "resnext50_32x4d": (lambda: tv_resnet.resnext50_32x4d(weights=None), _BOTTLENECK),
    "resnet18": (lambda: tv_resnet.resnet18(weights=None), _BASIC),
    "resnet34": (lambda: tv_resnet.resnet34(weights=None), _BASIC),
    "resnet50": (lambda: tv_resnet.resnet50(weights=None), _BOTTLENECK),
    # The released code's backbone; torchvision has the architecture but no weights for
    # it, so only weights=None or a local torchvision-format state dict work.
    "resnext101_32x4d": (lambda: tv_resnet.ResNet(tv_resnet.Bottleneck, [3, 4, 23, 3],
                                                  groups=32, width_per_group=4), _BOTTLENECK),
}
STAGE_NAMES = ("stem", "layer1", "layer2", "layer3")
STAGE_STRIDES = (2, 4, 8, 16)
_DROPPED_PREFIXES = ("layer4.", "fc.")


class ResNetStages(nn.Module):
    """Returns the four stage feature maps of a torchvision ResNet/ResNeXt.

    Args:
        name: one of :data:`BACKBONES`.
        weights: ``None`` (random init), a path to a torchvision-format state dict, or a
            torchvision weights enum / its name (``"IMAGENET1K_V2"``,
            ``"ResNeXt101_32X8D_Weights.IMAGENET1K_V2"``, ``"DEFAULT"``) whose file is
            already in torchvision's cache (``torch.hub.get_dir()/checkpoints``).

    Shapes: ``[B, 3, H, W]`` -> four maps ``[B, channels[i], ~H/s_i, ~W/s_i]`` with
    ``s = (2, 4, 8, 16)``.
    """

    def __init__(self, name: str = "resnext101_32x8d", weights=None) -> None:
        super().__init__()
        if name not in BACKBONES:
            raise ValueError(f"backbone must be one of {list(BACKBONES)}, got {name!r}")
        builder, channels = BACKBONES[name]
        net = builder()
        self.name = name
        self.channels: tuple[int, int, int, int] = channels
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        del net
        self.weights_source = load_backbone_weights(self, name, weights)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        s0 = self.relu(self.bn1(self.conv1(x)))
        s1 = self.layer1(self.maxpool(s0))
        s2 = self.layer2(s1)
        s3 = self.layer3(s2)
        return s0, s1, s2, s3


def _cached_weights_file(name: str, weights) -> Path:
    """Path of a torchvision weights enum's file in the local cache (never downloads)."""
    if isinstance(weights, str):
        try:
            if "." in weights:
                weights = torchvision.models.get_weight(weights)
            else:
                weights = torchvision.models.get_model_weights(name)[weights]
        except (KeyError, ValueError, AttributeError) as exc:
            raise ValueError(
                f"weights={weights!r} is neither an existing file nor a torchvision weights "
                f"name for {name} ({exc})") from None
    url = weights.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights {weights} are not in torchvision's cache ({path}); this package never "
            f"downloads. Fetch {url} yourself and pass its path as weights=...")
    return path


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a (possibly wrapped) state dict from ``path`` onto the CPU."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"weights file {path} does not hold a state dict")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_backbone_weights(stages: ResNetStages, name: str, weights) -> str | None:
    """Load ``weights`` (see :class:`ResNetStages`) into ``stages``; returns a description.

    ``layer4.*`` and ``fc.*`` entries are dropped; every other parameter and buffer
    must be present with its shape, otherwise ``ValueError`` lists what does not match.
    """
    if weights is None:
        return None
    looks_like_path = isinstance(weights, os.PathLike) or (
        isinstance(weights, str) and (os.sep in weights or weights.endswith((".pth", ".pt"))))
    if isinstance(weights, (str, os.PathLike)) and Path(weights).is_file():
        path = Path(weights)
    elif looks_like_path:
        raise FileNotFoundError(f"weights file {weights} does not exist")
    elif isinstance(weights, (str, torchvision.models.WeightsEnum)):
        path = _cached_weights_file(name, weights)
    else:
        raise TypeError("weights must be None, a path to a state dict or a torchvision weights "
                        f"enum, got {type(weights).__name__}")
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith(_DROPPED_PREFIXES)}
    own = stages.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        raise ValueError(
            f"weights {path} do not fit backbone {name}: missing {missing[:5]} ({len(missing)}), "
            f"unexpected {unexpected[:5]} ({len(unexpected)}), shape mismatch {mismatched[:5]}")
    stages.load_state_dict(state, strict=True)
    return str(path)
