#!/usr/bin/env bash
# IVLP (independent vision-language prompts). Released ImageNet weights in the MaPLe authors' layout (WEIGHTS_DIR/imagenet/seed<S>/):
# test on a cross-dataset / domain-generalisation target.
# Usage: DATA=/path/to/datasets bash scripts/ivlp/reproduce_xd.sh DATASET SEED WEIGHTS_DIR [KEY VALUE ...]
# Defaults and conventions: scripts/protocols.py.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../protocol.sh" ivlp reproduce_xd "$@"
