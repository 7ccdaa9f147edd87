"""Shared fixtures: the engine under test, the agcam command line to compare against, and
helpers to run it.

Environment:
  AGCAM_TEST_BACKEND  vulkan|gl|...: the adapter for both the package and the CLI (default: the
                      best one, as both choose it).
  AGCAM_CLI           the agcam binary to compare with (default: the newest of
                      $CARGO_TARGET_DIR or target/, release or debug).
"""

import glob
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import agcam

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sorted(glob.glob(str(REPO / "weights" / "samples" / "*.png")))


def backend():
    return os.environ.get("AGCAM_TEST_BACKEND") or None


def find_cli():
    if os.environ.get("AGCAM_CLI"):
        return os.environ["AGCAM_CLI"]
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    found = [p for p in (target / "release" / "agcam", target / "debug" / "agcam") if p.is_file()]
    if not found:
        pytest.fail(
            f"no agcam binary under {target}/{{release,debug}}: run `cargo build --release` "
            "first or set AGCAM_CLI"
        )
    return str(max(found, key=lambda p: p.stat().st_mtime))


@pytest.fixture(scope="session")
def cli():
    """Runs the agcam binary with the test backend; returns the completed process."""
    binary = find_cli()

    def run(*args, check=True):
        extra = ["--backend", backend()] if backend() and args[0] in ("explain", "predict") else []
        done = subprocess.run(
            [binary, *map(str, args), *extra], capture_output=True, text=True, timeout=600
        )
        if check and done.returncode != 0:
            raise AssertionError(f"agcam {' '.join(map(str, args))} failed:\n{done.stderr}")
        return done

    return run


@pytest.fixture(scope="session")
def explainer():
    return agcam.Explainer(backend=backend())


@pytest.fixture(scope="session")
def samples():
    assert len(SAMPLES) >= 4, f"bundled samples missing under {REPO / 'weights' / 'samples'}"
    return SAMPLES


def assert_maps_close(actual, expected, what):
    """Equal to float rounding: |a - e| <= 1e-5 * max|e| (the issue's bar)."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = float(np.abs(expected).max())
    assert scale > 0, f"{what}: the reference map is all zero"
    worst = float(np.abs(actual - expected).max())
    assert worst <= 1e-5 * scale, f"{what}: max |diff| {worst:.3g} > 1e-5 x {scale:.3g}"
