#!/usr/bin/env python3
"""The tables of EVALUATION.md from the reports `scripts/evaluate-demo.sh` writes.

    python3 tools/evaluation_tables.py OUT_DIR > OUT_DIR/tables.md
    python3 tools/evaluation_tables.py OUT_DIR --update EVALUATION.md   # between its markers

OUT_DIR holds one folder per model with the `--json` reports of `agcam eval`:
`OUT_DIR/<model>/loc*.json` (localization) and `pert*.json` (perturbation), one method or a list
of methods per file. For every model: accuracy, the
localization and perturbation means per method, and AGCAM's paired difference against every
other method (mean over the images scored by both, its standard error, and on how many images
AGCAM is higher). Then AGCAM's advantage side by side across the models, and the paper's
published row. Standard library only.
"""
import argparse
import json
import math
import os
import sys

LOC_METRICS = ["accuracy", "iou", "dice", "precision", "recall"]
LOC_NAMES = {"accuracy": "pixel accuracy", "iou": "IoU", "dice": "Dice",
             "precision": "precision", "recall": "recall"}
# docs/method.md §4: the paper's localization table (ViT-B, most likely Pascal VOC 2012).
PUBLISHED = {
    "attention-rollout": {"accuracy": 0.5592, "iou": 0.1645, "dice": 0.2431,
                          "precision": 0.5802, "recall": 0.2115},
    "transformer-attribution": {"accuracy": 0.5750, "iou": 0.1574, "dice": 0.2348,
                                "precision": 0.7651, "recall": 0.1716},
    "agcam": {"accuracy": 0.7521, "iou": 0.5335, "dice": 0.6646,
              "precision": 0.8167, "recall": 0.6647},
}


BEGIN = "<!-- tables: tools/evaluation_tables.py -->"
END = "<!-- end of tables -->"
# Column order: AGCAM, the baselines, the methods AGCAM is compared with; others after them.
ORDER = ["agcam", "attention-rollout", "raw-attention", "grad-cam", "generic-attention",
         "transformer-attribution"]


def load(folder, prefix):
    """Reports by method from every `prefix*.json` in `folder`, AGCAM first (ORDER).

    Several reports of one method (shards of one run: `agcam eval --skip N --limit M`, written
    as `pert_<method>@<first>-<end>.json` by scripts/evaluate-demo.sh) are merged into one.
    """
    parts = {}
    for name in sorted(os.listdir(folder)):
        if name.startswith(prefix) and name.endswith(".json"):
            with open(os.path.join(folder, name)) as f:
                v = json.load(f)
            for r in v if isinstance(v, list) else [v]:
                r["_file"] = name
                parts.setdefault(r["method"], []).append(r)
    out = {m: merge(rs) for m, rs in parts.items()}
    rank = {m: i for i, m in enumerate(ORDER)}
    return dict(sorted(out.items(), key=lambda kv: (rank.get(kv[0], len(ORDER)), kv[0])))


# What must agree between shards of one run, by protocol.
SAME = {"localization": ["threshold", "mask_size", "map_grid", "model", "dataset"],
        "perturbation": ["heatmap_size", "map_grid", "model", "dataset", "fractions",
                         "removed_pixels", "tie_rule"]}


def _means(report):
    """The report's means recomputed from its scored images, as `agcam eval` computes them."""
    keys = LOC_METRICS if report["protocol"] == "localization" else ["morf_auc", "lerf_auc",
                                                                      "abpc"]
    out = {}
    for k in keys:
        vals = list(scored(report, k).values())
        out[k] = sum(vals) / len(vals) if vals else None
    return out


def _reported(report):
    if report["protocol"] == "localization":
        return report.get("mean") or {k: None for k in LOC_METRICS}
    return {k: report[k] for k in ("morf_auc", "lerf_auc", "abpc")}


def merge(reports):
    """One report from shards of one run: their images joined (an image in two shards is an
    error), counts added, means recomputed from the images. Each shard's recomputed means must
    equal the ones it reports, which checks that the recomputation is `agcam eval`'s own."""
    for r in reports:
        for k, v in _means(r).items():
            want = _reported(r)[k]
            if (v is None) != (want is None) or (v is not None and abs(v - want) > 1e-9):
                sys.exit(f"{r['_file']}: its {k} {want} is not the mean of its images ({v})")
    if len(reports) == 1:
        return reports[0]
    first = reports[0]
    for r in reports[1:]:
        for k in SAME[first["protocol"]]:
            if r.get(k) != first.get(k):
                sys.exit(f"{r['_file']} and {first['_file']} differ in `{k}`: not shards of one run")
    seen = {}
    for r in reports:
        for im in r["images"]:
            if im["id"] in seen:
                sys.exit(f"image {im['id']} is in both {seen[im['id']]} and {r['_file']}")
            seen[im["id"]] = r["_file"]
    merged = dict(first)
    merged["_file"] = " + ".join(r["_file"] for r in reports)
    merged["images"] = [im for r in reports for im in r["images"]]
    counts = {k: sum(r["counts"][k] for r in reports) for k in first["counts"]}
    # Files the data set's scan skipped are counted once per shard; count them once.
    skipped = sum(len(v) for v in first["dataset"]["skipped"].values())
    for k in ("total", "missing_data"):
        counts[k] -= (len(reports) - 1) * skipped
    merged["counts"] = counts
    means = _means(merged)
    if first["protocol"] == "localization":
        merged["mean"] = means if counts["scored"] else None
    else:
        merged.update(means)
        merged["correctly_classified"] = sum(r["correctly_classified"] for r in reports)
    return merged


def scored(report, key):
    """Per-image values of `key` (a metric name) for scored images, by image id."""
    out = {}
    for im in report["images"]:
        if im.get("status") != "scored":
            continue
        out[im["id"]] = im["metrics"][key] if "metrics" in im else im[key]
    return out


