#!/usr/bin/env python3
"""Where does an ABPC difference come from? Per-step MoRF/LeRF curves of `agcam eval
perturbation --json` reports, by target size (terciles of the target box's share of the
picture), class and presence of a distractor, with paired differences between two methods.

    agcam eval perturbation --data DIR --method agcam,attention-rollout --json pert.json
    python3 tools/abpc_breakdown.py pert.json [--against attention-rollout] [--data DIR]

Reads the Pascal VOC annotations of the dataset the report names. Standard library only.
"""
import argparse
import json
import math
import os
import xml.etree.ElementTree as ET


def load_reports(paths):
    reports = []
    for p in paths:
        with open(p) as f:
            v = json.load(f)
        reports.extend(v if isinstance(v, list) else [v])
    return reports


def annotation(report, image_id, data):
    """(target share of the picture, has distractor) from the sample's VOC XML; `data`
    replaces the dataset root the report names (a relative path is relative to the run's
    working directory)."""
    ann_dir = report["dataset"]["detected"]["annotation_dir"]
    if data:
        ann_dir = os.path.join(data, os.path.relpath(ann_dir, report["dataset"]["root"]))
    root = ET.parse(os.path.join(ann_dir, image_id + ".xml")).getroot()
    size = root.find("size")
    w, h = float(size.find("width").text), float(size.find("height").text)
    target, distractor = None, False
    for obj in root.iter("object"):
        d = obj.find("distractor")
        is_distractor = d is not None and d.text.strip() == "1"
        distractor |= is_distractor
        if not is_distractor and target is None:
            b = obj.find("bndbox")
            x0, y0, x1, y1 = (float(b.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
            target = (x1 - x0) * (y1 - y0) / (w * h)
    return target, distractor


def mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


def se(xs):
    if len(xs) < 2:
        return float("nan")
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs))


def curve_mean(rows, key):
    return [mean([r[key][i] for r in rows]) for i in range(len(rows[0][key]))] if rows else []


def fmt_curve(c):
    return " ".join(f"{v:.3f}" for v in c)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json", nargs="+", help="perturbation report(s) of agcam eval --json")
    ap.add_argument("--method", default="agcam")
    ap.add_argument("--against", default="attention-rollout")
    ap.add_argument("--data", help="the dataset folder, when not where the report says")
    a = ap.parse_args()
    reports = {r["method"]: r for r in load_reports(a.json)}
    base = reports[a.method]
    scored = {m: {r["id"]: r for r in rep["images"] if r["status"] == "scored"}
              for m, rep in reports.items()}
    ids = sorted(set.intersection(*(set(s) for s in scored.values())))
    info = {i: annotation(base, i, a.data) for i in ids}
    names = None
    labels = base["dataset"]["detected"].get("labels_file")
    if labels and a.data:
        labels = os.path.join(a.data, os.path.relpath(labels, base["dataset"]["root"]))
    if labels and os.path.exists(labels):
        names = [l.strip() for l in open(labels) if l.strip()]
    shares = sorted(info[i][0] for i in ids)
    t1, t2 = shares[len(shares) // 3], shares[2 * len(shares) // 3]
    groups = [("all", ids)]
    groups += [(f"target < {100*t1:.1f} %", [i for i in ids if info[i][0] < t1]),
               (f"target {100*t1:.1f}-{100*t2:.1f} %", [i for i in ids if t1 <= info[i][0] < t2]),
               (f"target >= {100*t2:.1f} %", [i for i in ids if info[i][0] >= t2])]
    groups += [("with distractor", [i for i in ids if info[i][1]]),
               ("without distractor", [i for i in ids if not info[i][1]])]
    for c in sorted({scored[a.method][i]["class"] for i in ids}):
        name = names[c] if names and c < len(names) else str(c)
        groups.append((f"class {name}", [i for i in ids if scored[a.method][i]["class"] == c]))
    fr = base["fractions"]
    print(f"{len(ids)} images scored by every method; fractions {' '.join(f'{p:.1f}' for p in fr)}")
    print(f"tie rule: {base['tie_rule']}")
    for name, members in groups:
        if not members:
            continue
        print(f"\n== {name} (n = {len(members)})")
        for m in reports:
            rows = [scored[m][i] for i in members]
            print(f"  {m:<18} ABPC {mean([r['abpc'] for r in rows]):.4f}  "
                  f"MoRF AUC {mean([r['morf_auc'] for r in rows]):.4f}  "
                  f"LeRF AUC {mean([r['lerf_auc'] for r in rows]):.4f}  "
                  f"correct {sum(r.get('predicted') == r['class'] for r in rows)}/{len(rows)}")
            print(f"  {'':<18} MoRF {fmt_curve(curve_mean(rows, 'morf'))}")
            print(f"  {'':<18} LeRF {fmt_curve(curve_mean(rows, 'lerf'))}")
        if a.against in reports and a.method != a.against:
            x, y = scored[a.method], scored[a.against]
            d = [x[i]["abpc"] - y[i]["abpc"] for i in members]
            dm = [x[i]["morf_auc"] - y[i]["morf_auc"] for i in members]
            dl = [x[i]["lerf_auc"] - y[i]["lerf_auc"] for i in members]
            print(f"  {a.method} - {a.against}: ABPC {mean(d):+.4f} ± {se(d):.4f}, "
                  f"MoRF AUC {mean(dm):+.4f} ± {se(dm):.4f}, LeRF AUC {mean(dl):+.4f} ± {se(dl):.4f}")
            steps = len(fr)
            for key in ("morf", "lerf"):
                diffs = [[x[i][key][k] - y[i][key][k] for i in members] for k in range(steps)]
                print(f"  per step {key}: " + " ".join(f"{mean(v):+.3f}" for v in diffs))


if __name__ == "__main__":
    main()
