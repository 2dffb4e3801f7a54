"""Image transforms selected by name through ``cfg.INPUT.TRANSFORMS`` (Dassl's names).

Training: each chosen augmentation in a fixed order, then ToTensor and (if chosen) normalize.
Test: resize the smaller edge to ``max(INPUT.SIZE)``, center crop ``INPUT.SIZE``, ToTensor,
normalize; the crop is always applied so test images match the training size.
"""
import functools
import random

import torch

from dassl.utils import ConfigError

from .randaugment import RandAugment

# torchvision is imported when a transform is built, not with this module: importing it takes
# seconds (it loads torch's compiler stack), which a command stopping at a config mistake should
# not wait for. INTERPOLATION_MODES (name -> torchvision InterpolationMode) is built on first use.
INTERPOLATION_NAMES = ("bilinear", "bicubic", "nearest")


def _torchvision_transforms():
    from torchvision import transforms

    return transforms


@functools.lru_cache(maxsize=1)
def _interpolation_modes():
    modes = _torchvision_transforms().InterpolationMode
    return {name: getattr(modes, name.upper()) for name in INTERPOLATION_NAMES}


def __getattr__(name):
    if name == "INTERPOLATION_MODES":
        return _interpolation_modes()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


AVAILABLE_CHOICES = (
    "random_flip",
    "random_crop",
    "random_resized_crop",
    "center_crop",
    "normalize",
    "colorjitter",
    "randomgrayscale",
    "gaussian_blur",
    "gaussian_noise",
    "randaugment",
    "randaugment_torchvision",
)


class GaussianNoise:
    """Add N(mean, std) noise to a tensor image with probability ``p``."""

    def __init__(self, mean=0.0, std=0.15, p=0.5):
        self.mean = mean
        self.std = std
        self.p = p

    def __call__(self, img):
        if random.uniform(0, 1) > self.p:
            return img
        return img + torch.randn(img.size()) * self.std + self.mean

    def __repr__(self):
        return f"GaussianNoise(mean={self.mean}, std={self.std}, p={self.p})"


def _check_choices(choices):
    unknown = [choice for choice in choices if choice not in AVAILABLE_CHOICES]
    if unknown:
        raise ConfigError(
            f"Unknown transform(s) {unknown} in INPUT.TRANSFORMS; available: {list(AVAILABLE_CHOICES)}"
        )


def interpolation_mode(cfg):
    """The torchvision interpolation that ``INPUT.INTERPOLATION`` names."""
    if cfg.INPUT.INTERPOLATION not in INTERPOLATION_NAMES:
        raise ConfigError(
            f'INPUT.INTERPOLATION "{cfg.INPUT.INTERPOLATION}" is not one of {list(INTERPOLATION_NAMES)}'
        )
    return _interpolation_modes()[cfg.INPUT.INTERPOLATION]


def build_transform(cfg, is_train=True, choices=None):
    """Build the training (``is_train``) or test transform; ``choices`` overrides INPUT.TRANSFORMS.

    Returns None when ``INPUT.NO_TRANSFORM`` is set.
    """
    if cfg.INPUT.NO_TRANSFORM:
        print("Note: no transform is applied!")
        return None
    choices = list(cfg.INPUT.TRANSFORMS if choices is None else choices)
    _check_choices(choices)
    T = _torchvision_transforms()
    normalize = T.Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD)
    if is_train:
        return _build_transform_train(cfg, choices, normalize)
    return _build_transform_test(cfg, choices, normalize)


