#!/usr/bin/env bash
# PromptSRC. Open-world: test the base2new_train model on all test images with all classes as
# candidates (accuracy overall, on base-class and on new-class images).
# Usage: DATA=/path/to/datasets bash scripts/promptsrc/openworld_test.sh DATASET SEED [KEY VALUE ...]
# Defaults and conventions: scripts/protocols.py.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../protocol.sh" promptsrc openworld_test "$@"
