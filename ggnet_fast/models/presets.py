"""The preset table: everything the word ``paper`` or ``released`` selects, in one place.

Each preset fixes one side of every difference between the paper and the authors'
released code (``docs/model.md``, "Presets"): the architecture (``model``: defaults of
:class:`~ggnet_fast.models.config.GGNetConfig`), the loss (``loss``: defaults of
:class:`~ggnet_fast.losses.GGNetLoss`) and the training schedule (``schedule``: fields of
:class:`~ggnet_fast.train.TrainConfig`). Single entries are overridden by keyword
(``build_ggnet(preset="paper", ggb_stride=4)``, ``--loss-opt``, ``--epochs``...).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    model: dict
    loss: dict
    schedule: dict
    description: str


PRESET_TABLE: dict[str, Preset] = {
    "paper": Preset(
        description="as published: 100 epochs, lr x0.1 at epoch 50",
        model={
            "ggb_stride": 8,                 # MLIF and GGB at layer-2 size
            "spatial_combine": "product",    # softmax(S_x * S_g), Eq. 3
            "channel_combine": "product",    # softmax(S_Z * S_G)
            "channel_stabilize": None,
            "residual": "fixed",             # y = attn + x
            "use_se": True,                  # SE on the guidance, Eq. 4-5
            "boundary_form": "paper",        # E = F - maxpool(F)
            "bd_on_output": False,           # BD modules on the four CNN layers only
            "ggb_init": "pytorch",           # PyTorch's default init of the GGB convs
            "side_resize": "direct",         # side logits resized once to the input size
        },
        # Eq. 6-9: lambda_1 = 1, lambda_2 = 10, Canny target, squared Dice denominator
        loss={"lambda_seg": 1.0, "lambda_boundary": 10.0, "lambda_final": 1.0,
              "boundary_target": "canny", "dice_squared": True, "smooth": 1.0,
              "dice_form": "standard"},     # (2 I + s) / (D + s): 0 loss on a correct empty mask
        # SGD, lr x0.1 every 50 epochs, 100 epochs, validation each epoch, no early stop
        schedule={"schedule": "epochs", "epochs": 100, "lr_step_epochs": 50,
                  "bias_lr_mult": 1.0, "early_stop_patience": 0}),
    "released": Preset(
        description="the authors' code: 13,400 iterations, 2x bias lr, early stopping",
        model={
            "ggb_stride": 4,                 # ASPP output upsampled to layer-1 size
            "spatial_combine": "matmul",     # softmax(bmm(S_x, S_g)), O(N^3)
            "channel_combine": "matmul",
            "channel_stabilize": "max-minus",
            "residual": "learnable",         # y = gamma * attn + x, gamma init 0
            "use_se": False,                 # SE built but switched off in the decoder
            "boundary_form": "released",     # E = |F - maxpool(F)|
            "bd_on_output": True,            # BD on the four side outputs and the final output
            "ggb_init": "kaiming",           # Decoder._init_weight() re-initialises the GGB
            "side_resize": "stride4",        # daf_ds.py: to layer-1 size, then to the input
        },
        # train.py: every term weighted 1, morphological target, plain Dice sums, smooth 1e-5
        loss={"lambda_seg": 1.0, "lambda_boundary": 1.0, "lambda_final": 1.0,
              "boundary_target": "morphological", "dice_squared": False, "smooth": 1e-5,
              "dice_form": "released"},     # train.py: 2 (I + s) / (D + s)
        # same SGD with 2x lr for biases, lr x0.1 at 6,700 of 13,400 iterations, early
        # stopping after 30 validations without a better validation Dice
        schedule={"schedule": "iterations", "iterations": 13400, "lr_step_iters": 6700,
                  "bias_lr_mult": 2.0, "early_stop_patience": 30}),
}
PRESETS = tuple(PRESET_TABLE)


def preset(name: str) -> Preset:
    """The row of :data:`PRESET_TABLE` called ``name``."""
    if name not in PRESET_TABLE:
        raise ValueError(f"preset must be one of {list(PRESETS)}, got {name!r}")
    return PRESET_TABLE[name]
