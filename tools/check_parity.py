"""End-to-end parity of the agcam binary with the float64 PyTorch autograd reference.

    python3 tools/check_parity.py --model vit_base_patch16_224 --agcam target/release/agcam \
        [--method agcam|grad-cam|generic-attention|transformer-attribution] [--image path] [--work DIR] [--init default|test]
        [--global-pool avg]
    python3 tools/check_parity.py --hf google/vit-base-patch16-224 --agcam target/release/agcam
    python3 tools/check_parity.py --hf path/to/config.json --agcam target/release/agcam

`--model`: builds the random-init timm model (seed 0) and writes it with timm's own hub export
(`save_for_hf`: model.safetensors + config.json) into the work directory. `--hf`: builds a
random-init transformers ViTForImageClassification from a config (the name
`google/vit-base-patch16-224` stands for that checkpoint's dimensions, which are transformers'
ViTConfig defaults, with 1000 classes; anything else is a config.json path) and writes it with
`save_pretrained` plus a ViTImageProcessor (mean = std = 0.5, as Google's ViT) into the work
directory. `--init test` replaces the library's init (std 0.02: near-uniform attention, near-tied
logits) by the fixtures' randomisation, which gives peaky attention and distinct logits.
`--global-pool avg` (with `--model --method grad-cam`, the one method defined there besides the
baselines) builds the model with timm's average pooling of the patch tokens through `fc_norm`.

Then writes a smooth test PNG of the model's input size unless an image is given, runs
`agcam explain IMAGE --weights WORKDIR --method M --out DIR` with no other flag (the folder must
say everything), and compares the raw grid it writes (DIR/<stem>.npy) with the float64 reference
of the method on the same preprocessed input: for `agcam`, autograd (for `--hf`, through the
transformers model itself); for `grad-cam` (`--model` only: the reference takes timm models),
`method_references.grad_cam`, by autograd.
PASS when max |agcam - torch| <= 1e-3 × max|map| and the predicted classes agree; exit status 1
otherwise. `--method generic-attention` passes `--method generic-attention` to the binary and
compares with `generic_attention` of tools/method_references.py (method.md §6.1; for `--hf` the
same rule through the transformers model, as tools/make_method_fixtures.py computes it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agcam_reference import (agcam_autograd, agcam_autograd_hf, check_supported,  # noqa: E402
                             randomize_for_testing, randomize_hf_for_testing)
from method_references import grad_cam  # noqa: E402
from vit_checkpoint import preprocess_as, save_hf, smooth_image  # noqa: E402

TOLERANCE = 1e-3  # × max|map|
TIE = 1e-5  # logits closer than this × max|logit| are a tie under f32 noise, not a mismatch


def run_agcam(binary: Path, image: Path, weights: Path, method: str, out: Path) -> tuple:
    """Run the binary on the model folder with no other flag than the method; return (raw grid
    [gh, gw], its JSON report)."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [str(binary), "explain", str(image), "--weights", str(weights), "--method", method,
           "--out", str(out)]
    print("running:", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"agcam failed with status {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    grid = np.load(out / f"{image.stem}.npy")
    report = json.loads((out / f"{image.stem}.json").read_text())
    return grid, report


def build_timm(name: str, work: Path, init: str, global_pool: str = "token"):
    """Random-init timm model written by timm's hub export; returns (model, size, mean, std)."""
    from timm.models._hub import save_for_hf

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, global_pool=global_pool).eval()
    check_supported(model, allow_avg=global_pool == "avg")
    if init == "test":
        randomize_for_testing(model, torch.Generator().manual_seed(0))
    save_for_hf(model, str(work), safe_serialization=True)
    cfg = json.loads((work / "config.json").read_text())["pretrained_cfg"]
    _, h, w = cfg["input_size"]
    return model, (h, w), cfg["mean"], cfg["std"]


