#!/usr/bin/env python3
"""A figure of overlays per method: one row per picture (the picture with its target box, then
one overlay per method), written as one PNG.

    python3 tools/make_figure.py --data DIR --ids synth_000001,synth_000007 [--out docs/overlays.png]
        [--agcam target/release/agcam] [--weights weights/demo.safetensors] [--cell 192]
        [--methods agcam,attention-rollout,raw-attention]

DIR is a VOC-layout set from `agcam synth` (JPEGImages/, Annotations/). The overlays are what
`agcam explain --method M` writes for the predicted class; the target box is drawn in white and a
distractor's in grey on the first column only.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

METHODS = ("agcam", "attention-rollout", "raw-attention")


def boxes(xml: Path) -> list[tuple[bool, tuple[int, int, int, int]]]:
    """(distractor, 1-based inclusive box) of every object of one synth annotation."""
    out = []
    for obj in re.findall(r"<object>(.*?)</object>", xml.read_text(), re.S):
        num = {k: int(re.search(f"<{k}>(\\d+)</{k}>", obj).group(1))
               for k in ("xmin", "ymin", "xmax", "ymax")}
        flag = re.search(r"<distractor>(\d)</distractor>", obj)
        out.append((bool(flag and flag.group(1) == "1"),
                    (num["xmin"], num["ymin"], num["xmax"], num["ymax"])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--ids", required=True, help="picture ids (file stems), comma-separated")
    ap.add_argument("--out", type=Path, default=Path("docs/overlays.png"))
    ap.add_argument("--agcam", type=Path, default=Path("target/release/agcam"))
    ap.add_argument("--weights", type=Path, default=Path("weights/demo.safetensors"))
    ap.add_argument("--cell", type=int, default=192)
    ap.add_argument("--methods", default=",".join(METHODS),
                    help="comma-separated `agcam explain --method` values, one column each")
    args = ap.parse_args()
    methods = args.methods.split(",")

    ids = args.ids.split(",")
    images = [args.data / "JPEGImages" / f"{i}.png" for i in ids]
    cell = args.cell
    sheet = Image.new("RGB", (cell * (1 + len(methods)), 18 + cell * len(ids)), "white")
    draw = ImageDraw.Draw(sheet)
    for col, title in enumerate(("picture, target box", *methods)):
        draw.text((col * cell + 4, 3), title, fill="black")
    with tempfile.TemporaryDirectory() as tmp:
        for col, method in enumerate(methods, start=1):
            out = Path(tmp) / method
            subprocess.run([str(args.agcam), "explain", *map(str, images), "--weights",
                            str(args.weights), "--method", method, "--out", str(out)],
                           check=True, stdout=subprocess.DEVNULL)
            for row, i in enumerate(ids):
                with Image.open(out / f"{i}.png") as overlay:
                    sheet.paste(overlay.convert("RGB").resize((cell, cell)), (col * cell, 18 + row * cell))
    for row, (i, path) in enumerate(zip(ids, images)):
        with Image.open(path) as img:
            w, h = img.size
            pic = img.convert("RGB").resize((cell, cell))
        pen = ImageDraw.Draw(pic)
        for distractor, (x0, y0, x1, y1) in boxes(args.data / "Annotations" / f"{i}.xml"):
            sx, sy = cell / w, cell / h
            pen.rectangle(((x0 - 1) * sx, (y0 - 1) * sy, x1 * sx, y1 * sy),
                          outline="grey" if distractor else "white", width=2)
        sheet.paste(pic, (0, 18 + row * cell))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
