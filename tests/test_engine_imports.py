"""The engine (dassl/) and clip/ import nothing of our method (trainers/) and dataset (datasets/)
packages: datasets are registered by the entry points that import them, as in upstream Dassl."""
import ast
import os
import subprocess
import sys

from tests.conftest import ROOT

PROJECT_PACKAGES = {"trainers", "datasets"}


def imported_packages(path):
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant)):
            names.add(str(node.args[0].value).split(".")[0])
    return names


def test_engine_and_clip_sources_do_not_import_project_packages():
    offending = []
    for package in ("dassl", "clip"):
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    used = imported_packages(path) & PROJECT_PACKAGES
                    offending += [f"{os.path.relpath(path, ROOT)}: {sorted(used)}"] if used else []
    assert not offending


def test_engine_imports_no_dataset_and_build_dataset_needs_a_registration():
    code = ("import sys\n"
            "from dassl.config import get_cfg_default\n"
            "from dassl.data.datasets import build_dataset\n"
            "import dassl.engine, clip\n"
            "cfg = get_cfg_default(); cfg.DATASET.NAME = 'EuroSAT'\n"
            "try:\n    build_dataset(cfg)\nexcept Exception as error:\n    print(error)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('datasets', 'trainers')))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "[]", result.stdout + result.stderr
    assert lines[0].startswith('Unknown dataset "EuroSAT"')
