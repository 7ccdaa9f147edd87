#!/usr/bin/env python3
"""Train the bundled demo model (weights/) on data from `agcam synth`, evaluate it, and check
that its AGCAM maps point at the labelled object.

What it does, in order (every step prints its progress):

1. `cargo build --release`, then `target/release/agcam synth` writes a training set
   (`--train-count` pictures, seed `--train-seed`) and a held-out set (`--val-count`, seed
   `--val-seed`) in VOC layout under `--data`. Existing complete sets are reused.
2. Every picture is resized to 224×224 ignoring the aspect ratio (PIL bilinear, antialiased when
   shrinking: what torchvision `Resize((224, 224))` does on a PIL image), and to the low
   resolution of the first phase; the uint8 arrays are cached next to the data.
3. A timm `VisionTransformer` (patch 16, 224×224, class-token pooling, standard blocks, qkv bias)
   is trained from scratch on the label of each picture's target (non-distractor) object, and on
   nothing else by default (`--token-loss W` adds an auxiliary loss that names the object under
   every patch from the boxes: weak supervision no more, see issue 15), in two
   phases: most epochs at `--low-res` (timm's `dynamic_img_size` resamples the 14×14 position
   embedding, which is what keeps this affordable on two CPU cores), then `--high-epochs` at 224.
   Inputs are normalised with mean = std = 0.5. Augmentation: random horizontal and vertical
   flips and 90° rotations (every class is closed under them).
4. The held-out accuracy is measured at 224 in float32 with the weights rounded to float16, i.e.
   exactly what is saved.
5. Saves `weights/demo.safetensors` (timm state_dict names, float16), `weights/demo.json` (timm
   hub-style config with label names), `weights/train_report.json` (all numbers below), and six
   held-out sample pictures in `weights/samples/` with their XML in `weights/samples/annotations/`.
6. AGCAM sanity check (docs/method.md §2) on held-out pictures: how often the argmax patch of the
   map lies inside the target's box, and, on pictures with a distractor, inside the target's box
   rather than the distractor's.

The defaults reproduce the bundled model (weights/, class labels only); the earlier
token-labelled model (weights/token-labelled/) is `--token-loss 0.5 --out weights/token-labelled`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import random
import re
import shutil
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from timm.models.vision_transformer import VisionTransformer

REPO = Path(__file__).resolve().parent.parent
MEAN = STD = (0.5, 0.5, 0.5)
SIZE = 224
PATCH = 16


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# Data


def build_binary() -> Path:
    log("cargo build --release")
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
    return REPO / "target" / "release" / "agcam"


def synth(binary: Path, out: Path, count: int, seed: int, share: float, extra=()) -> list[str]:
    """Runs `agcam synth` unless `out` already holds this exact set (checked by a stamp file);
    returns the command line."""
    stamp = out / "synth_args.json"
    cmd = [str(binary), "synth", "--out", str(out), "--count", str(count), "--seed", str(seed),
           "--distractor-share", str(share), *extra]
    args = {"cmd": cmd[1:]}
    if stamp.is_file() and json.loads(stamp.read_text()) == args:
        log(f"reusing {out} ({count} pictures, seed {seed})")
        return cmd
    if out.exists():
        shutil.rmtree(out)
    log("running " + " ".join(cmd))
    t = time.time()
    subprocess.run(cmd, check=True)
    log(f"  {count} pictures in {time.time() - t:.0f} s")
    stamp.write_text(json.dumps(args))
    return cmd


def parse_annotation(path: Path) -> dict:
    """The fields of one synth VOC XML: size and objects (name, distractor flag, 1-based box)."""
    text = path.read_text()

    def num(tag: str, s: str) -> int:
        return int(re.search(f"<{tag}>(\\d+)</{tag}>", s).group(1))

    objects = []
    for o in re.findall(r"<object>(.*?)</object>", text, re.S):
        objects.append({
            "name": re.search(r"<name>(.*?)</name>", o).group(1),
            "distractor": num("distractor", o) == 1,
            "box": tuple(num(k, o) for k in ("xmin", "ymin", "xmax", "ymax")),
        })
    return {"width": num("width", text), "height": num("height", text), "objects": objects}


def _load_one(job):
    path, low = job
    with Image.open(path) as img:
        img = img.convert("RGB")
        hi = np.asarray(img.resize((SIZE, SIZE), Image.BILINEAR))
        lo = np.asarray(img.resize((low, low), Image.BILINEAR))
    return hi, lo


def load_set(root: Path, low: int, workers: int) -> dict:
    """Images at 224 and at `low` (uint8 NHWC), labels, and annotations of a synth VOC set."""
    classes = (root / "labels.txt").read_text().split()
    ids = sorted(p.stem for p in (root / "JPEGImages").glob("*.png"))
    anns = [parse_annotation(root / "Annotations" / f"{i}.xml") for i in ids]
    labels = np.array([classes.index(next(o for o in a["objects"] if not o["distractor"])["name"])
                       for a in anns], dtype=np.int64)
    cache_hi, cache_lo = root / f"cache_{SIZE}.npy", root / f"cache_{low}.npy"
    if cache_hi.is_file() and cache_lo.is_file():
        hi, lo = np.load(cache_hi), np.load(cache_lo)
        if len(hi) == len(ids) and len(lo) == len(ids):
            log(f"reusing the resized arrays of {root}")
            return {"ids": ids, "anns": anns, "labels": labels, "classes": classes,
                    "hi": hi, "lo": lo}
    log(f"resizing {len(ids)} pictures of {root} to {SIZE} and {low}")
    t = time.time()
    hi = np.empty((len(ids), SIZE, SIZE, 3), np.uint8)
    lo = np.empty((len(ids), low, low, 3), np.uint8)
    jobs = [(root / "JPEGImages" / f"{i}.png", low) for i in ids]
    with Pool(workers) as pool:
        for k, (a, b) in enumerate(pool.imap(_load_one, jobs, chunksize=64)):
            hi[k], lo[k] = a, b
            if (k + 1) % 5000 == 0:
                log(f"  {k + 1}/{len(ids)}")
    np.save(cache_hi, hi)
    np.save(cache_lo, lo)
    log(f"  done in {time.time() - t:.0f} s")
    return {"ids": ids, "anns": anns, "labels": labels, "classes": classes, "hi": hi, "lo": lo}


def token_labels(anns: list[dict], classes: list[str], grid: int) -> np.ndarray:
    """[N, grid, grid] per-patch labels for the auxiliary token-labelling loss: the class of the
    target if the patch centre lies in its box, else the distractor's class if in its box, else
    `len(classes)` (background). Derived from the boxes alone."""
    out = np.full((len(anns), grid, grid), len(classes), np.int64)
    centres = (np.arange(grid) + 0.5) / grid  # fraction of the picture side
    for n, a in enumerate(anns):
        xs, ys = centres * a["width"], centres * a["height"]
        # Distractor first, so that the target wins where the boxes overlap.
        for o in sorted(a["objects"], key=lambda o: not o["distractor"]):
            x0, y0, x1, y1 = o["box"]
            inside_y = (ys >= y0 - 1) & (ys <= y1)
            inside_x = (xs >= x0 - 1) & (xs <= x1)
            out[n][np.ix_(inside_y, inside_x)] = classes.index(o["name"])
    return out


def to_input(batch_u8: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> normalised float32 NCHW (ToTensor + Normalize(0.5, 0.5))."""
    x = torch.from_numpy(np.ascontiguousarray(batch_u8)).permute(0, 3, 1, 2).float() / 255.0
    return (x - 0.5) / 0.5


