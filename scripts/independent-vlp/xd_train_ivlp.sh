#!/usr/bin/env bash
# The MaPLe codebase's name (scripts/independent-vlp/xd_train_ivlp.sh) for scripts/ivlp/xd_train.sh, same arguments.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../ivlp/xd_train.sh" "$@"
