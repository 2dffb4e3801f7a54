"""The records every dataset returns: ``Datum`` (one image) and ``DatasetBase`` (the splits).

This module path is part of the on-disk format: the few-shot caches that CoOp / MaPLe runs left
behind (``split_fewshot/shot_K-seed_S.pkl``) pickle ``Datum`` objects under
``dassl.data.datasets.base_dataset.Datum``, with the attribute names used below.
"""
import random
from collections import defaultdict

from dassl.utils.errors import ConfigError, UserError


class DatasetError(UserError):
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


def check_labels(splits, source, advice="", classnames=None):
    """Refuse labels the model cannot score, before anything is trained or evaluated.

    A model has one output per class, so a test label outside the classes is scored against the
    wrong logits or crashes deep in the loss (USERS.md #8: "label 998 vs 991 logits"). The
    classes are the labels of the first split (the training split), which must be exactly
    ``0..N-1``, each present; or, for a test-only dataset, the given class list, each class with
    at least one image. Every label of the other splits must be one of these classes, and a
    label has one class name everywhere.

    Args:
        splits: ``(name, items)`` pairs, the training split first; empty or ``None`` ones are
            skipped.
        source: the dataset and the file its labels come from, for the message.
        advice: what to do about it, appended to the message.
        classnames: the class list (names in label order) of a test-only dataset.

    The rules are checked on the distinct ``(label, class name)`` pairs, collected with one set
    comprehension per split: cheap next to reading the split.
    """
    splits = [(name, items) for name, items in splits if items]
    if not splits:
        return
    violation = _label_violation(splits, classnames)
    if violation is not None:
        name, item, rule = violation
        image = f'image "{item.impath}" (label {item.label}, class "{item.classname}"): ' if item else ""
        raise DatasetError(f'{source}: split "{name}", {image}{rule}.' + (f" {advice}" if advice else ""))


def _label_violation(splits, classnames):
    """``(split name, offending item or None, rule broken)`` for the first problem, else None."""
    if classnames is None:
        name, items = splits[0]
        classes, violation = _classes_of_split(name, items)
        reference, checked = f'split "{name}"', splits[1:]
    else:
        classes, violation = dict(enumerate(classnames)), None
        reference, checked = "the class list", splits
    violation = violation or _first_foreign_label(checked, classes, reference)
    if violation is None and classnames is not None:
        violation = _first_class_without_image(splits[0], classes)
    return violation


def _classes_of_split(name, items):
    """The classes a training split defines (label -> class name), and its first violation."""
    classes = {}
    for label, classname in _distinct_label_names(items):
        if label < 0:
            return classes, (name, _find_item(items, label, classname), "labels must be 0 or more")
        if classes.setdefault(label, classname) != classname:
            rule = f'label {label} is also named "{classes[label]}" here; one label must have one class name'
            return classes, (name, _find_item(items, label, classname), rule)
    last = max(classes)
    gap = next((label for label in range(last) if label not in classes), None)
    if gap is None:
        return classes, None
    rule = (
        f"labels go up to {last} but no image has label {gap}; the training labels must be "
        f"0..{last}, each present, since the model has one class per training label"
    )
    return classes, (name, _find_item(items, last, classes[last]), rule)


def _first_foreign_label(splits, classes, reference):
    """The first item whose label is not a class, or whose class name differs from the class's."""
    for name, items in splits:
        for label, classname in _distinct_label_names(items):
            if label not in classes:
                rule = (
                    f"label {label} is not a class of {reference} (labels 0..{len(classes) - 1}); "
                    f"every label must be a class of {reference}, the only classes the model scores"
                )
            elif classes[label] != classname:
                rule = f'label {label} is "{classes[label]}" in {reference}; one label must have one class name'
            else:
                continue
            return name, _find_item(items, label, classname), rule
    return None


def _first_class_without_image(split, classes):
    name, items = split
    present = {item.label for item in items}
    missing = next((label for label in classes if label not in present), None)
    if missing is None:
        return None
    return name, None, f'class {missing} ("{classes[missing]}") of the class list has no image'


def _distinct_label_names(items):
    """The distinct ``(label, class name)`` pairs of ``items``, in a reproducible order."""
    return sorted({(item.label, item.classname) for item in items}, key=lambda pair: (pair[0], str(pair[1])))


def _find_item(items, label, classname):
    return next(item for item in items if item.label == label and item.classname == classname)


def _distinct_splits(*named_splits):
    """``(name, items)`` pairs minus those whose list is one already given (test-only datasets
    pass the same list as train and test)."""
    seen = []
    for name, items in named_splits:
        if items is not None and not any(items is other for other in seen):
            seen.append(items)
            yield name, items


class DatasetBase:
    """A dataset's splits: labelled training data, optional unlabelled data, val and test.

    ``base_labels`` is the set of base-class labels when all classes are evaluated together
    (open-world, ``DATASET.SUBSAMPLE_CLASSES = "all"``); ``None`` otherwise. Datasets set it.
    """

    dataset_dir = ""  # the directory where the dataset is stored
    domains = []  # string names of all domains

    @classmethod
    def own_name(cls, cfg):
        """The name that tells this dataset apart in a run's identity (results.json): its
        registry name; datasets that stand for many (a user's own data) return theirs."""
        return cfg.DATASET.NAME

    def __init__(self, train_x=None, train_u=None, val=None, test=None):
        self._train_x = train_x  # labelled training data
        self._train_u = train_u  # unlabelled training data (optional)
        self._val = val  # validation data (optional)
        self._test = test  # test data
        self._num_classes = self.get_num_classes(train_x)
        check_labels(_distinct_splits(("train", train_x), ("val", val), ("test", test)), type(self).__name__)
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
                raise ConfigError(f"Input domain must belong to {self.domains}, but got [{domain}]")

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
