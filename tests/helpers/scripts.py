"""Running the real protocol scripts and parse_test_res.py on tiny data (end-to-end tests)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers.trainers import TINY_SIZES

REPO = Path(__file__).resolve().parent.parent.parent


def tiny(clip_file):
    """Overrides that run a trainer on a tiny CLIP file for one quick epoch on the CPU."""
    size = TINY_SIZES["image_resolution"]
    return ["MODEL.BACKBONE.NAME", str(clip_file), "INPUT.SIZE", f"({size}, {size})",
            "OPTIM.MAX_EPOCH", "1", "DATALOADER.NUM_WORKERS", "0",
            "DATALOADER.TEST.BATCH_SIZE", "8", "USE_CUDA", "False"]


def run_script(script, *args, env, repo=REPO, **variables):
    """`bash scripts/<script> ARGS...` of the checkout `repo` with ENV and more VARIABLES."""
    return subprocess.run(["bash", str(Path(repo) / "scripts" / script), *map(str, args)],
                          capture_output=True, text=True, timeout=600, env={**env, **variables})


def ok(result):
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def parse(output, *options, repo=REPO):
    """parse_test_res.py's JSON document of OUTPUT (the parser of the checkout `repo`)."""
    result = subprocess.run([sys.executable, str(Path(repo) / "parse_test_res.py"), str(output),
                             "--format", "json", *options], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def results(folder):
    return json.loads((Path(folder) / "results.json").read_text())


def copy_checkout(target):
    """A copy of this checkout's files (git's tracked files; without git, the whole tree but
    .git, output folders, virtual environments and caches) at `target`,
    for tests that add files where the scripts read them (configs/): the repository itself
    stays untouched, so tests can run in parallel."""
    target = Path(target)
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True)
    if listed.returncode == 0 and listed.stdout:
        for name in listed.stdout.decode().split("\0"):
            source = REPO / name
            if name and source.is_file():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / name)
    else:
        shutil.copytree(REPO, target, ignore=shutil.ignore_patterns(
            ".git", "output", "venv", ".venv", "__pycache__", "*.pyc"))
    return target
