#!/usr/bin/env python3
"""A/B summary of a gpu-check.sh run: every `ab_*_<precision>.json` bench (trial kernels, earlier
builds) against the default binary's, per batch and mode, as speedups (> 1: faster than the
default). Only the standard library: it runs on the device machine.

    python3 scripts/ab-summary.py RESULTS_DIR [--default agcam]
"""
import argparse
import json
import pathlib
import sys


def load(path):
    rows = json.loads(path.read_text())
    return {(r["batch"], r["mode"], r.get("top_k", 0)): r["ms_per_image"] for r in rows}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=pathlib.Path)
    ap.add_argument("--default", default="agcam", help="basename of the default binary")
    args = ap.parse_args()
    found = False
    for precision in ("f32", "f16"):
        base_path = args.results / f"ab_{args.default}_{precision}.json"
        if not base_path.is_file():
            continue
        base = load(base_path)
        others = sorted(p for p in args.results.glob(f"ab_*_{precision}.json") if p != base_path)
        if not others:
            continue
        found = True
        print(f"{precision}: ms per image, and the default's time ÷ this one's (> 1: faster)")
        print(f"  {'variant':32} {'batch':>5} {'mode':>8} {'default':>9} {'this':>9} {'speedup':>8}")
        for path in others:
            name = path.name[len("ab_"):-len(f"_{precision}.json")]
            for key, ms in sorted(load(path).items()):
                if key in base and ms > 0:
                    batch, mode, _ = key
                    print(f"  {name:32} {batch:>5} {mode:>8} {base[key]:>9.3f} {ms:>9.3f} "
                          f"{base[key] / ms:>8.3f}")
    if not found:
        print(f"no A/B results in {args.results}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
