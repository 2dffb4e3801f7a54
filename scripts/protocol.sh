#!/usr/bin/env bash
# Shared body of scripts/<trainer>/<script>.sh: runs scripts/protocols.py with the repository
# importable from any working folder. PYTHON picks the interpreter (default: python).
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
# This checkout's code even when run from inside another clone (no working folder on the path)
export PYTHONSAFEPATH=1
exec "${PYTHON:-python}" -m scripts.protocols "$@"
