from .transforms import AVAILABLE_CHOICES, INTERPOLATION_MODES, build_transform, interpolation_mode

__all__ = ["AVAILABLE_CHOICES", "INTERPOLATION_MODES", "build_transform", "interpolation_mode"]
