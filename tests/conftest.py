"""Shared pytest set-up: the repository root is importable and torch stays on few threads."""
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# At most 2 threads, fewer when pytest-xdist's workers share the cores.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _workers, torch.get_num_threads())))

# fp16 / amp configs run bf16 on a CPU with native bf16 (dassl.engine.trainer); the tests expect
# the same fp32 numbers on every machine, so they keep fp32 (tests of bf16 set it themselves).
os.environ["CPU_BF16"] = "0"
