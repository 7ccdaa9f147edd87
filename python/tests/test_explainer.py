"""The Python package gives the CLI's numbers, for every kind of input, and raises clear
exceptions for bad ones."""

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import agcam
from conftest import assert_maps_close, backend


def pil_rgb(path):
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def cli_out(cli, samples, tmp_path_factory):
    """The CLI's outputs for the samples: predicted class, top 3 and class 2."""
    out = {}
    for name, args in [("pred", []), ("top3", ["--top-k", "3"]), ("class2", ["--class", "2"])]:
        d = tmp_path_factory.mktemp(name)
        cli("explain", *samples, "--out", d, *args)
        out[name] = d
    return out


def npy(folder, path, suffix=""):
    return np.load(Path(folder) / f"{Path(path).stem}{suffix}.npy")


def test_paths_match_cli(explainer, samples, cli_out):
    r = explainer.explain(samples)
    gh, gw = explainer.config["grid"]
    assert r.maps.shape == (len(samples), 1, gh, gw) and r.maps.dtype == np.float32
    assert r.classes.dtype == np.int64 and r.predicted.dtype == np.int64
    np.testing.assert_array_equal(r.classes[:, 0], r.predicted)
    for i, path in enumerate(samples):
        assert_maps_close(r.maps[i, 0], npy(cli_out["pred"], path), path)
        record = json.loads((Path(cli_out["pred"]) / f"{Path(path).stem}.json").read_text())
        assert record["predicted_class"] == r.predicted[i]
        ours = r.record(i, map_file=f"{Path(path).stem}.npy", overlay_file=f"{Path(path).stem}.png")
        assert set(ours) == set(record), "the record has the CLI's fields"
        for key in ("image", "image_size", "method", "predicted_label", "explained_class", "model"):
            assert ours[key] == record[key], key
        assert ours["map"]["file"] == record["map"]["file"]
        assert [t["index"] for t in ours["top5"]] == [t["index"] for t in record["top5"]]


def test_single_path_and_pathlike(explainer, samples, cli_out):
    for image in (samples[0], Path(samples[0])):
        r = explainer.explain(image)
        assert r.maps.shape[:2] == (1, 1)
        assert_maps_close(r.maps[0, 0], npy(cli_out["pred"], samples[0]), "single path")


def test_uint8_arrays_match_cli(explainer, samples, cli_out):
    pixels = [pil_rgb(p) for p in samples]
    assert len({p.shape for p in pixels}) > 1, "the samples have several sizes"
    r = explainer.explain(pixels)  # a list of [H, W, 3] arrays of any sizes
    for i, path in enumerate(samples):
        assert_maps_close(r.maps[i, 0], npy(cli_out["pred"], path), f"uint8 {path}")
    one = explainer.explain(pixels[1])  # one [H, W, 3] array
    assert_maps_close(one.maps[0, 0], npy(cli_out["pred"], samples[1]), "uint8 [H, W, 3]")
    stacked = explainer.explain(np.stack([pixels[2], pixels[2]]))  # [B, H, W, 3]
    for b in range(2):
        assert_maps_close(stacked.maps[b, 0], npy(cli_out["pred"], samples[2]), "uint8 [B, H, W, 3]")


def test_float32_input_equals_uint8(explainer):
    h, w = explainer.config["image_size"]
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(2, h, w, 3), dtype=np.uint8)
    mean = np.array(explainer.config["mean"], np.float32)[:, None, None]
    std = np.array(explainer.config["std"], np.float32)[:, None, None]
    normalised = ((pixels.transpose(0, 3, 1, 2).astype(np.float32) / 255 - mean) / std).astype(np.float32)
    from_floats = explainer.explain(normalised)
    from_pixels = explainer.explain(pixels)
    for b in range(2):
        assert_maps_close(from_floats.maps[b, 0], from_pixels.maps[b, 0], "float32 input")
    np.testing.assert_allclose(from_floats.logits, from_pixels.logits, rtol=1e-5, atol=1e-5)


