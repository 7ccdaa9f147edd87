"""Generate the golden AGCAM fixtures under tests/fixtures/ (see tests/fixtures/README.md).

    python3 tools/make_fixtures.py

Each fixture is a small random ViT with awkward sizes, its checkpoint in the format the
engine reads, and float64 autograd references (tools/agcam_reference.py) stored as float32.
Everything is seeded, so rerunning reproduces the same files. The script asserts that each
fixture is a meaningful test (stable top-K ranking, maps neither zero nor flat) and prints the
statistics it checked.

    python3 tools/make_fixtures.py [NAME ...]   # only the named fixtures
    python3 tools/make_fixtures.py --method grad-cam [NAME ...]

`--method grad-cam` adds `grad_cam.safetensors` to the timm fixtures of
GRAD_CAM_FIXTURES (or the named ones) without touching their other files: float64 Grad-CAM maps (tools/method_references.py,
method.md §6.2) of the model as stored, for the inputs and classes of its reference.safetensors.

The model-family fixtures (tests/model_families.rs) cover checkpoint formats beyond the plain
timm ViT: `hf_vit` is a Hugging Face ViTForImageClassification written by `save_pretrained`
(its reference runs on the transformers model itself, through hooks), `deit3_ls` a DeiT III-style
timm model (layer scale, no qkv bias, no class-token position), `patch32` 32-px patches with
bfloat16 weights, and `avgpool` timm's `global_pool="avg"` with `fc_norm`, whose AGCAM maps are
exactly zero (the class token reaches no logit; see tests/fixtures/README.md).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from timm.models.vision_transformer import VisionTransformer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agcam_reference import (agcam_autograd, agcam_autograd_hf, agcam_shortcut,  # noqa: E402
                             randomize_for_testing, randomize_hf_for_testing)
from method_references import grad_cam, grad_cam_closed_form  # noqa: E402
from vit_checkpoint import (hub_config, preprocess, preprocess_as, save_checkpoint,  # noqa: E402
                            save_hf, smooth_image)

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

MIN_LOGIT_GAP = 1e-3  # consecutive top-K logits differ by more than this × max|logit|
MIN_MAP_CV = 0.1  # std / mean of every map is above this
MAX_F32_ERROR = 1e-5  # the written files, run in float32, reproduce the maps to this × max|map|
# timm fixtures with Grad-CAM references; patch32 is left out: with 6 patches, some of its
# Grad-CAM maps are all zero (ReLU of X·w negative everywhere), which would test nothing.
# avgpool's references test the engine's full backward of the last block (no closed form there).
GRAD_CAM_FIXTURES = ("odd_ls", "odd_nols", "vit_ti", "deit3_ls", "avgpool")


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
    kind: str = "timm"  # "timm": VisionTransformer; "hf": transformers ViTForImageClassification
    global_pool: str = "token"
    zero_maps: bool = False  # the maps are exactly zero by construction (average pooling)
    labels: list[str] | None = None  # class names for the config (default: class0, class1, ...)


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

FAMILY_FIXTURES = [
    # Hugging Face ViTForImageClassification via save_pretrained: separate q/k/v, LayerNorm eps
    # 1e-12, intermediate_size not 4·D, id2label names, preprocessor_config.json with its own
    # mean/std. 4×6 grid (N = 25); head dim 8. model_args are ViTConfig arguments.
    Fixture("hf_vit", "ViTForImageClassification",
            dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=72,
                 image_size=[32, 48], patch_size=8),
            num_classes=6, batch=2, image_wh=(71, 23), mean=(0.4, 0.5, 0.6),
            std=(0.3, 0.25, 0.2), weight_dtype=torch.float32, seed=21, kind="hf",
            labels=["tabby cat", "tiger cat", "lynx", "ocelot", "cheetah", "snow leopard"]),
    # DeiT III style: layer scale, no qkv bias, no class-token position (no_embed_class);
    # 14-px patches, 3×4 grid (N = 13, pos_embed has 12 rows); head dim 12; F = 3·D.
    Fixture("deit3_ls", "deit3_test_patch14",
            dict(embed_dim=48, depth=3, num_heads=4, patch_size=14, img_size=[42, 56],
                 mlp_ratio=3.0, init_values=1e-6, qkv_bias=False, no_embed_class=True),
            num_classes=9, batch=2, image_wh=(90, 33), mean=IMAGENET_MEAN, std=IMAGENET_STD,
            weight_dtype=torch.float32, seed=22),
    # 32-px patches on a 64×96 input (2×3 grid, N = 7), bfloat16 weights.
    Fixture("patch32", "vit_test_patch32",
            dict(embed_dim=24, depth=2, num_heads=2, patch_size=32, img_size=[64, 96],
                 mlp_ratio=4.0, init_values=None),
            num_classes=10, batch=2, image_wh=(50, 120), mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5), weight_dtype=torch.bfloat16, seed=23),
    # timm global_pool="avg" with fc_norm (the final norm is the identity and not saved);
    # 3×5 grid (N = 16). The maps are exactly zero; the logits test the pooling.
    Fixture("avgpool", "vit_test_avgpool",
            dict(embed_dim=32, depth=3, num_heads=4, patch_size=8, img_size=[24, 40],
                 mlp_ratio=2.0, init_values=None),
            num_classes=8, batch=2, image_wh=(40, 24), mean=IMAGENET_MEAN, std=IMAGENET_STD,
            weight_dtype=torch.float32, seed=24, global_pool="avg", zero_maps=True),
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


def reference_tensors(model, x: torch.Tensor, k: int, prefix: str, autograd=agcam_autograd,
                      zero_maps: bool = False) -> dict:
    """f64 autograd references for input x (float32), stored as float32 under `prefix`.

    `autograd` is the reference for the model's kind; `zero_maps` says the maps are exactly zero
    by construction (average pooling), which is asserted instead of the map statistics."""
    trace = autograd(model, x.double(), classes=k)
    gap, cv = sanity_stats(trace.logits, trace.maps, k)
    zero = (trace.maps == 0).double().mean().item()
    print(f"  {prefix or 'input'}: B={x.shape[0]} top-{k} classes {trace.classes.tolist()}, "
          f"min logit gap {gap:.3g}, min map std/mean {cv:.3g}, "
          f"max|map| {trace.maps.abs().max().item():.4g}, zero map cells {zero:.1%}")
    assert gap > MIN_LOGIT_GAP, f"{prefix}: top-{k} logits too close ({gap:.3g})"
    if zero_maps:
        assert (trace.maps == 0).all(), f"{prefix}: maps expected to be exactly zero"
    else:
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


def check_round_trip(directory: Path, config: dict | None, kind: str = "timm") -> None:
    """Load the written files into a fresh float32 model and rerun them (timm class-token models
    with the CLS-only shortcut, the others with float32 autograd): the same classes and maps
    within MAX_F32_ERROR prove the files are self-consistent and that float32 can meet the
    fixture."""
    if kind == "hf":
        from transformers import ViTForImageClassification
        model = ViTForImageClassification.from_pretrained(directory).float().eval()
        run = agcam_autograd_hf
    else:
        args = {k: v for k, v in config["model_args"].items() if k != "global_pool"}
        model = VisionTransformer(**args, num_classes=config["num_classes"],
                                  global_pool=config["global_pool"]).eval()
        weights = load_file(str(directory / "model.safetensors"))
        model.load_state_dict({name: t.float() for name, t in weights.items()}, strict=True)
        run = agcam_autograd if config["global_pool"] != "token" else None
    ref = load_file(str(directory / "reference.safetensors"))
    for prefix in ("", "image_"):
        k = ref[f"{prefix}classes"].shape[1]
        if run is None:
            _, classes, maps = agcam_shortcut(model, ref[f"{prefix}input"], classes=k)
        else:
            trace = run(model, ref[f"{prefix}input"], classes=k)
            classes, maps = trace.classes, trace.maps
        expected = ref[f"{prefix}maps"]
        # All-zero references (average pooling) must be met exactly.
        err = ((maps - expected).abs().max() / expected.abs().max().clamp(min=1)).item() \
            if not expected.any() else ((maps - expected).abs().max() / expected.abs().max()).item()
        print(f"  {prefix or 'input'}: float32 rerun from the files, map error {err:.2g}")
        assert torch.equal(classes.to(torch.int32), ref[f"{prefix}classes"]), "classes differ"
        assert err < MAX_F32_ERROR, f"float32 maps off by {err:.3g}"


def load_timm_fixture(directory: Path) -> VisionTransformer:
    """The fixture's timm model from its files, in float64."""
    config = json.loads((directory / "config.json").read_text())
    args = {k: v for k, v in config["model_args"].items() if k != "global_pool"}
    model = VisionTransformer(**args, num_classes=config["num_classes"],
                              global_pool=config["global_pool"]).eval()
    weights = load_file(str(directory / "model.safetensors"))
    model.load_state_dict({name: t.double() for name, t in weights.items()}, strict=True)
    return model.double()


