#!/usr/bin/env bash
# The figures of BENCHMARKS.md for a machine without a GPU (Mesa lavapipe / llvmpipe), in one run.
# Run it on a quiet machine: every figure is CPU time shared with anything else running.
#
#   cargo build --release && bash scripts/cpu-bench.sh [OUT_DIR]
#
# Needs python3 with torch and timm (benches/compare.py saves the random timm models and runs
# the PyTorch side on the same weights).
set -euo pipefail
OUT=${1:-/tmp/agcam-cpu-bench}
BIN=${BIN:-target/release/agcam}
mkdir -p "$OUT"
step() { echo "== $* ($(date +%T), load $(cut -d' ' -f1 /proc/loadavg))"; }

step devices
"$BIN" devices | tee "$OUT/devices.txt"

step "agcam vs PyTorch CPU, same weights (Vulkan lavapipe)"
python3 benches/compare.py --agcam "$BIN" --batches 1,8 --iters 2 \
    --agcam-args "--backend vulkan" --json "$OUT/compare.json" 2>&1 | tee "$OUT/compare.txt"

step "OpenGL llvmpipe, ViT-Ti"
"$BIN" bench --backend gl --random vit_tiny_patch16_224 --batches 1,8 --iters 2 \
    --json "$OUT/gl_tiny.json" 2>&1 | tee "$OUT/gl_tiny.txt"

step "f16 weights against f32, ViT-B/16 batch 8"
for precision in f32 f16; do
    "$BIN" bench --backend vulkan --random vit_base_patch16_224 --batches 8 --iters 2 \
        --precision "$precision" --json "$OUT/base_$precision.json" 2>&1 | tee "$OUT/base_$precision.txt"
done

step "top-k cost, ViT-B/16 batch 1, by GPU kernel time (wall clock scatters more than the cost)"
for k in 1 5 10 100; do
    "$BIN" profile --backend vulkan --random vit_base_patch16_224 --batch 1 --top-k "$k" \
        > "$OUT/profile_b1_k$k.txt" 2> /dev/null
    awk -v k="$k" '/^launch/ { t = 1; next } t && NF >= 6 { if ($1 ~ /^agcam/) a += $3; else f += $3 }
        END { printf "top-k %d: forward %.1f ms, AGCAM backward %.1f ms (%.2f %% of the forward)\n", k, f, a, 100 * a / f }' \
        "$OUT/profile_b1_k$k.txt" | tee -a "$OUT/topk.txt"
done

step "ViT-L/16 384 checkpoint load (read, then upload), second run with a warm page cache"
L=/tmp/agcam-compare/vit_large_patch16_384
[ -f "$L/model.safetensors" ] || python3 -c "import sys; sys.path.insert(0, 'benches')
from pathlib import Path; from compare import save_model; save_model('vit_large_patch16_384', Path('$L'))"
for run in 1 2; do
    "$BIN" predict tests/fixtures/image/rgb_37x23.png --weights "$L" --backend vulkan 2>&1 \
        | grep "read in" | tee -a "$OUT/load_vit_large.txt"
done

step "per-kernel profile, ViT-B/16 batch 8"
"$BIN" profile --backend vulkan --random vit_base_patch16_224 --batch 8 \
    > "$OUT/profile_vit_base_b8.txt" 2>&1
cat "$OUT/profile_vit_base_b8.txt"
step done
