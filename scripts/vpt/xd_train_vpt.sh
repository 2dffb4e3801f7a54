#!/usr/bin/env bash
# The MaPLe codebase's name (scripts/vpt/xd_train_vpt.sh) for xd_train.sh, same arguments.
exec bash "$(dirname "${BASH_SOURCE[0]}")/xd_train.sh" "$@"
