#!/usr/bin/env bash
# The MaPLe codebase's name (scripts/independent-vlp/reproduce_ivlp.sh) for reproduce.sh, same arguments.
exec bash "$(dirname "${BASH_SOURCE[0]}")/reproduce.sh" "$@"