def make_grad_cam_reference(fx: Fixture) -> None:
    """`grad_cam.safetensors` for a timm fixture: `maps` and `image_maps` [B, K, gh, gw],
    float64 autograd Grad-CAM (stored as float32) for the classes of reference.safetensors.
    Asserts that the model rebuilt from the files reproduces the stored logits, that the closed
    form the engine runs on class-token models agrees with autograd, and that every map has a
    positive maximum."""
    directory = FIXTURES_DIR / fx.name
    print(f"{fx.name} (grad-cam):")
    model = load_timm_fixture(directory)
    ref = load_file(str(directory / "reference.safetensors"))
    tensors = {}
    for prefix in ("", "image_"):
        x = ref[f"{prefix}input"].double()
        classes = ref[f"{prefix}classes"].long()
        out = grad_cam(model, x, classes)
        logit_err = ((out.logits - ref[f"{prefix}logits"].double()).abs().max()
                     / out.logits.abs().max()).item()
        assert logit_err < 1e-6, f"{prefix}: the rebuilt model's logits differ by {logit_err:.3g}"
        scale = out.maps.abs().amax()
        closed_err = float("nan")  # average pooling: no closed form
        if model.global_pool == "token":
            closed = grad_cam_closed_form(model, x, classes)
            closed_err = ((closed.maps - out.maps).abs().max() / scale).item()
            assert closed_err < 1e-10, f"{prefix}: closed form off by {closed_err:.3g}"
        peaks = out.maps.flatten(2).amax(dim=2)
        zero = (out.maps == 0).double().mean().item()
        print(f"  {prefix or 'input'}: classes {classes.tolist()}, max|map| {scale.item():.4g}, "
              f"smallest map max {peaks.min().item():.4g}, zero cells {zero:.1%}, "
              f"closed form vs autograd {closed_err:.2g}")
        assert (peaks > 0).all(), f"{prefix}: a grad-cam map is all zero"
        tensors[f"{prefix}maps"] = out.maps.float().contiguous()
    save_file(tensors, str(directory / "grad_cam.safetensors"), metadata={"format": "pt"})


