"""Every dataset, written in its real on-disk layout, parses to the right classes and splits."""
import math
import os
import random

import pytest

from dassl.data.datasets import DatasetError, build_dataset
from tests.helpers import datasets as tiny
from tests.helpers.datasets import dataset_cfg, package_dataset_names


def build(root, name, num_shots=-1, seed=1, subsample="all"):
    random.seed(seed)
    return build_dataset(dataset_cfg(root, name, num_shots=num_shots, seed=seed, subsample=subsample))


def needs_scipy():
    pytest.importorskip("scipy")


# (registry name, writer, class names by label, (train, val, test) sizes; val None = no val split)
CASES = {
    "EuroSAT": (lambda root: tiny.make_eurosat(root, n_classes=3),
                ["Annual Crop Land", "Forest", "Herbaceous Vegetation Land"], (12, 6, 9)),
    "DescribableTextures": (tiny.make_dtd, ["banded", "blotchy", "braided"], (6, 3, 3)),
    "Food101": (tiny.make_food101, ["apple_pie", "baby_back_ribs", "baklava"], (6, 3, 3)),
    "Caltech101": (tiny.make_caltech101, ["face", "leopard", "accordion", "airplane"], (8, 4, 8)),
    "OxfordPets": (lambda root: tiny.make_oxford_pets(root), ["abyssinian", "american_bulldog", "bengal"], (12, 3, 6)),
    "StanfordCars": (lambda root: tiny.make_stanford_cars(root, write_mat=False),
                     ["2000 AM General Hummer SUV", "2012 Acura RL Sedan", "2012 Tesla Model S Sedan"], (12, 3, 6)),
    "OxfordFlowers": (lambda root: tiny.make_oxford_flowers(root, write_mat=False),
                      ["pink primrose", "hard-leaved pocket orchid", "canterbury bells"], (6, 3, 3)),
    "FGVCAircraft": (tiny.make_fgvc_aircraft, ["707-320", "A300B4", "Cessna 172"], (6, 3, 3)),
    "SUN397": (tiny.make_sun397, ["abbey", "outdoor apartment_building", "bedroom"], (12, 3, 6)),
    "UCF101": (tiny.make_ucf101, ["Apply_Eye_Makeup", "Basketball", "Yo_Yo"], (12, 3, 6)),
    "ImageNet": (tiny.make_imagenet, ["tench", "goldfish", "great white shark"], (12, None, 6)),
    "ImageNetV2": (tiny.make_imagenetv2, ["tench", "goldfish", "great white shark"], (6, None, 6)),
    "ImageNetSketch": (tiny.make_imagenet_sketch, ["tench", "goldfish", "great white shark"], (6, None, 6)),
    "ImageNetA": (tiny.make_imagenet_a, ["goldfish", "tiger shark"], (4, None, 4)),
    "ImageNetR": (tiny.make_imagenet_r, ["goldfish", "hammerhead shark"], (4, None, 4)),
}


def check_consistent(dataset, classnames):
    for source in (dataset.train_x, dataset.val or [], dataset.test):
        for item in source:
            assert classnames[item.label] == item.classname
            assert os.path.isfile(item.impath) and item.impath.startswith(dataset.dataset_dir)


@pytest.mark.parametrize("name", sorted(CASES))
def test_layout_parses_to_classes_and_splits(tmp_path, name):
    write, classnames, (n_train, n_val, n_test) = CASES[name]
    write(tmp_path)
    dataset = build(tmp_path, name)
    assert dataset.classnames == classnames
    assert dataset.num_classes == len(classnames)
    assert len(dataset.train_x) == n_train and len(dataset.test) == n_test
    if n_val is None:
        assert dataset.val is None
    else:
        assert len(dataset.val) == n_val
    assert {item.label for item in dataset.test} == set(range(len(classnames)))
    check_consistent(dataset, classnames)


