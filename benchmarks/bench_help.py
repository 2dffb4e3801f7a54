"""How long the entry points take to answer --help, beside the cost of importing torch.

Each command runs REPEATS times in a fresh process; the median wall time is printed with its
ratio to `python -c "import torch"` measured in the same run (the help must not pay for torch:
tests/test_entry_points.py checks that it never imports it).

    python benchmarks/bench_help.py [--repeats 5]
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = {
    "import torch (reference)": [sys.executable, "-c", "import torch"],
    "bash scripts/maple/base2new_train.sh --help": ["bash", "scripts/maple/base2new_train.sh", "--help"],
    "bash scripts/run_all.sh --help": ["bash", "scripts/run_all.sh", "--help"],
    "bash scripts/coop/main.sh --help": ["bash", "scripts/coop/main.sh", "--help"],
    "bash scripts/demo.sh --help": ["bash", "scripts/demo.sh", "--help"],
    "python -m scripts.released_weights --help": [sys.executable, "-m", "scripts.released_weights",
                                                  "--help"],
}


def median_seconds(command, repeats):
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        subprocess.run(command, cwd=REPO, capture_output=True, check=True,
                       env={**os.environ, "PYTHON": sys.executable})
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results = {name: median_seconds(command, args.repeats) for name, command in COMMANDS.items()}
    reference = results["import torch (reference)"]
    for name, seconds in results.items():
        print(f"{name:<45} {seconds:6.2f} s  ({seconds / reference:.2f}x import torch)")


if __name__ == "__main__":
    main()
