#!/usr/bin/env bash
# The MaPLe codebase's name (scripts/independent-vlp/xd_train_ivlp.sh) for xd_train.sh, same arguments.
exec bash "$(dirname "${BASH_SOURCE[0]}")/xd_train.sh" "$@"
