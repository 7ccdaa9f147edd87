#!/usr/bin/env python3
"""Writes the fixtures of src/image's tests to tests/fixtures/image/ (deterministic).

Needs numpy, Pillow, torch and opencv-python-headless (for the jet table and overlay blend).

Outputs:
  * small source images in every format and pixel layout that `load_rgb` must handle;
  * reference.safetensors with what the Python pipeline produces from them:
      decode/<file>                  u8 [H, W, 3]   PIL `Image.open(f).convert("RGB")`
      resize/<file>/<w>x<h>          u8 [h, w, 3]   PIL `img.resize((w, h), Image.BILINEAR)`
      resize_pillow12/<file>/<w>x<h> u8 [h, w, 3]   the same as Pillow <= 12 computes it, where it
                                                    differs (see below)
      upsample/<case>/in, /out       f32            torch F.interpolate(bilinear, align_corners=False)
      upsample_fnv/<case>/in, /fnv1a64              the same for display sizes, output as a hash
      jet                            u8 [256, 3]    cv2.applyColorMap(0..255, COLORMAP_JET), RGB order
      normalize/<name>/{image,mean,std,out}         ToTensor + Normalize as torchvision does in f32
      preprocess/<name>                             PIL resize + ToTensor + Normalize of a file
      overlay/<name>/{grid,alpha,out}               interpolate, min-max, jet, cv2.addWeighted
  * sample_2x3x5.npy, sample_7.npy, sample_scalar.npy: np.save output for the .npy writer test.

Run from the repository root: python3 tools/make_image_fixtures.py
"""

import io
import json
import os
import struct
import zlib

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, features

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "image")
tensors = {}


def add(name, arr):
    arr = np.ascontiguousarray(arr)
    assert arr.dtype in (np.uint8, np.float32), (name, arr.dtype)
    tensors[name] = arr


