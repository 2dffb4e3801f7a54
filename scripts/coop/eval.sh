#!/usr/bin/env bash
# The CoOp codebase's evaluation script: main.sh's 16-shot ImageNet models (seeds 1 2 3) on DATASET,
# into output/evaluation/CoOp/<CFG>_16shots/nctx16_cscFalse_ctpend/<DATASET>/seed<S>/.
# Usage: DATA=/path/to/datasets bash scripts/coop/eval.sh DATASET CFG [KEY VALUE ...]
# (--help for more; the logic is in scripts/coop_scripts.py)
source "$(dirname "${BASH_SOURCE[0]}")/../env.sh"  # repo, PYTHONPATH
exec "${PYTHON:-python}" -m scripts.coop_scripts eval "$@"
