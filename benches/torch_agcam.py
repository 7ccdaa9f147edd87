"""PyTorch AGCAM throughput, the denominator of the ratios in BENCHMARKS.md.

    python3 benches/torch_agcam.py --model vit_base_patch16_224 [--device cpu|cuda] \\
        [--batch 1,8] [--iters 5] [--warmup 1] [--threads N] [--weights model.safetensors] \\
        [--autocast f16,bf16] [--compile] [--json out.json]

Variants on the same model (timm random init, seed 0, or --weights); the first three float32:

* authors: the authors' public code path: one image at a time, hooks on the attention, detached
  attention input, `loss.backward()` through everything (parameter gradients included).
  Always batch 1, whatever --batch says.
* optimized: the fastest PyTorch with the same maps that we know: batched, parameters frozen,
  inference mode, the CLS-only backward of docs/method.md §2 (`agcam_shortcut`). Its maps are
  asserted equal to the authors' to 1e-4 × max|map| before anything is timed.
* forward: `model(x)` under inference mode (timm's fused attention), the floor for any method.
* optimized-f16 / optimized-bf16 (--autocast; default f16,bf16 on CUDA, none on CPU): the
  optimized variant under `torch.autocast` (tensor cores on NVIDIA), with forward-f16 /
  forward-bf16 beside it. Its maps are checked against the fp32 ones first: same explained
  class, within 1e-2 × max|map| (2e-2 for bf16, whose mantissa is 3 bits shorter).
* optimized-compiled (--compile): the optimized variant through `torch.compile`, in fp32 and
  under each autocast type, maps checked the same way. Compilation happens in the warm-up runs
  and is not timed; it costs about a minute per variant and batch size on a GPU.

Times are medians over --iters runs after --warmup runs, reported per image.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from agcam_reference import agcam_shortcut, authors_style_explain, check_supported  # noqa: E402

PARITY = 1e-4  # × max|map|, optimized vs authors
# × max|map|, reduced-precision variants vs fp32 optimized: f16 keeps 11 significant bits,
# bf16 8, and the maps sum ReLU-clamped products over layers and heads.
REDUCED_PARITY = {"f16": 1e-2, "bf16": 2e-2}
AUTOCAST = {"f16": torch.float16, "bf16": torch.bfloat16}


def median_ms(fn, device: torch.device, warmup: int, iters: int) -> float:
    """Median wall time of fn() in ms, synchronising the device around each call."""
    times = []
    for i in range(warmup + iters):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def check_same_maps(model, x: torch.Tensor) -> float:
    """Assert the optimized maps equal the authors' for each image of x; return the worst
    error relative to max|map|."""
    _, classes, maps = agcam_shortcut(model, x)
    worst = 0.0
    for b in range(x.shape[0]):
        cls_idx, cam = authors_style_explain(model, x[b : b + 1])
        assert cls_idx == int(classes[b, 0]), f"image {b}: predicted class differs"
        err = ((cam - maps[b, 0]).abs().max() / cam.abs().max()).item()
        assert err <= PARITY, f"image {b}: optimized map off by {err:.3g} of max|map|"
        worst = max(worst, err)
    return worst


def check_close_to_fp32(explain, model, x: torch.Tensor, bound: float) -> float:
    """Assert that explain(model, x) gives the fp32 optimized variant's classes and maps to
    bound × max|map| per image; return the worst error relative to max|map|."""
    _, want_classes, want = agcam_shortcut(model, x)
    _, classes, maps = explain(model, x)
    assert torch.equal(classes.cpu(), want_classes.cpu()), "explained classes differ from fp32"
    worst = 0.0
    for b in range(x.shape[0]):
        scale = want[b].abs().max()
        err = ((maps[b].float() - want[b]).abs().max() / scale).item()
        assert err <= bound, f"image {b}: map off by {err:.3g} of max|map| (bound {bound})"
        worst = max(worst, err)
    return worst


def under_autocast(fn, device: torch.device, dtype: torch.dtype | None):
    """fn with the same arguments, run under torch.autocast(dtype) (or as is for None)."""
    if dtype is None:
        return fn

    def wrapped(*args):
        with torch.autocast(device.type, dtype=dtype):
            return fn(*args)
    return wrapped


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True,
                    help="vit_tiny_patch16_224, vit_small_patch16_224, vit_base_patch16_224, ...")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--batch", default="1,8", help="comma-separated batch sizes")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="CPU threads (default: all cores; fewer can win on a loaded machine)")
    ap.add_argument("--weights", type=Path, help="timm-named safetensors (default: random init)")
    ap.add_argument("--autocast", default=None,
                    help="comma-separated reduced-precision variants among f16,bf16; 'none' for "
                         "none (default: f16,bf16 on CUDA, none on CPU)")
    ap.add_argument("--compile", action="store_true",
                    help="also time the optimized variants through torch.compile")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    batches = [int(b) for b in args.batch.split(",")]
    if args.autocast is None:
        args.autocast = "f16,bf16" if args.device == "cuda" else "none"
    reduced = [] if args.autocast == "none" else args.autocast.split(",")
    for name in reduced:
        if name not in AUTOCAST:
            ap.error(f"--autocast: unknown type {name!r} (f16, bf16 or none)")

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = timm.create_model(args.model, pretrained=False).eval()
    if args.weights:
        model.load_state_dict({k: v.float() for k, v in load_file(str(args.weights)).items()})
    check_supported(model)
    model.to(device)
    _, h, w = model.pretrained_cfg["input_size"]
    x = torch.randn(max(batches), 3, h, w, generator=torch.Generator().manual_seed(0)).to(device)

    parity = check_same_maps(model, x[:2])
    rows = [("authors", 1, median_ms(lambda: authors_style_explain(model, x[:1]), device,
                                     args.warmup, args.iters))]
    model.requires_grad_(False)
    # (name, explain function, autocast type) of every optimized variant to time.
    variants = [("optimized", agcam_shortcut, None)]
    variants += [(f"optimized-{r}", agcam_shortcut, AUTOCAST[r]) for r in reduced]
    if args.compile:
        # Dynamo cannot trace through inference_mode (which agcam_shortcut is decorated
        # with): compile the undecorated function and run it under no_grad.
        traced = torch.compile(agcam_shortcut.__wrapped__)

        def compiled(model, x):
            with torch.no_grad():
                return traced(model, x)
        variants.append(("optimized-compiled", compiled, None))
        variants += [(f"optimized-compiled-{r}", compiled, AUTOCAST[r]) for r in reduced]
    errors = {}
    for name, fn, dtype in variants[1:]:
        bound = REDUCED_PARITY[name.rsplit("-", 1)[1]] if dtype is not None else PARITY
        errors[name] = check_close_to_fp32(under_autocast(fn, device, dtype), model, x[:2], bound)
    for b in batches:
        xb = x[:b]
        for name, fn, dtype in variants:
            explain = under_autocast(fn, device, dtype)
            rows.append((name, b, median_ms(lambda: explain(model, xb), device, args.warmup,
                                            args.iters) / b))
        for dtype_name in [None] + reduced:
            forward = under_autocast(model, device, dtype_name and AUTOCAST[dtype_name])

            def timed_forward():
                with torch.inference_mode():
                    forward(xb)

            variant = "forward" if dtype_name is None else f"forward-{dtype_name}"
            rows.append((variant, b, median_ms(timed_forward, device, args.warmup,
                                               args.iters) / b))

    threads = torch.get_num_threads()
    load = os.getloadavg()[0]  # other work on a shared machine skews CPU timings: say so
    print(f"{args.model} on {args.device} ({device_name(device)}), torch {torch.__version__}, "
          f"{threads} threads, load average {load:.1f}; "
          f"optimized vs authors maps: max error {parity:.2g} of max|map|")
    for name, err in errors.items():
        print(f"{name} vs fp32 optimized maps: max error {err:.2g} of max|map|, same classes")
    print(f"{'variant':<26} {'batch':>5} {'ms/image':>10} {'images/s':>10}")
    for variant, b, ms in rows:
        print(f"{variant:<26} {b:>5} {ms:>10.2f} {1e3 / ms:>10.2f}")

    if args.json:
        results = [{"variant": v, "batch": b, "ms_per_image": ms, "images_per_s": 1e3 / ms}
                   for v, b, ms in rows]
        args.json.write_text(json.dumps({
            "model": args.model, "device": args.device, "device_name": device_name(device),
            "torch_version": torch.__version__, "threads": threads, "load_average": load,
            "map_errors_vs_fp32": errors, "results": results,
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
