#!/usr/bin/env python3
"""Explain a folder of images on a Ray cluster with agcam.

Ray Data reads and decodes the images (from a local folder or any storage Ray Data reads,
e.g. s3://...), and `map_batches` sends batches to a pool of actors, each holding one
`agcam.Explainer` (one GPU each with --gpus-per-actor 1). Every image's raw map is written as
`<stem>.npy` and its record as `<stem>.json` (the fields `agcam explain` writes) under --out.

    python examples/ray_explain.py --data DIR --out OUT --actors 2

On one machine this starts a local Ray cluster; with RAY_ADDRESS set (or inside a `ray job
submit`), it joins the running cluster, whose workers need the `agcam` package installed
(`pip install ./python`) and --out on a file system they all share.
"""

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import PurePath

import numpy as np

# agcam's pipeline extensions that Ray Data's image reader also decodes.
EXTENSIONS = ["png", "jpg", "jpeg", "bmp"]


def save_atomically(path, write):
    """Writes `path` through `write(file)` under a hidden temporary name, then renames it into
    place: a killed actor leaves no truncated file under a real name."""
    folder, name = os.path.split(path)
    temp = os.path.join(folder, f".{name}.agcam-tmp-{os.getpid()}")
    try:
        with open(temp, "wb") as f:
            write(f)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


def check_local_inputs(data, out):
    """For a local --data folder, the reasons the run would fail or lose results, found before
    Ray starts: a missing folder, no images, or images sharing a file stem (their <stem>.npy and
    <stem>.json would overwrite each other). Also creates --out and checks it is writable.
    Returns a list of errors (empty when the run can start)."""
    errors = []
    if "://" not in data:
        if not os.path.isdir(data):
            errors.append(f"--data {data}: no such folder")
        else:
            by_stem = {}
            for root, _, files in os.walk(data):
                for name in files:
                    if name.rsplit(".", 1)[-1].lower() in EXTENSIONS:
                        by_stem.setdefault(PurePath(name).stem, []).append(os.path.join(root, name))
            if not by_stem:
                errors.append(f"--data {data}: no images ({', '.join(EXTENSIONS)}) in this folder")
            for stem, paths in sorted(by_stem.items()):
                if len(paths) > 1:
                    errors.append(
                        f"{', '.join(sorted(paths))} share the stem {stem!r}: their {stem}.npy and "
                        f"{stem}.json would overwrite each other; rename them or run the folders apart"
                    )
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, f".agcam-write-test-{os.getpid()}")
        open(probe, "wb").close()
        os.remove(probe)
    except OSError as e:
        errors.append(f"--out {out}: cannot write there ({e.strerror or e})")
    return errors


