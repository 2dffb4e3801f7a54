"""Labels checked against the classes when a dataset is built (USERS.md #8: "label 998 vs 991
logits"): a split, cache or folder whose labels the model cannot score stops the build with an
error naming the file, the split, one image and the rule."""
import json
import os
import random
import re
import shutil

import pytest

from dassl.data.datasets import DatasetBase, DatasetError, Datum, build_dataset
from dassl.data.datasets.base_dataset import check_labels
from tests.helpers.datasets import (
    dataset_cfg,
    make_eurosat,
    make_imagenet,
    make_imagenet_a,
    make_imagenetv2,
)
from tests.test_datasets_user import FOLDER_YAML, user_cfg, write_folder_dataset


def build(root, name="EuroSAT", num_shots=-1, seed=1):
    random.seed(seed)
    return build_dataset(dataset_cfg(root, name, num_shots=num_shots, seed=seed))


def edit_json(path, edit):
    with open(path) as f:
        data = json.load(f)
    edit(data)
    with open(path, "w") as f:
        json.dump(data, f)


def error_of(root, name="EuroSAT", num_shots=-1):
    with pytest.raises(DatasetError) as info:
        build(root, name, num_shots=num_shots)
    return str(info.value)


# -- the rules, on hand-made items ---------------------------------------------------------------


def items(*pairs):
    return [Datum(impath=f"img{i}.jpg", label=label, classname=name) for i, (label, name) in enumerate(pairs)]


TRAIN = items((0, "cat"), (1, "dog"), (2, "eel"), (1, "dog"))


@pytest.mark.parametrize(
    "splits, split, image, rule",
    [
        ([("train", TRAIN), ("test", items((0, "cat"), (3, "fox")))], "test", "img1.jpg",
         'label 3 is not a class of split "train" (labels 0..2)'),
        ([("train", TRAIN), ("val", items((2, "eels")))], "val", "img0.jpg",
         'label 2 is "eel" in split "train"; one label must have one class name'),
        ([("train", items((0, "cat"), (2, "eel")))], "train", "img1.jpg",
         "labels go up to 2 but no image has label 1"),
        ([("train", items((0, "cat"), (1, "dog"), (1, "hound")))], "train", "img2.jpg",
         'label 1 is also named "dog" here'),
        ([("train", items((-1, "cat"), (0, "dog")))], "train", "img0.jpg", "labels must be 0 or more"),
    ],
)
def test_each_rule_names_the_split_the_image_and_the_rule(splits, split, image, rule):
    with pytest.raises(DatasetError) as info:
        check_labels(splits, "Toy (labels.json)", "Fix it.")
    message = str(info.value)
    assert message.startswith(f'Toy (labels.json): split "{split}", image "{image}"')
    assert rule in message and message.endswith("Fix it.")


def test_consistent_splits_pass_and_empty_splits_are_skipped():
    check_labels([("train", TRAIN), ("val", None), ("test", items((2, "eel"), (0, "cat")))], "Toy")
    check_labels([("test", items((1, "dog"), (0, "cat")))], "Toy", classnames=["cat", "dog"])


def test_a_class_list_needs_an_image_per_class_and_its_names():
    with pytest.raises(DatasetError, match=r'split "test", class 2 \("eel"\) of the class list has no image'):
        check_labels([("test", items((1, "dog"), (0, "cat")))], "Toy", classnames=["cat", "dog", "eel"])
    with pytest.raises(DatasetError, match='label 1 is "dog" in the class list'):
        check_labels([("test", items((1, "hound"), (0, "cat")))], "Toy", classnames=["cat", "dog"])


def test_dataset_base_checks_every_dataset():
    """A dataset written for CoOp (a plain DatasetBase subclass) is checked too."""
    with pytest.raises(DatasetError, match='CoOpStyle: split "test", image "img1.jpg".*label 3 is not a class'):
        type("CoOpStyle", (DatasetBase,), {})(train_x=TRAIN, test=items((0, "cat"), (3, "fox")))


# -- datasets built from files -------------------------------------------------------------------


