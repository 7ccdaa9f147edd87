#!/usr/bin/env bash
# The tables of EVALUATION.md: a held-out synthetic set (seed 4; the demo model was trained on
# seeds 1 and 3 and monitored on seed 2), then localization and pixel perturbation for AGCAM and
# both baselines with the bundled demo model. Perturbation scores 22 inputs per picture, so on a
# CPU-only machine it runs on the first PERT_LIMIT pictures (default 300; 0 = all).
#
#   cargo build --release && bash scripts/evaluate-demo.sh [OUT_DIR]
set -euo pipefail
OUT=${1:-/tmp/agcam-eval}
BIN=${BIN:-target/release/agcam}
DATA="$OUT/heldout_s4"
COUNT=${COUNT:-1000}
PERT_LIMIT=${PERT_LIMIT:-300}
mkdir -p "$OUT"
limit=()
[ "$PERT_LIMIT" -gt 0 ] && limit=(--limit "$PERT_LIMIT")
[ -f "$DATA/labels.txt" ] || "$BIN" synth --out "$DATA" --count "$COUNT" --seed 4
for method in agcam attention-rollout raw-attention; do
    echo "== localization, $method ($(date +%T))"
    "$BIN" eval localization --data "$DATA" --method "$method" --json "$OUT/loc_$method.json"
    echo "== perturbation, $method ($(date +%T))"
    "$BIN" eval perturbation --data "$DATA" --method "$method" "${limit[@]}" --json "$OUT/pert_$method.json"
done
