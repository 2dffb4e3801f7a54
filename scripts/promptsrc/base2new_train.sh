#!/usr/bin/env bash
# PromptSRC. Base-to-new, step 1: train on the base classes of DATASET (16 shots) and test on them.
# Usage: DATA=/path/to/datasets bash scripts/promptsrc/base2new_train.sh DATASET SEED [KEY VALUE ...]
# Defaults and conventions: scripts/protocols.py.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../protocol.sh" promptsrc base2new_train "$@"