def test_test_label_beyond_the_classes_names_the_split_file(tmp_path):
    dataset_dir = make_eurosat(tmp_path, n_classes=3, n_train=2, n_val=1, n_test=1)
    split_path = os.path.join(dataset_dir, "split_zhou_EuroSAT.json")
    edit_json(split_path, lambda split: split["test"][1].__setitem__(1, 12))
    message = error_of(tmp_path)
    image = os.path.join(dataset_dir, "2750", "Forest", "Forest_8.jpg")
    assert message.startswith(f'EuroSAT ("{split_path}"): split "test", image "{image}" (label 12, class "Forest")')
    assert 'label 12 is not a class of split "train" (labels 0..2)' in message
    assert "Put the published split file there (see DATASETS.md §EuroSAT)." in message


def test_one_label_with_two_class_names_is_refused(tmp_path):
    dataset_dir = make_eurosat(tmp_path, n_classes=3, n_train=2, n_val=1, n_test=1)
    edit_json(os.path.join(dataset_dir, "split_zhou_EuroSAT.json"), lambda split: split["val"][0].__setitem__(2, "Farm"))
    assert re.search(r'split "val", .*class "Farm"\): label 0 is "Annual Crop Land" in split "train"', error_of(tmp_path))


def test_a_class_missing_from_training_is_refused(tmp_path):
    """Without it the model would have one output fewer than the labels need."""
    dataset_dir = make_eurosat(tmp_path, n_classes=3, n_train=2, n_val=1, n_test=1)
    edit_json(os.path.join(dataset_dir, "split_zhou_EuroSAT.json"),
              lambda split: split.update(train=[row for row in split["train"] if row[1] != 1]))
    assert 'split "train"' in (message := error_of(tmp_path)) and "no image has label 1" in message


def test_user_split_file_advice_is_to_re_split(tmp_path):
    write_folder_dataset(tmp_path / "my_flowers")
    build_dataset(user_cfg(tmp_path, FOLDER_YAML))
    split_path = tmp_path / "my_flowers" / "split_zhou_my_flowers.json"
    edit_json(split_path, lambda split: split["test"][0].__setitem__(1, 7))
    with pytest.raises(DatasetError, match=f'{re.escape(str(split_path))}.*Correct it, or delete it to re-split the images'):
        build_dataset(user_cfg(tmp_path, FOLDER_YAML))


def test_a_stale_few_shot_cache_is_named(tmp_path):
    dataset_dir = make_eurosat(tmp_path, n_classes=3, n_train=3, n_val=2, n_test=1)
    build(tmp_path, num_shots=2)
    cache = os.path.join(dataset_dir, "split_fewshot", "shot_2-seed_1.json")
    edit_json(cache, lambda sample: sample["train"][0].__setitem__(1, 5))
    message = error_of(tmp_path, num_shots=2)
    assert message.startswith(f'EuroSAT ("{cache}"): split "train"')
    assert "labels go up to 5" in message and message.endswith("Delete it to have the sample drawn again.")


def test_a_stale_imagenet_image_list_is_named(tmp_path):
    dataset_dir = make_imagenet(tmp_path, n_classes=3)
    build(tmp_path, "ImageNet")
    cache = os.path.join(dataset_dir, "preprocessed.json")
    edit_json(cache, lambda lists: lists["test"][0].__setitem__(1, 4))
    with pytest.raises(DatasetError, match=f'{re.escape(cache)}.*label 4 is not a class.*listed again'):
        build(tmp_path, "ImageNet")


@pytest.mark.parametrize("maker, name, class_folder, missing", [
    (make_imagenetv2, "ImageNetV2", os.path.join("imagenetv2-matched-frequency-format-val", "2"),
     'class 2 ("great white shark")'),
    (make_imagenet_a, "ImageNetA", os.path.join("imagenet-a", "n01491361"), 'class 1 ("tiger shark")'),
])
def test_test_only_labels_must_match_the_class_list(tmp_path, maker, name, class_folder, missing):
    """An empty last class folder would silently drop the class (one output fewer)."""
    class_dir = os.path.join(maker(tmp_path), class_folder)
    shutil.rmtree(class_dir)
    os.makedirs(class_dir)
    assert f'split "test", {missing} of the class list has no image' in error_of(tmp_path, name)


def test_consistent_datasets_still_build(tmp_path):
    make_eurosat(tmp_path, n_classes=3, n_train=2, n_val=1, n_test=1)
    make_imagenet_a(tmp_path)
    assert build(tmp_path).num_classes == 3
    assert build(tmp_path, "ImageNetA").classnames == ["goldfish", "tiger shark"]
