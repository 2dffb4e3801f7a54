#!/usr/bin/env bash
# The GPU check of issue 23, for the first machine with a GPU: at most 8 minutes on one GPU.
#
#   bash benchmarks/gpu_check.sh              # on a machine with CUDA
#   bash benchmarks/gpu_check.sh --dry-run    # anywhere: the CPU-side pieces on the tiny CLIP
#
# Steps, each under its own time limit (seconds in brackets), its output in $OUT/<step>.log:
#   1. tests     the test suite's CUDA cases (pytest -k cuda: they skip without a GPU)  [40]
#   2. steps     one training step per trainer in fp16 / amp / bf16 against fp32, ViT-B/16
#                shapes: finite, loss and gradient close to fp32 (benchmarks/gpu_steps.py) [100]
#   3. speed     bench_speed.py --device cuda --quick --precisions fp32 fp16 --no-full-length [170]
#   4. memory    compare_authors.py --classes 1000 --device cuda --precisions fp16: one
#                1000-class step at batch 4, ours against the authors' MaPLe and BMIP (their
#                PREC fp16); needs MAPLE_DIR, BMIP_DIR (DASSL_DIR, AUTHORS_PYTHONPATH) as
#                benchmarks/README.md says, else skipped                              [150]
# Then one table: each step's status, time and key lines. Exit status 1 when a step failed.
# --dry-run runs step 1 and step 2 on the CPU (tiny CLIP, bf16) and prints the other commands.
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  "") ;;
  -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
  *) echo "gpu_check.sh: unknown argument $1 (use --dry-run or nothing)" >&2; exit 2 ;;
esac
if [ "$DRY" = 0 ] && ! "$PYTHON" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "gpu_check.sh: no CUDA device visible (run with --dry-run for the CPU-side check)" >&2
  exit 2
fi
# Made only once the check can run: --help and mistakes leave no folder behind.
OUT=${GPU_CHECK_OUT:-$(mktemp -d -t gpu_check-XXXXXX)}
mkdir -p "$OUT"
STARTED=$(date +%s)
declare -a NAMES STATUS SECONDS_TAKEN SUMMARY

# run NAME LIMIT GREP_PATTERN COMMAND...: the command under `timeout LIMIT`, output to
# $OUT/NAME.log; the lines matching GREP_PATTERN go into the table.
run() {
  local name=$1 limit=$2 pattern=$3
  shift 3
  local began status
  began=$(date +%s)
  echo "== $name: $*" | tee "$OUT/$name.log"
  timeout "$limit" "$@" >>"$OUT/$name.log" 2>&1
  status=$?
  NAMES+=("$name")
  SECONDS_TAKEN+=("$(( $(date +%s) - began ))")
  case $status in
    0) STATUS+=("ok") ;;
    124) STATUS+=("TIMED OUT (${limit} s)") ;;
    *) STATUS+=("FAILED (exit $status)") ;;
  esac
  SUMMARY+=("$(grep -E "$pattern" "$OUT/$name.log" | tail -n 40)")
}

skip() {
  NAMES+=("$1"); STATUS+=("skipped"); SECONDS_TAKEN+=(0); SUMMARY+=("$2")
}

if [ "$DRY" = 1 ]; then
  run tests 300 "passed|skipped|failed|error" \
    "$PYTHON" -m pytest -q -rs tests/test_benchmarks_peak_memory.py -k cuda
  run steps 300 " ok| NOT ok|FAILED|rows ok" \
    "$PYTHON" benchmarks/gpu_steps.py --device cpu --size tiny --precisions bf16 \
    --trainers MaPLe BMIP CoOp
  skip speed "would run: $PYTHON benchmarks/bench_speed.py --device cuda --quick --precisions fp32 fp16 --no-full-length"
  skip memory "would run: $PYTHON benchmarks/compare_authors.py --classes 1000 --device cuda --precisions fp16 --fit-batch 0"
else
  run tests 40 "passed|skipped|failed|error" "$PYTHON" -m pytest -q -rs tests -k cuda
  run steps 100 " ok| NOT ok|FAILED|rows ok" "$PYTHON" benchmarks/gpu_steps.py --device cuda
  run speed 170 "images/s|target|met|step|MB|FAILED" \
    "$PYTHON" benchmarks/bench_speed.py --device cuda --quick --precisions fp32 fp16 --no-full-length
  if [ -n "${MAPLE_DIR:-}" ] && [ -n "${BMIP_DIR:-}" ]; then
    run memory 150 "step \+|classes|goal|largest|FAILED" \
      "$PYTHON" benchmarks/compare_authors.py --classes 1000 --device cuda --precisions fp16 \
      --fit-batch 0
  else
    skip memory "no MAPLE_DIR / BMIP_DIR: fetch the authors' code (benchmarks/README.md)"
  fi
fi

echo
echo "GPU check, $(date -u '+%Y-%m-%d %H:%M') UTC, $(( $(date +%s) - STARTED )) s in all; logs in $OUT"
"$PYTHON" -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU (dry run)')"
printf '%-8s | %-24s | %6s\n' step status seconds
printf '%-8s-+-%-24s-+-%6s\n' -------- ------------------------ ------
FAILED=0
for i in "${!NAMES[@]}"; do
  printf '%-8s | %-24s | %6s\n' "${NAMES[$i]}" "${STATUS[$i]}" "${SECONDS_TAKEN[$i]}"
  case ${STATUS[$i]} in ok|skipped) ;; *) FAILED=1 ;; esac
done
for i in "${!NAMES[@]}"; do
  echo
  echo "-- ${NAMES[$i]} --"
  echo "${SUMMARY[$i]}"
done
exit $FAILED
