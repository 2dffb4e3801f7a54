#!/usr/bin/env bash
# The MaPLe codebase's name (scripts/independent-vlp/base2new_test_ivlp.sh) for scripts/ivlp/base2new_test.sh, same arguments.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../ivlp/base2new_test.sh" "$@"
