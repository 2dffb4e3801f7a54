#!/usr/bin/env bash
# CoCoOp. Released ImageNet weights in the MaPLe authors' layout (WEIGHTS_DIR/imagenet/seed<S>/):
# test on a cross-dataset / domain-generalisation target.
# Usage: DATA=/path/to/datasets bash scripts/cocoop/reproduce_xd.sh DATASET SEED WEIGHTS_DIR [KEY VALUE ...]
# Defaults and conventions: scripts/protocols.py.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../protocol.sh" cocoop reproduce_xd "$@"
