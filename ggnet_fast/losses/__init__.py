"""Training losses: GG-Net's (Section 3.3, Eq. 6-9) and the loss registry.

``build_loss(name, preset, **options)`` builds a registered loss; ``register_loss`` adds
one (see ``docs/pipeline.md``, "Adding a loss").
"""
from .registry import build_loss, register_loss, registered_losses
from .ggnet import (BOUNDARY_TARGETS, LOSS_PRESETS, GGNetLoss,  # registers "ggnet"
                    boundary_mse, canny_boundary, dice_bce_loss, dice_loss,
                    make_boundary_targets, morphological_boundary)

__all__ = ["BOUNDARY_TARGETS", "LOSS_PRESETS", "GGNetLoss", "boundary_mse", "build_loss",
           "canny_boundary", "dice_bce_loss", "dice_loss", "make_boundary_targets",
           "morphological_boundary", "register_loss", "registered_losses"]
