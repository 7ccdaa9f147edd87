#!/usr/bin/env bash
# Issue 4's "no memory growth over 10,000 images": explains 10,000 synthetic pictures with the
# bundled demo model and samples the process's resident memory (which, on lavapipe / llvmpipe,
# also holds every GPU buffer) every 5 seconds.
#
#   cargo build --release && bash scripts/memory-check.sh [COUNT] [OUT_DIR]
set -euo pipefail
COUNT=${1:-10000}
OUT=${2:-/tmp/agcam-memory-check}
BIN=${BIN:-target/release/agcam}
mkdir -p "$OUT"
[ -d "$OUT/data/JPEGImages" ] && [ "$(ls "$OUT/data/JPEGImages" | wc -l)" -ge "$COUNT" ] ||
    "$BIN" synth --out "$OUT/data" --count "$COUNT" --seed 7 --layout voc
rm -rf "$OUT/maps"
"$BIN" explain "$OUT/data/JPEGImages" --out "$OUT/maps" --backend vulkan > "$OUT/explain.log" 2>&1 &
PID=$!
: > "$OUT/rss.tsv"
START=$(date +%s)
while kill -0 "$PID" 2> /dev/null; do
    RSS=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status" 2> /dev/null || true)
    DONE=$(find "$OUT/maps" -name "*.png" 2> /dev/null | wc -l || true)
    [ -n "$RSS" ] && printf '%s\t%s\t%s\n' "$(( $(date +%s) - START ))" "$DONE" "$RSS" >> "$OUT/rss.tsv"
    sleep 5
done
wait "$PID"
echo "seconds, overlays written, RSS KiB: first, middle and last samples, then the peak"
head -n 3 "$OUT/rss.tsv"
sed -n "$(( $(wc -l < "$OUT/rss.tsv") / 2 ))p" "$OUT/rss.tsv"
tail -n 3 "$OUT/rss.tsv"
sort -t$'\t' -k3 -n "$OUT/rss.tsv" | tail -n 1
