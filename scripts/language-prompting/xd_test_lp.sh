#!/usr/bin/env bash
# The MaPLe codebase's name (scripts/language-prompting/xd_test_lp.sh): deep language prompting,
# i.e. IVLP with the config vit_b16_c2_ep5_batch4_4ctx_language_only (CFG overrides it); same
# arguments and folders as scripts/ivlp/xd_test.sh.
CFG="${CFG:-vit_b16_c2_ep5_batch4_4ctx_language_only}" exec bash "$(dirname "${BASH_SOURCE[0]}")/../ivlp/xd_test.sh" "$@"
