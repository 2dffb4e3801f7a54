#!/usr/bin/env bash
# Zero-shot CLIP (nothing is trained; the seed only names the folder). Cross-dataset / DG source column: accuracy on ImageNet (or SOURCE).
# Usage: DATA=/path/to/datasets bash scripts/zsclip/xd_train.sh [SOURCE] SEED [KEY VALUE ...]
# Defaults and conventions: scripts/protocols.py.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../protocol.sh" zsclip xd_train "$@"
