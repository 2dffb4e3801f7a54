"""Split, few-shot, base/new and cache behaviour of the datasets (SPEC.md §2), on a tiny EuroSAT."""
import json
import os
import pickle
import random

import pytest

from dassl.config import ConfigError
from dassl.data.datasets import DatasetBase, DatasetError, Datum, build_dataset
from dassl.data.datasets import base_dataset
from datasets.base_new import split_base_new_labels
from datasets.splits import fewshot_cache_paths
from tests.helpers.datasets import dataset_cfg, make_eurosat


def build(root, name="EuroSAT", num_shots=-1, seed=1, subsample="all"):
    """Build like train.py does: the seed is set before the dataset is built."""
    random.seed(seed)
    return build_dataset(dataset_cfg(root, name, num_shots=num_shots, seed=seed, subsample=subsample))


def reference_few_shot(items, k):
    """SPEC.md §2, written independently: labels in order of first appearance, random.sample."""
    order, groups = [], {}
    for item in items:
        if item[1] not in groups:
            order.append(item[1])
            groups[item[1]] = []
        groups[item[1]].append(item)
    out = []
    for label in order:
        group = groups[label]
        out.extend(random.sample(group, k) if len(group) >= k else group)
    return out


# -- the rule and the sampling algorithm ---------------------------------------------------------


@pytest.mark.parametrize(
    "labels, base, new",
    [
        ([4, 0, 3, 1, 2, 0], [0, 1, 2], [3, 4]),  # n = 5 -> m = 3
        (list(range(10)), [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]),
        ([7], [7], []),
        ([9, 2], [2], [9]),
    ],
)
def test_split_base_new_labels_hand_computed(labels, base, new):
    assert split_base_new_labels(labels) == (base, new)


def test_few_shot_sampling_matches_the_spec_algorithm():
    rng = random.Random(0)
    labels = [rng.randrange(5) for _ in range(60)] + [5]  # label 5 has a single item
    items = [(f"img{i}.jpg", label) for i, label in enumerate(labels)]
    data = [Datum(impath=path, label=label) for path, label in items]

    random.seed(7)
    expected = reference_few_shot(items, 4)
    random.seed(7)
    sampled = DatasetBase(train_x=data).generate_fewshot_dataset(data, num_shots=4)

    assert [(d.impath, d.label) for d in sampled] == expected
    assert sum(1 for d in sampled if d.label == 5) == 1  # fewer than K: all of them, no repeats


def test_generate_fewshot_dataset_api():
    data = [Datum(impath=f"{i}.jpg", label=i % 2) for i in range(6)]
    dataset = DatasetBase(train_x=data, test=data)
    assert (dataset.num_classes, dataset.base_labels) == (2, None)
    assert dataset.generate_fewshot_dataset(data, num_shots=-1) is data
    random.seed(1)
    a, b = dataset.generate_fewshot_dataset(data, data, num_shots=2)
    assert len(a) == len(b) == 4
    random.seed(1)
    repeated = dataset.generate_fewshot_dataset(data[:2], num_shots=3, repeat=True)
    assert len(repeated) == 6


def test_datum_keeps_upstream_attribute_names():
    # Legacy pickles restore these attributes directly.
    datum = Datum(impath="/a.jpg", label=3, domain=1, classname="cat")
    assert set(vars(datum)) == {"_impath", "_label", "_domain", "_classname"}
    assert (datum.impath, datum.label, datum.domain, datum.classname) == ("/a.jpg", 3, 1, "cat")


# -- the EuroSAT pipeline --------------------------------------------------------------------------


def test_eurosat_full_dataset(tmp_path):
    make_eurosat(tmp_path, n_classes=4, n_train=4, n_val=2, n_test=3)
    dataset = build(tmp_path)
    assert dataset.classnames == ["Annual Crop Land", "Forest", "Herbaceous Vegetation Land", "Highway or Road"]
    assert (len(dataset.train_x), len(dataset.val), len(dataset.test)) == (16, 8, 12)
    assert dataset.num_classes == 4
    assert dataset.lab2cname[3] == "Highway or Road"
    assert dataset.fewshot_hash is None


def test_fewshot_dataset_is_the_spec_sample_of_the_split_file(tmp_path):
    dataset_dir = make_eurosat(tmp_path, n_classes=3, n_train=6, n_val=5, n_test=2)
    dataset = build(tmp_path, num_shots=3, seed=5)

    with open(os.path.join(dataset_dir, "split_zhou_EuroSAT.json")) as f:
        split = json.load(f)
    as_items = lambda rows: [(os.path.join(dataset_dir, "2750", rel), label) for rel, label, _ in rows]
    random.seed(5)
    expected_train = reference_few_shot(as_items(split["train"]), 3)
    expected_val = reference_few_shot(as_items(split["val"]), 3)  # min(3, 4)

    assert [(d.impath, d.label) for d in dataset.train_x] == expected_train
    assert [(d.impath, d.label) for d in dataset.val] == expected_val
    assert len(dataset.test) == 6  # the test split is never sampled


