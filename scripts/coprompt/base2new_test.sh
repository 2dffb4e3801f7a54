#!/usr/bin/env bash
# CoPrompt. Base-to-new, step 2: test the base2new_train model on the new classes of DATASET.
# Usage: DATA=/path/to/datasets bash scripts/coprompt/base2new_test.sh DATASET SEED [KEY VALUE ...]
# Defaults and conventions: scripts/protocols.py.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../protocol.sh" coprompt base2new_test "$@"
