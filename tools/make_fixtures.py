"""Generate the golden AGCAM fixtures under tests/fixtures/ (see tests/fixtures/README.md).

    python3 tools/make_fixtures.py

Each fixture is a small random timm ViT with awkward sizes, its checkpoint in the format the
engine reads, and float64 autograd references (tools/agcam_reference.py) stored as float32.
Everything is seeded, so rerunning reproduces the same files. The script asserts that each
fixture is a meaningful test (stable top-K ranking, maps neither zero nor flat) and prints the
statistics it checked.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from timm.models.vision_transformer import VisionTransformer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agcam_reference import agcam_autograd, agcam_shortcut, randomize_for_testing  # noqa: E402
from vit_checkpoint import hub_config, preprocess, save_checkpoint, smooth_image  # noqa: E402

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

MIN_LOGIT_GAP = 1e-3  # consecutive top-K logits differ by more than this × max|logit|
MIN_MAP_CV = 0.1  # std / mean of every map is above this
MAX_F32_ERROR = 1e-5  # the written files, run in float32, reproduce the maps to this × max|map|


@dataclass
class Fixture:
    name: str
    architecture: str
    model_args: dict
    num_classes: int
    batch: int
    image_wh: tuple[int, int]  # size of image.png (width, height)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weight_dtype: torch.dtype
    seed: int


FIXTURES = [
    # Layer scale; head dim 12; 3×6 grid (N = 19); F = 90. The image is upscaled in both axes.
    Fixture("odd_ls", "vit_test_odd_ls",
            dict(embed_dim=36, depth=3, num_heads=3, patch_size=8, img_size=[24, 48],
                 mlp_ratio=2.5, init_values=0.5),
            num_classes=10, batch=3, image_wh=(41, 19), mean=IMAGENET_MEAN, std=IMAGENET_STD,
            weight_dtype=torch.float32, seed=1),
    # No layer scale; head dim 6; 4×3 grid (N = 13); F = 60. The image is downscaled in both axes.
    Fixture("odd_nols", "vit_test_odd_nols",
            dict(embed_dim=30, depth=4, num_heads=5, patch_size=5, img_size=[20, 15],
                 mlp_ratio=2.0, init_values=None),
            num_classes=7, batch=2, image_wh=(37, 53), mean=(0.45, 0.5, 0.55),
            std=(0.25, 0.2, 0.3), weight_dtype=torch.float32, seed=2),
    # ViT-Ti/16 dimensions, f16 weights. The 301×187 image is shrunk in x and stretched in y.
    Fixture("vit_ti", "vit_tiny_patch16_224",
            dict(embed_dim=192, depth=12, num_heads=3, patch_size=16, img_size=[224, 224],
                 mlp_ratio=4.0, init_values=None),
            num_classes=1000, batch=2, image_wh=(301, 187), mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5), weight_dtype=torch.float16, seed=14),
]


def sanity_stats(logits: torch.Tensor, maps: torch.Tensor, k: int) -> tuple[float, float]:
    """(smallest relative gap between consecutive top-(K+1) logits, smallest map std/mean).

    The gap below the K-th logit counts too, so the top-K set itself is stable under f32 noise.
    """
    top = logits.topk(min(k + 1, logits.shape[1]), dim=1).values
    gap = ((top[:, :-1] - top[:, 1:]) / logits.abs().amax(dim=1, keepdim=True)).min().item()
    flat = maps.flatten(2)
    cv = (flat.std(dim=2) / flat.mean(dim=2)).min().item()
    return gap, cv


def reference_tensors(model: VisionTransformer, x: torch.Tensor, k: int, prefix: str) -> dict:
    """f64 autograd references for input x (float32), stored as float32 under `prefix`."""
    trace = agcam_autograd(model, x.double(), classes=k)
    gap, cv = sanity_stats(trace.logits, trace.maps, k)
    zero = (trace.maps == 0).double().mean().item()
    print(f"  {prefix or 'input'}: B={x.shape[0]} top-{k} classes {trace.classes.tolist()}, "
          f"min logit gap {gap:.3g}, min map std/mean {cv:.3g}, "
          f"max|map| {trace.maps.abs().max().item():.4g}, zero map cells {zero:.1%}")
    assert gap > MIN_LOGIT_GAP, f"{prefix}: top-{k} logits too close ({gap:.3g})"
    assert cv > MIN_MAP_CV, f"{prefix}: a map is nearly constant ({cv:.3g})"
    assert (trace.maps.flatten(2).amax(dim=2) > 0).all(), f"{prefix}: a map is all zero"
    out = {
        f"{prefix}input": x,
        f"{prefix}logits": trace.logits.float(),
        f"{prefix}classes": trace.classes.to(torch.int32),
        f"{prefix}maps": trace.maps.float(),
    }
    if not prefix:
        for layer in range(trace.cls_scores.shape[0]):
            out[f"debug.scores.{layer}"] = trace.cls_scores[layer].float()
            out[f"debug.grads.{layer}"] = trace.cls_grads[0, layer].float()
    return {name: t.contiguous() for name, t in out.items()}


def check_round_trip(directory: Path, config: dict) -> None:
    """Load the written files into a fresh float32 timm model and rerun them with the CLS-only
    shortcut: the same classes and maps within MAX_F32_ERROR prove the files are
    self-consistent and that float32 can meet the fixture."""
    model = VisionTransformer(**config["model_args"], num_classes=config["num_classes"],
                              global_pool="token").eval()
    weights = load_file(str(directory / "model.safetensors"))
    model.load_state_dict({name: t.float() for name, t in weights.items()}, strict=True)
    ref = load_file(str(directory / "reference.safetensors"))
    for prefix in ("", "image_"):
        k = ref[f"{prefix}classes"].shape[1]
        _, classes, maps = agcam_shortcut(model, ref[f"{prefix}input"], classes=k)
        expected = ref[f"{prefix}maps"]
        err = ((maps - expected).abs().max() / expected.abs().max()).item()
        print(f"  {prefix or 'input'}: float32 shortcut from the files, map error {err:.2g}")
        assert torch.equal(classes.to(torch.int32), ref[f"{prefix}classes"]), "classes differ"
        assert err < MAX_F32_ERROR, f"float32 maps off by {err:.3g}"


def make_fixture(fx: Fixture) -> None:
    """Build, randomise, save and reference one fixture."""
    directory = FIXTURES_DIR / fx.name
    print(f"{fx.name}:")
    torch.manual_seed(fx.seed)
    model = VisionTransformer(**fx.model_args, num_classes=fx.num_classes,
                              global_pool="token").eval()
    generator = torch.Generator().manual_seed(fx.seed)
    randomize_for_testing(model, generator)
    if fx.weight_dtype != torch.float32:
        # Round first, so the stored weights and the reference's weights are the same numbers.
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(fx.weight_dtype).float())
    config = hub_config(fx.architecture, fx.num_classes, fx.model_args, fx.mean, fx.std)
    save_checkpoint(directory, model, config, fx.weight_dtype)
    model.double()

    k = min(5, fx.num_classes)
    h, w = fx.model_args["img_size"]
    x = torch.randn(fx.batch, 3, h, w, generator=generator)
    tensors = reference_tensors(model, x, k, prefix="")

    image_path = directory / "image.png"
    smooth_image(*fx.image_wh, seed=fx.seed).save(image_path, optimize=True)
    tensors.update(reference_tensors(model, preprocess(image_path, config), k, prefix="image_"))
    save_file(tensors, str(directory / "reference.safetensors"), metadata={"format": "pt"})
    check_round_trip(directory, config)

    sizes = {p.name: p.stat().st_size for p in sorted(directory.iterdir())}
    print(f"  files: {sizes}, total {sum(sizes.values()) / 1e6:.2f} MB")


if __name__ == "__main__":
    for fixture in FIXTURES:
        make_fixture(fixture)