def test_val_uses_at_most_four_shots(tmp_path):
    make_eurosat(tmp_path, n_classes=2, n_train=8, n_val=6, n_test=1)
    dataset = build(tmp_path, num_shots=8)
    assert len(dataset.train_x) == 16 and len(dataset.val) == 8


@pytest.mark.parametrize(
    "subsample, names, label_counts",
    [
        ("base", ["Annual Crop Land", "Forest", "Herbaceous Vegetation Land"], {0: 3, 1: 3, 2: 3}),
        ("new", ["Highway or Road", "Industrial Buildings"], {0: 3, 1: 3}),
    ],
)
def test_base_and_new_classes_are_relabelled(tmp_path, subsample, names, label_counts):
    make_eurosat(tmp_path, n_classes=5, n_train=4, n_val=2, n_test=3)
    dataset = build(tmp_path, subsample=subsample)
    assert dataset.classnames == names
    assert dataset.num_classes == len(names)
    assert dataset.base_labels is None
    test_counts = {}
    for item in dataset.test:
        test_counts[item.label] = test_counts.get(item.label, 0) + 1
        assert dataset.lab2cname[item.label] == item.classname
    assert test_counts == label_counts
    assert {item.label for item in dataset.train_x} == set(label_counts)
    assert {item.label for item in dataset.val} == set(label_counts)


def test_open_world_keeps_all_labels_and_marks_the_base_ones(tmp_path):
    make_eurosat(tmp_path, n_classes=5, n_train=4, n_val=2, n_test=3)
    dataset = build(tmp_path, num_shots=2, subsample="all")
    assert dataset.num_classes == 5
    assert dataset.base_labels == {0, 1, 2}
    in_base = [item.label in dataset.base_labels for item in dataset.test]
    assert in_base.count(True) == 9 and in_base.count(False) == 6
    assert {item.classname for item in dataset.test if item.label not in dataset.base_labels} == {
        "Highway or Road", "Industrial Buildings"}


def test_base_run_trains_on_the_base_part_of_the_same_few_shot_sample(tmp_path):
    make_eurosat(tmp_path, n_classes=4, n_train=5, n_val=2, n_test=1)
    everything = build(tmp_path, num_shots=2, seed=3)
    base = build(tmp_path, num_shots=2, seed=3, subsample="base")
    assert [d.impath for d in base.train_x] == [d.impath for d in everything.train_x if d.label < 2]
    assert base.fewshot_hash == everything.fewshot_hash


# -- caches ----------------------------------------------------------------------------------------


def _upstream_datum_class():
    """Dassl's Datum as CoOp runs pickled it: its attributes, under Dassl's module path."""

    def __init__(self, impath, label, classname):
        self._impath, self._label, self._domain, self._classname = impath, label, 0, classname

    return type("Datum", (), {"__init__": __init__, "__module__": "dassl.data.datasets.base_dataset"})


def write_legacy_pickle(path, sample, old_dataset_dir, dataset_dir, monkeypatch):
    """A CoOp-era cache: {"train": [Datum], "val": [Datum]} with absolute paths of another machine."""
    upstream_datum = _upstream_datum_class()
    converted = {
        key: [upstream_datum(old_dataset_dir + d.impath[len(dataset_dir):], d.label, d.classname) for d in items]
        for key, items in sample.items()
    }
    with monkeypatch.context() as patch:
        patch.setattr(base_dataset, "Datum", upstream_datum)  # pickle checks the class is findable
        data = pickle.dumps(converted, protocol=pickle.HIGHEST_PROTOCOL)
    with open(path, "wb") as f:
        f.write(data)


def test_legacy_pickle_and_portable_cache_give_the_same_samples(tmp_path, monkeypatch):
    dataset_dir = make_eurosat(tmp_path, n_classes=3, n_train=5, n_val=5, n_test=1)
    from_sampling = build(tmp_path, num_shots=2, seed=4)
    legacy_path, portable_path = fewshot_cache_paths(dataset_dir, 2, 4)
    with open(portable_path) as f:
        cache = json.load(f)
    assert all(not os.path.isabs(rel) for rel, _, _ in cache["train"] + cache["val"])  # portable

    from_portable = build(tmp_path, num_shots=2, seed=4)  # same seed: read back
    assert from_portable.train_x == from_sampling.train_x and from_portable.val == from_sampling.val

    sample = {"train": from_sampling.train_x, "val": from_sampling.val}
    write_legacy_pickle(legacy_path, sample, "/old/machine/data/eurosat", dataset_dir, monkeypatch)
    os.remove(portable_path)
    random.seed(12345)  # a legacy cache is used whatever the random state
    from_legacy = build_dataset(dataset_cfg(tmp_path, "EuroSAT", num_shots=2, seed=4))
    assert from_legacy.train_x == from_sampling.train_x
    assert from_legacy.val == from_sampling.val
    assert from_legacy.fewshot_hash == from_sampling.fewshot_hash
    assert not os.path.exists(portable_path)  # a legacy cache is read, not converted