def test_top_k_matches_cli(explainer, samples, cli_out):
    r = explainer.explain(samples, top_k=3)
    assert r.maps.shape[:2] == (len(samples), 3)
    order = np.argsort(-r.logits, axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(r.classes, order)
    for i, path in enumerate(samples):
        for k in range(3):
            c = r.classes[i, k]
            assert_maps_close(r.maps[i, k], npy(cli_out["top3"], path, f"_c{c}"), f"{path} top-{k}")


def test_int_target_matches_cli(explainer, samples, cli_out):
    r = explainer.explain(samples, target=2)
    assert (r.classes == 2).all()
    for i, path in enumerate(samples):
        assert_maps_close(r.maps[i, 0], npy(cli_out["class2"], path), f"{path} class 2")


def test_per_image_targets(explainer, samples):
    n = explainer.config["num_classes"]
    targets = [i % n for i in range(len(samples))]
    r = explainer.explain(samples, target=targets)
    np.testing.assert_array_equal(r.classes[:, 0], targets)
    for c in set(targets):
        same = explainer.explain(samples, target=c)
        for i in [i for i, t in enumerate(targets) if t == c]:
            assert_maps_close(r.maps[i, 0], same.maps[i, 0], f"image {i} class {c}")
    assert explainer.explain(samples, target=tuple(targets)).classes[:, 0].tolist() == targets


def test_predict_equals_explain_logits(explainer, samples):
    logits = explainer.predict(samples)
    assert logits.shape == (len(samples), explainer.config["num_classes"])
    assert logits.dtype == np.float32
    np.testing.assert_allclose(logits, explainer.explain(samples).logits, rtol=1e-5, atol=1e-5)


def test_baseline_methods(explainer, samples):
    rollout = explainer.explain(samples[:2], top_k=2, method="attention-rollout")
    # Class-agnostic: the same map for both explained classes.
    np.testing.assert_array_equal(rollout.maps[:, 0], rollout.maps[:, 1])
    assert rollout.record(0)["method"] == "attention-rollout"


def test_overlay_matches_cli_png(explainer, samples, cli_out):
    r = explainer.explain(samples[0])
    ours = agcam.overlay(pil_rgb(samples[0]), r.maps[0, 0], alpha=0.5)
    theirs = pil_rgb(Path(cli_out["pred"]) / f"{Path(samples[0]).stem}.png")
    assert ours.dtype == np.uint8 and ours.shape == theirs.shape
    # The maps agree to float rounding, so a pixel may round one step apart.
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1


def test_config(explainer):
    c = explainer.config
    assert set(c) == {"image_size", "patch_size", "grid", "num_classes", "labels", "mean", "std", "model"}
    assert c["grid"] == (c["image_size"][0] // c["patch_size"], c["image_size"][1] // c["patch_size"])
    assert len(c["labels"]) == c["num_classes"] == 10


def test_gil_is_released(explainer, samples):
    done = threading.Event()
    ticks = 0

    def work():
        explainer.explain(samples * 2, top_k=2)
        done.set()

    thread = threading.Thread(target=work)
    thread.start()
    while not done.is_set():
        ticks += 1
        time.sleep(0.001)
    thread.join()
    # With the GIL held for the whole explanation this loop could not run while it worked.
    assert ticks > 10


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((4, 4), np.uint8), "uint8 array of shape [4, 4]"),
        (np.zeros((2, 8, 8, 4), np.uint8), "[2, 8, 8, 4]"),
        (np.zeros((8, 8, 3), np.float64), "float64"),
        (np.zeros((8, 8, 3), np.int32), "int32"),
        (np.zeros((1, 3, 8, 8), np.float32), "[B, 3, 224, 224]"),
        (np.zeros((0, 8, 8, 3), np.uint8), "empty"),
        ([], "empty"),
        (42, "not a int"),
        (["a.png", np.zeros((8, 8, 3), np.uint8)], "holds a ndarray"),
    ],
)
def test_bad_images(explainer, images, message):
    with pytest.raises(ValueError, match=None) as e:
        explainer.explain(images)
    assert message in str(e.value)


def test_missing_file(explainer, samples, tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(FileNotFoundError, match="nope.png"):
        explainer.explain([samples[0], missing])
    with pytest.raises(FileNotFoundError, match="nope.png"):
        explainer.predict(missing)


def test_folder_is_not_a_picture(explainer, samples, tmp_path):
    for images in (tmp_path, [samples[0], tmp_path]):
        with pytest.raises(ValueError, match="is a folder: give the paths of its pictures"):
            explainer.explain(images)


def test_corrupt_file(explainer, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ValueError, match="bad.png: cannot read image"):
        explainer.explain(bad)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"target": 10}, "class 10 is out of range"),
        ({"target": -1}, "non-negative integers"),
        ({"target": [0]}, "1 target classes given for 2 images"),
        ({"target": "cat"}, "non-negative integers"),
        ({"top_k": 0}, "top-k must be between 1"),
        ({"top_k": 11}, "top-k must be between 1"),
        # Named, not pyo3's bare "can't convert negative int to unsigned" OverflowError.
        ({"top_k": -1}, "top_k must be a non-negative integer, not -1"),
        # A bool is an int to Python, but not a class.
        ({"target": True}, "non-negative integers, not True"),
        ({"target": 1, "top_k": 2}, "not both"),
        ({"method": "gradcam"},
         "method must be one of agcam, attention-rollout, raw-attention, grad-cam, generic-attention, "
         "transformer-attribution"),
    ],
)
def test_bad_arguments(explainer, samples, kwargs, message):
    with pytest.raises(ValueError) as e:
        explainer.explain(samples[:2], **kwargs)
    assert message in str(e.value)


