"""INPUT.TRANSFORMS "randaugment" is Dassl's RandAugment (CoPrompt's augmentation), checked
against values computed here from Dassl's definitions (KaiyangZhou/Dassl.pytorch,
dassl/data/transforms/randaugment.py: its op list and ranges, value = M / 30 * (max - min) + min,
PIL's defaults); "randaugment_torchvision" is torchvision's."""
import random

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from dassl.config import ConfigError
from dassl.data.transforms import build_transform
from dassl.data.transforms import randaugment as ra
from tests.helpers.engine import toy_cfg

# Dassl's randaugment_list(): (operation, min, max) in its order.
DASSL_OPERATIONS = [
    ("AutoContrast", 0, 1), ("Equalize", 0, 1), ("Invert", 0, 1), ("Rotate", 0, 30),
    ("Posterize", 4, 8), ("Solarize", 0, 256), ("SolarizeAdd", 0, 110), ("Color", 0.1, 1.9),
    ("Contrast", 0.1, 1.9), ("Brightness", 0.1, 1.9), ("Sharpness", 0.1, 1.9),
    ("ShearX", 0.0, 0.3), ("ShearY", 0.0, 0.3), ("CutoutAbs", 0, 40),
    ("TranslateXabs", 0.0, 100), ("TranslateYabs", 0.0, 100),
]
OURS = {"AutoContrast": ra.auto_contrast, "Equalize": ra.equalize, "Invert": ra.invert,
        "Rotate": ra.rotate, "Posterize": ra.posterize, "Solarize": ra.solarize,
        "SolarizeAdd": ra.solarize_add, "Color": ra.color, "Contrast": ra.contrast,
        "Brightness": ra.brightness, "Sharpness": ra.sharpness, "ShearX": ra.shear_x,
        "ShearY": ra.shear_y, "CutoutAbs": ra.cutout, "TranslateXabs": ra.translate_x,
        "TranslateYabs": ra.translate_y}