def make_fixture(fx: Fixture) -> None:
    """Build, randomise, save and reference one fixture."""
    if fx.kind == "hf":
        make_hf_fixture(fx)
        return
    directory = FIXTURES_DIR / fx.name
    print(f"{fx.name}:")
    torch.manual_seed(fx.seed)
    model = VisionTransformer(**fx.model_args, num_classes=fx.num_classes,
                              global_pool=fx.global_pool).eval()
    generator = torch.Generator().manual_seed(fx.seed)
    randomize_for_testing(model, generator)
    if fx.weight_dtype != torch.float32:
        # Round first, so the stored weights and the reference's weights are the same numbers.
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(fx.weight_dtype).float())
    config = hub_config(fx.architecture, fx.num_classes, fx.model_args, fx.mean, fx.std,
                        label_names=fx.labels, global_pool=fx.global_pool)
    if fx.global_pool != "token":  # timm's save_for_hf records it in model_args too
        config["model_args"] = dict(config["model_args"], global_pool=fx.global_pool)
    save_checkpoint(directory, model, config, fx.weight_dtype)
    model.double()

    k = min(5, fx.num_classes)
    h, w = fx.model_args["img_size"]
    x = torch.randn(fx.batch, 3, h, w, generator=generator)
    tensors = reference_tensors(model, x, k, prefix="", zero_maps=fx.zero_maps)

    image_path = directory / "image.png"
    smooth_image(*fx.image_wh, seed=fx.seed).save(image_path, optimize=True)
    tensors.update(reference_tensors(model, preprocess(image_path, config), k, prefix="image_",
                                     zero_maps=fx.zero_maps))
    save_file(tensors, str(directory / "reference.safetensors"), metadata={"format": "pt"})
    check_round_trip(directory, config)

    sizes = {p.name: p.stat().st_size for p in sorted(directory.iterdir())}
    print(f"  files: {sizes}, total {sum(sizes.values()) / 1e6:.2f} MB")