class ExplainBatch:
    """A Ray Data actor: loads the model once, then explains every batch it is given."""

    def __init__(self, weights, batch, backend, out):
        import agcam

        start = time.perf_counter()
        self.explainer = agcam.Explainer(weights, batch=batch, backend=backend)
        # First use compiles the shaders: part of the actor's set-up, not of any image.
        self.explainer.predict(np.zeros((1, 8, 8, 3), np.uint8))
        self.setup_s = time.perf_counter() - start
        self.ready_at = time.time()
        self.out = out
        os.makedirs(out, exist_ok=True)

    def __call__(self, batch):
        # Pixels decoded by Ray Data (PIL), of any sizes: agcam resizes and normalises them
        # exactly as it does files.
        images = list(batch["image"])
        paths = [str(p) for p in batch["path"]]
        start = time.perf_counter()
        result = self.explainer.explain(images)
        explain_s = time.perf_counter() - start
        stems = []
        for i, path in enumerate(paths):
            stem = PurePath(path).stem
            stems.append(stem)
            save_atomically(os.path.join(self.out, f"{stem}.npy"), lambda f: np.save(f, result.maps[i, 0]))
            record = result.record(i, image=path, map_file=f"{stem}.npy")
            text = json.dumps(record, indent=2) + "\n"
            # The record last: present only when the map is.
            save_atomically(os.path.join(self.out, f"{stem}.json"), lambda f: f.write(text.encode()))
        n = len(paths)
        return {
            "stem": np.array(stems),
            "predicted": result.predicted,
            "actor": np.full(n, os.getpid()),
            "actor_setup_s": np.full(n, self.setup_s),
            "actor_ready_at": np.full(n, self.ready_at),
            "explain_s_per_image": np.full(n, explain_s / n),
        }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="folder (or Ray Data URI) of images, searched recursively")
    parser.add_argument("--out", required=True, help="output folder for <stem>.npy and <stem>.json")
    parser.add_argument("--actors", type=int, default=1, help="actors, each with its own Explainer")
    parser.add_argument("--weights", default=None, help="checkpoint (default: the bundled demo model)")
    parser.add_argument("--batch", type=int, default=32, help="images per batch sent to an actor")
    parser.add_argument("--backend", default=None, help="vulkan|metal|dx12|gl (default: the best adapter)")
    parser.add_argument("--gpus-per-actor", type=float, default=0, help="GPUs Ray reserves per actor (1 on a GPU cluster)")
    args = parser.parse_args(argv)
    if args.actors < 1 or args.batch < 1:
        parser.error("--actors and --batch must be at least 1")
    # Before Ray starts (seconds) and the actors load their models: what would fail, or lose
    # files, on a local folder.
    problems = check_local_inputs(args.data, args.out)
    if problems:
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        return 2

    import ray

    if os.environ.get("RAY_ADDRESS"):
        ray.init()
    else:
        # A local cluster: enough logical CPUs for the actors plus Ray Data's read tasks, so
        # reading never waits for a CPU the actors hold.
        ray.init(num_cpus=max(os.cpu_count() or 1, args.actors + 1), include_dashboard=False)

    # Every actor loads its model before data flows, so that the work is shared by all of them
    # and the set-up is not mistaken for per-image time.
    ray.data.DataContext.get_current().wait_for_min_actors_s = 600

    weights = os.path.abspath(args.weights) if args.weights else None
    out = os.path.abspath(args.out)
    start = time.perf_counter()
    images = ray.data.read_images(
        args.data,
        include_paths=True,
        mode="RGB",
        file_extensions=EXTENSIONS,
    )
    rows = images.map_batches(
        ExplainBatch,
        fn_constructor_kwargs={"weights": weights, "batch": args.batch, "backend": args.backend, "out": out},
        batch_size=args.batch,
        batch_format="numpy",
        # One batch per actor at a time: a queue on a busy actor would leave the others idle.
        compute=ray.data.ActorPoolStrategy(size=args.actors, max_tasks_in_flight_per_actor=1),
        num_cpus=1,
        num_gpus=args.gpus_per_actor,
    ).take_all()
    wall = time.perf_counter() - start
    finished_at = time.time()

    stems = Counter(r["stem"] for r in rows)
    duplicates = sorted(s for s, n in stems.items() if n > 1)
    if duplicates:
        print(f"error: several images share the stem(s) {', '.join(duplicates)}; their outputs overwrote each other", file=sys.stderr)
        return 1
    setups = {r["actor"]: r["actor_setup_s"] for r in rows}
    after_setup = finished_at - max((r["actor_ready_at"] for r in rows), default=finished_at)
    explain_s = sum(r["explain_s_per_image"] for r in rows)
    print(
        json.dumps(
            {
                "images": len(rows),
                "actors": args.actors,
                "actors_used": len(setups),
                "wall_s": round(wall, 3),
                "images_per_s": round(len(rows) / wall, 3),
                "images_per_s_after_setup": round(len(rows) / after_setup, 3) if after_setup > 0 else None,
                "actor_setup_s": [round(s, 3) for s in setups.values()],
                "explain_ms_per_image": round(1e3 * explain_s / max(len(rows), 1), 3),
                "out": out,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
