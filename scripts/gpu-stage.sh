#!/usr/bin/env bash
# Builds and stages here everything scripts/gpu-check.sh runs on a lent GPU machine, which
# builds nothing itself: dist/agcam, the test binaries it runs (dist/tests.tar.xz), the Vulkan
# and GL loader packages (.gl/), and optionally release builds of earlier commits for A/B runs.
#
#   bash scripts/gpu-stage.sh [REF ...]     # e.g. bash scripts/gpu-stage.sh af517c6
#
# Each REF is built in a temporary worktree to dist/agcam-REF; pass them to the check as
# AB_BINS="dist/agcam-REF ...". Then, through the device tool with carry [".gl", "dist"]:
#   [AB_BINS="..."] bash scripts/gpu-check.sh
# On 2 cores the first run takes about 15 minutes (release builds of the binary and the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p dist .gl

echo "== release binary"
cargo build --release
strip -o dist/agcam target/release/agcam

echo "== test binaries"
# The binaries cargo built for each test target, read from its JSON messages.
cargo test --release --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
wanted = {"agcam": "t-agcam", "engine_vs_reference": "t-engine_vs_reference",
          "model_families": "t-model_families", "fixtures_parity": "t-fixtures_parity"}
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    t = m["target"]
    name = t["name"]
    # The library unit tests are the lib target compiled as a test.
    if name in wanted and (t["kind"] == ["lib"] or t["kind"] == ["test"]) and m["profile"]["test"]:
        print(m["executable"], wanted[name])
' | while read -r exe name; do
    strip -o "dist/$name" "$exe"
    echo "  dist/$name"
done
for t in t-agcam t-engine_vs_reference t-model_families t-fixtures_parity; do
    [ -f "dist/$t" ] || { echo "missing dist/$t" >&2; exit 1; }
done
(cd dist && tar cJf tests.tar.xz t-agcam t-engine_vs_reference t-model_families t-fixtures_parity &&
    rm t-agcam t-engine_vs_reference t-model_families t-fixtures_parity)

echo "== Vulkan and GL loaders for the GPU machine"
lists=$(mktemp -d)
mkdir -p "$lists/partial"
o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$lists")
apt-get "${o[@]}" update -qq
(cd .gl && apt-get "${o[@]}" download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)

for ref in "$@"; do
    echo "== A/B build of $ref"
    wt=$(mktemp -d)/agcam-$ref
    git worktree add -q --detach "$wt" "$ref"
    # Seeded with this checkout's release build, so that only the agcam crate recompiles.
    mkdir -p "$wt/target" && cp -a target/release "$wt/target/"
    (cd "$wt" && CARGO_TARGET_DIR="$wt/target" cargo build --release -q)
    strip -o "dist/agcam-$ref" "$wt/target/release/agcam"
    git worktree remove --force "$wt"
    echo "  dist/agcam-$ref"
done
du -sh dist .gl
