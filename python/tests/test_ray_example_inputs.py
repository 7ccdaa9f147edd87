"""examples/ray_explain.py refuses, before Ray starts, a local run that would fail or lose files:
no such folder, no images, images sharing a stem (their outputs would overwrite each other), an
output folder it cannot write. Needs no Ray: these checks come before `import ray`."""

import subprocess
import sys

from conftest import REPO, SAMPLES


def run_example(*args):
    return subprocess.run(
        [sys.executable, str(REPO / "examples" / "ray_explain.py"), *map(str, args)],
        capture_output=True, text=True, timeout=120,
    )


def test_inputs_that_would_fail_or_lose_files_are_refused_up_front(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder, sample in (("a", SAMPLES[0]), ("b", SAMPLES[1])):
        (tmp_path / folder / "x.png").write_bytes(open(sample, "rb").read())
    empty = tmp_path / "empty"
    empty.mkdir()
    taken = tmp_path / "taken"
    taken.write_bytes(b"")
    cases = [
        ((tmp_path, tmp_path / "out"), ["share the stem 'x'", "a/x.png", "b/x.png"]),
        ((tmp_path / "missing", tmp_path / "out"), ["missing: no such folder"]),
        ((empty, tmp_path / "out"), ["empty: no images"]),
        ((tmp_path / "a", taken), ["--out", "taken: cannot write there"]),
    ]
    for (data, out), wanted in cases:
        done = run_example("--data", data, "--out", out)
        assert done.returncode == 2, (data, done.stderr[-2000:])
        for w in wanted:
            assert w in done.stderr, (w, done.stderr[-2000:])
        # Refused before Ray started.
        assert "Ray instance" not in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "out" / "x.npy").exists()
