"""examples/ray_explain.py on a local Ray cluster with two actors: a map for every image, equal
to the CLI's, and the CLI's record fields beside it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, assert_maps_close, backend

try:
    import ray  # noqa: F401
    import ray.data  # noqa: F401
except ImportError as e:  # the CI says why in the pytest summary (-rs)
    pytest.skip(f"Ray is not installed ({e}); the Ray example is not tested", allow_module_level=True)

IMAGES = 6


def test_ray_example_two_actors(cli, tmp_path):
    data = tmp_path / "synth"
    cli("synth", "--out", data, "--count", IMAGES, "--seed", 7)
    images = data / "JPEGImages"
    expected = tmp_path / "cli"
    cli("explain", images, "--out", expected)

    out = tmp_path / "ray"
    command = [sys.executable, str(REPO / "examples" / "ray_explain.py"), "--data", str(images),
               "--out", str(out), "--actors", "2", "--batch", "2"]
    if backend():
        command += ["--backend", backend()]
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # a local cluster, whatever the caller's environment says
    done = subprocess.run(command, capture_output=True, text=True, timeout=420, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["images"] == IMAGES
    # Ray Data hands a small set's few blocks to whichever actor asks first, so whether both
    # get work here is Ray's choice; the pool has two.
    assert summary["actors"] == 2 and 1 <= summary["actors_used"] <= 2, summary

    stems = sorted(p.stem for p in images.glob("*.png"))
    assert len(stems) == IMAGES
    for stem in stems:
        assert_maps_close(np.load(out / f"{stem}.npy"), np.load(expected / f"{stem}.npy"), stem)
        ours = json.loads((out / f"{stem}.json").read_text())
        theirs = json.loads((expected / f"{stem}.json").read_text())
        assert set(ours) == set(theirs)
        for key in ("image_size", "predicted_class", "explained_class", "model", "method"):
            assert ours[key] == theirs[key], (stem, key)
        assert ours["map"]["file"] == f"{stem}.npy"
        assert Path(ours["image"]).resolve() == (images / f"{stem}.png").resolve()
