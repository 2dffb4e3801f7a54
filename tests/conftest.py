"""Shared pytest set-up: the repository root is importable and torch stays on few threads."""
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# At most 2 threads, fewer when pytest-xdist's workers share the cores; the processes the tests
# start (train.py through the scripts) inherit the count.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, min(2, (os.cpu_count() or 1) // _workers, torch.get_num_threads()))
torch.set_num_threads(THREADS)
os.environ["OMP_NUM_THREADS"] = str(THREADS)

# fp16 / amp configs run bf16 on a CPU with native bf16 (dassl.engine.trainer); the tests expect
# the same fp32 numbers on every machine, so they keep fp32 (tests of bf16 set it themselves).
os.environ["CPU_BF16"] = "0"

# The processes the tests start (train.py through the scripts, each mostly imports) reuse the
# bytecode of this repository's modules rather than compiling them again each time
# (__pycache__ is ignored by git).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

# The files that take most of the suite's time (end-to-end runs of the scripts) are collected
# first: pytest-xdist hands each worker whole files in collection order, so the workers then end
# together on the short ones.
SLOWEST_FIRST = ("test_protocols_identity.py", "test_protocols_lineage.py",
                 "test_protocols_end_to_end.py", "test_regularised_scripts.py", "test_predict.py",
                 "test_trainers_end_to_end.py", "test_clip_openclip.py",
                 "test_engine_run_folder_kills.py", "test_bmip_training.py", "test_engine_cli.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