def _build_transform_train(cfg, choices, normalize):
    T = _torchvision_transforms()
    print("Building transform_train")
    interpolation = interpolation_mode(cfg)
    input_size = list(cfg.INPUT.SIZE)
    steps = []

    # Without a crop nothing else brings the image to the network's input size.
    if "random_crop" not in choices and "random_resized_crop" not in choices:
        print(f"+ resize to {input_size[0]}x{input_size[1]}")
        steps.append(T.Resize(input_size, interpolation=interpolation))
    if "random_crop" in choices:
        print(f"+ random crop (padding = {cfg.INPUT.CROP_PADDING})")
        steps.append(T.RandomCrop(input_size, padding=cfg.INPUT.CROP_PADDING))
    if "random_resized_crop" in choices:
        scale = tuple(cfg.INPUT.RRCROP_SCALE)
        print(f"+ random resized crop (size={tuple(input_size)}, scale={scale})")
        steps.append(T.RandomResizedCrop(input_size, scale=scale, interpolation=interpolation))
    if "random_flip" in choices:
        print("+ random flip")
        steps.append(T.RandomHorizontalFlip())
    if "randaugment" in choices or "randaugment_torchvision" in choices:
        n_ops, magnitude = cfg.INPUT.RANDAUGMENT_N, cfg.INPUT.RANDAUGMENT_M
        if not 0 <= magnitude <= 30 or n_ops < 0:
            raise ConfigError(f"INPUT.RANDAUGMENT_M is {magnitude} and INPUT.RANDAUGMENT_N "
                              f"{n_ops}: M must lie in 0..30 and N be at least 0")
    if "randaugment" in choices:
        # Dassl's RandAugment (its 16 operations and magnitude mapping; see randaugment.py)
        print(f"+ randaugment (n={n_ops}, m={magnitude})")
        steps.append(RandAugment(n_ops, magnitude))
    if "randaugment_torchvision" in choices:
        # torchvision's RandAugment: its own 14 operations, M of 30 bins
        print(f"+ randaugment_torchvision (n={n_ops}, m={magnitude})")
        steps.append(T.RandAugment(num_ops=n_ops, magnitude=magnitude, num_magnitude_bins=31,
                                   interpolation=interpolation))
    if "colorjitter" in choices:
        print("+ color jitter")
        steps.append(
            T.ColorJitter(
                brightness=cfg.INPUT.COLORJITTER_B,
                contrast=cfg.INPUT.COLORJITTER_C,
                saturation=cfg.INPUT.COLORJITTER_S,
                hue=cfg.INPUT.COLORJITTER_H,
            )
        )
    if "randomgrayscale" in choices:
        print("+ random gray scale")
        steps.append(T.RandomGrayscale(p=cfg.INPUT.RGS_P))
    if "gaussian_blur" in choices:
        print(f"+ gaussian blur (kernel={cfg.INPUT.GB_K})")
        steps.append(T.RandomApply([T.GaussianBlur(cfg.INPUT.GB_K)], p=cfg.INPUT.GB_P))

    print("+ to torch tensor of range [0, 1]")
    steps.append(T.ToTensor())
    if "normalize" in choices:
        print(f"+ normalization (mean={cfg.INPUT.PIXEL_MEAN}, std={cfg.INPUT.PIXEL_STD})")
        steps.append(normalize)
    if "gaussian_noise" in choices:
        print(f"+ gaussian noise (mean={cfg.INPUT.GN_MEAN}, std={cfg.INPUT.GN_STD})")
        steps.append(GaussianNoise(cfg.INPUT.GN_MEAN, cfg.INPUT.GN_STD))
    return T.Compose(steps)


def _build_transform_test(cfg, choices, normalize):
    T = _torchvision_transforms()
    print("Building transform_test")
    interpolation = interpolation_mode(cfg)
    input_size = list(cfg.INPUT.SIZE)
    print(f"+ resize the smaller edge to {max(input_size)}")
    print(f"+ {input_size[0]}x{input_size[1]} center crop")
    steps = [
        T.Resize(max(input_size), interpolation=interpolation),
        T.CenterCrop(input_size),
        T.ToTensor(),
    ]
    if "normalize" in choices:
        print(f"+ normalization (mean={cfg.INPUT.PIXEL_MEAN}, std={cfg.INPUT.PIXEL_STD})")
        steps.append(normalize)
    return T.Compose(steps)
