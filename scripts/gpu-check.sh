#!/usr/bin/env bash
# Every GPU check and benchmark in one run, for a session that is lent a GPU machine (the device
# tool). It builds nothing there: build and stage the binary here first, then run this there.
#
# Here (once per session):
#   cargo build --release && mkdir -p dist && strip -o dist/agcam target/release/agcam
#   echo /.gl/ >> .git/info/exclude; echo /dist/ >> .git/info/exclude   # if not ignored yet
#   mkdir -p .gl /tmp/amd64/partial; o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
#   apt-get $o update; (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
# There (device tool, carry [".gl", "dist"], timeout ~540 s):
#   bash scripts/gpu-check.sh
# Results land in $OUT (JSON and logs); copy the figures into BENCHMARKS.md with the date and
# the adapter name that `devices.txt` shows.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
BIN=${BIN:-dist/agcam}

for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
fi

step() { echo "== $* ($(date +%T))"; }

step devices
"$BIN" devices | tee "$OUT/devices.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/nvidia-smi.txt"

step "parity: random ViT-B/16 against PyTorch autograd (f64, CPU)"
timeout 150 python3 tools/check_parity.py --model vit_base_patch16_224 --agcam "$BIN" \
    --work "$OUT/parity" 2>&1 | tail -n 5 | tee "$OUT/parity.txt"

for precision in f32 f16; do
    step "agcam bench $precision"
    timeout 150 "$BIN" bench --backend vulkan --precision "$precision" --batches 1,8,32,64 \
        --top-k 1 --iters 5 --json "$OUT/bench_$precision.json" 2>&1 | tee "$OUT/bench_$precision.txt"
done

step "top-k cost, ViT-B/16 batch 64"
timeout 90 "$BIN" bench --backend vulkan --random vit_base_patch16_224 --batches 64 \
    --top-k 1,5,10,100 --iters 3 --json "$OUT/topk.json" 2>&1 | tee "$OUT/topk.txt"

step "per-kernel profile, ViT-B/16 batch 64"
timeout 60 "$BIN" profile --backend vulkan --random vit_base_patch16_224 --batch 64 \
    > "$OUT/profile_vit_base_b64.txt" 2>&1
head -n 3 "$OUT/profile_vit_base_b64.txt"

for model in vit_tiny_patch16_224 vit_small_patch16_224 vit_base_patch16_224; do
    step "PyTorch CUDA $model"
    timeout 120 python3 benches/torch_agcam.py --model "$model" --device cuda --batch 1,8,32,64 \
        --iters 5 --json "$OUT/torch_$model.json" 2>&1 | tee "$OUT/torch_$model.txt"
done
step done
