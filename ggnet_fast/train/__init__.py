"""Training: configuration and presets, resumable sampler, atomic checkpoints, DDP, the loop."""
from .config import TrainConfig, preset_schedule
from .loop import Trainer, train

__all__ = ["TrainConfig", "preset_schedule", "Trainer", "train"]
