#!/usr/bin/env bash
# What each class-specific method costs against a forward pass, by GPU kernel time (`agcam
# profile`, GPU timestamps): explain ÷ forward = all kernels of the method's profile ÷ the
# forward's kernels of the AGCAM profile (everything but `topk` and `agcam.*`). A method that
# changes the forward (generic attention and transformer attribution keep every block's
# activations and run the last block for all tokens) is charged for it. In brackets, the same
# ratio within each method's own run (1 + its backward kernels ÷ its forward kernels: `topk`,
# `<method>.*`, `full.*` and transformer attribution's LRP pass `lrp.*`), which no run-to-run
# scatter touches; for the full-backward methods that leaves out what their forward adds.
#
#   cargo build --release && bash scripts/method-cost.sh [--random vit_base_patch16_224] [BATCHES]
#
# Default: the bundled demo model at batches 1 and 8. Each profile runs REPEAT times (default 3)
# and the fastest run counts, since on a shared machine the noise only ever adds time.
set -euo pipefail
BIN=${BIN:-target/release/agcam}
MODEL=()
if [ "${1:-}" = "--random" ]; then
    MODEL=(--random "$2")
    shift 2
fi
BATCHES=${1:-1,8}
METHODS=${METHODS:-agcam,grad-cam,generic-attention,transformer-attribution}
REPEAT=${REPEAT:-3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for b in ${BATCHES//,/ }; do
    for r in $(seq "$REPEAT"); do
        for m in ${METHODS//,/ }; do
            "$BIN" profile "${MODEL[@]}" --batch "$b" --method "$m" --json > "$tmp/$m-$b-$r.json"
        done
    done
done
python3 - "$tmp" "$BATCHES" "$METHODS" "$REPEAT" <<'EOF'
import json, sys
tmp, batches, methods = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(",")
repeat = int(sys.argv[4])
def runs(m, b):
    for r in range(1, repeat + 1):
        with open(f"{tmp}/{m}-{b}-{r}.json") as f:
            yield json.load(f)
print("| batch | forward ms | " + " | ".join(f"{m} ms (÷ forward) [within]" for m in methods)
      + " |")
print("|---|---|" + "---|" * len(methods))
for b in batches:
    base = list(runs("agcam", b))
    forward = min(sum(k["ms"] for k in p["kernels"]
                      if not (k["name"] == "topk" or k["name"].startswith("agcam.")))
                  for p in base)
    cells = []
    for m in methods:
        total = min(sum(k["ms"] for k in p["kernels"]) for p in runs(m, b))
        within = []
        for p in runs(m, b):
            back = sum(k["ms"] for k in p["kernels"] if k["name"] == "topk"
                       or k["name"].startswith((f"{m}.", "full.", "lrp.")))
            own = sum(k["ms"] for k in p["kernels"]) - back
            within.append(1 + back / own)
        cells.append(f"{total:.1f} ({total / forward:.3f}) [{min(within):.3f}]")
    print(f"| {b} | {forward:.1f} | " + " | ".join(cells) + " |")
print(f"\nadapter: {base[0]['adapter']}; fastest of {repeat} runs each")
EOF
