#!/usr/bin/env bash
# The MaPLe codebase's name (scripts/independent-vlp/reproduce_ivlp.sh) for scripts/ivlp/reproduce.sh, same arguments.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../ivlp/reproduce.sh" "$@"
