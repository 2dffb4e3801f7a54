"""ImageNet's val folder is its test set: its few-shot validation images come from unused training
images, while its few-shot training images stay those of SPEC.md §2 (USERS.md #18)."""
import json
import os
import random

from dassl.data.datasets import build_dataset
from datasets.splits import fewshot_cache_paths
from tests.helpers.datasets import dataset_cfg, make_imagenet
from tests.test_datasets_core import write_legacy_pickle

SHOTS, SEED = 2, 3


def build(root, num_shots=SHOTS, seed=SEED, subsample="all"):
    """Build like train.py does: the seed is set before the dataset is built."""
    random.seed(seed)
    return build_dataset(dataset_cfg(root, "ImageNet", num_shots=num_shots, seed=seed, subsample=subsample))


def listed_training_images(dataset_dir):
    """(absolute path, label) of the training images, in the order of the cached image list."""
    with open(os.path.join(dataset_dir, "preprocessed.json")) as f:
        rows = json.load(f)["train"]
    return [(os.path.join(dataset_dir, "images", relpath), label) for relpath, label, _ in rows]


def expected_sample(images, k, seed):
    """SPEC.md §2 written out: per label (first-appearance order) random.sample k training images;
    then, from the images left over, min(k, 4) validation images per label."""
    def draw(pairs, n):
        groups = {}
        for path, label in pairs:
            groups.setdefault(label, []).append(path)
        return [path for group in groups.values() for path in (random.sample(group, n) if len(group) >= n else group)]

    random.seed(seed)
    train = draw(images, k)
    val = draw([(path, label) for path, label in images if path not in set(train)], min(k, 4))
    return train, val


def paths(items):
    return [item.impath for item in items]


def tiny_imagenet(root):
    dataset_dir = make_imagenet(root, n_classes=3, n_train=7, n_val=3)
    build(root, num_shots=-1)  # writes the image list the reference reads
    return dataset_dir


def test_train_sample_is_specs_and_val_comes_from_unused_training_images(tmp_path, capsys):
    dataset_dir = tiny_imagenet(tmp_path)
    dataset = build(tmp_path)
    expected_train, expected_val = expected_sample(listed_training_images(dataset_dir), SHOTS, SEED)
    assert paths(dataset.train_x) == expected_train
    assert paths(dataset.val) == expected_val
    assert len(dataset.val) == 3 * SHOTS
    assert not set(paths(dataset.val)) & set(paths(dataset.test))
    assert not set(paths(dataset.val)) & set(paths(dataset.train_x))
    assert "ImageNet: validation images are drawn from unused training images, because its val " \
           "folder is its test set" in capsys.readouterr().out

    again = build(tmp_path)  # read back from the cache
    assert (again.train_x, again.val) == (dataset.train_x, dataset.val)


def test_base_classes_keep_a_test_free_validation_split(tmp_path):
    tiny_imagenet(tmp_path)
    base = build(tmp_path, subsample="base")
    assert {item.label for item in base.val} == {0, 1}
    assert not set(paths(base.val)) & set(paths(base.test))


def test_all_training_images_leave_no_validation_split(tmp_path, capsys):
    tiny_imagenet(tmp_path)
    assert build(tmp_path, num_shots=-1).val is None
    assert "ImageNet: no validation split" in capsys.readouterr().out


def _reference_run(root):
    dataset = build(root)
    legacy_path, portable_path = fewshot_cache_paths(os.path.join(root, "imagenet"), SHOTS, SEED)
    os.remove(portable_path)
    return dataset, legacy_path, portable_path


def test_coop_cache_without_val_keeps_train_and_gets_the_same_val(tmp_path, monkeypatch, capsys):
    dataset_dir = tiny_imagenet(tmp_path)
    fresh, legacy_path, portable_path = _reference_run(tmp_path)
    # CoOp's ImageNet caches hold only "train"; here one not drawn with this seed, to tell it apart.
    other_train = build(tmp_path, seed=SEED + 1).train_x
    write_legacy_pickle(legacy_path, {"train": other_train}, "/old/data/imagenet", dataset_dir, monkeypatch)
    capsys.readouterr()

    dataset = build(tmp_path)
    assert dataset.train_x == other_train
    assert not set(paths(dataset.val)) & (set(paths(dataset.test)) | set(paths(other_train)))
    assert "has no validation images" in capsys.readouterr().out
    assert not os.path.exists(portable_path)  # the CoOp cache is read, not converted

    # With the cache holding this seed's own draw, val is the one of a run without a cache.
    write_legacy_pickle(legacy_path, {"train": fresh.train_x}, "/old/data/imagenet", dataset_dir, monkeypatch)
    assert build(tmp_path).val == fresh.val


def test_cached_val_from_the_test_set_is_replaced(tmp_path, monkeypatch, capsys):
    dataset_dir = tiny_imagenet(tmp_path)
    fresh, legacy_path, _ = _reference_run(tmp_path)
    leaky = {"train": fresh.train_x, "val": fresh.test[:SHOTS]}
    write_legacy_pickle(legacy_path, leaky, "/old/data/imagenet", dataset_dir, monkeypatch)
    capsys.readouterr()

    dataset = build(tmp_path)
    assert dataset.train_x == fresh.train_x
    assert dataset.val == fresh.val
    assert "takes its validation images from the test set" in capsys.readouterr().out


def test_portable_cache_of_train_only_gets_val_added(tmp_path):
    tiny_imagenet(tmp_path)
    fresh, _, portable_path = _reference_run(tmp_path)
    train_only = {"format": "fewshot-relpath-v1", "num_shots": SHOTS, "seed": SEED, "train": [
        [os.path.relpath(item.impath, tmp_path / "imagenet"), item.label, item.classname] for item in fresh.train_x
    ]}
    with open(portable_path, "w") as f:
        json.dump(train_only, f)

    dataset = build(tmp_path)
    assert (dataset.train_x, dataset.val) == (fresh.train_x, fresh.val)
    with open(portable_path) as f:
        rewritten = json.load(f)
    assert rewritten["train"] == train_only["train"] and len(rewritten["val"]) == len(fresh.val)
