"""End-to-end parity of the agcam binary with the float64 PyTorch autograd reference.

    python3 tools/check_parity.py --model vit_base_patch16_224 --agcam target/release/agcam \\
        [--image path] [--work DIR]

Builds the random-init timm model (timm's default init, seed 0), writes it as model.safetensors +
config.json into the work directory, writes a smooth test PNG of the model's input size unless an
image is given, runs `agcam explain IMAGE --weights W --config C --out DIR`, and compares the raw
grid it writes (DIR/<stem>.npy) with the autograd reference on the same preprocessed input.
PASS when max |agcam - torch| <= 1e-3 × max|map| and the predicted classes agree; exit status 1
otherwise.
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
from timm.layers import LayerScale

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agcam_reference import agcam_autograd, check_supported  # noqa: E402
from vit_checkpoint import hub_config, preprocess, save_checkpoint, smooth_image  # noqa: E402

TOLERANCE = 1e-3  # × max|map|
TIE = 1e-5  # logits closer than this × max|logit| are a tie under f32 noise, not a mismatch


def model_args_of(model) -> dict:
    """The config.json `model_args` of a timm VisionTransformer."""
    blk = model.blocks[0]
    ls = blk.ls1
    return {
        "embed_dim": model.embed_dim,
        "depth": len(model.blocks),
        "num_heads": blk.attn.num_heads,
        "patch_size": model.patch_embed.patch_size[0],
        "img_size": list(model.patch_embed.img_size),
        "mlp_ratio": blk.mlp.fc1.out_features / model.embed_dim,
        "init_values": ls.init_values if isinstance(ls, LayerScale) else None,
    }


def run_agcam(binary: Path, image: Path, weights: Path, config: Path, out: Path) -> tuple:
    """Run the binary; return (raw grid [gh, gw], its JSON report)."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [str(binary), "explain", str(image), "--weights", str(weights),
           "--config", str(config), "--out", str(out)]
    print("running:", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"agcam failed with status {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    grid = np.load(out / f"{image.stem}.npy")
    report = json.loads((out / f"{image.stem}.json").read_text())
    return grid, report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="timm ViT name with class-token pooling")
    ap.add_argument("--agcam", required=True, type=Path, help="path to the agcam binary")
    ap.add_argument("--image", type=Path, help="input image (default: a generated test PNG)")
    ap.add_argument("--work", type=Path, help="work directory (default: target/parity/<model>)")
    args = ap.parse_args()
    work = args.work or Path("target") / "parity" / args.model
    work.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(0)
    model = timm.create_model(args.model, pretrained=False).eval()
    check_supported(model)
    cfg = model.pretrained_cfg
    config = hub_config(args.model, model.num_classes, model_args_of(model), cfg["mean"],
                        cfg["std"])
    save_checkpoint(work, model, config)
    image = args.image
    if image is None:
        h, w = config["model_args"]["img_size"]
        image = work / "test.png"
        smooth_image(w, h, seed=0).save(image)

    grid, report = run_agcam(args.agcam, image, work / "model.safetensors",
                             work / "config.json", work / "out")
    agcam_class = int(report["predicted_class"])

    x = preprocess(image, config).double()
    trace = agcam_autograd(model.double(), x, classes=torch.tensor([[agcam_class]]))
    logits = trace.logits[0]
    torch_class = int(logits.argmax())
    reference = trace.maps[0, 0].numpy()

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
    print(f"{'PASS' if ok else 'FAIL'} (tolerance {TOLERANCE:g} × max|map|, work dir {work})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
