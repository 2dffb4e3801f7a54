#!/usr/bin/env bash
# Zero-shot CLIP (nothing is trained; the seed only names the folder). Open-world: accuracy on all test images with all classes as candidates.
# Usage: DATA=/path/to/datasets bash scripts/zsclip/openworld_test.sh DATASET SEED [KEY VALUE ...]
# Defaults and conventions: scripts/protocols.py.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../protocol.sh" zsclip openworld_test "$@"
