from .build import TRAINER_REGISTRY, build_trainer
from .trainer import SimpleTrainer, TrainerBase, TrainerX

__all__ = [
    "build_trainer",
    "SimpleTrainer",
    "TRAINER_REGISTRY",
    "TrainerBase",
    "TrainerX",
]
