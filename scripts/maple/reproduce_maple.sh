#!/usr/bin/env bash
# The MaPLe codebase's name (scripts/maple/reproduce_maple.sh) for reproduce.sh, same arguments.
exec bash "$(dirname "${BASH_SOURCE[0]}")/reproduce.sh" "$@"
