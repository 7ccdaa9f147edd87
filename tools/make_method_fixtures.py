"""Float64 references of the compared methods (docs/method.md §6) on the golden fixtures.

    python3 tools/make_method_fixtures.py [--method M] [name ...]   # about 30 s on 2 cores;
                                                                    # byte-identical

For each class-token fixture under tests/fixtures/ (odd_ls, odd_nols, vit_ti and the family
fixtures hf_vit, deit3_ls, patch32), loads the model from the fixture's own files, takes the
fixture's random batch `input` and its top-K `classes` from `reference.safetensors`, and writes
`generic_attention.safetensors` beside it (tests/fixtures/README.md lists its tensors):

* `maps` [B, K, gh, gw]: `generic_attention` of tools/method_references.py (for hf_vit the same
  rule through the transformers model's own modules);
* `debug.grad_attn.0` [B, H, N, N]: ∂ logits[b, classes[b, 0]] / ∂ A_0, the full-backward
  gradient of the first block's post-softmax attention (class slot 0);
* `debug.grad_tokens` [B, N, D]: ∂ logits[b, classes[b, 0]] / ∂ x_0, the gradient at the first
  block's input (the embedded tokens), i.e. the end of the full backward.

`vit_ti` gets `maps` only (its debug tensors would add megabytes). The existing fixture files are
read, never written.

`--method transformer-attribution` writes `transformer_attribution.safetensors` instead, with
`maps` [B, K, gh, gw] of `transformer_attribution` (start_layer 0; for hf_vit on the same weights
as a timm model, `timm_from_hf`, the layout the engine runs) and `f32_error` [B, K]: max |map in
float32 − map in float64| / max|map| of that same reference run by PyTorch in float32, the
method's own conditioning in f32 (method.md §6.3: up to 3 × max|map| on vit_ti).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from timm.models.vision_transformer import VisionTransformer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agcam_reference import (_explicit_attention, _explicit_attention_hf,  # noqa: E402
                             check_supported_hf, timm_from_hf)
from method_references import (_rollout, _slot_gradients,  # noqa: E402
                               generic_attention, transformer_attribution)

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
NAMES = ["odd_ls", "odd_nols", "vit_ti", "hf_vit", "deit3_ls", "patch32"]
NO_DEBUG = {"vit_ti"}


def load_fixture_model(directory: Path):
    """The fixture's model in float64, loaded from its files; (model, kind)."""
    import json

    config = json.loads((directory / "config.json").read_text())
    if "model_args" not in config:
        from transformers import ViTForImageClassification
        model = ViTForImageClassification.from_pretrained(directory).double().eval()
        check_supported_hf(model)
        return model, "hf"
    args = {k: v for k, v in config["model_args"].items() if k != "global_pool"}
    model = VisionTransformer(**args, num_classes=config["num_classes"],
                              global_pool=config.get("global_pool", "token")).eval()
    weights = load_file(str(directory / "model.safetensors"))
    model.load_state_dict({name: t.float() for name, t in weights.items()}, strict=True)
    return model.double(), "timm"


def first_block(model, kind: str):
    return model.vit.layers[0] if kind == "hf" else model.blocks[0]


def traced_gradients(model, kind: str, x: torch.Tensor, classes: torch.Tensor):
    """(logits, per-slot gradients [∇A_0..∇A_{L-1}, ∂/∂x_0], post-softmax A per layer)."""
    record: list = []
    tokens: list = []

    def grab(_module, args, kwargs):
        tokens.append(args[0] if args else kwargs["hidden_states"])

    attention = _explicit_attention_hf if kind == "hf" else _explicit_attention
    handle = first_block(model, kind).register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.enable_grad(), attention(model, record, detach_input=False):
            out = model(x)
            logits = out.logits if kind == "hf" else out
            probs = [a for _, a in record]
            slots = _slot_gradients(logits, classes, probs + tokens[:1])
    finally:
        handle.remove()
    return logits.detach(), slots, [a.detach() for a in probs]


