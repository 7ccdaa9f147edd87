#!/usr/bin/env bash
# The tables of EVALUATION.md, in one command: a held-out synthetic set (seed 4; the demo models
# were trained on seeds 1 and 3 and monitored on seed 2), then localization and pixel perturbation
# for every method on every bundled model, then tools/evaluation_tables.py turns the reports into
# OUT_DIR/tables.md (means, AGCAM's paired differences with standard errors, the paper's row)
# and into EVALUATION.md between its table markers (UPDATE_DOC=0 leaves it alone).
#
#   cargo build --release && bash scripts/evaluate-demo.sh [OUT_DIR]
#
# Environment: COUNT (pictures, default 1000), PERT_LIMIT (perturbation on the first N pictures;
# default 0 = all: it scores 22 inputs per picture, about 1.3 s per picture and method on 2 CPU
# cores), SHARD (perturbation pictures per report, default 100), METHODS (comma-separated,
# default every method agcam has), MODELS (name=weights pairs). Reports per model and method:
# OUT_DIR/<model>/loc_<method>.json, and perturbation in shards of SHARD pictures
# (pert_<method>@<first>-<end>.json, `agcam eval --skip first --limit end-first`, which
# tools/evaluation_tables.py merges). A report is written only when its run completes and is not
# made again, so an interrupted run resumes where it stopped, a larger PERT_LIMIT adds only the
# pictures after those done, and a new method adds only its own runs. For pictures to look at:
# agcam eval … --method a,b --report DIR.
set -euo pipefail
OUT=${1:-/tmp/agcam-eval}
BIN=${BIN:-target/release/agcam}
DATA="$OUT/heldout_s4"
COUNT=${COUNT:-1000}
PERT_LIMIT=${PERT_LIMIT:-0}
SHARD=${SHARD:-100}
METHODS=${METHODS:-agcam,attention-rollout,raw-attention,grad-cam,generic-attention}
MODELS=${MODELS:-"label-only=weights/demo.safetensors token-labelled=weights/token-labelled/demo.safetensors"}
mkdir -p "$OUT"
PERT_N=$PERT_LIMIT
[ "$PERT_N" -gt 0 ] || PERT_N=$COUNT
[ -f "$DATA/labels.txt" ] || "$BIN" synth --out "$DATA" --count "$COUNT" --seed 4
for pair in $MODELS; do
    name=${pair%%=*}
    weights=${pair#*=}
    mkdir -p "$OUT/$name"
    for method in ${METHODS//,/ }; do
        if [ ! -f "$OUT/$name/loc_$method.json" ]; then
            echo "== $name: localization, $method ($(date +%T))"
            "$BIN" eval localization --data "$DATA" --weights "$weights" --method "$method" \
                --json "$OUT/$name/loc_$method.json"
        fi
        # Pictures already covered: the chain of shards from picture 0.
        first=0
        while shard=$(ls "$OUT/$name/pert_$method@$first-"*.json 2>/dev/null | head -1) \
            && [ -n "$shard" ]; do
            end=${shard##*-}
            first=${end%.json}
        done
        while [ "$first" -lt "$PERT_N" ]; do
            end=$((first + SHARD < PERT_N ? first + SHARD : PERT_N))
            echo "== $name: perturbation, $method, pictures $first to $((end - 1)) ($(date +%T))"
            "$BIN" eval perturbation --data "$DATA" --weights "$weights" --method "$method" \
                --skip "$first" --limit "$((end - first))" \
                --json "$OUT/$name/pert_$method@$first-$end.json"
            first=$end
        done
    done
done
python3 tools/evaluation_tables.py "$OUT" > "$OUT/tables.md"
echo "== tables: $OUT/tables.md ($(date +%T))"
# EVALUATION.md's tables are this output; the reading around them is written by hand.
[ "${UPDATE_DOC:-1}" = 1 ] && python3 tools/evaluation_tables.py "$OUT" --update EVALUATION.md
