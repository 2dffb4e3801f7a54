from .lr_scheduler import (
    AVAILABLE_SCHEDULERS,
    ConstantWarmupScheduler,
    LinearWarmupScheduler,
    build_lr_scheduler,
)
from .optimizer import AVAILABLE_OPTIMIZERS, build_optimizer

__all__ = [
    "AVAILABLE_OPTIMIZERS",
    "AVAILABLE_SCHEDULERS",
    "build_lr_scheduler",
    "build_optimizer",
    "ConstantWarmupScheduler",
    "LinearWarmupScheduler",
]
