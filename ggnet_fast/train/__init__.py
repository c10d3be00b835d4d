"""Training: configuration, run-folder rules (run_dir), driving runs over folds and resumes
(runs), the loop and its parts (progress, schedule, run logger), resumable sampler, DDP."""
from .config import TrainConfig, preset_schedule
from .loop import Trainer, train

__all__ = ["TrainConfig", "preset_schedule", "Trainer", "train"]
