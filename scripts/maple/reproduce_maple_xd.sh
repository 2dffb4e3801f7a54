#!/usr/bin/env bash
# The MaPLe codebase's name (scripts/maple/reproduce_maple_xd.sh) for reproduce_xd.sh, same arguments.
exec bash "$(dirname "${BASH_SOURCE[0]}")/reproduce_xd.sh" "$@"
