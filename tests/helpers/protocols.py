"""Hand-built output trees for parse_test_res.py tests.

Run folders are written in the two forms the parser must read: results.json (our engine) and a
Dassl log.txt only (existing MaPLe / CoOp runs), with the log lines upstream Dassl prints.
"""
import json
from pathlib import Path

from dassl.utils.run_files import TRAIN_END_MESSAGE


def b2n_dir(root, part, dataset, trainer, config, seed, shots=16):
    """part: train_base | test_base | test_new (base2new/) or test_all (openworld/)."""
    protocol = "openworld" if part == "test_all" else "base2new"
    return Path(root, protocol, part, dataset, f"shots_{shots}", trainer, config, f"seed{seed}")


def xd_train_dir(root, source, trainer, config, seed, shots=16):
    return Path(root, source, trainer, f"{config}_{shots}shots", f"seed{seed}")


def xd_test_dir(root, target, trainer, config, seed, shots=16):
    return Path(root, "evaluation", trainer, f"{config}_{shots}shots", target, f"seed{seed}")


def write_results(folder, accuracy, **extra):
    """A finished run in our form: results.json (plus a log.txt without numbers)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = {"accuracy": accuracy, "error": 100 - accuracy, "macro_f1": accuracy - 1, **extra}
    (folder / "results.json").write_text(json.dumps(record))
    (folder / "log.txt").write_text("results are in results.json\n")
    return folder


def _result_lines(accuracy, extra_metrics=()):
    lines = ["=> result", "* total: 1,000", f"* correct: {round(accuracy * 10)}",
             f"* accuracy: {accuracy}%", f"* error: {100 - accuracy:.2f}%", "* macro_f1: 50.0%"]
    return lines + [f"* {name}: {value}%" for name, value in extra_metrics]


def write_training_log(folder, accuracy, val_accuracies=(), finished=True):
    """A legacy Dassl training log: per-epoch validation results, then the final test."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["** Arguments **", "eval_only: False", "epoch [1/2] batch [1/1] loss 1.0"]
    for value in val_accuracies:
        lines += ["Evaluate on the *val* set", *_result_lines(value)]
    if finished:
        lines += [TRAIN_END_MESSAGE, "Do evaluation on test set", *_result_lines(accuracy),
                  "Elapsed: 0:01:00"]
    (folder / "log.txt").write_text("\n".join(lines) + "\n")
    return folder


def write_test_log(folder, accuracy, extra_metrics=()):
    """A legacy evaluation-only log (base2new_test / xd_test)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["** Arguments **", "eval_only: True", "Loading weights to prompt_learner",
             "Evaluate on the *test* set", *_result_lines(accuracy, extra_metrics)]
    (folder / "log.txt").write_text("\n".join(lines) + "\n")
    return folder


def write_unfinished(folder):
    """A run that started but never reached its final test."""
    return write_training_log(folder, 0.0, val_accuracies=(40.0,), finished=False)
