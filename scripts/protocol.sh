#!/usr/bin/env bash
# Shared body of scripts/<trainer>/<script>.sh: runs scripts/protocols.py with the repository
# importable from any working folder. PYTHON picks the interpreter (default: python).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"  # repo, PYTHONPATH
exec "${PYTHON:-python}" -m scripts.protocols "$@"