@pytest.mark.parametrize("name", sorted(CASES))
def test_base_new_and_open_world_on_every_dataset(tmp_path, name):
    write, classnames, _ = CASES[name]
    write(tmp_path)
    m = math.ceil(len(classnames) / 2)
    base = build(tmp_path, name, subsample="base")
    new = build(tmp_path, name, subsample="new")
    everything = build(tmp_path, name, subsample="all")
    assert base.classnames == classnames[:m] and new.classnames == classnames[m:]
    assert {item.label for item in base.test} == set(range(m))
    assert {item.label for item in new.test} == set(range(len(classnames) - m))
    assert len(base.test) + len(new.test) == len(everything.test)
    assert everything.base_labels == set(range(m)) and base.base_labels is None
    check_consistent(base, classnames[:m])
    check_consistent(new, classnames[m:])


# -- creating the split when no split file is there (CoOp's rules) ---------------------------------

CREATED = {
    "EuroSAT": (lambda root: tiny.make_eurosat(root, n_classes=3, n_train=2, n_val=1, n_test=1, write_split=False),
                ["Annual Crop Land", "Forest", "Herbaceous Vegetation Land"], (6, 3, 3), False),
    "DescribableTextures": (lambda root: tiny.make_dtd(root, write_split=False), ["banded", "blotchy", "braided"], (6, 3, 3), False),
    "Caltech101": (lambda root: tiny.make_caltech101(root, write_split=False),
                   ["face", "leopard", "accordion", "airplane"], (8, 4, 8), False),
    "OxfordPets": (lambda root: tiny.make_oxford_pets(root, write_split=False),
                   ["abyssinian", "american_bulldog", "bengal"], (12, 3, 6), False),
    "SUN397": (lambda root: tiny.make_sun397(root, write_split=False),
               ["abbey", "outdoor apartment_building", "bedroom"], (12, 3, 6), False),
    "UCF101": (lambda root: tiny.make_ucf101(root, write_split=False),
               ["Apply_Eye_Makeup", "Basketball", "Yo_Yo"], (12, 3, 6), False),
    "StanfordCars": (lambda root: tiny.make_stanford_cars(root, write_split=False),
                     ["2000 AM General Hummer SUV", "2012 Acura RL Sedan", "2012 Tesla Model S Sedan"], (12, 3, 6), True),
    "OxfordFlowers": (lambda root: tiny.make_oxford_flowers(root, write_split=False),
                      ["pink primrose", "hard-leaved pocket orchid", "canterbury bells"], (6, 3, 3), True),
}


@pytest.mark.parametrize("name", sorted(CREATED))
def test_missing_split_is_created_from_the_raw_layout(tmp_path, name):
    write, classnames, sizes, uses_mat = CREATED[name]
    if uses_mat:
        needs_scipy()
    dataset_dir = write(tmp_path)
    dataset = build(tmp_path, name, seed=3)
    assert dataset.classnames == classnames
    assert (len(dataset.train_x), len(dataset.val), len(dataset.test)) == sizes
    check_consistent(dataset, classnames)
    assert os.path.isfile(dataset.split_path) and dataset.split_path.startswith(dataset_dir)
    assert build(tmp_path, name, seed=4).train_x == dataset.train_x  # read back, not re-drawn


def test_created_trainval_split_follows_the_pets_rule(tmp_path):
    """Per class in order of first appearance: shuffle, the first round(20%) are val."""
    tiny.make_oxford_pets(tmp_path, n_trainval=6, n_test=1, write_split=False)
    dataset = build(tmp_path, "OxfordPets", seed=8)
    random.seed(8)
    expected_val = []
    for breed, _ in tiny.PETS_BREEDS:
        names = [f"{breed}_{i + 1}.jpg" for i in range(6)]
        random.shuffle(names)
        expected_val.extend(names[:1])
    assert [os.path.basename(item.impath) for item in dataset.val] == expected_val