def make_hf_fixture(fx: Fixture) -> None:
    """A Hugging Face fixture: a random-init ViTForImageClassification, randomised like the timm
    ones, written by `save_pretrained` with a ViTImageProcessor config; the references run on the
    transformers model itself."""
    from transformers import ViTConfig, ViTForImageClassification

    directory = FIXTURES_DIR / fx.name
    print(f"{fx.name}:")
    torch.manual_seed(fx.seed)
    labels = fx.labels or [f"class{i}" for i in range(fx.num_classes)]
    config = ViTConfig(**fx.model_args, num_labels=fx.num_classes,
                       id2label=dict(enumerate(labels)),
                       label2id={name: i for i, name in enumerate(labels)})
    assert config.layer_norm_eps == 1e-12 and config.hidden_act == "gelu"
    model = ViTForImageClassification(config).eval()
    generator = torch.Generator().manual_seed(fx.seed)
    randomize_hf_for_testing(model, generator)
    save_hf(directory, model, fx.mean, fx.std)
    model.double()

    k = min(5, fx.num_classes)
    h, w = fx.model_args["image_size"]
    x = torch.randn(fx.batch, 3, h, w, generator=generator)
    tensors = reference_tensors(model, x, k, prefix="", autograd=agcam_autograd_hf)
    image_path = directory / "image.png"
    smooth_image(*fx.image_wh, seed=fx.seed).save(image_path, optimize=True)
    image = preprocess_as(image_path, (h, w), fx.mean, fx.std)
    tensors.update(reference_tensors(model, image, k, prefix="image_", autograd=agcam_autograd_hf))
    save_file(tensors, str(directory / "reference.safetensors"), metadata={"format": "pt"})
    check_round_trip(directory, None, kind="hf")

    sizes = {p.name: p.stat().st_size for p in sorted(directory.iterdir())}
    print(f"  files: {sizes}, total {sum(sizes.values()) / 1e6:.2f} MB")


if __name__ == "__main__":
    names = sys.argv[1:]
    method = None
    if names[:1] == ["--method"]:
        if names[1:2] != ["grad-cam"]:
            sys.exit("--method: only grad-cam has method fixtures")
        method, names = names[1], names[2:]
    wanted = set(names)
    everything = FIXTURES + FAMILY_FIXTURES
    unknown = wanted - {fx.name for fx in everything}
    if unknown:
        sys.exit(f"unknown fixtures: {sorted(unknown)}")
    for fixture in everything:
        if wanted and fixture.name not in wanted:
            continue
        if method is None:
            make_fixture(fixture)
        elif fixture.name in GRAD_CAM_FIXTURES:
            make_grad_cam_reference(fixture)
        elif wanted:
            sys.exit(f"{fixture.name}: not among the grad-cam fixtures {GRAD_CAM_FIXTURES}")
