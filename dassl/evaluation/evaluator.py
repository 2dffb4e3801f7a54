"""Classification evaluator: accuracy, error, macro F1, per-class and base / new accuracy."""
import os.path as osp
from collections import Counter, OrderedDict

import torch

from dassl.utils import Registry, mkdir_if_missing

EVALUATOR_REGISTRY = Registry("evaluator", config_key="TEST.EVALUATOR")


def build_evaluator(cfg, **kwargs):
    return EVALUATOR_REGISTRY.get(cfg.TEST.EVALUATOR)(cfg, **kwargs)


class EvaluatorBase:
    def __init__(self, cfg):
        self.cfg = cfg

    def reset(self):
        raise NotImplementedError

    def process(self, mo, gt):
        raise NotImplementedError

    def evaluate(self):
        raise NotImplementedError


def macro_f1_score(y_true, y_pred):
    """Mean F1 over the classes present in ``y_true`` (sklearn's ``average="macro"`` with
    ``labels=unique(y_true)``). Per class F1 = 2TP / (2TP + FP + FN) = 2TP / (#true + #predicted)."""
    true_counts = Counter(y_true)
    pred_counts = Counter(y_pred)
    true_positives = Counter(t for t, p in zip(y_true, y_pred, strict=True) if t == p)
    scores = [
        2 * true_positives[label] / (true_counts[label] + pred_counts[label])
        for label in true_counts
    ]
    return sum(scores) / len(scores)


def confusion_matrix_normalized(y_true, y_pred, num_classes):
    """Rows: true labels, columns: predictions, each row divided by its count (sklearn "true")."""
    cmat = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    for t, p in zip(y_true, y_pred, strict=True):
        cmat[t, p] += 1
    row_sums = cmat.sum(dim=1, keepdim=True)
    return torch.where(row_sums > 0, cmat / row_sums.clamp(min=1), cmat)


@EVALUATOR_REGISTRY.register()
class Classification(EvaluatorBase):
    """Accumulates predictions batch by batch; ``evaluate()`` prints and returns the metrics.

    ``base_labels`` (open-world: test on all classes of a model trained on the base half) adds
    the accuracy over images of base classes and over images of new classes.
    """

    def __init__(self, cfg, lab2cname=None, base_labels=None, **kwargs):
        super().__init__(cfg)
        self._lab2cname = lab2cname
        self._base_labels = None if base_labels is None else {int(label) for label in base_labels}
        self.reset()

    def reset(self):
        self._y_true = []
        self._y_pred = []

    def process(self, mo, gt):
        """``mo``: logits (N x C); ``gt``: labels (N)."""
        pred = mo.max(1)[1]
        self._y_true.extend(gt.detach().cpu().tolist())
        self._y_pred.extend(pred.detach().cpu().tolist())

    @property
    def total(self):
        return len(self._y_true)

    @property
    def correct(self):
        return sum(1 for t, p in zip(self._y_true, self._y_pred, strict=True) if t == p)

    def per_class_accuracy(self):
        """OrderedDict label -> (correct, total, accuracy in percent), sorted by label."""
        counts = {}
        for t, p in zip(self._y_true, self._y_pred, strict=True):
            correct, total = counts.get(t, (0, 0))
            counts[t] = (correct + int(t == p), total + 1)
        return OrderedDict(
            (label, (correct, total, 100.0 * correct / total))
            for label, (correct, total) in sorted(counts.items())
        )

    def base_new_counts(self):
        """(correct, total) over images of base classes and over images of new classes."""
        base, new = [0, 0], [0, 0]
        for t, p in zip(self._y_true, self._y_pred, strict=True):
            group = base if t in self._base_labels else new
            group[0] += int(t == p)
            group[1] += 1
        return tuple(base), tuple(new)

    def classname(self, label):
        if self._lab2cname is None:
            return str(label)
        return self._lab2cname.get(label, str(label))

    def evaluate(self):
        if self.total == 0:
            raise RuntimeError("The evaluator received no samples: is the evaluated split empty?")
        results = OrderedDict()
        correct = self.correct
        accuracy = 100.0 * correct / self.total
        results["accuracy"] = accuracy
        results["error"] = 100.0 - accuracy
        results["macro_f1"] = 100.0 * macro_f1_score(self._y_true, self._y_pred)
        print(
            "=> result\n"
            f"* total: {self.total:,}\n"
            f"* correct: {correct:,}\n"
            f"* accuracy: {accuracy:.1f}%\n"
            f"* error: {results['error']:.1f}%\n"
            f"* macro_f1: {results['macro_f1']:.1f}%"
        )
        if self._base_labels is not None:
            results.update(self._evaluate_base_new())
        if self.cfg.TEST.PER_CLASS_RESULT:
            results["perclass_accuracy"] = self._print_per_class()
        if self.cfg.TEST.COMPUTE_CMAT:
            self._save_confusion_matrix()
        return results

    def _evaluate_base_new(self):
        results = OrderedDict()
        for name, (correct, total) in zip(("base", "new"), self.base_new_counts(), strict=True):
            if total == 0:
                print(f"* {name}_accuracy: n/a (no images of {name} classes)")
                continue
            results[f"{name}_accuracy"] = 100.0 * correct / total
            print(f"* {name}_accuracy: {results[f'{name}_accuracy']:.1f}%")
        return results

    def _print_per_class(self):
        print("=> per-class result")
        accuracies = []
        for label, (correct, total, accuracy) in self.per_class_accuracy().items():
            accuracies.append(accuracy)
            print(
                f"* class: {label} ({self.classname(label)})\t"
                f"total: {total:,}\tcorrect: {correct:,}\tacc: {accuracy:.1f}%"
            )
        mean_accuracy = sum(accuracies) / len(accuracies)
        print(f"* average: {mean_accuracy:.1f}%")
        return mean_accuracy

    def _save_confusion_matrix(self):
        num_classes = max(max(self._y_true), max(self._y_pred)) + 1
        if self._lab2cname:
            num_classes = max(num_classes, len(self._lab2cname))
        cmat = confusion_matrix_normalized(self._y_true, self._y_pred, num_classes)
        mkdir_if_missing(self.cfg.OUTPUT_DIR)
        save_path = osp.join(self.cfg.OUTPUT_DIR, "cmat.pt")
        torch.save(cmat, save_path)
        print(f"Confusion matrix is saved to {save_path}")


class ClassSubset:
    """Scores a subset of the classes from all-class logits, as a separate test on that subset
    (DATASET.SUBSAMPLE_CLASSES) would: the images of those classes, the logits of their columns,
    labels renumbered 0.. in label order. ``evaluator`` receives the renumbered batches."""

    def __init__(self, evaluator, labels):
        self.evaluator = evaluator
        self.labels = sorted(int(label) for label in labels)
        self._columns = torch.tensor(self.labels)
        self._renumber = {label: index for index, label in enumerate(self.labels)}

    def process(self, mo, gt):
        keep = torch.isin(gt, self._columns.to(gt.device))
        if keep.any():
            renumbered = torch.tensor([self._renumber[label] for label in gt[keep].tolist()])
            self.evaluator.process(mo[keep][:, self._columns.to(mo.device)], renumbered)
