"""benchmarks/gpu_check.sh and gpu_steps.py, the parts that run without a GPU: the script's
syntax and arguments, and gpu_steps.py's step-against-fp32 comparison on the tiny CLIP (CPU)."""
import json
import math
import os
import subprocess

import pytest
import torch

from benchmarks import gpu_steps

SCRIPT = os.path.join(gpu_steps.REPO_ROOT, "benchmarks", "gpu_check.sh")


def test_the_script_parses_and_refuses_unknown_arguments():
    assert subprocess.run(["bash", "-n", SCRIPT]).returncode == 0
    result = subprocess.run(["bash", SCRIPT, "--fast"], capture_output=True, text=True)
    assert result.returncode == 2 and "unknown argument --fast" in result.stderr
    help_text = subprocess.run(["bash", SCRIPT, "--help"], capture_output=True, text=True).stdout
    assert "at most 8 minutes" in help_text and "--dry-run" in help_text


def test_a_step_in_bf16_is_compared_with_fp32_on_the_same_batch_and_prompts(tmp_path, capsys):
    out = tmp_path / "rows.json"
    status = gpu_steps.main(["--device", "cpu", "--precisions", "bf16", "--trainers", "MaPLe",
                             "--json", str(out)])
    rows = json.loads(out.read_text())
    assert status == 0 and [(r["precision"], r["resolved"]) for r in rows] == [
        ("fp32", "fp32"), ("bf16", "bf16")]
    fp32, bf16 = rows
    assert bf16["ok"] and bf16["finite"] and bf16["loss"] != fp32["loss"]   # it ran in bf16
    assert bf16["loss_relative"] == pytest.approx(abs(bf16["loss"] - fp32["loss"]) / fp32["loss"])
    assert 0.95 <= bf16["grad_cosine"] < 1
    assert "2 of 2 rows ok" in capsys.readouterr().out


def test_a_row_fails_when_not_finite_or_not_close():
    args = gpu_steps.parse_args(["--device", "cpu"])
    grad = torch.tensor([1.0, -2.0, 3.0])
    assert gpu_steps.compare(1.01, grad, 1.0, grad, args)["ok"]
    assert not gpu_steps.compare(1.2, grad, 1.0, grad, args)["ok"]           # loss 20 % off
    assert not gpu_steps.compare(1.0, -grad, 1.0, grad, args)["ok"]          # gradient reversed
    assert not gpu_steps.compare(math.nan, grad, 1.0, grad, args)["ok"]
    assert not gpu_steps.compare(1.0, grad * math.inf, 1.0, grad, args)["finite"]
