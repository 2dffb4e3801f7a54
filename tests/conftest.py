"""Shared pytest set-up: the repository root is importable and torch stays on few threads."""
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

torch.set_num_threads(min(2, torch.get_num_threads()))

# fp16 / amp configs run bf16 on a CPU with native bf16 (dassl.engine.trainer); the tests expect
# the same fp32 numbers on every machine, so they keep fp32 (tests of bf16 set it themselves).
os.environ["CPU_BF16"] = "0"