def test_a_cache_from_an_earlier_split_is_refused_naming_it(tmp_path):
    """The dataset was re-split after its few-shot sample was cached: the cached training images
    are test images now. The run stops naming the cache, the split file and the fix."""
    dataset_dir = make_eurosat(tmp_path, n_classes=3, n_train=4, n_val=2, n_test=4)
    build(tmp_path, num_shots=2, seed=1)
    _, cache_path = fewshot_cache_paths(dataset_dir, 2, 1)
    split_path = os.path.join(dataset_dir, "split_zhou_EuroSAT.json")
    with open(split_path) as f:
        split = json.load(f)
    split["train"], split["test"] = split["test"], split["train"]
    with open(split_path, "w") as f:
        json.dump(split, f)
    with pytest.raises(DatasetError) as error:
        build(tmp_path, num_shots=2, seed=1)
    message = str(error.value)
    assert f'few-shot cache "{cache_path}" does not match the split' in message
    assert split_path in message and "6 of its 6 train images are not training images" in message
    assert "delete it" in message
    os.remove(cache_path)
    redrawn = build(tmp_path, num_shots=2, seed=1)
    assert {d.impath for d in redrawn.train_x} <= {os.path.join(dataset_dir, "2750", row[0])
                                                  for row in split["train"]}


def test_sample_hash_tells_samples_apart(tmp_path):
    make_eurosat(tmp_path, n_classes=3, n_train=8, n_val=2, n_test=1)
    hashes = {seed: build(tmp_path, num_shots=2, seed=seed).fewshot_hash for seed in (1, 2)}
    assert hashes[1] != hashes[2]
    assert build(tmp_path, num_shots=2, seed=1).fewshot_hash == hashes[1]
    assert len(hashes[1]) == 12


def test_legacy_pickle_with_other_objects_is_refused(tmp_path):
    dataset_dir = make_eurosat(tmp_path, n_classes=2, n_train=2, n_val=1, n_test=1)
    legacy_path, _ = fewshot_cache_paths(dataset_dir, 1, 1)
    os.makedirs(os.path.dirname(legacy_path))
    with open(legacy_path, "wb") as f:
        pickle.dump({"train": [os.getcwd]}, f)  # a pickle can name any callable
    with pytest.raises(DatasetError, match="not allowed"):
        build(tmp_path, num_shots=1, seed=1)


# -- split creation and bad input ------------------------------------------------------------------


def test_missing_split_file_is_created_with_the_50_20_30_rule(tmp_path):
    for copy in ("a", "b"):
        make_eurosat(tmp_path / copy, n_classes=3, n_train=5, n_val=2, n_test=3, write_split=False)
    first = build(tmp_path / "a", seed=2)
    assert (len(first.train_x), len(first.val), len(first.test)) == (15, 6, 9)
    assert first.classnames == ["Annual Crop Land", "Forest", "Herbaceous Vegetation Land"]
    assert os.path.isfile(tmp_path / "a" / "eurosat" / "split_zhou_EuroSAT.json")
    second = build(tmp_path / "b", seed=2)  # same seed, another folder: the same split
    relative = lambda ds: [os.path.relpath(d.impath, ds.dataset_dir) for d in ds.train_x]
    assert relative(first) == relative(second)
    again = build(tmp_path / "a", seed=3)  # now read from the saved file
    assert again.train_x == first.train_x


def test_missing_dataset_folder_names_path_and_section(tmp_path):
    with pytest.raises(DatasetError) as error:
        build(tmp_path)
    assert str(tmp_path / "eurosat") in str(error.value)
    assert "DATASETS.md §EuroSAT" in str(error.value)


def test_missing_split_file_without_images_names_the_split_file(tmp_path):
    (tmp_path / "eurosat").mkdir()
    with pytest.raises(DatasetError, match="split_zhou_EuroSAT.json.*DATASETS.md §EuroSAT"):
        build(tmp_path)


def test_image_missing_on_disk_is_named_at_build_time(tmp_path):
    dataset_dir = make_eurosat(tmp_path, n_classes=2, n_train=2, n_val=1, n_test=1)
    victim = os.path.join(dataset_dir, "2750", "Forest", "Forest_8.jpg")
    os.remove(victim)
    with pytest.raises(DatasetError, match="Forest_8.jpg"):
        build(tmp_path)