def build_hf(spec: str, work: Path, init: str):
    """Random-init ViTForImageClassification written by save_pretrained (+ image processor)."""
    from transformers import ViTConfig, ViTForImageClassification

    if spec == "google/vit-base-patch16-224":
        # That checkpoint's dimensions are ViTConfig's defaults: D 768, 12 layers, 12 heads,
        # MLP 3072, 224 px, 16-px patches, LayerNorm eps 1e-12, erf GELU; 1000 classes.
        config = ViTConfig(num_labels=1000)
    else:
        config = ViTConfig.from_json_file(spec)
    torch.manual_seed(0)
    model = ViTForImageClassification(config).eval()
    if init == "test":
        randomize_hf_for_testing(model, torch.Generator().manual_seed(0))
    mean = std = (0.5, 0.5, 0.5)
    save_hf(work, model, mean, std)
    size = config.image_size
    h, w = size if isinstance(size, (list, tuple)) else (size, size)
    return model, (h, w), mean, std


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="timm ViT name with class-token pooling")
    which.add_argument("--hf", help="transformers ViT config: google/vit-base-patch16-224 or a "
                       "config.json path")
    ap.add_argument("--agcam", required=True, type=Path, help="path to the agcam binary")
    ap.add_argument("--method", default="agcam",
                    choices=("agcam", "grad-cam", "generic-attention", "transformer-attribution"),
                    help="the explanation method to check (default: agcam)")
    ap.add_argument("--image", type=Path, help="input image (default: a generated test PNG)")
    ap.add_argument("--work", type=Path, help="work directory (default: target/parity/<name>)")
    ap.add_argument("--init", choices=("default", "test"), default="default",
                    help="the library's random init, or the fixtures' randomisation")
    ap.add_argument("--global-pool", choices=("token", "avg"), default="token",
                    help="the timm model's pooling (avg: --method grad-cam only)")
    args = ap.parse_args()
    if args.hf and args.method == "grad-cam":
        ap.error(f"--method {args.method} needs --model: its reference takes timm models")
    if args.global_pool == "avg" and not (args.model and args.method == "grad-cam"):
        ap.error("--global-pool avg needs --model and --method grad-cam: the other methods are "
                 "undefined for average-pooled models")
    label = args.model or "hf-" + Path(args.hf).stem.replace("/", "_")
    if args.global_pool != "token":
        label += f"-{args.global_pool}"
    work = args.work or Path("target") / "parity" / label
    work.mkdir(parents=True, exist_ok=True)

    if args.model:
        model, size, mean, std = build_timm(args.model, work, args.init, args.global_pool)
        reference = {"agcam": agcam_autograd, "grad-cam": grad_cam}.get(args.method)
    else:
        model, size, mean, std = build_hf(args.hf, work, args.init)
        reference = agcam_autograd_hf
    image = args.image
    if image is None:
        image = work / "test.png"
        smooth_image(size[1], size[0], seed=0).save(image)

    out = work / ("out" if args.method == "agcam" else f"out-{args.method}")
    grid, report = run_agcam(args.agcam, image, work, args.method, out)
    agcam_class = int(report["predicted_class"])
    print(f"agcam: predicted {agcam_class} ({report.get('predicted_label')}), "
          f"GPU {report['timings_ms']['gpu_per_image']:.0f} ms per image on {report['adapter']}")

    x = preprocess_as(image, size, mean, std).double()
    if args.method == "generic-attention":
        from make_method_fixtures import generic_attention_any  # noqa: E402

        kind = "timm" if args.model else "hf"
        maps, logits, _ = generic_attention_any(model.double(), kind, x,
                                                torch.tensor([[agcam_class]]))
        logits, reference = logits[0], maps[0, 0].detach().numpy()
    elif args.method == "transformer-attribution":
        from make_method_fixtures import transformer_attribution_any

        kind = "timm" if args.model else "hf"
        maps, logits = transformer_attribution_any(model.double(), kind, x,
                                                   torch.tensor([[agcam_class]]))
        logits, reference = logits[0], maps[0, 0].detach().numpy()
    else:
        trace = reference(model.double(), x, classes=torch.tensor([[agcam_class]]))
        logits, reference = trace.logits[0], trace.maps[0, 0].numpy()
    torch_class = int(logits.argmax())

    if grid.shape != reference.shape:
        print(f"FAIL: grid shape {grid.shape}, expected {reference.shape}")
        return 1
    scale = float(np.abs(reference).max())
    err = float(np.abs(grid.astype(np.float64) - reference).max())
    tie = abs(float(logits[torch_class] - logits[agcam_class])) <= TIE * float(logits.abs().max())
    top2 = logits.topk(2).values
    gap = float((top2[0] - top2[1]) / logits.abs().max())
    print(f"predicted class: agcam {agcam_class}, torch {torch_class}"
          + (" (a tie within f32 noise)" if agcam_class != torch_class and tie else "")
          + f"; torch top-2 logit gap {gap:.3g} of max|logit|")
    print(f"max|map| {scale:.6g}  max abs error {err:.3g}  error / max|map| {err / scale:.3g}")
    ok = err <= TOLERANCE * scale and (agcam_class == torch_class or tie)
    print(f"{'PASS' if ok else 'FAIL'} ({args.method}, tolerance {TOLERANCE:g} × max|map|, work dir {work})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
