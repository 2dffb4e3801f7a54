"""DataManager, DatasetWrapper and the transforms of SPEC.md §1."""
import numpy as np
import pytest
import torch
from PIL import Image

from dassl.config import ConfigError
from dassl.data import DataManager, DatasetWrapper
from dassl.data.datasets import DatasetBase, Datum
from dassl.data.transforms import INTERPOLATION_MODES, build_transform
from tests.helpers.engine import TOY_CLASSES, toy_cfg


def _gradient_image(path, width, height):
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[..., 0] = np.arange(width, dtype=np.uint8)[None, :] * 3
    pixels[..., 1] = np.arange(height, dtype=np.uint8)[:, None] * 3
    Image.fromarray(pixels).save(path)
    return Image.open(path).convert("RGB")


def test_test_transform_resizes_smaller_edge_then_center_crops(tmp_path):
    cfg = toy_cfg(tmp_path, tmp_path, **{"INPUT.SIZE": (16, 16), "INPUT.INTERPOLATION": "bicubic"})
    image = _gradient_image(tmp_path / "wide.png", width=64, height=32)
    tensor = build_transform(cfg, is_train=False)(image)
    # Reference: resize 64x32 -> 32x16 (smaller edge 16), keep the central 16 columns.
    resized = image.resize((32, 16), Image.BICUBIC)
    reference = np.asarray(resized.crop((8, 0, 24, 16)), dtype=np.float32) / 255.0
    reference = (torch.from_numpy(reference).permute(2, 0, 1) - torch.tensor(cfg.INPUT.PIXEL_MEAN)[:, None, None]) \
        / torch.tensor(cfg.INPUT.PIXEL_STD)[:, None, None]
    assert tensor.shape == (3, 16, 16)
    assert torch.allclose(tensor, reference, atol=2 / 255 / 0.22)
    assert INTERPOLATION_MODES["bicubic"].value == "bicubic"


def test_train_transforms_produce_input_size(tmp_path):
    image = _gradient_image(tmp_path / "img.png", width=40, height=30)
    for choices in (["random_resized_crop", "random_flip", "normalize"], ["random_crop", "normalize"], ["normalize"]):
        cfg = toy_cfg(tmp_path, tmp_path, **{"INPUT.SIZE": (24, 24), "INPUT.TRANSFORMS": tuple(choices)})
        assert build_transform(cfg, is_train=True)(image).shape == (3, 24, 24)
    cfg = toy_cfg(tmp_path, tmp_path, **{"INPUT.TRANSFORMS": ("warp_drive",)})
    with pytest.raises(ConfigError, match="random_resized_crop"):
        build_transform(cfg)


def test_an_unknown_interpolation_is_refused_by_every_resize(tmp_path):
    """The test transform and DatasetWrapper's img0 resize read INPUT.INTERPOLATION alike."""
    cfg = toy_cfg(tmp_path, tmp_path, **{"INPUT.INTERPOLATION": "lanczos"})
    data = [Datum(impath=str(tmp_path / "img.png"))]
    for build in (lambda: build_transform(cfg, is_train=False), lambda: DatasetWrapper(cfg, data)):
        with pytest.raises(ConfigError, match=r"INPUT.INTERPOLATION \"lanczos\" is not one of"):
            build()


def test_k_transforms_without_a_transform_is_a_config_error(tmp_path):
    cfg = toy_cfg(tmp_path, tmp_path, **{"DATALOADER.K_TRANSFORMS": 2})
    with pytest.raises(ConfigError, match="K_TRANSFORMS=2 needs a transform"):
        DatasetWrapper(cfg, [], transform=None, is_train=True)


def test_a_domain_the_dataset_lacks_is_a_config_error():
    dataset = DatasetBase(train_x=[Datum(impath="a.png")])
    dataset.domains = ["photo", "sketch"]
    with pytest.raises(ConfigError, match="painting"):
        dataset.check_input_domains(["photo"], ["painting"])


def test_random_resized_crop_uses_rrcrop_scale(tmp_path):
    cfg = toy_cfg(tmp_path, tmp_path, **{"INPUT.TRANSFORMS": ("random_resized_crop",), "INPUT.RRCROP_SCALE": (0.5, 1.0)})
    crop = build_transform(cfg, is_train=True).transforms[0]
    assert crop.scale == (0.5, 1.0)


def test_data_manager_builds_loaders_of_dicts(tmp_path):
    cfg = toy_cfg(tmp_path / "data", tmp_path / "out")
    (tmp_path / "data").mkdir()
    dm = DataManager(cfg)
    assert dm.num_classes == 3
    assert dm.lab2cname == dict(enumerate(TOY_CLASSES))
    batch = next(iter(dm.test_loader))
    assert set(batch) == {"img", "label", "domain", "impath", "index"}
    assert batch["img"].shape == (5, 3, 8, 8)
    assert len(dm.train_loader_x) == 3  # 12 images, batch 4
    assert len(dm.val_loader.dataset) == 12


def test_unreadable_image_error_names_the_file(tmp_path):
    cfg = toy_cfg(tmp_path, tmp_path)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    wrapper = DatasetWrapper(cfg, [Datum(impath=str(broken), label=0, classname="x")], transform=None)
    with pytest.raises(OSError, match="broken.jpg"):
        wrapper[0]
    missing = DatasetWrapper(cfg, [Datum(impath=str(tmp_path / "gone.png"), label=0)], transform=None)
    with pytest.raises(FileNotFoundError, match="gone.png"):
        missing[0]


def test_workers_are_capped_at_the_cpus_available_saying_so_once(tmp_path, capsys):
    from dassl.data.data_manager import available_cpus

    (tmp_path / "data").mkdir()
    cpus = available_cpus()
    cfg = toy_cfg(tmp_path / "data", tmp_path / "out", **{"DATALOADER.NUM_WORKERS": cpus + 7})
    dm = DataManager(cfg)
    assert {dm.train_loader_x.num_workers, dm.val_loader.num_workers,
            dm.test_loader.num_workers} == {cpus}
    DataManager(cfg)
    notes = [line for line in capsys.readouterr().out.splitlines() if "NUM_WORKERS" in line]
    assert notes == [f"Note: DATALOADER.NUM_WORKERS {cpus + 7} is more than the {cpus} CPUs "
                     f"available: using {cpus} workers"]
    within = toy_cfg(tmp_path / "data", tmp_path / "out", **{"DATALOADER.NUM_WORKERS": 0})
    assert DataManager(within).test_loader.num_workers == 0


@pytest.mark.parametrize("eval_only", [False, True])
def test_evaluation_only_builds_no_training_transform(tmp_path, capsys, eval_only):
    (tmp_path / "data").mkdir()
    cfg = toy_cfg(tmp_path / "data", tmp_path / "out", **{"RUN.EVAL_ONLY": eval_only})
    dm = DataManager(cfg)
    built_train = "Building transform_train" in capsys.readouterr().out
    assert built_train is not eval_only
    assert (dm.tfm_train is dm.tfm_test) is eval_only
