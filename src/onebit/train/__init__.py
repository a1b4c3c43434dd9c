"""Training: recipes (declarative stages), the trainer with checkpoints/resume/DDP, and evaluation."""

from .recipe import (
    DataSpec,
    DistillSpec,
    ModelSpec,
    OptimizerSpec,
    Recipe,
    RecipeError,
    ScheduleSpec,
    Stage,
    builtin_recipes,
    load_recipe,
)
from .schedules import lr_at
from .trainer import CheckpointError, TrainResult, build_model, evaluate_checkpoint, load_run_model, train

__all__ = [
    "CheckpointError",
    "DataSpec",
    "DistillSpec",
    "ModelSpec",
    "OptimizerSpec",
    "Recipe",
    "RecipeError",
    "ScheduleSpec",
    "Stage",
    "TrainResult",
    "build_model",
    "builtin_recipes",
    "evaluate_checkpoint",
    "load_recipe",
    "load_run_model",
    "lr_at",
    "train",
]