def _image(seed=0, size=(29, 23)):
    pixels = np.random.RandomState(seed).randint(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _value(name, m):
    _, low, high = next(op for op in DASSL_OPERATIONS if op[0] == name)
    return m / 30 * (high - low) + low


def _affine(img, coefficients):
    return np.asarray(img.transform(img.size, Image.AFFINE, coefficients))


def test_the_operations_and_their_ranges_are_dassls_in_dassls_order():
    assert [(op, low, high) for op, low, high in ra.OPERATIONS] == \
        [(OURS[name], low, high) for name, low, high in DASSL_OPERATIONS]


def test_magnitude_10_gives_dassls_values():
    # The values the issue names for Dassl's default M = 10.
    assert _value("Color", 10) == pytest.approx(0.7)
    assert int(_value("Posterize", 10)) == 5
    assert _value("Solarize", 10) == pytest.approx(85.33, abs=0.01)
    assert _value("CutoutAbs", 10) == pytest.approx(13.33, abs=0.01)
    assert ra.operation_value(10, 0, 256) == _value("Solarize", 10)


@pytest.mark.parametrize("m", [0, 10, 23, 30])
def test_each_operation_equals_dassls_definition_at_its_value(m, monkeypatch):
    img = _image()
    pixels = np.asarray(img).astype(np.int64)
    factor = _value("Color", m)
    # Without a sign flip (random.random() <= 0.5), then with one.
    for draw, sign in ((0.25, 1), (0.75, -1)):
        monkeypatch.setattr(random, "random", lambda d=draw: d)
        expected = {
            "Rotate": np.asarray(img.rotate(sign * _value("Rotate", m))),
            "ShearX": _affine(img, (1, sign * _value("ShearX", m), 0, 0, 1, 0)),
            "ShearY": _affine(img, (1, 0, 0, sign * _value("ShearY", m), 1, 0)),
            "TranslateXabs": _affine(img, (1, 0, sign * _value("TranslateXabs", m), 0, 1, 0)),
            "TranslateYabs": _affine(img, (1, 0, 0, 0, 1, sign * _value("TranslateYabs", m))),
        }
        for name, want in expected.items():
            got = np.asarray(OURS[name](img, ra.operation_value(m, *_range(name))))
            assert np.array_equal(got, want), (name, m, sign)
    added = np.clip(pixels + _value("SolarizeAdd", m), 0, 255).astype(np.uint8).astype(np.int64)
    expected = {
        "AutoContrast": np.asarray(ImageOps.autocontrast(img)),
        "Equalize": np.asarray(ImageOps.equalize(img)),
        "Invert": 255 - pixels,
        "Posterize": pixels & (0xFF << (8 - int(_value("Posterize", m))) & 0xFF),
        "Solarize": np.where(pixels < _value("Solarize", m), pixels, 255 - pixels),
        "SolarizeAdd": np.where(added < 128, added, 255 - added),
        "Color": np.asarray(ImageEnhance.Color(img).enhance(factor)),
        "Contrast": np.asarray(ImageEnhance.Contrast(img).enhance(factor)),
        "Brightness": np.asarray(ImageEnhance.Brightness(img).enhance(factor)),
        "Sharpness": np.asarray(ImageEnhance.Sharpness(img).enhance(factor)),
    }
    for name, want in expected.items():
        got = np.asarray(OURS[name](img, ra.operation_value(m, *_range(name))))
        assert np.array_equal(got, want), (name, m)


def _range(name):
    return next((low, high) for op, low, high in DASSL_OPERATIONS if op == name)


@pytest.mark.parametrize("seed", range(6))
def test_cutout_is_a_grey_square_placed_as_dassl_draws_it(seed):
    img, side = _image(seed), _value("CutoutAbs", 10)
    np.random.seed(seed)
    out = np.asarray(ra.cutout(img, side))
    # Dassl: x0 = np.random.uniform(w) (low = w, high = 1), then y0; corner = int(max(0, u - v/2)).
    np.random.seed(seed)
    x0 = int(max(0, np.random.uniform(img.size[0]) - side / 2))
    y0 = int(max(0, np.random.uniform(img.size[1]) - side / 2))
    changed = np.argwhere((out != np.asarray(img)).any(axis=2))
    grey = np.argwhere((out == (125, 123, 114)).all(axis=2))
    assert len(changed) and set(map(tuple, changed)) <= set(map(tuple, grey))
    (top, left), (bottom, right) = grey.min(axis=0), grey.max(axis=0)
    assert (left, top) == (x0, y0)
    assert right == min(img.size[0] - 1, int(x0 + side)) and bottom == min(img.size[1] - 1, int(y0 + side))
    assert len(grey) == (right - left + 1) * (bottom - top + 1)


@pytest.mark.parametrize("n,m", [(2, 10), (3, 25)])
def test_a_draw_applies_random_choices_of_dassls_list_in_turn(n, m, monkeypatch):
    img = _image(3)
    for seed in range(20):
        random.seed(seed)
        names = [op[0] for op in random.choices(DASSL_OPERATIONS, k=n)]
        random.seed(seed)
        np.random.seed(seed)
        got = np.asarray(ra.RandAugment(n, m)(img))
        random.seed(seed)
        random.choices(DASSL_OPERATIONS, k=n)
        np.random.seed(seed)
        want = img
        for name in names:
            want = OURS[name](want, _value(name, m))
        assert np.array_equal(got, np.asarray(want)), (seed, names)


def _randaugment_step(cfg):
    return [step for step in build_transform(cfg, is_train=True).transforms
            if "RandAugment" in type(step).__name__]


def test_randaugment_is_dassls_and_torchvisions_is_an_option(tmp_path):
    cfg = toy_cfg(tmp_path, tmp_path, **{"INPUT.TRANSFORMS": ("randaugment", "normalize")})
    (step,) = _randaugment_step(cfg)
    assert isinstance(step, ra.RandAugment) and (step.n, step.m) == (2, 10)
    cfg = toy_cfg(tmp_path, tmp_path, **{"INPUT.TRANSFORMS": ("randaugment_torchvision",)})
    (step,) = _randaugment_step(cfg)
    assert type(step).__module__.startswith("torchvision")
    cfg = toy_cfg(tmp_path, tmp_path, **{"INPUT.TRANSFORMS": ("randaugment",), "INPUT.RANDAUGMENT_M": 31})
    with pytest.raises(ConfigError, match="RANDAUGMENT_M"):
        build_transform(cfg)

