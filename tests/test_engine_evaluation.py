"""Classification evaluator numbers against values computed by hand for a fixed example."""
import torch
import pytest

from dassl.config import get_cfg_default
from dassl.evaluation import Classification, build_evaluator
from dassl.metrics import compute_accuracy

Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3]
Y_PRED = [0, 0, 1, 1, 2, 2, 2, 0, 2, 1]
LAB2CNAME = {0: "cat", 1: "dog", 2: "owl", 3: "fox"}


def _logits(predictions, num_classes=4):
    return torch.nn.functional.one_hot(torch.tensor(predictions), num_classes).float() * 5.0


def _evaluate(cfg, base_labels=None, batches=((0, 4), (4, 10))):
    evaluator = Classification(cfg, lab2cname=LAB2CNAME, base_labels=base_labels)
    for start, stop in batches:
        evaluator.process(_logits(Y_PRED[start:stop]), torch.tensor(Y_TRUE[start:stop]))
    return evaluator, evaluator.evaluate()


def test_accuracy_macro_f1_and_printed_lines(capsys):
    _, results = _evaluate(get_cfg_default())
    # 6 of 10 correct. F1 per class = 2TP / (#true + #predicted):
    # cat 4/6, dog 2/5, owl 6/8, fox 0/1 -> mean 0.4541666...
    assert results["accuracy"] == pytest.approx(60.0)
    assert results["error"] == pytest.approx(40.0)
    assert results["macro_f1"] == pytest.approx(100 * (4 / 6 + 2 / 5 + 6 / 8 + 0) / 4)
    assert list(results)[0] == "accuracy"
    assert capsys.readouterr().out.startswith(
        "=> result\n* total: 10\n* correct: 6\n* accuracy: 60.0%\n* error: 40.0%\n* macro_f1: 45.4%\n"
    )


def test_per_class_results(capsys):
    cfg = get_cfg_default()
    cfg.TEST.PER_CLASS_RESULT = True
    evaluator, results = _evaluate(cfg)
    per_class = evaluator.per_class_accuracy()
    assert [acc for _, _, acc in per_class.values()] == pytest.approx([200 / 3, 50.0, 75.0, 0.0])
    assert results["perclass_accuracy"] == pytest.approx((200 / 3 + 50 + 75 + 0) / 4)
    out = capsys.readouterr().out
    assert "* class: 0 (cat)\ttotal: 3\tcorrect: 2\tacc: 66.7%" in out
    assert "* average: 47.9%" in out


def test_base_and_new_accuracy_for_open_world(capsys):
    _, results = _evaluate(get_cfg_default(), base_labels=[0])
    # base images: the three cats, 2 correct; new images: the other 7, 4 correct
    assert results["base_accuracy"] == pytest.approx(200 / 3)
    assert results["new_accuracy"] == pytest.approx(400 / 7)
    out = capsys.readouterr().out
    assert "* base_accuracy: 66.7%\n* new_accuracy: 57.1%\n" in out


def test_confusion_matrix_is_saved_row_normalised(tmp_path):
    cfg = get_cfg_default()
    cfg.TEST.COMPUTE_CMAT = True
    cfg.OUTPUT_DIR = str(tmp_path)
    _evaluate(cfg)
    cmat = torch.load(tmp_path / "cmat.pt", weights_only=True)
    expected = torch.tensor([
        [2 / 3, 1 / 3, 0, 0],
        [0, 1 / 2, 1 / 2, 0],
        [1 / 4, 0, 3 / 4, 0],
        [0, 1, 0, 0],
    ], dtype=torch.float64)
    assert torch.allclose(cmat, expected)


def test_thousands_separator_and_registry(capsys):
    cfg = get_cfg_default()
    evaluator = build_evaluator(cfg, lab2cname={0: "a", 1: "b"})
    labels = torch.tensor([0] * 600 + [1] * 400)
    evaluator.process(_logits([0] * 1000, 2), labels)
    evaluator.evaluate()
    assert "* total: 1,000\n* correct: 600\n" in capsys.readouterr().out


def test_compute_accuracy_top_k():
    logits = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.1, 0.4], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    labels = torch.tensor([1, 2, 0, 0])
    top1, top2 = compute_accuracy(logits, labels, topk=(1, 2))
    assert top1.item() == pytest.approx(50.0)  # rows 0 and 3
    assert top2.item() == pytest.approx(75.0)  # + row 1 (label 2 is second)
