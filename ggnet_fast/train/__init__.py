"""Training: configuration, run folders (start, all folds, resume), the loop and its parts
(progress, schedule, run logger), resumable sampler, RNG states, DDP."""
from .config import TrainConfig, preset_schedule
from .loop import Trainer, train

__all__ = ["TrainConfig", "preset_schedule", "Trainer", "train"]
