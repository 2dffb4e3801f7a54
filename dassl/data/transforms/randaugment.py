"""Dassl's RandAugment (`INPUT.TRANSFORMS` "randaugment", the augmentation CoPrompt trains with).

Dassl (KaiyangZhou/Dassl.pytorch, dassl/data/transforms/randaugment.py) cannot be imported on
NumPy 2 (its SolarizeAdd uses the removed `np.int`), so it is written here from its definition:
each image gets N operations drawn with replacement (`random.choices`) from the 16 below, each
at the value `M / 30 * (high - low) + low` of its range (M = 10 by default: a 0.7 enhance factor,
solarize threshold 85.3, 5 posterize bits, 10 degrees of rotation, shear 0.1, a 33.3 px shift, a
13.3 px grey square). Rotations, shears and shifts take either sign with probability 1/2
(`random.random() > 0.5` flips it); the square's corner is drawn with NumPy's global generator,
as there. PIL's defaults throughout (nearest-neighbour resampling, black fill), so that with the
same Python and NumPy random states an image comes out pixel for pixel as Dassl's.

torchvision's RandAugment (another op list and magnitude scale: no Invert, SolarizeAdd or
Cutout) is `INPUT.TRANSFORMS` "randaugment_torchvision".
"""
import random

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

MAX_MAGNITUDE = 30
CUTOUT_FILL = (125, 123, 114)


def _signed(value):
    return -value if random.random() > 0.5 else value


def _affine(img, coefficients):
    return img.transform(img.size, Image.AFFINE, coefficients)


def auto_contrast(img, _):
    return ImageOps.autocontrast(img)


def equalize(img, _):
    return ImageOps.equalize(img)


def invert(img, _):
    return ImageOps.invert(img)


def rotate(img, degrees):
    return img.rotate(_signed(degrees))


def posterize(img, bits):
    return ImageOps.posterize(img, int(bits))


def solarize(img, threshold):
    return ImageOps.solarize(img, threshold)


def solarize_add(img, addition, threshold=128):
    """Add `addition` to every channel (clipped to 0..255, truncated to integers), then solarize
    at 128."""
    shifted = np.clip(np.asarray(img).astype(np.int64) + addition, 0, 255).astype(np.uint8)
    return ImageOps.solarize(Image.fromarray(shifted), threshold)


def color(img, factor):
    return ImageEnhance.Color(img).enhance(factor)


def contrast(img, factor):
    return ImageEnhance.Contrast(img).enhance(factor)


def brightness(img, factor):
    return ImageEnhance.Brightness(img).enhance(factor)


def sharpness(img, factor):
    return ImageEnhance.Sharpness(img).enhance(factor)


def shear_x(img, shear):
    return _affine(img, (1, _signed(shear), 0, 0, 1, 0))


def shear_y(img, shear):
    return _affine(img, (1, 0, 0, _signed(shear), 1, 0))


def cutout(img, size):
    """A `size` px square of CUTOUT_FILL. Its corner comes from `np.random.uniform(w)` (NumPy's
    low=w, high=1: a draw in [1, w]), less size / 2, as Dassl's CutoutAbs draws it."""
    if size < 0:
        return img
    width, height = img.size
    x0 = int(max(0, np.random.uniform(width) - size / 2.0))
    y0 = int(max(0, np.random.uniform(height) - size / 2.0))
    box = (x0, y0, min(width, x0 + size), min(height, y0 + size))
    img = img.copy()
    ImageDraw.Draw(img).rectangle(box, CUTOUT_FILL)
    return img


def translate_x(img, pixels):
    return _affine(img, (1, 0, _signed(pixels), 0, 1, 0))


def translate_y(img, pixels):
    return _affine(img, (1, 0, 0, 0, 1, _signed(pixels)))


# (operation, value at M = 0, value at M = 30), in Dassl's order (the order random.choices
# draws from, so it decides which operations a seed picks).
OPERATIONS = (
    (auto_contrast, 0, 1),
    (equalize, 0, 1),
    (invert, 0, 1),
    (rotate, 0, 30),
    (posterize, 4, 8),
    (solarize, 0, 256),
    (solarize_add, 0, 110),
    (color, 0.1, 1.9),
    (contrast, 0.1, 1.9),
    (brightness, 0.1, 1.9),
    (sharpness, 0.1, 1.9),
    (shear_x, 0.0, 0.3),
    (shear_y, 0.0, 0.3),
    (cutout, 0, 40),
    (translate_x, 0.0, 100),
    (translate_y, 0.0, 100),
)


def operation_value(magnitude, low, high):
    return magnitude / MAX_MAGNITUDE * (high - low) + low


class RandAugment:
    """N operations of OPERATIONS at magnitude M (0..30) on a PIL image."""

    def __init__(self, n=2, m=10):
        if not 0 <= m <= MAX_MAGNITUDE:
            raise ValueError(f"RandAugment magnitude {m} is outside 0..{MAX_MAGNITUDE}")
        self.n, self.m = n, m

    def __call__(self, img):
        for operation, low, high in random.choices(OPERATIONS, k=self.n):
            img = operation(img, operation_value(self.m, low, high))
        return img

    def __repr__(self):
        return f"RandAugment(n={self.n}, m={self.m}, Dassl's operations)"