def test_bad_subsample_value_and_unknown_name(tmp_path):
    make_eurosat(tmp_path, n_classes=2, n_train=2, n_val=1, n_test=1)
    with pytest.raises(DatasetError, match="SUBSAMPLE_CLASSES"):
        build(tmp_path, subsample="half")
    with pytest.raises(ConfigError, match="EuroSAT"):  # the message lists the registered names
        build(tmp_path, name="EuroSat")


def test_corrupt_split_file_is_reported(tmp_path):
    dataset_dir = make_eurosat(tmp_path, n_classes=2, n_train=2, n_val=1, n_test=1)
    with open(os.path.join(dataset_dir, "split_zhou_EuroSAT.json"), "w") as f:
        f.write('{"train": [["a.jpg", 0]], "val": [], "test": []}')
    with pytest.raises(DatasetError, match="entry 0 of \"train\""):
        build(tmp_path)


def test_a_dataset_file_written_for_coop_runs_unchanged(tmp_path):
    """CoOp's dataset files call the shared helpers through OxfordPets and DTD."""
    from datasets.dtd import DescribableTextures as DTD
    from datasets.oxford_pets import OxfordPets

    class CoOpStyleEuroSAT(DatasetBase):
        dataset_dir = "eurosat"

        def __init__(self, cfg):
            root = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT))
            self.dataset_dir = os.path.join(root, self.dataset_dir)
            self.image_dir = os.path.join(self.dataset_dir, "2750")
            self.split_path = os.path.join(self.dataset_dir, "split_zhou_EuroSAT.json")
            if os.path.exists(self.split_path):
                train, val, test = OxfordPets.read_split(self.split_path, self.image_dir)
            else:
                train, val, test = DTD.read_and_split_data(self.image_dir)
                OxfordPets.save_split(train, val, test, self.split_path, self.image_dir)
            train = self.generate_fewshot_dataset(train, num_shots=2)
            val = self.generate_fewshot_dataset(val, num_shots=2)
            subsample = cfg.DATASET.SUBSAMPLE_CLASSES
            train, val, test = OxfordPets.subsample_classes(train, val, test, subsample=subsample)
            super().__init__(train_x=train, val=val, test=test)

    make_eurosat(tmp_path, n_classes=4, n_train=5, n_val=3, n_test=2)
    ours = build(tmp_path, num_shots=2, seed=6, subsample="base")
    random.seed(6)
    theirs = CoOpStyleEuroSAT(dataset_cfg(tmp_path, "EuroSAT", num_shots=2, seed=6, subsample="base"))
    assert theirs.train_x == ours.train_x and theirs.val == ours.val and theirs.test == ours.test
    assert theirs.classnames == ours.classnames == ["Annual Crop Land", "Forest"]


@pytest.mark.parametrize("field, value", [("_label", "3"), ("_impath", 42), ("_classname", None)])
def test_a_legacy_pickle_with_wrong_field_types_is_refused_naming_it(tmp_path, monkeypatch, field, value):
    dataset_dir = make_eurosat(tmp_path, n_classes=3, n_train=5, n_val=5, n_test=1)
    sample = build(tmp_path, num_shots=2, seed=4)
    legacy_path, portable_path = fewshot_cache_paths(dataset_dir, 2, 4)
    os.remove(portable_path)
    write_legacy_pickle(legacy_path, {"train": sample.train_x, "val": sample.val}, dataset_dir, dataset_dir, monkeypatch)
    upstream_datum = _upstream_datum_class()
    with monkeypatch.context() as patch:
        patch.setattr(base_dataset, "Datum", upstream_datum)
        with open(legacy_path, "rb") as f:
            data = pickle.load(f)
        setattr(data["train"][1], field, value)
        with open(legacy_path, "wb") as f:
            pickle.dump(data, f)
    with pytest.raises(DatasetError) as error:
        build(tmp_path, num_shots=2, seed=4)
    name = field.lstrip("_")
    assert f'"{legacy_path}": item 1 of "train" has {name} {value!r}, not a ' in str(error.value)
    assert "delete it to have it re-created" in str(error.value)


def test_more_shots_than_images_warns_and_records_the_shots_used(tmp_path, capsys):
    make_eurosat(tmp_path, n_classes=3, n_train=4, n_val=2, n_test=1)
    dataset = build(tmp_path, num_shots=1000)
    assert dataset.num_shots_used == 4 and len(dataset.train_x) == 12
    assert ("Warning: EuroSAT: DATASET.NUM_SHOTS is 1000, but 3 of its 3 classes have fewer training images "
            "(as few as 4), so they train on all they have; results.json records 4 shots") in capsys.readouterr().out
    assert build(tmp_path, num_shots=2).num_shots_used == 2
    assert "Warning" not in capsys.readouterr().out