def paired(a, b):
    """Mean and standard error of a − b over the ids both score, the count, and how many a > b."""
    ids = sorted(set(a) & set(b))
    diffs = [a[i] - b[i] for i in ids]
    n = len(diffs)
    if n < 2:
        return None
    mean = sum(diffs) / n
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1)
    return mean, math.sqrt(var / n), n, sum(d > 0 for d in diffs)


def fmt_pair(p):
    if p is None:
        return "not run"
    mean, se, n, wins = p
    return f"{mean:+.4f} ± {se:.4f} (higher on {wins} of {n})"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def bold_best(values, higher_better=True):
    """Formatted values with the best one in bold."""
    best = (max if higher_better else min)(values)
    return [f"**{v:.4f}**" if v == best else f"{v:.4f}" for v in values]


def model_section(name, loc, pert):
    out = [f"## Model `{name}`", ""]
    methods = list(loc)
    any_loc = next(iter(loc.values()))
    c = any_loc["counts"]
    total = c["scored"] + c["misclassified"]
    out.append(f"Adapter: {any_loc['adapter']}. Classified correctly (agcam's forward): "
               f"{c['scored']} of {total} ({100 * c['scored'] / total:.1f} %); localization "
               f"scores those, perturbation scores pictures whatever the prediction "
               f"(ground-truth class).")
    out.append("")
    out.append(f"### Localization ({c['scored']} pictures; threshold "
               f"{any_loc['threshold']}; predicted class)")
    out.append("")
    rows = []
    for m in LOC_METRICS:
        rows.append([LOC_NAMES[m]] + bold_best([loc[x]["mean"][m] for x in methods]))
    out.append(table(["metric"] + methods, rows))
    out.append("")
    if pert:
        pm = list(pert)
        counts = {pert[x]["counts"]["scored"] for x in pm}
        n = (str(counts.pop()) if len(counts) == 1 else
             ", ".join(f"{x} {pert[x]['counts']['scored']}" for x in pm))
        out.append(f"### Pixel perturbation ({n} pictures; ground-truth class; "
                   f"{len(next(iter(pert.values()))['fractions'])} steps, grey removal)")
        out.append("")
        rows = [["MoRF AUC (lower is better)"] + bold_best([pert[x]["morf_auc"] for x in pm], False),
                ["LeRF AUC (higher is better)"] + bold_best([pert[x]["lerf_auc"] for x in pm]),
                ["ABPC (higher is better)"] + bold_best([pert[x]["abpc"] for x in pm])]
        out.append(table([""] + pm, rows))
        out.append("")
    others = [m for m in methods if m != "agcam"]
    if "agcam" in loc and others:
        out.append("### AGCAM against each method, paired per picture (mean ± standard error)")
        out.append("")
        rows = []
        for m in others:
            row = [m, fmt_pair(paired(scored(loc["agcam"], "iou"), scored(loc[m], "iou")))]
            if pert and "agcam" in pert and m in pert:
                row.append(fmt_pair(paired(scored(pert["agcam"], "abpc"), scored(pert[m], "abpc"))))
            else:
                row.append("not run")
            rows.append(row)
        out.append(table(["AGCAM −", "IoU", "ABPC"], rows))
        out.append("")
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="the folder scripts/evaluate-demo.sh wrote")
    p.add_argument("--update", metavar="FILE",
                   help=f"replace what lies between {BEGIN!r} and {END!r} in FILE instead of "
                        "printing")
    args = p.parse_args()
    models = sorted(d for d in os.listdir(args.out)
                    if os.path.isdir(os.path.join(args.out, d))
                    and load(os.path.join(args.out, d), "loc"))
    if not models:
        sys.exit(f"{args.out}: no <model>/loc*.json inside (run scripts/evaluate-demo.sh first)")
    lines, summary = [], []
    for name in models:
        loc = load(os.path.join(args.out, name), "loc")
        pert = load(os.path.join(args.out, name), "pert")
        lines += model_section(name, loc, pert)
        for m in loc:
            if m == "agcam":
                continue
            iou = paired(scored(loc["agcam"], "iou"), scored(loc[m], "iou")) if "agcam" in loc else None
            abpc = (paired(scored(pert["agcam"], "abpc"), scored(pert[m], "abpc"))
                    if "agcam" in pert and m in pert else None)
            summary.append([name, m, fmt_pair(iou), fmt_pair(abpc)])
    if len(models) > 1 and summary:
        lines.append("## AGCAM's advantage, model by model")
        lines.append("")
        lines.append(table(["model", "AGCAM −", "IoU", "ABPC"], summary))
        lines.append("")
    lines.append("## Published (the paper, ViT-B, most likely Pascal VOC 2012; docs/method.md §4)")
    lines.append("")
    pub = list(PUBLISHED)
    lines.append(table(["metric"] + pub,
                       [[LOC_NAMES[m]] + [f"{PUBLISHED[x][m]:.4f}" for x in pub] for m in LOC_METRICS]))
    text = "\n".join(lines)
    if not args.update:
        print(text)
        return
    with open(args.update) as f:
        doc = f.read()
    if doc.count(BEGIN) != 1 or doc.count(END) != 1 or doc.index(BEGIN) > doc.index(END):
        sys.exit(f"{args.update}: needs exactly one {BEGIN} line before one {END} line")
    head, rest = doc.split(BEGIN)
    _, tail = rest.split(END)
    tmp = args.update + ".tmp"
    with open(tmp, "w") as f:
        f.write(head + BEGIN + "\n" + text + "\n" + END + tail)
    os.replace(tmp, args.update)
    print(f"updated the tables of {args.update}")


if __name__ == "__main__":
    main()
