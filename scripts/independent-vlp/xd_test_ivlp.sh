#!/usr/bin/env bash
# The MaPLe codebase's name (scripts/independent-vlp/xd_test_ivlp.sh) for scripts/ivlp/xd_test.sh, same arguments.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../ivlp/xd_test.sh" "$@"
