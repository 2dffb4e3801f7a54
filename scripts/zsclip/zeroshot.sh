#!/usr/bin/env bash
# The CoOp / MaPLe codebases' zero-shot CLIP script: DATASET's test set, all classes, with the
# backbone of configs/trainers/CoOp/<CFG>.yaml, into output/ZeroshotCLIP/<CFG>/<DATASET>/.
# Usage: DATA=/path/to/datasets bash scripts/zsclip/zeroshot.sh DATASET CFG [KEY VALUE ...]
# (--help for more; the logic is in scripts/coop_scripts.py)
source "$(dirname "${BASH_SOURCE[0]}")/../env.sh"  # repo, PYTHONPATH
exec "${PYTHON:-python}" -m scripts.coop_scripts zeroshot "$@"