def augment(x: torch.Tensor, tok: torch.Tensor, g: torch.Generator):
    """The same random dihedral transform (horizontal flip, vertical flip, transpose: all eight
    symmetries of the square) per sample on images [N, 3, H, W] and token labels [N, h, w]."""
    n = x.shape[0]
    for dims, p in (((3,), 0.5), ((2,), 0.5), (None, 0.5)):
        pick = torch.rand(n, generator=g) < p
        if dims is None:
            x = torch.where(pick[:, None, None, None], x.transpose(2, 3), x)
            tok = torch.where(pick[:, None, None], tok.transpose(1, 2), tok)
        else:
            x = torch.where(pick[:, None, None, None], x.flip(dims), x)
            tok = torch.where(pick[:, None, None], tok.flip(dims[0] - 1), tok)
    return x, tok


# ---------------------------------------------------------------------------------------------
# Model


def make_model(args, num_classes: int, dynamic: bool) -> VisionTransformer:
    return VisionTransformer(
        img_size=SIZE, patch_size=PATCH, embed_dim=args.dim, depth=args.depth,
        num_heads=args.heads, mlp_ratio=4.0, qkv_bias=True, num_classes=num_classes,
        global_pool="token", class_token=True, dynamic_img_size=dynamic,
        drop_path_rate=args.drop_path if dynamic else 0.0,
    )


