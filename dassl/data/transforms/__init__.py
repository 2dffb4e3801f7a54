from . import transforms as _transforms
from .transforms import AVAILABLE_CHOICES, INTERPOLATION_NAMES, build_transform, interpolation_mode

__all__ = ["AVAILABLE_CHOICES", "INTERPOLATION_MODES", "INTERPOLATION_NAMES", "build_transform",
           "interpolation_mode"]


def __getattr__(name):
    # INTERPOLATION_MODES is built on first use (it imports torchvision: see transforms.py).
    if name == "INTERPOLATION_MODES":
        return _transforms.INTERPOLATION_MODES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
