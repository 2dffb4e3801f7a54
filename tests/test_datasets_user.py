"""Users' own data as a dataset, selected by a dataset YAML alone."""
import json
import os
import random

import pytest

from dassl.config import get_cfg_default
from dassl.data.datasets import DatasetError, build_dataset

import datasets
from tests.helpers.datasets import dataset_cfg, make_eurosat, write_image

CLASSES = ["tulip", "daisy", "rose"]  # sorted: daisy, rose, tulip


def write_folder_dataset(folder, n_per_class=10):
    for label, name in enumerate(CLASSES):
        for i in range(n_per_class):
            write_image(os.path.join(folder, "images", name, f"{name}_{i}.png"), label, i)


def user_cfg(root, yaml_text, num_shots=-1, seed=1, subsample="all"):
    """What train.py does with --dataset-config-file: defaults, dataset keys, then the YAML."""
    cfg = get_cfg_default()
    datasets.extend_cfg(cfg)
    os.makedirs(root, exist_ok=True)
    config_file = os.path.join(root, "my_flowers.yaml")
    with open(config_file, "w") as f:
        f.write(yaml_text)
    cfg.merge_from_file(config_file)
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NUM_SHOTS = num_shots
    cfg.DATASET.SUBSAMPLE_CLASSES = subsample
    cfg.SEED = seed
    random.seed(seed)
    return cfg


FOLDER_YAML = 'DATASET:\n  NAME: "UserDataset"\n  USER:\n    DIR: "my_flowers"\n'


def test_image_folder_dataset(tmp_path):
    write_folder_dataset(tmp_path / "my_flowers")
    dataset = build_dataset(user_cfg(tmp_path, FOLDER_YAML))
    assert dataset.classnames == ["daisy", "rose", "tulip"]
    assert (len(dataset.train_x), len(dataset.val), len(dataset.test)) == (15, 6, 9)  # 5/2/3 per class
    assert all(item.classname == dataset.classnames[item.label] for item in dataset.test)
    assert os.path.isfile(tmp_path / "my_flowers" / "split_zhou_my_flowers.json")
    assert dataset.base_labels == {0, 1}


def test_image_folder_dataset_base_new_and_few_shot(tmp_path):
    write_folder_dataset(tmp_path / "my_flowers")
    base = build_dataset(user_cfg(tmp_path, FOLDER_YAML, num_shots=2, subsample="base"))
    new = build_dataset(user_cfg(tmp_path, FOLDER_YAML, num_shots=2, subsample="new"))
    assert base.classnames == ["daisy", "rose"] and new.classnames == ["tulip"]
    assert len(base.train_x) == 4 and len(base.val) == 4
    assert base.fewshot_hash and base.fewshot_hash == new.fewshot_hash
    assert os.path.isfile(tmp_path / "my_flowers" / "split_fewshot" / "shot_2-seed_1.json")


def test_first_use_says_where_the_split_is_saved_and_how_to_redo_it(tmp_path, capsys):
    write_folder_dataset(tmp_path / "my_flowers")
    build_dataset(user_cfg(tmp_path, FOLDER_YAML))
    out = capsys.readouterr().out
    split_path = tmp_path / "my_flowers" / "split_zhou_my_flowers.json"
    assert f"created with the current seed and saved as {split_path}; delete it to re-split." in out
    assert "published" not in out  # there is no published split of the user's own data


def test_a_benchmark_without_its_split_file_points_to_the_published_one(tmp_path, capsys):
    make_eurosat(tmp_path, n_classes=2, n_train=4, n_val=2, n_test=4, write_split=False)
    random.seed(1)
    build_dataset(dataset_cfg(tmp_path, "EuroSAT"))
    out = capsys.readouterr().out
    assert "not comparable with published ones; to compare with those, put the published split file there" in out
    assert "re-split" not in out


def test_csv_dataset_with_absolute_dir(tmp_path):
    folder = tmp_path / "elsewhere" / "catalogue"
    write_folder_dataset(folder, n_per_class=4)
    rows = ["path,class"] + [
        f"{name}/{name}_{i}.png,{name.upper()}" for name in CLASSES for i in range(4)
    ]
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    yaml_text = (
        f'DATASET:\n  NAME: "UserDataset"\n  USER:\n    DIR: "{folder}"\n'
        '    CSV: "labels.csv"\n    SPLIT_NAME: "Catalogue"\n'
    )
    dataset = build_dataset(user_cfg(tmp_path / "root", yaml_text))
    assert dataset.classnames == ["DAISY", "ROSE", "TULIP"]
    assert (len(dataset.train_x), len(dataset.val), len(dataset.test)) == (6, 3, 3)
    assert os.path.isfile(folder / "split_zhou_Catalogue.json")


