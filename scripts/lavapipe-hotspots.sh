#!/usr/bin/env bash
# Where lavapipe spends its time in agcam's kernels: samples the JIT-compiled shader code of a
# running `agcam bench` with perf, dumps that code from the process with gdb, and sorts the
# samples by the instruction they land after (perf's skid): llvmpipe's lane-by-lane loads,
# arithmetic, stack spills. For people who tune the CPU kernel set (BENCHMARKS.md, "Why
# lavapipe's GEMMs stop near 35 GFLOP/s").
#
#   bash scripts/lavapipe-hotspots.sh [BIN] [MODEL] [BATCH]    # needs perf, gdb, objdump, python3
#   BENCH_ARGS="--method generic-attention" bash scripts/lavapipe-hotspots.sh   # another method
#
# Defaults: target/release/agcam, vit_base_patch16_224, batch 8 (the forward's GEMMs are ~95 %
# of its time). Samples 4 s once the run is past its first chunk (12 s in).
set -euo pipefail
BIN=${1:-target/release/agcam}
MODEL=${2:-vit_base_patch16_224}
BATCH=${3:-8}
for tool in perf gdb objdump python3; do
    command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install -y linux-perf gdb binutils)" >&2; exit 1; }
done
WORK=$(mktemp -d)
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}

"$BIN" bench --backend vulkan --random "$MODEL" --batches "$BATCH" --iters 3 \
    ${BENCH_ARGS:-} >/dev/null 2>&1 &
PID=$!
sleep 12
kill -0 "$PID" 2>/dev/null || { echo "agcam bench ended before sampling; run it alone to see why" >&2; exit 1; }
perf record -F 1999 -p "$PID" -o "$WORK/perf.data" -- sleep 4 >/dev/null 2>&1 ||
    { echo "perf record failed (perf_event_paranoid? try as root)" >&2; exit 1; }
perf script -i "$WORK/perf.data" -F ip 2>/dev/null | sort | uniq -c >"$WORK/ips.txt" || true
[ -s "$WORK/ips.txt" ] || { echo "perf recorded no samples" >&2; exit 1; }

# The densest 600 KB of sampled addresses: the hot kernel's JIT code.
read -r LO HI < <(python3 - "$WORK/ips.txt" <<'EOF'
import sys
ips = sorted((int(ip, 16), int(c)) for c, ip in (l.split() for l in open(sys.argv[1])))
best, j, inside = (0, 0, 0), 0, 0
for i, (ip, c) in enumerate(ips):
    inside += c
    while ip - ips[j][0] > 600_000:
        inside -= ips[j][1]
        j += 1
    if inside > best[0]:
        best = (inside, ips[j][0], ip)
print(best[1] - 64, best[2] + 64)
EOF
) || { echo "could not find the sampled code's addresses" >&2; exit 1; }
gdb -p "$PID" -batch -ex "dump binary memory $WORK/jit.bin $LO $HI" >"$WORK/gdb.log" 2>&1
[ -s "$WORK/jit.bin" ] || { echo "gdb could not read the JIT code:" >&2; tail -n 3 "$WORK/gdb.log" >&2; exit 1; }
kill "$PID" 2>/dev/null || true
objdump -D -b binary -m i386:x86-64 --adjust-vma="$LO" "$WORK/jit.bin" >"$WORK/jit.asm"

python3 - "$WORK/ips.txt" "$WORK/jit.asm" <<'EOF'
import collections, re, sys
order, text = [], {}
for line in open(sys.argv[2]):
    m = re.match(r"\s*([0-9a-f]+):\s+(?:[0-9a-f]{2} )+\s*(\S.*)", line)
    if m:
        order.append(int(m.group(1), 16))
        text[order[-1]] = m.group(2)
index = {a: i for i, a in enumerate(order)}
LOOP = {"vpcmpeqd", "vpcmpneqd", "movslq", "testb", "jmp", "jae", "je", "jne", "inc", "cmp",
        "shl", "sar", "or", "and", "mov"}

def kind(ins):
    op = ins.split()[0]
    if op in ("vmulps", "vaddps") or op.startswith("vfmadd"):
        return "arithmetic (vmulps, vaddps, vfmadd)"
    if op.startswith("vmov") and "(%rsp" in ins:
        return "stack spills and reloads"
    if op == "vpbroadcastd" and "{%k" in ins:
        return "lane-by-lane loads: masked insert"
    if op in LOOP:
        return "lane-by-lane loads: loop control"
    return "other: " + op

total, inside, kinds = 0, 0, collections.Counter()
for line in open(sys.argv[1]):
    count, ip = line.split()
    count, ip = int(count), int(ip, 16)
    total += count
    if ip in index and index[ip] > 0:
        inside += count
        kinds[kind(text[order[index[ip] - 1]])] += count
print(f"{total} samples, {inside} ({100 * inside / total:.0f} %) in the hottest 600 KB of JIT code:")
for name, count in kinds.most_common(12):
    print(f"  {name:40s} {count:6d}  {100 * count / inside:5.1f} %")
ops = collections.Counter(t.split()[0] for t in text.values())
print(f"instructions in that code: {ops['vmulps']} vmulps, {ops['vaddps']} vaddps, "
      f"{sum(v for k, v in ops.items() if k.startswith('vfmadd'))} vfmadd")
EOF
