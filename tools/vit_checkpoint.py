"""Checkpoint files and image preprocessing shared by the fixture generator and the parity check.

The engine reads a timm-style checkpoint (`model.safetensors` with exactly timm's state_dict names
and a hub-style `config.json`) or a Hugging Face folder (`save_pretrained` of a
ViTForImageClassification plus the image processor's `preprocessor_config.json`); and it
preprocesses images like the authors (torchvision `Resize((h, w))` on a PIL image, `ToTensor`,
`Normalize`). Both are written here once so that the fixtures and the parity check cannot drift
apart.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from torchvision import transforms


def hub_config(architecture: str, num_classes: int, model_args: dict, mean, std,
               label_names: list[str] | None = None, global_pool: str = "token") -> dict:
    """A timm hub-style config.json dict (the subset the engine reads, plus label names).

    model_args: embed_dim, depth, num_heads, patch_size, img_size [h, w], mlp_ratio,
    init_values (None when the blocks have no layer scale), and optionally qkv_bias,
    no_embed_class.
    """
    h, w = model_args["img_size"]
    return {
        "architecture": architecture,
        "num_classes": num_classes,
        "global_pool": global_pool,
        "model_args": model_args,
        "pretrained_cfg": {"input_size": [3, h, w], "mean": list(mean), "std": list(std)},
        "label_names": label_names or [f"class{i}" for i in range(num_classes)],
    }


def save_checkpoint(directory: Path, model: torch.nn.Module, config: dict,
                    dtype: torch.dtype = torch.float32) -> None:
    """Write `model.safetensors` (timm state_dict names, contiguous, in `dtype`) and `config.json`."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def smooth_image(width: int, height: int, seed: int) -> Image.Image:
    """A deterministic smooth random RGB image: a bicubically upsampled 5×5 noise field.

    Smooth content keeps the PNG small and makes resampling differences show up as small,
    honest errors rather than aliasing noise.
    """
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 5, 5, generator=g, dtype=torch.float64)
    field = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)
    pixels = (field[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(pixels), mode="RGB")


def preprocess(image_path: Path, config: dict) -> torch.Tensor:
    """[1, 3, h, w] float32: torchvision Resize((h, w)) (PIL bilinear, antialiased when
    shrinking), ToTensor, Normalize(mean, std) from the timm config, as method.md §3."""
    _, h, w = config["pretrained_cfg"]["input_size"]
    return preprocess_as(image_path, (h, w), config["pretrained_cfg"]["mean"],
                         config["pretrained_cfg"]["std"])


def preprocess_as(image_path: Path, size: tuple[int, int], mean, std) -> torch.Tensor:
    """`preprocess` with the input size (h, w) and normalisation given directly (the engine's
    preprocessing for any checkpoint: a Hugging Face folder's come from preprocessor_config.json)."""
    h, w = size
    pipeline = transforms.Compose([
        transforms.Resize((h, w), interpolation=transforms.InterpolationMode.BILINEAR),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
    with Image.open(image_path) as img:
        return pipeline(img.convert("RGB")).unsqueeze(0)


def save_hf(directory: Path, model, mean, std) -> None:
    """Write a Hugging Face folder: `model.save_pretrained` (model.safetensors + config.json) and a
    `ViTImageProcessor` with the model's input size and the given normalisation
    (preprocessor_config.json), as a hub repository of a ViT classifier holds them."""
    from transformers import ViTImageProcessor

    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    size = model.config.image_size
    h, w = size if isinstance(size, (list, tuple)) else (size, size)
    processor = ViTImageProcessor(size={"height": h, "width": w}, image_mean=list(mean),
                                  image_std=list(std))
    processor.save_pretrained(directory)
