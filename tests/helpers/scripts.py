"""Running the real protocol scripts and parse_test_res.py on tiny data (end-to-end tests)."""
import json
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


def run_script(script, *args, env, **variables):
    """`bash scripts/<script> ARGS...` with ENV and more VARIABLES."""
    return subprocess.run(["bash", str(REPO / "scripts" / script), *map(str, args)],
                          capture_output=True, text=True, timeout=600, env={**env, **variables})


def ok(result):
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def parse(output, *options):
    """parse_test_res.py's JSON document of OUTPUT."""
    result = subprocess.run([sys.executable, str(REPO / "parse_test_res.py"), str(output),
                             "--format", "json", *options], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def results(folder):
    return json.loads((Path(folder) / "results.json").read_text())
