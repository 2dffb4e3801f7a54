#!/usr/bin/env bash
# The MaPLe codebase's name (scripts/vpt/base2new_train_vpt.sh) for base2new_train.sh, same arguments.
exec bash "$(dirname "${BASH_SOURCE[0]}")/base2new_train.sh" "$@"