def test_csv_without_header_is_explained(tmp_path):
    folder = tmp_path / "my_flowers"
    write_folder_dataset(folder, n_per_class=4)
    (folder / "labels.csv").write_text("daisy/daisy_0.png,daisy\n")
    yaml_text = FOLDER_YAML + '    CSV: "labels.csv"\n'
    with pytest.raises(DatasetError, match='header "path,class"'):
        build_dataset(user_cfg(tmp_path, yaml_text))


def test_unset_dir_and_missing_folder_are_explained(tmp_path):
    with pytest.raises(DatasetError, match="DATASET.USER.DIR"):
        build_dataset(user_cfg(tmp_path, 'DATASET:\n  NAME: "UserDataset"\n'))
    with pytest.raises(DatasetError, match="my_flowers.*Your own dataset"):
        build_dataset(user_cfg(tmp_path, FOLDER_YAML))


def test_too_few_images_for_the_split_is_explained(tmp_path):
    write_folder_dataset(tmp_path / "my_flowers", n_per_class=3)
    with pytest.raises(DatasetError, match="has 3 images"):
        build_dataset(user_cfg(tmp_path, FOLDER_YAML))


def test_example_config_merges():
    cfg = get_cfg_default()
    datasets.extend_cfg(cfg)
    cfg.merge_from_file(os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "datasets", "my_dataset_example.yaml"))
    assert cfg.DATASET.NAME == "UserDataset" and cfg.DATASET.USER.DIR == "my_dataset"


def write_csv_dataset(folder, extra_rows=()):
    write_folder_dataset(folder, n_per_class=4)
    rows = ["path,class"] + [f"{name}/{name}_{i}.png,{name}" for name in CLASSES for i in range(4)]
    (folder / "labels.csv").write_text("\n".join(rows + list(extra_rows)) + "\n")
    return FOLDER_YAML + '    CSV: "labels.csv"\n'


@pytest.mark.parametrize("path", ["../../../../etc/hostname", "daisy/../../labels.csv", "/etc/hostname"])
def test_csv_paths_outside_the_image_folder_are_refused(tmp_path, path):
    yaml_text = write_csv_dataset(tmp_path / "my_flowers", [f"{path},daisy"])
    with pytest.raises(DatasetError, match=f'labels.csv, line 14: image path "{path}" leads outside the image folder'):
        build_dataset(user_cfg(tmp_path, yaml_text))


def test_split_file_paths_outside_the_image_folder_are_refused(tmp_path):
    write_folder_dataset(tmp_path / "my_flowers")
    build_dataset(user_cfg(tmp_path, FOLDER_YAML))
    split_path = tmp_path / "my_flowers" / "split_zhou_my_flowers.json"
    split = json.loads(split_path.read_text())
    split["test"][0][0] = "../../outside.png"
    split_path.write_text(json.dumps(split))
    with pytest.raises(DatasetError, match='entry 0 of "test": image path "../../outside.png" leads outside'):
        build_dataset(user_cfg(tmp_path, FOLDER_YAML))


@pytest.mark.parametrize("names", [("sea_lake", "sea lake"), ("Cat", "cat")])
def test_class_folders_that_make_the_same_prompt_are_refused(tmp_path, names):
    for name in names:
        for i in range(4):
            write_image(os.path.join(tmp_path, "my_flowers", "images", name, f"{i}.png"), 0, i)
    with pytest.raises(DatasetError) as error:
        build_dataset(user_cfg(tmp_path, FOLDER_YAML))
    listed = " / ".join(f'"{name}"' for name in sorted(names))
    assert f"class names {listed} make the same prompt for CLIP" in str(error.value)
    assert not os.path.exists(tmp_path / "my_flowers" / "split_zhou_my_flowers.json")  # nothing saved


def test_csv_classes_that_make_the_same_prompt_are_refused(tmp_path):
    yaml_text = write_csv_dataset(tmp_path / "my_flowers", [f"daisy/other_{i}.png,Daisy" for i in range(4)])
    with pytest.raises(DatasetError, match='labels.csv: class names "Daisy" / "daisy" make the same prompt'):
        build_dataset(user_cfg(tmp_path, yaml_text))
