#!/usr/bin/env bash
# Every protocol x dataset x seed for some trainers, skipping finished runs, resuming unfinished
# ones; several at once with --gpus, or a Slurm job array with --sbatch FILE.
# Usage: DATA=/path/to/datasets bash scripts/run_all.sh TRAINER... [options] [-- KEY VALUE ...]
#        bash scripts/run_all.sh --help
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"  # repo, PYTHONPATH
exec "${PYTHON:-python}" -m scripts.sweep "$@"