@torch.no_grad()
def mimetic_init(model: VisionTransformer, g: torch.Generator, a1=0.7, b1=0.7, a2=0.4, b2=0.4):
    """Mimetic initialisation (Trockman & Kolter 2023, "Mimetic Initialization of Self-Attention
    Layers"): per head W_q^T W_k ~ a1 Z + b1 I and overall W_proj W_v ~ a2 Z - b2 I, which makes
    attention start out like the trained layers of large ViTs (tokens attend to similar tokens)
    and speeds up training from scratch on small data. Only the initial values change."""
    for blk in model.blocks:
        attn = blk.attn
        dim, d = attn.qkv.in_features, attn.head_dim
        w = attn.qkv.weight  # [3D, D]
        eye = torch.eye(dim)
        for h in range(attn.num_heads):
            m = a1 * torch.randn(dim, dim, generator=g) / math.sqrt(dim) + b1 * eye
            u, s, vh = torch.linalg.svd(m)
            root = s[:d].sqrt()
            w[h * d:(h + 1) * d] = (u[:, :d] * root).T
            w[dim + h * d:dim + (h + 1) * d] = (vh[:d].T * root).T
        m = a2 * torch.randn(dim, dim, generator=g) / math.sqrt(dim) - b2 * eye
        u, s, vh = torch.linalg.svd(m)
        root = s.sqrt()
        attn.proj.weight.copy_(u * root)
        w[2 * dim:] = root[:, None] * vh


def hub_config(args, classes: list[str]) -> dict:
    return {
        "architecture": "vit_synth_demo_patch16_224",
        "num_classes": len(classes),
        "global_pool": "token",
        "model_args": {
            "embed_dim": args.dim, "depth": args.depth, "num_heads": args.heads,
            "patch_size": PATCH, "img_size": [SIZE, SIZE], "mlp_ratio": 4.0, "qkv_bias": True,
            "init_values": None,
        },
        "pretrained_cfg": {
            "input_size": [3, SIZE, SIZE], "mean": list(MEAN), "std": list(STD),
            "interpolation": "bilinear", "crop_pct": 1.0,
        },
        "label_names": classes,
    }


@torch.inference_mode()
def evaluate(model, images: np.ndarray, labels: np.ndarray, batch: int = 100):
    model.eval()
    preds = []
    for i in range(0, len(images), batch):
        preds.append(model(to_input(images[i:i + batch])).argmax(1))
    preds = torch.cat(preds).numpy()
    return float((preds == labels).mean()), preds


