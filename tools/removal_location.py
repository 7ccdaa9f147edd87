#!/usr/bin/env python3
"""Where do the first removed pixels of the perturbation protocol fall? For every scored image of
an `agcam eval perturbation --json` report (one or several methods), the map of the ground-truth
class is recomputed with `agcam explain --class C --method M` (raw .npy grid), upsampled to
224x224 and min-max normalised as the protocol does, and the share of the first 10 % MoRF and
LeRF pixels inside the target box(es) and the distractor box(es) is averaged by target size
(terciles), distractor and class. Also counts distinct heatmap values (ties).

    agcam eval perturbation --data DIR --method agcam,attention-rollout --json pert.json
    python3 tools/removal_location.py pert.json DIR [--bin target/release/agcam] [--weights W]

Needs numpy. Pascal VOC layout only.
"""
import argparse, json, os, subprocess, sys, tempfile, xml.etree.ElementTree as ET
import numpy as np

def upsample(grid, out=224):
    gh, gw = grid.shape
    def taps(n_in, n_out):
        s = n_in / n_out
        r = np.maximum((np.arange(n_out) + 0.5) * s - 0.5, 0)
        i0 = np.minimum(np.floor(r).astype(int), n_in - 1)
        w1 = r - i0
        i1 = np.where(i0 < n_in - 1, i0 + 1, i0)
        return i0, i1, w1
    r0, r1, rw = taps(gh, out); c0, c1, cw = taps(gw, out)
    rows = grid[r0] * (1 - rw)[:, None] + grid[r1] * rw[:, None]
    m = rows[:, c0] * (1 - cw)[None, :] + rows[:, c1] * cw[None, :]
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)

def masks(xml):
    root = ET.parse(xml).getroot()
    w = float(root.find("size/width").text); h = float(root.find("size/height").text)
    t = np.zeros((224, 224), bool); d = np.zeros((224, 224), bool)
    for o in root.iter("object"):
        b = o.find("bndbox")
        x0, y0, x1, y1 = (float(b.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
        X0, X1 = int(x0 / w * 224), int(x1 / w * 224); Y0, Y1 = int(y0 / h * 224), int(y1 / h * 224)
        dist = o.find("distractor") is not None and o.find("distractor").text.strip() == "1"
        (d if dist else t)[Y0:Y1 + 1, X0:X1 + 1] = True
    return t, d

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("json")
ap.add_argument("data", help="the dataset folder of the run")
ap.add_argument("--bin", default="target/release/agcam")
ap.add_argument("--weights", default="weights/demo.safetensors", help="the model of the run")
a = ap.parse_args()
data = a.data
loaded = json.load(open(a.json))
reports = {r["method"]: r for r in (loaded if isinstance(loaded, list) else [loaded])}
mapdir = tempfile.mkdtemp()
scored = [r for r in next(iter(reports.values()))["images"] if r["status"] == "scored"]
for m in reports:
    for c in sorted({r["class"] for r in scored}):
        files = [os.path.join(data, "JPEGImages", os.path.basename(r["image"])) for r in scored if r["class"] == c]
        subprocess.run([a.bin, "explain", *files, "--weights", a.weights, "--class", str(c), "--method", m,
                        "--out", os.path.join(mapdir, m)], check=True, capture_output=True)
names = [l.strip() for l in open(os.path.join(data, "labels.txt")) if l.strip()]
k = int(224 * 224 * 0.1)
rows = []
for r in scored:
    t, d = masks(os.path.join(data, "Annotations", r["id"] + ".xml"))
    row = {"id": r["id"], "class": names[r["class"]], "target_share": t.mean(), "has_d": d.any()}
    for m in reports:
        heat = upsample(np.load(os.path.join(mapdir, m, r["id"] + ".npy")).astype(np.float64)).ravel()
        order = np.argsort(-heat, kind="stable")
        lerf = np.argsort(heat, kind="stable")[:k]; morf = order[:k]
        row[m] = dict(morf_t=t.ravel()[morf].mean(), lerf_t=t.ravel()[lerf].mean(),
                      morf_d=d.ravel()[morf].mean(), lerf_d=d.ravel()[lerf].mean(),
                      distinct=len(np.unique(heat)))
    rows.append(row)
def show(name, sel):
    if not sel: return
    out = f"{name:<22} n={len(sel):3d}  target share {np.mean([x['target_share'] for x in sel]):.3f}"
    for m in reports:
        out += f" | {m[:7]} MoRF10 in target {np.mean([x[m]['morf_t'] for x in sel]):.3f} LeRF10 in target {np.mean([x[m]['lerf_t'] for x in sel]):.3f}"
        dd = [x for x in sel if x['has_d']]
        if dd:
            out += f" MoRF10 in distr {np.mean([x[m]['morf_d'] for x in dd]):.3f}"
    print(out)
show("all", rows)
shares = sorted(x["target_share"] for x in rows); a, b = shares[len(rows)//3], shares[2*len(rows)//3]
show("small", [x for x in rows if x["target_share"] < a]); show("medium", [x for x in rows if a <= x["target_share"] < b]); show("large", [x for x in rows if x["target_share"] >= b])
show("with distractor", [x for x in rows if x["has_d"]])
for c in names: show("class " + c, [x for x in rows if x["class"] == c])
print("distinct heatmap values per 50176 pixels (min/median):", {m: (min(x[m]['distinct'] for x in rows), int(np.median([x[m]['distinct'] for x in rows]))) for m in reports})