def generic_attention_any(model, kind: str, x: torch.Tensor, classes: torch.Tensor):
    """`generic_attention` of method_references.py; for transformers models the same rule."""
    logits, slots, probs = traced_gradients(model, kind, x, classes)
    if kind == "timm":
        ga = generic_attention(model, x, classes)
        assert torch.equal(ga.classes, classes)
        return ga.maps, logits, slots
    relevance = torch.stack([
        _rollout([(g * a).clamp(min=0).mean(dim=1)
                  for g, a in zip(grads[:-1], probs, strict=True)])
        for grads in slots
    ], dim=1)
    p = model.config.patch_size
    h, w = x.shape[-2:]
    rows = relevance[:, :, 0]
    maps = rows[..., 1:].reshape(rows.shape[:2] + (h // p, w // p))
    return maps, logits, slots


def transformer_attribution_any(model, kind: str, x: torch.Tensor, classes: torch.Tensor):
    """`transformer_attribution` of method_references.py (start_layer 0): (maps, logits); a
    transformers model runs as the timm model with its weights (q, k, v as one qkv linear, as the
    engine holds them; z⁺ treats each output feature on its own, so the split is immaterial)."""
    if kind == "hf":
        import unittest.mock

        import method_references

        # timm_from_hf keeps HF's LayerNorm eps (1e-12), which check_supported refuses (it wants
        # timm's 1e-6); the LRP rules pass LayerNorms through whatever their eps.
        with unittest.mock.patch.object(method_references, "check_supported", lambda _: None):
            ta = transformer_attribution(timm_from_hf(model), x, classes)
    else:
        ta = transformer_attribution(model, x, classes)
    assert torch.equal(ta.classes, classes)
    return ta.maps, ta.logits


def load_reference(name: str):
    """(model, kind, input, classes, logits) of a fixture, in float64."""
    directory = FIXTURES_DIR / name
    model, kind = load_fixture_model(directory)
    ref = load_file(str(directory / "reference.safetensors"))
    return model, kind, ref["input"].double(), ref["classes"].long(), ref["logits"].double()


def check_logits(name: str, logits: torch.Tensor, want: torch.Tensor) -> None:
    logit_err = ((logits - want).abs().max() / logits.abs().max()).item()
    assert logit_err < 1e-5, f"{name}: reloaded model's logits off by {logit_err:.3g}"


def make_transformer_attribution(name: str) -> None:
    model, kind, x, classes, want = load_reference(name)
    maps, logits = transformer_attribution_any(model, kind, x, classes)
    check_logits(name, logits, want)
    assert (maps.flatten(2).abs().amax(dim=2) > 0).all(), f"{name}: zero map"
    # The same computation in float32 by PyTorch: how far f32 arithmetic alone moves each map.
    maps_f32, _ = transformer_attribution_any(model.float(), kind, x.float(), classes)
    scale = maps.flatten(2).abs().amax(dim=2)
    f32_error = (maps_f32.double() - maps).flatten(2).abs().amax(dim=2) / scale
    save_file({"maps": maps.float().contiguous(), "f32_error": f32_error.float().contiguous()},
              str(FIXTURES_DIR / name / "transformer_attribution.safetensors"),
              metadata={"format": "pt"})
    print(f"{name}: B={x.shape[0]} K={classes.shape[1]} max|map| {maps.abs().max().item():.4g}, "
          f"f32 error / max|map| per map {f32_error.numpy().round(6).tolist()}")


def make(name: str) -> None:
    directory = FIXTURES_DIR / name
    model, kind, x, classes, want = load_reference(name)
    maps, logits, slots = generic_attention_any(model, kind, x, classes)
    check_logits(name, logits, want)
    assert (maps >= 0).all() and (maps.flatten(2).amax(dim=2) > 0).all(), f"{name}: zero map"
    out = {"maps": maps.float()}
    if name not in NO_DEBUG:
        out["debug.grad_attn.0"] = slots[0][0].float()
        out["debug.grad_tokens"] = slots[0][-1].float()
    save_file({k: t.contiguous() for k, t in out.items()},
              str(directory / "generic_attention.safetensors"), metadata={"format": "pt"})
    print(f"{name}: B={x.shape[0]} K={classes.shape[1]} max|map| {maps.abs().max().item():.4g}, "
          f"max|∇A_0| {slots[0][0].abs().max().item():.3g}, "
          f"max|∂/∂x_0| {slots[0][-1].abs().max().item():.3g}")


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", choices=("generic-attention", "transformer-attribution"),
                    default="generic-attention")
    ap.add_argument("names", nargs="*", default=NAMES)
    args = ap.parse_args()
    unknown = set(args.names) - set(NAMES)
    if unknown:
        sys.exit(f"unknown or unsupported fixtures: {sorted(unknown)}")
    torch.set_num_threads(1)
    for fixture in args.names:
        if args.method == "transformer-attribution":
            make_transformer_attribution(fixture)
        else:
            make(fixture)
