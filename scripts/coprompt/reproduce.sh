#!/usr/bin/env bash
# CoPrompt. Released weights in the MaPLe authors' layout (WEIGHTS_DIR/<dataset>/base/seed<S>/):
# test on the base and new classes and open-world. Results go to folders of their own,
# base2new/test_base|test_new/<dataset>/shots_16/<TRAINER>/<CFG>_released/seed<S>/ and
# openworld/test_all/.../<CFG>_released/seed<S>/, never into the runs trained here.
# Usage: DATA=/path/to/datasets bash scripts/coprompt/reproduce.sh DATASET SEED WEIGHTS_DIR [KEY VALUE ...]
# Defaults and conventions: scripts/protocols.py.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../protocol.sh" coprompt reproduce "$@"
