#!/usr/bin/env python3
"""Transformer attribution in float32 against float64, on a bundled demo model's sample pictures.

    python3 tools/ta_conditioning.py [--weights weights/demo.safetensors] [--agcam target/release/agcam]

For each picture of weights/samples: the float64 reference map of the top class
(`method_references.transformer_attribution`), the same reference run by PyTorch in float32, and
`agcam explain --method transformer-attribution`. Prints both float32 maps' largest distance from
the float64 one, as a fraction of max|map|: how far f32 arithmetic itself moves this method's maps
on these pictures (docs/method.md §6.3, EVALUATION.md). The demo models' config is
weights/demo.json (both bundled models share it).
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from method_references import transformer_attribution  # noqa: E402
from vit_checkpoint import preprocess_as  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", type=Path, default=ROOT / "weights/demo.safetensors")
    ap.add_argument("--agcam", type=Path, default=ROOT / "target/release/agcam")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = json.loads((ROOT / "weights/demo.json").read_text())
    a = cfg["model_args"]
    model = VisionTransformer(img_size=tuple(a["img_size"]), patch_size=a["patch_size"],
                              embed_dim=a["embed_dim"], depth=a["depth"],
                              num_heads=a["num_heads"], mlp_ratio=a["mlp_ratio"],
                              qkv_bias=a["qkv_bias"], num_classes=cfg["num_classes"]).eval()
    model.load_state_dict(load_file(str(args.weights)))
    _, h, w = cfg["pretrained_cfg"]["input_size"]
    mean, std = cfg["pretrained_cfg"]["mean"], cfg["pretrained_cfg"]["std"]
    with tempfile.TemporaryDirectory() as out:
        for img in sorted((ROOT / "weights/samples").glob("*.png")):
            x = preprocess_as(img, (h, w), mean, std)
            r64 = transformer_attribution(model.double(), x.double(), 1).maps[0, 0].numpy()
            r32 = transformer_attribution(model.float(), x.float(), 1).maps[0, 0].double().numpy()
            subprocess.run([str(args.agcam), "explain", str(img), "--weights", str(args.weights),
                            "--method", "transformer-attribution", "--out", out],
                           check=True, capture_output=True)
            g = np.load(Path(out) / f"{img.stem}.npy")
            s = np.abs(r64).max()
            print(f"{img.stem}: agcam {np.abs(g - r64).max() / s:.2e}, PyTorch float32 "
                  f"{np.abs(r32 - r64).max() / s:.2e} of max|map| {s:.3g} from float64")


if __name__ == "__main__":
    main()
