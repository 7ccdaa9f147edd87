"""agcam against PyTorch on the same weights and the same machine, in one run.

    python3 benches/compare.py [--agcam target/release/agcam] [--models vit_tiny_patch16_224,...]
        [--batches 1,8] [--iters 3] [--device cpu|cuda] [--agcam-args "--backend vulkan"]
        [--work DIR] [--json out.json]

For each model: a timm random init (seed 0) is saved as model.safetensors + config.json; then
`agcam bench --weights ...` and `benches/torch_agcam.py --weights ...` measure it, and a
markdown table of ms per image and ratios is printed (agcam explain against the authors'-style
PyTorch at batch 1, against the optimized PyTorch at the same batch, and forward against
forward). Ratios above 1 mean agcam is faster.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tools"))
from check_parity import build_timm  # noqa: E402


def save_model(name: str, directory: Path) -> None:
    """timm's default random init (seed 0), written by timm's own hub export."""
    directory.mkdir(parents=True, exist_ok=True)
    build_timm(name, directory, "default")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agcam", type=Path, default=Path("target/release/agcam"))
    ap.add_argument("--models", default="vit_tiny_patch16_224,vit_small_patch16_224,"
                                        "vit_base_patch16_224")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--agcam-args", default="", help="extra arguments for `agcam bench`")
    ap.add_argument("--work", type=Path, default=Path("/tmp/agcam-compare"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    report = []
    for name in args.models.split(","):
        directory = args.work / name
        if not (directory / "model.safetensors").exists():
            save_model(name, directory)
        weights, config = directory / "model.safetensors", directory / "config.json"
        ours_json, torch_json = directory / "agcam.json", directory / "torch.json"
        subprocess.run([str(args.agcam), "bench", "--weights", str(weights), "--config",
                        str(config), "--batches", args.batches, "--iters", str(args.iters),
                        "--json", str(ours_json), *args.agcam_args.split()], check=True)
        subprocess.run([sys.executable, str(HERE / "torch_agcam.py"), "--model", name,
                        "--weights", str(weights), "--batch", args.batches, "--iters",
                        str(args.iters), "--device", args.device, "--json", str(torch_json)],
                       check=True)
        ours = json.loads(ours_json.read_text())
        theirs = json.loads(torch_json.read_text())
        report.append({"model": name, "agcam": ours, "torch": theirs})

    print(f"\nload average {os.getloadavg()[0]:.1f}; ratios > 1: agcam faster\n")
    print("| model | batch | agcam explain ms | agcam forward ms | torch authors ms (b1) | "
          "torch optimized ms | torch forward ms | vs authors | vs optimized | forward vs forward |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for entry in report:
        t = {(r["variant"], r["batch"]): r["ms_per_image"] for r in entry["torch"]["results"]}
        authors = t[("authors", 1)]
        for row in entry["agcam"]:
            if row["mode"] != "explain":
                continue
            b = row["batch"]
            fwd = next(r["ms_per_image"] for r in entry["agcam"]
                       if r["mode"] == "forward" and r["batch"] == b)
            opt, tfwd = t[("optimized", b)], t[("forward", b)]
            ms = row["ms_per_image"]
            print(f"| {entry['model']} | {b} | {ms:.1f} | {fwd:.1f} | {authors:.1f} | {opt:.1f} | "
                  f"{tfwd:.1f} | {authors / ms:.2f} | {opt / ms:.2f} | {tfwd / fwd:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
