"""Base / new classes (CoOp's base-to-new protocol, SPEC.md §2): the rule lives here only.

Sorted labels, ``m = ceil(n / 2)``: the first ``m`` are the base classes, the rest are new.
"""
import math

from dassl.data.datasets.base_dataset import DatasetError, Datum

SUBSAMPLE_CHOICES = ("all", "base", "new")


def split_base_new_labels(labels):
    """``(base, new)``: the sorted distinct labels cut after the first ``ceil(n / 2)``."""
    labels = sorted(set(labels))
    m = math.ceil(len(labels) / 2)
    return labels[:m], labels[m:]


def _check_choice(subsample):
    if subsample not in SUBSAMPLE_CHOICES:
        raise DatasetError(
            f'DATASET.SUBSAMPLE_CLASSES must be one of {", ".join(SUBSAMPLE_CHOICES)}; '
            f'got "{subsample}"'
        )


def subsample_classes(*data_sources, subsample="all"):
    """Keep the base or the new classes of every source, relabelled ``0..`` in label order.

    The classes are decided by the labels of the first source (the training data), and the
    same selection is applied to all sources. ``"all"`` returns the sources unchanged; a source
    that is ``None`` stays ``None``.
    """
    _check_choice(subsample)
    if subsample == "all":
        return list(data_sources)
    base, new = split_base_new_labels(item.label for item in data_sources[0])
    selected = base if subsample == "base" else new
    relabel = {label: new_label for new_label, label in enumerate(selected)}
    print(f"SUBSAMPLE {subsample.upper()} CLASSES!")
    return [_keep_and_relabel(source, relabel) for source in data_sources]


def _keep_and_relabel(source, relabel):
    if source is None:
        return None
    return [
        Datum(impath=item.impath, label=relabel[item.label], domain=item.domain, classname=item.classname)
        for item in source
        if item.label in relabel
    ]


def base_labels_for(train, subsample):
    """The base labels of an open-world run (all classes evaluated), else ``None``.

    With ``"all"`` the label space is that of all classes, so the base classes keep their
    labels and the evaluator can split accuracy into base-class and new-class images.
    """
    _check_choice(subsample)
    if subsample != "all":
        return None
    base, _ = split_base_new_labels(item.label for item in train)
    return frozenset(base)
