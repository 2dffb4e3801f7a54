"""Write configs/published.json: the SHA-256 of every trainer config file as this repository
publishes it.

    python -m scripts.publish_configs [--check]

A run records whether its trainer config file is the published one (train.py's
config_file_record); the tables mark runs of edited files, whose numbers are not the published
setting's. Run this after changing a config file on purpose; --check exits 1 when the manifest
is out of date (the test suite runs it).
"""
import argparse
import hashlib
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TRAINER_CONFIGS = REPO_ROOT / "configs" / "trainers"
MANIFEST = REPO_ROOT / "configs" / "published.json"


def current_digests():
    return {path.relative_to(REPO_ROOT).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(TRAINER_CONFIGS.rglob("*.yaml"))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1, naming the files, when the manifest is out of date")
    args = parser.parse_args(argv)
    digests = current_digests()
    if args.check:
        recorded = json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else {}
        stale = sorted(name for name in set(digests) | set(recorded)
                       if digests.get(name) != recorded.get(name))
        if stale:
            print(f"{MANIFEST.name} is out of date for: {', '.join(stale)}; run "
                  "`python -m scripts.publish_configs`", file=sys.stderr)
            return 1
        return 0
    MANIFEST.write_text(json.dumps(digests, indent=1) + "\n")
    print(f"wrote {MANIFEST} ({len(digests)} config files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