def train(args, stages, val_set, num_classes):
    """Trains through `stages`, a list of (name, dataset, key, resolution, epochs); key "lo" or
    "hi" picks the resized arrays. One warmup + cosine schedule spans all stages."""
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    model = make_model(args, num_classes, dynamic=True)
    if args.init is not None:
        # Continued training: start from a saved model of the same shape (what this script
        # writes), with a fresh optimizer and schedule.
        state = {k: v.float() for k, v in load_file(str(args.init)).items()}
        model.load_state_dict(state)
        log(f"initialised from {args.init}")
    elif args.mimetic:
        mimetic_init(model, g)
    # Token labelling (Jiang et al. 2021, "All Tokens Matter"): a linear head on every patch
    # token, trained to name the object under the patch (or background). Used only during
    # training; it is not part of the saved model, whose architecture stays plain timm.
    aux = torch.nn.Linear(args.dim, num_classes + 1)
    params = list(model.named_parameters()) + [("aux." + n, p) for n, p in aux.named_parameters()]
    decay = [p for n, p in params if p.ndim >= 2 and "pos_embed" not in n]
    no_decay = [p for n, p in params if not (p.ndim >= 2 and "pos_embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr,
                            betas=(0.9, 0.999))
    total = sum(len(ds["labels"]) // args.batch * epochs for _, ds, _, _, epochs in stages)
    warmup = min(args.warmup_steps, total // 10)

    def lr_at(step):
        if step < warmup:
            return args.lr * (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return args.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))

    step, t0, c0, history = 0, time.time(), time.process_time(), []
    for name, ds, key, res, epochs in stages:
        if epochs == 0:
            continue
        n = len(ds["labels"])
        steps_per_epoch = n // args.batch
        labels = torch.from_numpy(ds["labels"])
        tokens = torch.from_numpy(token_labels(ds["anns"], ds["classes"], res // PATCH))
        for epoch in range(epochs):
            model.train()
            perm = torch.randperm(n, generator=g)
            seen = correct = 0
            loss_sum = cls_sum = tok_sum = 0.0
            t_epoch = time.time()
            for b in range(steps_per_epoch):
                idx = perm[b * args.batch:(b + 1) * args.batch].sort().values.numpy()
                x, tok = augment(to_input(ds[key][idx]), tokens[idx], g)
                y = labels[idx]
                for group in opt.param_groups:
                    group["lr"] = lr_at(step)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16 and key == "hi"):
                    feats = model.forward_features(x)
                    logits = model.forward_head(feats)
                    tok_logits = aux(feats[:, 1:]) if args.token_loss > 0 else None
                loss = F.cross_entropy(logits.float(), y, label_smoothing=args.label_smoothing)
                cls_sum += float(loss.detach()) * len(y)
                if tok_logits is not None:
                    tok_loss = F.cross_entropy(tok_logits.float().flatten(0, 1), tok.flatten())
                    tok_sum += float(tok_loss.detach()) * len(y)
                    loss = loss + args.token_loss * tok_loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                step += 1
                seen += len(y)
                correct += int((logits.argmax(1) == y).sum())
                loss_sum += float(loss.detach()) * len(y)
                if (b + 1) % args.log_every == 0 or b + 1 == steps_per_epoch:
                    rate = seen / (time.time() - t_epoch)
                    log(f"{name} {res}px epoch {epoch + 1}/{epochs} step {b + 1}/{steps_per_epoch} "
                        f"loss {loss_sum / seen:.3f} (cls {cls_sum / seen:.3f} tok {tok_sum / seen:.3f}) train-acc {correct / seen:.3f} "
                        f"lr {lr_at(step):.2e} {rate:.0f} img/s elapsed {time.time() - t0:.0f} s "
                        f"cpu {time.process_time() - c0:.0f} s")
            val_acc, _ = evaluate(model, val_set[key][: args.val_during], val_set["labels"][: args.val_during])
            history.append({"stage": name, "res": res, "epoch": epoch + 1,
                            "train_loss": loss_sum / seen, "train_acc": correct / seen,
                            "val_acc_subset": val_acc, "elapsed_s": time.time() - t0,
                            "cpu_s": time.process_time() - c0})
            log(f"{name} {res}px epoch {epoch + 1}/{epochs}: held-out accuracy on the first "
                f"{args.val_during} at {res}px = {val_acc:.4f}")
    return model, history, time.time() - t0, time.process_time() - c0


# ---------------------------------------------------------------------------------------------
# AGCAM sanity check


def agcam_reference():
    """tools/agcam_reference.py: the autograd AGCAM of docs/method.md §2 the fixtures use."""
    spec = importlib.util.spec_from_file_location("agcam_reference",
                                                  REPO / "tools" / "agcam_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def patch_in_box(r: int, c: int, ann: dict, box) -> bool:
    """Whether the centre of patch (r, c) of the 224×224 input lies in a 1-based inclusive box
    of the original picture (pixel i spans [i-1, i) in continuous coordinates)."""
    x = (c * PATCH + PATCH / 2) / SIZE * ann["width"]
    y = (r * PATCH + PATCH / 2) / SIZE * ann["height"]
    return box[0] - 1 <= x <= box[2] and box[1] - 1 <= y <= box[3]


def localization_check(model, val_set, count: int, distractor_count: int):
    ref = agcam_reference()
    anns = val_set["anns"]
    plain = list(range(min(count, len(anns))))
    with_d = [i for i, a in enumerate(anns) if len(a["objects"]) > 1][:distractor_count]
    todo = sorted(set(plain) | set(with_d))
    model.eval()
    maps, preds = {}, {}
    for s in range(0, len(todo), 25):
        idx = todo[s:s + 25]
        x = to_input(val_set["hi"][idx])
        with torch.no_grad():
            pred = model(x).argmax(1)
        cam = ref.agcam_autograd(model, x, pred[:, None]).maps[:, 0].detach()
        for k, i in enumerate(idx):
            maps[i], preds[i] = cam[k], int(pred[k])

    def argmax_rc(m):
        flat = int(m.flatten().argmax())
        return divmod(flat, m.shape[1])

    def stats(indices):
        hit = correct = 0
        for i in indices:
            r, c = argmax_rc(maps[i])
            target = next(o for o in anns[i]["objects"] if not o["distractor"])
            hit += patch_in_box(r, c, anns[i], target["box"])
            correct += preds[i] == val_set["labels"][i]
        return hit, correct

    hit, correct = stats(plain)
    d_target = d_distractor = d_neither = 0
    for i in with_d:
        r, c = argmax_rc(maps[i])
        t = next(o for o in anns[i]["objects"] if not o["distractor"])
        d = next(o for o in anns[i]["objects"] if o["distractor"])
        in_t, in_d = patch_in_box(r, c, anns[i], t["box"]), patch_in_box(r, c, anns[i], d["box"])
        d_target += in_t
        d_distractor += in_d and not in_t
        d_neither += not in_t and not in_d
    result = {
        "images": len(plain),
        "argmax_in_target_box": hit / len(plain),
        "classified_correctly": correct / len(plain),
        "distractor_images": len(with_d),
        "distractor_argmax_in_target_box": d_target / max(1, len(with_d)),
        "distractor_argmax_in_distractor_box": d_distractor / max(1, len(with_d)),
        "distractor_argmax_in_neither": d_neither / max(1, len(with_d)),
        "map_class": "predicted",
        "reference": "tools/agcam_reference.py",
    }
    return result


# ---------------------------------------------------------------------------------------------
# Output


def pick_samples(val_set, preds, n: int = 6):
    """Six correctly classified held-out pictures: different classes, two with a distractor,
    a mix of wide, tall and near-square ones."""
    anns, labels = val_set["anns"], val_set["labels"]
    chosen, classes = [], set()

    def shape(a):
        r = a["width"] / a["height"]
        return "wide" if r > 1.25 else "tall" if r < 0.8 else "square"

    wants = [("wide", True), ("tall", True), ("wide", False), ("tall", False), ("square", False),
             ("square", False)]
    for kind, distractor in wants[:n]:
        for i, a in enumerate(anns):
            if (i in chosen or labels[i] in classes or preds[i] != labels[i]
                    or shape(a) != kind or (len(a["objects"]) > 1) != distractor):
                continue
            chosen.append(i)
            classes.add(labels[i])
            break
    return chosen


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("/tmp/agcam_synth_demo"))
    p.add_argument("--out", type=Path, default=REPO / "weights")
    p.add_argument("--train-count", type=int, default=32000)
    p.add_argument("--train-seed", type=int, default=1)
    p.add_argument("--val-count", type=int, default=1000)
    p.add_argument("--val-seed", type=int, default=2)
    p.add_argument("--distractor-share", type=float, default=0.3)
    p.add_argument("--easy-count", type=int, default=4000,
                   help="curriculum: pictures with large objects, no clutter, no distractor")
    p.add_argument("--easy-seed", type=int, default=3)
    p.add_argument("--easy-scale-min", type=float, default=0.35)
    p.add_argument("--easy-epochs", type=int, default=2)
    p.add_argument("--dim", type=int, default=96)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--heads", type=int, default=3)
    p.add_argument("--low-res", type=int, default=128, help="first-phase resolution (multiple of 16)")
    p.add_argument("--low-epochs", type=int, default=24)
    p.add_argument("--high-epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--wd", type=float, default=0.05)
    p.add_argument("--warmup-steps", type=int, default=500)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--drop-path", type=float, default=0.0)
    p.add_argument("--mimetic", action=argparse.BooleanOptionalAction, default=True,
                   help="mimetic initialisation of the attention weights")
    p.add_argument("--token-loss", type=float, default=0.0,
                   help="weight of the auxiliary token-labelling loss, which names the object "
                        "under every patch from the boxes (default 0: class labels only)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                   help="bfloat16 autocast in the 224 phase (weights stay float32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", type=Path, default=None,
                   help="continue training from this .safetensors (same shape; fresh optimizer and "
                        "schedule; no mimetic init)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--val-during", type=int, default=500, help="held-out pictures checked per epoch")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--cam-images", type=int, default=100)
    p.add_argument("--cam-distractor-images", type=int, default=100)
    p.add_argument("--no-save", action="store_true", help="train and evaluate only")
    args = p.parse_args()
    if args.low_res % PATCH:
        p.error("--low-res must be a multiple of 16")

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    t_start = time.time()

    binary = build_binary()
    train_root, val_root = args.data / f"train_s{args.train_seed}", args.data / f"val_s{args.val_seed}"
    commands = {}
    if args.easy_epochs > 0:
        easy_root = args.data / f"easy_s{args.easy_seed}"
        commands["easy"] = synth(binary, easy_root, args.easy_count, args.easy_seed, 0.0,
                                 ["--scale-min", str(args.easy_scale_min), "--clutter", "0"])
    commands["train"] = synth(binary, train_root, args.train_count, args.train_seed,
                              args.distractor_share)
    commands["val"] = synth(binary, val_root, args.val_count, args.val_seed, args.distractor_share)
    train_set = load_set(train_root, args.low_res, args.threads)
    val_set = load_set(val_root, args.low_res, args.threads)
    classes = train_set["classes"]
    stages = []
    if args.easy_epochs > 0:
        easy_set = load_set(easy_root, args.low_res, args.threads)
        stages.append(("easy", easy_set, "lo", args.low_res, args.easy_epochs))
    stages += [("main", train_set, "lo", args.low_res, args.low_epochs),
               ("main", train_set, "hi", SIZE, args.high_epochs)]
    t_data = time.time() - t_start

    model, history, t_train, cpu_train = train(args, stages, val_set, len(classes))

    # Evaluate exactly what is saved: float16 weights in a fixed-size (non-dynamic) timm model.
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    final = make_model(args, len(classes), dynamic=False)
    final.load_state_dict({k: v.float() for k, v in state.items()})
    final.eval()
    val_acc, preds = evaluate(final, val_set["hi"], val_set["labels"])
    per_class = {c: float((preds[val_set["labels"] == k] == k).mean()) for k, c in enumerate(classes)}
    log(f"held-out accuracy ({len(preds)} pictures, seed {args.val_seed}, 224px, f16 weights): "
        f"{val_acc:.4f}")
    for c, a in per_class.items():
        log(f"  {c:<10} {a:.3f}")
    has_d = np.array([len(a["objects"]) > 1 for a in val_set["anns"]])
    acc_d = float((preds[has_d] == val_set["labels"][has_d]).mean())
    acc_nod = float((preds[~has_d] == val_set["labels"][~has_d]).mean())
    log(f"  with a distractor {acc_d:.4f} ({has_d.sum()}), without {acc_nod:.4f}")

    log("AGCAM sanity check")
    t = time.time()
    loc = localization_check(final, val_set, args.cam_images, args.cam_distractor_images)
    log(json.dumps(loc, indent=1))
    log(f"  in {time.time() - t:.0f} s")

    report = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "torch": torch.__version__,
        "params": sum(p.numel() for p in final.parameters()),
        "data_prep_s": t_data,
        "train_s": t_train,
        "train_cpu_s": cpu_train,
        "synth_commands": {k: " ".join(["agcam", *v[1:]]) for k, v in commands.items()},
        "total_s": time.time() - t_start,
        "held_out_accuracy": val_acc,
        "held_out_count": int(len(preds)),
        "held_out_accuracy_with_distractor": acc_d,
        "held_out_accuracy_without_distractor": acc_nod,
        "held_out_per_class": per_class,
        "history": history,
        "agcam_localization": loc,
    }
    if args.no_save:
        log(json.dumps({k: v for k, v in report.items() if k != "history"}, indent=1))
        return
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "demo.safetensors"), metadata={"format": "pt"})
    (out / "demo.json").write_text(json.dumps(hub_config(args, classes), indent=2) + "\n")
    samples = out / "samples"
    if samples.exists():
        shutil.rmtree(samples)
    (samples / "annotations").mkdir(parents=True)
    chosen = pick_samples(val_set, preds)
    for i in chosen:
        sid = val_set["ids"][i]
        shutil.copy(val_root / "JPEGImages" / f"{sid}.png", samples / f"{sid}.png")
        shutil.copy(val_root / "Annotations" / f"{sid}.xml", samples / "annotations" / f"{sid}.xml")
    report["samples"] = [{"id": val_set["ids"][i], "class": classes[val_set["labels"][i]],
                          "size": [val_set["anns"][i]["width"], val_set["anns"][i]["height"]],
                          "distractor": len(val_set["anns"][i]["objects"]) > 1} for i in chosen]
    report["total_s"] = time.time() - t_start
    (out / "train_report.json").write_text(json.dumps(report, indent=1) + "\n")
    log(f"wrote {out}/demo.safetensors, demo.json, train_report.json, samples/ "
        f"(total {report['total_s'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
