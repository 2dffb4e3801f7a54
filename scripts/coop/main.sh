#!/usr/bin/env bash
# The CoOp codebase's few-shot script: train on all classes of DATASET with SHOTS images per
# class, seeds 1 2 3, into output/<DATASET>/CoOp/<CFG>_<SHOTS>shots/nctx<NCTX>_csc<CSC>_ctp<CTP>/.
# Usage: DATA=/path/to/datasets bash scripts/coop/main.sh DATASET CFG CTP NCTX SHOTS CSC [KEY VALUE ...]
# (--help for more; the logic is in scripts/coop_scripts.py)
source "$(dirname "${BASH_SOURCE[0]}")/../env.sh"  # repo, PYTHONPATH
exec "${PYTHON:-python}" -m scripts.coop_scripts main "$@"
