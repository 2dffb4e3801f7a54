# Sourced by the .sh entry points: this checkout's root as `repo`, importable from any working
# folder, and no working folder before it on Python's path (PYTHONSAFEPATH, Python >= 3.11):
# a clone's scripts typed inside another clone run their own code, not that clone's.
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONSAFEPATH=1
