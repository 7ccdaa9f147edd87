"""Float64 references of the compared methods (docs/method.md §6) on the golden fixtures.

    python3 tools/make_method_fixtures.py [name ...]     # about 30 s on 2 cores; byte-identical

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
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from timm.models.vision_transformer import VisionTransformer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agcam_reference import (_explicit_attention, _explicit_attention_hf,  # noqa: E402
                             check_supported_hf)
from method_references import (_rollout, _slot_gradients,  # noqa: E402
                               generic_attention)

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


def make(name: str) -> None:
    directory = FIXTURES_DIR / name
    model, kind = load_fixture_model(directory)
    ref = load_file(str(directory / "reference.safetensors"))
    x = ref["input"].double()
    classes = ref["classes"].long()
    maps, logits, slots = generic_attention_any(model, kind, x, classes)
    logit_err = ((logits - ref["logits"].double()).abs().max() / logits.abs().max()).item()
    assert logit_err < 1e-5, f"{name}: reloaded model's logits off by {logit_err:.3g}"
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
    wanted = sys.argv[1:] or NAMES
    unknown = set(wanted) - set(NAMES)
    if unknown:
        sys.exit(f"unknown or unsupported fixtures: {sorted(unknown)}")
    for fixture in wanted:
        make(fixture)
