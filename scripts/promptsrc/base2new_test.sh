#!/usr/bin/env bash
# PromptSRC. Base-to-new, step 2: test the base2new_train model on the new classes of DATASET.
# Usage: DATA=/path/to/datasets bash scripts/promptsrc/base2new_test.sh DATASET SEED [KEY VALUE ...]
# Defaults and conventions: scripts/protocols.py.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../protocol.sh" promptsrc base2new_test "$@"