def save_safetensors(path, items):
    """Minimal safetensors writer (no dependency on the safetensors package)."""
    header, offset, blobs = {}, 0, []
    for name in sorted(items):
        arr = items[name]
        data = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        dtype = {np.dtype(np.uint8): "U8", np.dtype(np.float32): "F32"}[arr.dtype]
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((-len(h)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(path, arr, color_type, bit_depth, palette=None, trns=None):
    """Minimal PNG writer, so that 16-bit and low-bit-depth layouts can be produced exactly."""
    arr = np.asarray(arr)
    h, w = arr.shape[:2]
    rows = []
    for y in range(h):
        row = arr[y].reshape(-1)
        if bit_depth == 16:
            raw = row.astype(">u2").tobytes()
        elif bit_depth == 8:
            raw = row.astype(np.uint8).tobytes()
        else:
            per = 8 // bit_depth
            vals = [int(v) for v in row] + [0] * ((-len(row)) % per)
            raw = bytes(
                sum(v << (8 - bit_depth * (k + 1)) for k, v in enumerate(vals[i : i + per]))
                for i in range(0, len(vals), per)
            )
        rows.append(b"\x00" + raw)
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0))
    if palette is not None:
        out += png_chunk(b"PLTE", bytes(np.asarray(palette, np.uint8).reshape(-1)))
    if trns is not None:
        out += png_chunk(b"tRNS", trns)
    out += png_chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + png_chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(out)


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def smooth_rgb(rng, w, h, noise):
    """A photo-like image: gradients and blobs plus a little noise (compresses well)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin(x / w * 5.1 + y / h * 1.3)
    g = 128 + 90 * np.cos(y / h * 4.3 - x / w * 2.2)
    b = 255 * ((x - w / 3) ** 2 + (y - h / 2) ** 2 < (min(w, h) / 3) ** 2) * 0.8 + 20
    img = np.stack([r, g, b], -1) + rng.normal(0, noise, (h, w, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20240207)
    p = lambda name: os.path.join(OUT, name)  # noqa: E731

    # ---- source images ----------------------------------------------------------------------
    rgb = rng.integers(0, 256, (23, 37, 3), dtype=np.uint8)
    rgb[0, 0] = 0
    rgb[0, 1] = 255
    write_png(p("rgb_37x23.png"), rgb, 2, 8)
    big = smooth_rgb(rng, 100, 76, 6.0)
    write_png(p("smooth_100x76.png"), big, 2, 8)
    rgba = rng.integers(0, 256, (13, 19, 4), dtype=np.uint8)
    rgba[::3, ::2, 3] = 0  # fully transparent pixels keep their colour in convert("RGB")
    write_png(p("rgba_19x13.png"), rgba, 6, 8)
    write_png(p("gray_21x17.png"), rng.integers(0, 256, (17, 21), dtype=np.uint8), 0, 8)
    write_png(p("gray_alpha_11x7.png"), rng.integers(0, 256, (7, 11, 2), dtype=np.uint8), 4, 8)
    g16 = rng.integers(0, 65536, (9, 13)).astype(np.uint16)
    g16[0, :6] = [0, 1, 200, 255, 256, 65535]  # PIL saturates I;16 -> RGB at 255
    write_png(p("gray16_13x9.png"), g16, 0, 16)
    write_png(p("gray_alpha16_13x9.png"), rng.integers(0, 65536, (9, 13, 2)), 4, 16)
    write_png(p("rgb16_13x9.png"), rng.integers(0, 65536, (9, 13, 3)), 2, 16)
    write_png(p("rgba16_13x9.png"), rng.integers(0, 65536, (9, 13, 4)), 6, 16)
    write_png(p("gray4_13x9.png"), rng.integers(0, 16, (9, 13)), 0, 4)
    write_png(p("gray1_13x9.png"), rng.integers(0, 2, (9, 13)), 0, 1)
    write_png(p("gray_trns_13x9.png"), rng.integers(0, 256, (9, 13)), 0, 8, trns=struct.pack(">H", 7))
    pal = rng.integers(0, 256, (40, 3))
    write_png(p("palette_17x11.png"), rng.integers(0, 40, (11, 17)), 3, 8, palette=pal,
              trns=bytes(rng.integers(0, 256, 12).astype(np.uint8)))
    write_png(p("palette4_13x9.png"), rng.integers(0, 16, (9, 13)), 3, 4, palette=pal[:16])
    photo = smooth_rgb(rng, 37, 23, 3.0)
    Image.fromarray(photo).save(p("photo_37x23.jpg"), quality=90)
    Image.fromarray(photo[:, :, 1]).save(p("photo_gray_37x23.jpg"), quality=90)
    Image.fromarray(rgb).save(p("rgb_37x23.bmp"))
    webp = features.check("webp")
    if webp:
        Image.fromarray(rgb).save(p("rgb_37x23.webp"), lossless=True)
        Image.fromarray(photo).save(p("photo_37x23.webp"), quality=90)

    files = sorted(f for f in os.listdir(OUT) if f.split(".")[-1] in ("png", "jpg", "bmp", "webp"))
    for f in files:
        with Image.open(p(f)) as im:
            add(f"decode/{f}", np.asarray(im.convert("RGB")))

    # ---- PIL bilinear resize (what torchvision Resize does on a PIL image) ----------------------
    cases = {
        "rgb_37x23.png": [(16, 9), (61, 47), (20, 40), (50, 11), (37, 23), (37, 10), (8, 23), (1, 1),
                          (96, 64), (3, 200), (30, 5)],
        "smooth_100x76.png": [(56, 56), (7, 5), (24, 18), (33, 97), (99, 76), (90, 20), (41, 9)],
        "gray_21x17.png": [(13, 13)],
    }
    for f, sizes in cases.items():
        with Image.open(p(f)) as im:
            src = im.convert("RGB")
            in_w, in_h = src.size
            for w, h in sizes:
                direct = np.asarray(src.resize((w, h), Image.BILINEAR))
                add(f"resize/{f}/{w}x{h}", direct)
                # Pillow 13 runs the vertical pass first when the height shrinks by more than twice
                # as many pixels as the width (python-pillow/Pillow#9549); Pillow <= 12 always ran
                # the horizontal pass first. Two single-axis resizes (each one pass, with the same
                # rounding to u8 in between) give either order with any Pillow version.
                h_first = np.asarray(src.resize((w, in_h), Image.BILINEAR).resize((w, h), Image.BILINEAR))
                v_first = np.asarray(src.resize((in_w, h), Image.BILINEAR).resize((w, h), Image.BILINEAR))
                pillow13_v_first = (in_h - h) > 0 and (in_h - h) > (in_w - w) * 2
                expected_direct = v_first if pillow13_v_first else h_first
                assert (direct == expected_direct).all(), (f, w, h)
                if not (h_first == direct).all():
                    add(f"resize_pillow12/{f}/{w}x{h}", h_first)

    # ---- torch bilinear upsampling of maps ---------------------------------------------------
    up_cases = {
        "7x5_to_23x37": ((7, 5), (23, 37)),
        "3x4_to_10x9": ((3, 4), (10, 9)),
        "14x14_to_56x56": ((14, 14), (56, 56)),
        "5x5_to_5x5": ((5, 5), (5, 5)),
        "4x6_to_2x3": ((4, 6), (2, 3)),
        "1x1_to_3x4": ((1, 1), (3, 4)),
        "6x2_to_6x7": ((6, 2), (6, 7)),
        "2x9_to_31x4": ((2, 9), (31, 4)),
        "5x4_to_9x80": ((5, 4), (9, 80)),
        "3x7_to_20x65": ((3, 7), (20, 65)),
    }
    for name, ((gh, gw), (oh, ow)) in up_cases.items():
        g = rng.normal(0, 1, (gh, gw)).astype(np.float32)
        out = F.interpolate(torch.from_numpy(g)[None, None], size=(oh, ow), mode="bilinear", align_corners=False)
        add(f"upsample/{name}/in", g)
        add(f"upsample/{name}/out", out[0, 0].numpy())

    # Display-size outputs are too large to store: keep a 64-bit FNV-1a hash of their f32 bytes.
    for (gh, gw), (oh, ow) in [((14, 14), (224, 224)), ((7, 7), (224, 224)), ((24, 24), (384, 384)), ((14, 10), (100, 333))]:
        g = rng.normal(0, 1, (gh, gw)).astype(np.float32)
        out = F.interpolate(torch.from_numpy(g)[None, None], size=(oh, ow), mode="bilinear", align_corners=False)
        name = f"upsample_fnv/{gh}x{gw}_to_{oh}x{ow}"
        add(f"{name}/in", g)
        add(f"{name}/fnv1a64", np.frombuffer(struct.pack("<Q", fnv1a64(out[0, 0].numpy().tobytes())), np.uint8))

    # ---- OpenCV jet --------------------------------------------------------------------------
    lut = cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(-1, 1), cv2.COLORMAP_JET)
    add("jet", lut[:, 0, ::-1])  # BGR -> RGB

    # ---- ToTensor + Normalize ------------------------------------------------------------------
    def to_tensor_normalize(arr, mean, std):
        t = torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
        m = torch.as_tensor(mean, dtype=torch.float32)[:, None, None]
        s = torch.as_tensor(std, dtype=torch.float32)[:, None, None]
        return t.sub(m).div(s).numpy()

    norms = {"half": ([0.5] * 3, [0.5] * 3), "imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])}
    for name, (mean, std) in norms.items():
        add(f"normalize/{name}/image", rgb)
        add(f"normalize/{name}/mean", np.array(mean, np.float32))
        add(f"normalize/{name}/std", np.array(std, np.float32))
        add(f"normalize/{name}/out", to_tensor_normalize(rgb, mean, std))
    with Image.open(p("smooth_100x76.png")) as im:
        resized = np.asarray(im.convert("RGB").resize((48, 40), Image.BILINEAR))
    add("preprocess/smooth_100x76.png/40x48/imagenet", to_tensor_normalize(resized, *norms["imagenet"]))

    # ---- overlay -------------------------------------------------------------------------------
    def overlay(img, grid, alpha):
        h, w = img.shape[:2]
        m = F.interpolate(torch.from_numpy(grid)[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        m = (m - m.min()) / (m.max() - m.min())
        idx = np.rint(m.numpy() * np.float32(255)).astype(np.uint8)
        heat = cv2.applyColorMap(idx, cv2.COLORMAP_JET)[:, :, ::-1]
        return cv2.addWeighted(np.ascontiguousarray(heat), alpha, img, 1 - alpha, 0)

    for name, alpha in {"half": 0.5, "third": 0.3}.items():
        grid = rng.normal(0, 1, (5, 7)).astype(np.float32)
        add(f"overlay/{name}/grid", grid)
        add(f"overlay/{name}/alpha", np.array([alpha], np.float32))
        add(f"overlay/{name}/out", overlay(rgb, grid, alpha))  # over rgb_37x23.png

    save_safetensors(p("reference.safetensors"), tensors)

    # ---- .npy files as numpy writes them ---------------------------------------------------------
    np.save(p("sample_2x3x5.npy"), (np.arange(30, dtype=np.float32) * 0.25 - 3.0).reshape(2, 3, 5))
    np.save(p("sample_7.npy"), np.arange(7, dtype=np.float32) / 7)
    np.save(p("sample_scalar.npy"), np.float32(-1.5))
    total = sum(os.path.getsize(p(f)) for f in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total} bytes, {len(tensors)} tensors to {OUT}")


if __name__ == "__main__":
    main()
