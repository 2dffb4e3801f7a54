#!/usr/bin/env bash
# PromptSRC. Released ImageNet weights in the MaPLe authors' layout (WEIGHTS_DIR/imagenet/seed<S>/):
# test on a cross-dataset / domain-generalisation target, into a folder of its own:
# evaluation/<TRAINER>/<CFG>_released_16shots/<DATASET>/seed<S>/.
# Usage: DATA=/path/to/datasets bash scripts/promptsrc/reproduce_xd.sh DATASET SEED WEIGHTS_DIR [KEY VALUE ...]
# Defaults and conventions: scripts/protocols.py.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../protocol.sh" promptsrc reproduce_xd "$@"
