#!/usr/bin/env bash
# Every protocol x dataset x seed for some trainers, skipping finished runs, resuming unfinished
# ones; several at once with --gpus, or a Slurm job array with --sbatch FILE.
# Usage: DATA=/path/to/datasets bash scripts/run_all.sh TRAINER... [options] [-- KEY VALUE ...]
#        bash scripts/run_all.sh --help
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
# This checkout's code even when run from inside another clone (no working folder on the path)
export PYTHONSAFEPATH=1
exec "${PYTHON:-python}" -m scripts.sweep "$@"