def test_bad_constructor_arguments(tmp_path):
    with pytest.raises(ValueError, match="precision must be one of f32, f16"):
        agcam.Explainer(precision="f8")
    with pytest.raises(ValueError, match="backend must be one of"):
        agcam.Explainer(backend="cuda")
    with pytest.raises(ValueError, match="batch must be at least 1"):
        agcam.Explainer(batch=0)
    for name in ("batch", "adapter", "max_gpu_mem"):
        with pytest.raises(ValueError, match=f"{name} must be a non-negative integer, not -1"):
            agcam.Explainer(**{name: -1})
    with pytest.raises(ValueError, match="too large"):
        agcam.Explainer(max_gpu_mem=2**60)
    with pytest.raises(ValueError, match="does not fit the GPU budget"):
        agcam.Explainer(max_gpu_mem=0)
    with pytest.raises(FileNotFoundError):
        agcam.Explainer(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.safetensors"):
        agcam.Explainer(junk)


def test_bad_overlay_arguments(samples):
    image = pil_rgb(samples[0])
    grid = np.ones((14, 14), np.float32)
    with pytest.raises(ValueError, match="alpha must be between 0 and 1"):
        agcam.overlay(image, grid, alpha=2.0)
    with pytest.raises(ValueError, match="float32"):
        agcam.overlay(image, grid.astype(np.float64))
    with pytest.raises(ValueError, match="uint8"):
        agcam.overlay(image[..., 0], grid)
    nan = grid.copy()
    nan[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        agcam.overlay(image, nan)


def test_record_arguments(explainer, samples):
    r = explainer.explain(samples[:2])
    assert r.record(1)["image"] == samples[1]
    assert r.record(1, image="x/y.png")["image"] == "x/y.png"
    assert len(r) == 2
    with pytest.raises(ValueError, match="out of range"):
        r.record(2)
    with pytest.raises(ValueError, match="out of range"):
        r.record(0, rank=1)
    # Negative positions count from the end, as in a list.
    assert r.record(-1) == r.record(1)
    assert r.record(0, rank=-1) == r.record(0)
    with pytest.raises(ValueError, match="image index -3 is out of range"):
        r.record(-3)


def test_non_finite_numbers_are_errors(explainer, samples, tmp_path):
    """NaN input is refused; a result holding NaN or infinity raises, naming the image, as the
    CLI reports such a picture as failed (here from a near-zero std, as in tests/bad_input.rs)."""
    nan = np.zeros((2, 3, 224, 224), np.float32)
    nan[1, 0, 5, 5] = np.nan
    for call in (explainer.explain, explainer.predict):
        with pytest.raises(ValueError, match="NaN or infinite values \\(the first in image 1\\)"):
            call(nan)

    config = json.loads((Path(agcam.DEMO_WEIGHTS).parent / "demo.json").read_text())
    config["pretrained_cfg"]["std"] = [1e-45] * 3
    weights = tmp_path / "tiny_std.safetensors"
    weights.write_bytes(Path(agcam.DEMO_WEIGHTS).read_bytes())
    (tmp_path / "tiny_std.json").write_text(json.dumps(config))
    tiny_std = agcam.Explainer(weights, backend=backend())
    with pytest.raises(ValueError, match="image 0 \\(.*synth.*\\): the model gave non-finite"):
        tiny_std.explain(samples[:2])
    with pytest.raises(ValueError, match="image 0: the model gave non-finite"):
        tiny_std.predict(pil_rgb(samples[0]))


def test_import_quiets_mesa_without_xdg_runtime_dir():
    """Without XDG_RUNTIME_DIR, Mesa's EGL would print "error: XDG_RUNTIME_DIR is invalid" when
    the adapters are probed; importing agcam points it at a private folder, as the CLI does."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    done = subprocess.run(
        [sys.executable, "-c", "import agcam; agcam.Explainer()"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "XDG_RUNTIME_DIR" not in done.stderr, done.stderr


def test_demo_model_ships_with_the_package():
    assert os.path.isfile(agcam.DEMO_WEIGHTS)
    assert os.path.isfile(os.path.join(os.path.dirname(agcam.DEMO_WEIGHTS), "demo.json"))
    assert Path(agcam.__file__).parent in Path(agcam.DEMO_WEIGHTS).parents
