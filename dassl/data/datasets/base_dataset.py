"""The records every dataset returns: ``Datum`` (one image) and ``DatasetBase`` (the splits).

This module path is part of the on-disk format: the few-shot caches that CoOp / MaPLe runs left
behind (``split_fewshot/shot_K-seed_S.pkl``) pickle ``Datum`` objects under
``dassl.data.datasets.base_dataset.Datum``, with the attribute names used below.
"""
import random
from collections import defaultdict


class DatasetError(Exception):
    """A dataset folder, split file, cache or image is missing or malformed.

    The message names the path involved and what to do about it; entry points (``train.py``,
    ``python -m datasets.prepare``) print it without a traceback.
    """


class Datum:
    """One labelled image.

    Args:
        impath (str): image path.
        label (int): class label.
        domain (int): domain label.
        classname (str): class name, as used in prompts.

    Unlike upstream Dassl, the constructor does not stat the file: datasets check every image
    they return once, when they are built (see ``datasets.splits.check_images_exist``).
    """

    def __init__(self, impath="", label=0, domain=0, classname=""):
        if not isinstance(impath, str):
            raise TypeError(f"Datum.impath must be a str, got {type(impath).__name__}")
        # The attribute names are those of upstream Dassl: legacy pickles restore them directly.
        self._impath = impath
        self._label = int(label)
        self._domain = int(domain)
        self._classname = classname

    @property
    def impath(self):
        return self._impath

    @property
    def label(self):
        return self._label

    @property
    def domain(self):
        return self._domain

    @property
    def classname(self):
        return self._classname

    def _key(self):
        return (self._impath, self._label, self._domain, self._classname)

    def __eq__(self, other):
        if not isinstance(other, Datum):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return (
            f"Datum(impath={self._impath!r}, label={self._label}, "
            f"domain={self._domain}, classname={self._classname!r})"
        )


def split_by_label(data_source):
    """Group items by label; groups keep the order in which their labels first appear."""
    groups = defaultdict(list)
    for item in data_source:
        groups[item.label].append(item)
    return groups


def sample_few_shot(data_source, num_shots, repeat=False):
    """Dassl's few-shot sampling (SPEC.md §2): per label, ``random.sample(items, num_shots)``.

    Labels are visited in order of first appearance and the global ``random`` state is used,
    so the result depends on the seed set before the dataset is built. A label with fewer than
    ``num_shots`` items keeps all of them, or, with ``repeat``, draws ``num_shots`` with
    replacement (``random.choices``).
    """
    sampled = []
    for items in split_by_label(data_source).values():
        if len(items) >= num_shots:
            sampled.extend(random.sample(items, num_shots))
        elif repeat:
            sampled.extend(random.choices(items, k=num_shots))
        else:
            sampled.extend(items)
    return sampled


class DatasetBase:
    """A dataset's splits: labelled training data, optional unlabelled data, val and test.

    ``base_labels`` is the set of base-class labels when all classes are evaluated together
    (open-world, ``DATASET.SUBSAMPLE_CLASSES = "all"``); ``None`` otherwise. Datasets set it.
    """

    dataset_dir = ""  # the directory where the dataset is stored
    domains = []  # string names of all domains

    def __init__(self, train_x=None, train_u=None, val=None, test=None):
        self._train_x = train_x  # labelled training data
        self._train_u = train_u  # unlabelled training data (optional)
        self._val = val  # validation data (optional)
        self._test = test  # test data
        self._num_classes = self.get_num_classes(train_x)
        self._lab2cname, self._classnames = self.get_lab2cname(train_x)
        self.base_labels = None

    @property
    def train_x(self):
        return self._train_x

    @property
    def train_u(self):
        return self._train_u

    @property
    def val(self):
        return self._val

    @property
    def test(self):
        return self._test

    @property
    def lab2cname(self):
        return self._lab2cname

    @property
    def classnames(self):
        return self._classnames

    @property
    def num_classes(self):
        return self._num_classes

    def get_num_classes(self, data_source):
        """Number of classes: the largest label plus one."""
        if not data_source:
            raise DatasetError(
                "the training split is empty: check the dataset folder, DATASET.NUM_SHOTS and "
                "DATASET.SUBSAMPLE_CLASSES"
            )
        return max(item.label for item in data_source) + 1

    def get_lab2cname(self, data_source):
        """The label -> class name mapping and the class names ordered by label."""
        mapping = {item.label: item.classname for item in data_source}
        classnames = [mapping[label] for label in sorted(mapping)]
        return mapping, classnames

    def check_input_domains(self, source_domains, target_domains):
        self.is_input_domain_valid(source_domains)
        self.is_input_domain_valid(target_domains)

    def is_input_domain_valid(self, input_domains):
        for domain in input_domains:
            if domain not in self.domains:
                raise ValueError(f"Input domain must belong to {self.domains}, but got [{domain}]")

    def generate_fewshot_dataset(self, *data_sources, num_shots=-1, repeat=False):
        """A ``num_shots``-per-class subset of each data source (see ``sample_few_shot``).

        With ``num_shots < 1`` the sources are returned unchanged. One source gives one list,
        several give a list of lists, as in Dassl.
        """
        if num_shots < 1:
            return data_sources[0] if len(data_sources) == 1 else data_sources
        print(f"Creating a {num_shots}-shot dataset")
        output = [sample_few_shot(source, num_shots, repeat=repeat) for source in data_sources]
        return output[0] if len(output) == 1 else output

    def split_dataset_by_label(self, data_source):
        """Group a list of ``Datum`` by label (dict in order of first appearance)."""
        return split_by_label(data_source)

    def split_dataset_by_domain(self, data_source):
        """Group a list of ``Datum`` by domain (dict in order of first appearance)."""
        groups = defaultdict(list)
        for item in data_source:
            groups[item.domain].append(item)
        return groups
