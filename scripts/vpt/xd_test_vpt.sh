#!/usr/bin/env bash
# The MaPLe codebase's name (scripts/vpt/xd_test_vpt.sh) for xd_test.sh, same arguments.
exec bash "$(dirname "${BASH_SOURCE[0]}")/xd_test.sh" "$@"
