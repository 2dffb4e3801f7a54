#!/usr/bin/env bash
# Zero-shot CLIP (nothing is trained; the seed only names the folder). Base-to-new: accuracy on the new classes of DATASET.
# Usage: DATA=/path/to/datasets bash scripts/zsclip/base2new_test.sh DATASET SEED [KEY VALUE ...]
# Defaults and conventions: scripts/protocols.py.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../protocol.sh" zsclip base2new_test "$@"