def test_imagenet_few_shot_sample_and_image_listing_are_cached(tmp_path):
    dataset_dir = tiny.make_imagenet(tmp_path, n_classes=3, n_train=4, n_val=2)
    dataset = build(tmp_path, "ImageNet", num_shots=2, seed=1)
    assert len(dataset.train_x) == 6 and len(dataset.test) == 6 and len(dataset.val) == 6
    assert os.path.isfile(os.path.join(dataset_dir, "preprocessed.json"))
    assert os.path.isfile(os.path.join(dataset_dir, "split_fewshot", "shot_2-seed_1.json"))
    assert build(tmp_path, "ImageNet", num_shots=2, seed=1).train_x == dataset.train_x


def write_imagenet_in_order(root, train_images):
    """A 2-class ImageNet whose train images ``(wnid, label, file name)`` are created in the given
    order, each stamped with its creation rank as modification time."""
    dataset_dir = tiny.make_imagenet(root, n_classes=2, n_train=0, n_val=1)
    for rank, (wnid, label, name) in enumerate(train_images):
        path = os.path.join(dataset_dir, "images", "train", wnid, name)
        tiny.write_image(path, label, rank)
        os.utime(path, ns=(rank, rank))


def test_imagenet_sample_depends_on_the_files_not_their_listing_order(tmp_path, monkeypatch):
    train_images = [(wnid, label, f"{wnid}_{i}.JPEG")
                    for label, (wnid, _) in enumerate(tiny.IMAGENET_CLASSES[:2]) for i in range(6)]
    write_imagenet_in_order(tmp_path / "a", train_images)
    write_imagenet_in_order(tmp_path / "b", train_images[::-1])
    listdir = os.listdir

    def listdir_in_creation_order(path):  # as some file systems list a folder
        return sorted(listdir(path), key=lambda name: os.stat(os.path.join(path, name)).st_mtime_ns)

    monkeypatch.setattr(os, "listdir", listdir_in_creation_order)
    samples = []
    for root in (tmp_path / "a", tmp_path / "b"):
        dataset = build(root, "ImageNet", num_shots=2, seed=1)
        samples.append([(os.path.relpath(item.impath, root), item.label) for item in dataset.train_x + dataset.val])
    assert samples[0] == samples[1]


def test_imagenet_val_images_outside_class_folders_are_explained(tmp_path):
    dataset_dir = tiny.make_imagenet(tmp_path, n_classes=2)
    tiny.write_image(os.path.join(dataset_dir, "images", "val", "ILSVRC2012_val_00000001.JPEG"), 0)
    with pytest.raises(DatasetError, match="one folder per class"):
        build(tmp_path, "ImageNet")


def test_imagenet_variant_falls_back_to_imagenet_classnames(tmp_path):
    tiny.make_imagenet(tmp_path, n_classes=5, n_train=1, n_val=1)
    dataset_dir = tiny.make_imagenet_r(tmp_path)
    os.remove(os.path.join(dataset_dir, "classnames.txt"))
    assert build(tmp_path, "ImageNetR").classnames == ["goldfish", "hammerhead shark"]


def test_test_only_datasets_ignore_num_shots(tmp_path):
    tiny.make_imagenet_a(tmp_path, n_per_class=3)
    dataset = build(tmp_path, "ImageNetA", num_shots=1)
    assert len(dataset.test) == 6 and dataset.train_x == dataset.test


def test_fgvc_unknown_variant_is_reported(tmp_path):
    dataset_dir = tiny.make_fgvc_aircraft(tmp_path)
    with open(os.path.join(dataset_dir, "images_variant_test.txt"), "a") as f:
        f.write("1234567 Concorde\n")
    with pytest.raises(DatasetError, match="Concorde"):
        build(tmp_path, "FGVCAircraft")


def test_every_registered_dataset_has_a_config_and_a_case():
    config_dir = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "datasets")
    names_in_configs = set()
    for filename in os.listdir(config_dir):
        with open(os.path.join(config_dir, filename)) as f:
            names_in_configs.update(line.split('"')[1] for line in f if line.strip().startswith("NAME:"))
    registered = set(package_dataset_names())
    assert names_in_configs == registered
    assert registered - {"UserDataset"} == set(CASES)
