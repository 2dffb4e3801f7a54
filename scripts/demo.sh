#!/usr/bin/env bash
# Smoke run: does the installation work, and what does a run look like? Generates tiny datasets
# in the real layouts and a random CLIP file in OpenAI's format under a temporary folder, runs
# every protocol for BMIP and MaPLe through the real scripts (1 epoch), and prints the tables.
# The numbers are meaningless (random weights); they only prove the pipeline.
# Every step prints its number, what it runs and how long it took; a failing step shows the end of
# its output and where the rest is.
#
# Usage: bash scripts/demo.sh [--help]
# Environment:
#   DEMO_DIR=<folder>        keep the files there (default: a new temporary folder)
#   DEMO_TRAINERS="bmip maple"  the trainers to run (any of: zsclip coop cocoop vpt ivlp maple bmip)
#   PYTHON=<interpreter>     the Python to use (default: python)
# Examples:
#   bash scripts/demo.sh
#   DEMO_TRAINERS=coop DEMO_DIR=/tmp/demo bash scripts/demo.sh
set -euo pipefail
case "${1:-}" in
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    "") ;;
    *) echo "usage: bash scripts/demo.sh [--help] (settings come from the environment; see --help)" >&2
       exit 2 ;;
esac
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"  # repo, PYTHONPATH
python="${PYTHON:-python}"
work="${DEMO_DIR:-$(mktemp -d -t prompt-demo-XXXXXX)}"
start=$SECONDS

trainers=(${DEMO_TRAINERS:-bmip maple})
targets=(eurosat imagenetv2 imagenet_sketch imagenet_a imagenet_r)
total=$((2 + ${#trainers[@]} * (4 + ${#targets[@]})))   # data, runs per trainer, tables
step=0

# step DESCRIPTION COMMAND...: run one step quietly, printing its number and time.
step() {
    local description="$1" began=$SECONDS
    shift
    step=$((step + 1))
    printf '[%2d/%d] %s ... ' "$step" "$total" "$description"
    "$@" > "$work/last-run.txt" 2>&1 || {
        echo "failed"
        tail -n 40 "$work/last-run.txt"
        echo "FAILED: $* (full output: $work/last-run.txt)" >&2
        exit 1
    }
    echo "$((SECONDS - began)) s (total $((SECONDS - start)) s)"
}

echo "Demo under $work: $total steps"
step "tiny datasets and a random CLIP file" "$python" -m scripts.demo_data "$work"
export DATA="$work/data" OUTPUT="$work/output"
overrides=(MODEL.BACKBONE.NAME "$work/clip-random.pt" INPUT.SIZE "(32, 32)" OPTIM.MAX_EPOCH 1
           DATALOADER.NUM_WORKERS 0)

# run SCRIPT ARGS...: one protocol script with the demo's overrides.
run() {
    local script="$1"
    shift
    step "scripts/$script.sh $*" bash "$repo/scripts/$script.sh" "$@" "${overrides[@]}"
}

for trainer in "${trainers[@]}"; do
    run "$trainer/base2new_train" eurosat 1
    run "$trainer/base2new_test" eurosat 1
    run "$trainer/openworld_test" eurosat 1
    run "$trainer/xd_train" 1
    for target in "${targets[@]}"; do
        run "$trainer/xd_test" "$target" 1
    done
done

step "parse_test_res.py (the tables below)" "$python" "$repo/parse_test_res.py" "$OUTPUT"
cat "$work/last-run.txt"
cat <<EOF

Demo finished in $((SECONDS - start)) s. The pipeline works: every protocol trained or evaluated,
wrote log.txt and results.json under $OUTPUT, and parsed into the tables above.
THE NUMBERS ARE MEANINGLESS: the CLIP weights are random and the datasets are a few coloured
squares. For real results, set DATA to your datasets and run e.g.
    bash scripts/bmip/base2new_train.sh eurosat 1
EOF
