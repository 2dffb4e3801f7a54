#!/usr/bin/env bash
# CoPrompt. Cross-dataset / domain generalisation, step 2: test the xd_train model on DATASET
# (a cross-dataset target, or imagenetv2 / imagenet_sketch / imagenet_a / imagenet_r).
# SOURCE=<name> in the environment when xd_train used another source than imagenet.
# Usage: DATA=/path/to/datasets bash scripts/coprompt/xd_test.sh DATASET SEED [KEY VALUE ...]
# Defaults and conventions: scripts/protocols.py.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../protocol.sh" coprompt xd_test "$@"
