"""Which network a run trains: GG-Net (any preset and variant) or an smp model.

``network`` is ``"ggnet"`` or ``"smp:<architecture>"`` (segmentation_models_pytorch,
e.g. ``"smp:Unet"``; :class:`~ggnet_fast.integrations.smp_network.SmpNetwork`).  A
checkpoint's ``model_config`` is the built model's ``config``; :func:`build_from_config`
rebuilds the model from it (GG-Net configurations carry no ``network`` key).
"""
from __future__ import annotations

from torch import nn

DEFAULT_NETWORK = "ggnet"


def is_ggnet(network: str) -> bool:
    return network == DEFAULT_NETWORK


def model_name(network: str = DEFAULT_NETWORK, variant: str = "full",
               retrofit: str | None = None) -> str:
    """What a run trains, in words: the GG-Net variant (``"full"``, ``"gap"``...), or the
    smp network with its retrofit (``"smp:Unet + guided"``)."""
    if is_ggnet(network):
        return variant
    return network + (f" + {retrofit}" if retrofit else "")


def build_from_config(model_config: dict, backend: str = "auto") -> nn.Module:
    """The model a saved ``model_config`` describes, randomly initialised (load its state
    dict next); ``backend`` runs its attention operators."""
    cfg = dict(model_config)
    network = cfg.pop("network", DEFAULT_NETWORK)
    if is_ggnet(network):
        from .build import build_ggnet
        cfg["weights"] = None  # the checkpoint holds all weights; never fetch pretrained ones
        cfg.pop("backend", None)  # older checkpoints saved the training run's backend
        return build_ggnet(**cfg, backend=backend)
    from ..integrations.smp_network import SmpNetwork
    return SmpNetwork(network, **cfg, backend=backend)
