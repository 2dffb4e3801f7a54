#!/usr/bin/env bash
# CoPrompt. Cross-dataset / domain generalisation, step 1: train on all classes of ImageNet
# (16 shots), or of SOURCE when given.
# Usage: DATA=/path/to/datasets bash scripts/coprompt/xd_train.sh [SOURCE] SEED [KEY VALUE ...]
# Defaults and conventions: scripts/protocols.py.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../protocol.sh" coprompt xd_train "$@"
