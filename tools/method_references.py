"""Float64 PyTorch references for the methods AGCAM is compared with (docs/method.md §6).

* `generic_attention`: Chefer, Gur & Wolf, "Generic Attention-model Explainability for
  Interpreting Bi-Modal and Encoder-Decoder Transformers", ICCV 2021, self-attention rule.
* `grad_cam` / `grad_cam_closed_form`: Grad-CAM as pytorch-grad-cam's ViT recipe applies it (the
  last block's norm1 output at the patch tokens), by autograd and by the closed form the GPU is
  to implement.
* `transformer_attribution`: Chefer, Gur & Wolf, "Transformer Interpretability Beyond Attention
  Visualization", CVPR 2021: LRP with the rules of the authors' public code
  (hila-chefer/Transformer-Explainability, baselines/ViT/ViT_LRP.py and modules/layers_ours.py),
  times attention gradients, rolled out.

Every method works on a stock timm `VisionTransformer` (method.md §1, checked by
`check_supported`), batched, for one or several target classes per image: `classes` is a [B, K]
tensor or an int K meaning the top-K classes by logit, as in agcam_reference.py. Each returns a
`MethodMaps` whose `maps` are raw [B, K, gh, gw] grids over the patch tokens (no normalisation).

Run `python3 tools/method_references.py` for the self-check on a small random model.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agcam_reference import (
    _explicit_attention,
    _gelu_grad,
    _layer_norm_backward,
    _resolve_classes,
    _split_qkv,
    check_supported,
    randomize_for_testing,
)


@dataclass
class MethodMaps:
    """A method's output. Shapes: B images, K class slots, L layers, N = 1 + gh*gw tokens."""

    logits: torch.Tensor  # [B, C] raw logits
    classes: torch.Tensor  # [B, K] int64, the explained classes
    maps: torch.Tensor  # [B, K, gh, gw] raw grids
    relevance: torch.Tensor | None = None  # [B, K, N, N] the rolled-out token relevance
    conservation: torch.Tensor | None = None  # [L + 1, B, K] LRP relevance sum at each block input


def _slot_gradients(logits: torch.Tensor, classes: torch.Tensor, wrt: list) -> list:
    """For each class slot j, d(sum_b logits[b, classes[b, j]]) / d each tensor of `wrt`.

    Images in a batch are independent, so one backward per slot gives every image its own
    gradient. A tensor the logits do not depend on gets zeros, not None.
    """
    grads = []
    for j in range(classes.shape[1]):
        target = logits.gather(1, classes[:, j : j + 1]).sum()
        g = torch.autograd.grad(target, wrt, retain_graph=True, allow_unused=True)
        grads.append([torch.zeros_like(t) if gt is None else gt
                      for gt, t in zip(g, wrt, strict=True)])
    return grads


def _rollout(per_layer: list, start_layer: int = 0) -> torch.Tensor:
    """(I + M_{L-1}) ... (I + M_start) for per-layer token matrices M [..., N, N].

    This is generic attention's R <- R + M R from R = I, and the authors'
    `compute_rollout_attention` of ViT_LRP.py (which does not renormalise rows) for
    transformer attribution.
    """
    eye = torch.eye(per_layer[0].shape[-1], dtype=per_layer[0].dtype, device=per_layer[0].device)
    joint = per_layer[start_layer] + eye
    for m in per_layer[start_layer + 1 :]:
        joint = (m + eye) @ joint
    return joint


def _grid(model: VisionTransformer, rows: torch.Tensor) -> torch.Tensor:
    """[B, K, gh, gw] from per-token values [B, K, N]: the CLS column is dropped."""
    gh, gw = model.patch_embed.grid_size
    return rows[..., 1:].reshape(rows.shape[:2] + (gh, gw))


# --- generic attention (ICCV 2021) -------------------------------------------------------------


def generic_attention(model: VisionTransformer, x: torch.Tensor,
                      classes: torch.Tensor | int = 1) -> MethodMaps:
    """Chefer et al. ICCV 2021, self-attention rule (their eq. 5-6, no LRP).

    R = I; for each block in forward order, Ā = mean over heads of max(0, ∇A ⊙ A) with
    ∇A = ∂logit_c/∂A through the whole network (no detach, unlike AGCAM); R <- R + Ā R.
    Map = R[CLS, patch tokens]: `generate_relevance` of the authors' ViT notebook
    (hila-chefer/Transformer-MM-Explainability). Class-token pooling only: the map is the class
    token's row, which reaches no logit in an average-pooled model.
    """
    check_supported(model)
    record: list = []
    with torch.enable_grad(), _explicit_attention(model, record, detach_input=False):
        logits = model(x)
        classes = _resolve_classes(logits, classes)
        probs = [a for _, a in record]
        slots = _slot_gradients(logits, classes, probs)
    relevance = torch.stack([
        _rollout([(g * a).clamp(min=0).mean(dim=1) for g, a in zip(grads, probs, strict=True)])
        for grads in slots
    ], dim=1).detach()  # [B, K, N, N]
    return MethodMaps(logits.detach(), classes, _grid(model, relevance[:, :, 0]), relevance)


# --- Grad-CAM (pytorch-grad-cam's ViT recipe) ---------------------------------------------------


def grad_cam(model: VisionTransformer, x: torch.Tensor,
             classes: torch.Tensor | int = 1) -> MethodMaps:
    """Grad-CAM with pytorch-grad-cam's ViT recipe, by autograd on the stock model.

    Activations X = output of `blocks[-1].norm1` at the patch tokens (the recipe's
    reshape_transform drops the class token); weights w = mean over patch tokens of ∂logit_c/∂X;
    map = ReLU(X w). No min-max scaling or resizing: those are the caller's, as for AGCAM.
    Average-pooled models are accepted: Grad-CAM does not depend on the pooling.
    """
    check_supported(model, allow_avg=True)
    captured = []
    handle = model.blocks[-1].norm1.register_forward_hook(lambda m, i, out: captured.append(out))
    try:
        with torch.enable_grad():
            logits = model(x)
            classes = _resolve_classes(logits, classes)
            slots = _slot_gradients(logits, classes, captured)
    finally:
        handle.remove()
    acts = captured[0].detach()[:, 1:]  # [B, P, D]
    weights = torch.stack([g[0][:, 1:].mean(dim=1) for g in slots], dim=1)  # [B, K, D]
    cam = F.relu(torch.einsum("bkd,bpd->bkp", weights, acts))
    gh, gw = model.patch_embed.grid_size
    return MethodMaps(logits.detach(), classes, cam.reshape(cam.shape[:2] + (gh, gw)))


@torch.inference_mode()
def grad_cam_closed_form(model: VisionTransformer, x: torch.Tensor,
                         classes: torch.Tensor | int = 1) -> MethodMaps:
    """`grad_cam` without autograd: the closed form of method.md §6.2 that the GPU implements.

    With class-token pooling the logits see the last block only through its class token, whose
    query is the only query there. So the norm1 output X of a patch token j reaches the logit only
    through its key k_j and value v_j, and the mean over patch tokens of ∂logit/∂X_j reduces to
    two [D]-vectors pushed back through W_k and W_v, using that softmax-backward rows sum to zero.
    """
    check_supported(model)
    tokens = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
    for blk in model.blocks[:-1]:
        tokens = blk(tokens)
    blk = model.blocks[-1]
    attn = blk.attn
    b, n, dim = tokens.shape
    acts = blk.norm1(tokens)  # X of all tokens [B, N, D]
    q, k, v = _split_qkv(attn, acts)  # [B, H, N, d]
    q_cls = q[:, :, 0]  # [B, H, d]
    a = (torch.einsum("bhd,bhnd->bhn", q_cls, k) * attn.scale).softmax(dim=-1)  # CLS row of A
    ctx = torch.einsum("bhn,bhnd->bhd", a, v).reshape(b, 1, dim)
    y = tokens[:, :1] + blk.ls1(attn.proj(ctx))  # [B, 1, D] CLS after the attention residual
    out = y + blk.ls2(blk.mlp(blk.norm2(y)))
    logits = model.head(model.norm(out[:, 0]))
    classes = _resolve_classes(logits, classes)

    # ∂logit/∂y at the class token, as in agcam_reference.agcam_shortcut's last step.
    g = _layer_norm_backward(model.norm, out, model.head.weight[classes])  # [B, K, D]
    hidden = blk.mlp.fc1(blk.norm2(y))
    g_hidden = (blk.ls2(g) @ blk.mlp.fc2.weight) * _gelu_grad(hidden)
    g_y = g + _layer_norm_backward(blk.norm2, y, g_hidden @ blk.mlp.fc1.weight)
    d_ctx = (blk.ls1(g_y) @ attn.proj.weight).unflatten(-1, (attn.num_heads, attn.head_dim))
    d_a = torch.einsum("bkhd,bhnd->bkhn", d_ctx, v)  # ∂logit/∂A[CLS, :] per head
    a_k = a.unsqueeze(1)  # [B, 1, H, N]
    d_s = a_k * (d_a - (a_k * d_a).sum(dim=-1, keepdim=True))  # softmax backward
    # Per token: dk_j = d_s[j] * scale * q_cls, dv_j = a[j] * d_ctx. Summed over the patch tokens
    # j >= 1: sum d_s[j] = -d_s[0] (softmax-backward rows sum to 0), sum a[j] = 1 - a[0].
    sum_dk = (-d_s[..., 0:1] * attn.scale) * q_cls.unsqueeze(1)  # [B, K, H, d]
    sum_dv = (1.0 - a_k[..., 0:1]) * d_ctx  # [B, K, H, d]
    w_k = attn.qkv.weight[dim : 2 * dim]
    w_v = attn.qkv.weight[2 * dim :]
    patches = n - 1
    weights = (sum_dk.flatten(-2) @ w_k + sum_dv.flatten(-2) @ w_v) / patches  # [B, K, D]
    cam = F.relu(torch.einsum("bkd,bpd->bkp", weights, acts[:, 1:]))
    gh, gw = model.patch_embed.grid_size
    return MethodMaps(logits, classes, cam.reshape(cam.shape[:2] + (gh, gw)))


# --- transformer attribution (CVPR 2021) --------------------------------------------------------
# The LRP rules below mirror modules/layers_ours.py and baselines/ViT/ViT_LRP.py of
# hila-chefer/Transformer-Explainability as called by ViT_explanation_generator.LRP.generate_LRP
# (alpha = 1). method.md §6.3 lists each with the class it mirrors.


def _safe_divide(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """layers_ours.safe_divide: a / (b + 1e-9), and 0 where b == 0.

    Their denominator `b.clamp(min=1e-9) + b.clamp(max=1e-9)` is b + 1e-9 for every b: an
    unsigned epsilon, not the sign(b)·ε of textbook LRP-ε. Kept as is to match their numbers.
    """
    den = b + 1e-9
    den = den + (den == 0).to(den.dtype) * 1e-9
    return a / den * (b != 0).to(b.dtype)


def _lrp_linear(linear: nn.Linear, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """layers_ours.Linear.relprop with alpha = 1, beta = 0: the z+ rule, bias ignored.

    Positive contributions are x+ w+ and x- w-; each input gets its share of every output's
    relevance. Conserves relevance except at outputs with no positive contribution.
    """
    pw, nw = linear.weight.clamp(min=0), linear.weight.clamp(max=0)
    px, nx = x.clamp(min=0), x.clamp(max=0)
    s = _safe_divide(r, px @ pw.T + nx @ nw.T)
    return px * (s @ pw) + nx * (s @ nw)


def _lrp_matmul(a: torch.Tensor, b: torch.Tensor, r: torch.Tensor):
    """layers_ours.einsum.relprop for Z = a @ b: gradient × input, each operand getting all of
    R (so the sum doubles); the caller halves both, as ViT_LRP.Attention.relprop does."""
    s = _safe_divide(r, a @ b)
    return a * (s @ b.transpose(-2, -1)), b * (a.transpose(-2, -1) @ s)


def _lrp_add(x1: torch.Tensor, x2: torch.Tensor, r: torch.Tensor):
    """layers_ours.Add.relprop for x1 + x2: gradient × input, then each part rescaled so that
    the two totals split R's total in proportion to their absolute sums.

    The authors' sums run over the whole tensor, batch included; here over each image (and class
    slot), which is the same at batch 1, their only batch size.
    """
    s = _safe_divide(r, x1 + x2)
    r1, r2 = x1 * s, x2 * s
    dims = tuple(range(1, r.dim()))
    s1, s2 = r1.sum(dim=dims, keepdim=True), r2.sum(dim=dims, keepdim=True)
    total = r.sum(dim=dims, keepdim=True)
    f1 = _safe_divide(s1.abs(), s1.abs() + s2.abs()) * total
    f2 = _safe_divide(s2.abs(), s1.abs() + s2.abs()) * total
    return r1 * _safe_divide(f1, s1), r2 * _safe_divide(f2, s2)


def _lrp_clone(x: torch.Tensor, r1: torch.Tensor, r2: torch.Tensor) -> torch.Tensor:
    """layers_ours.Clone.relprop: x · (r1/x + r2/x), i.e. r1 + r2 up to the 1e-9 epsilon."""
    return x * (_safe_divide(r1, x) + _safe_divide(r2, x))


@dataclass
class _BlockActs:
    """What the LRP pass needs of one block's forward (all detached)."""

    x: torch.Tensor  # block input [B, N, D]
    u: torch.Tensor  # norm1 output
    q: torch.Tensor  # [B, H, N, d]
    k: torch.Tensor
    v: torch.Tensor
    a: torch.Tensor  # post-softmax attention [B, H, N, N]
    ctx: torch.Tensor  # merged heads A v, the proj input [B, N, D]
    branch: torch.Tensor  # ls1(proj(ctx))
    y: torch.Tensor  # x + branch
    h: torch.Tensor  # norm2(y)
    act: torch.Tensor  # GELU(fc1(h)), the fc2 input
    mlp: torch.Tensor  # ls2(fc2(act))


def _recorded_forward(model: VisionTransformer, x: torch.Tensor):
    """The timm forward written out, keeping every activation the LRP rules read.

    Returns (logits, final CLS features [B, D], per-block activations, attention tensors still in
    the autograd graph for ∂logit/∂A). The self-check compares these logits with model(x).
    """
    tokens = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
    acts, probs = [], []
    for blk in model.blocks:
        attn = blk.attn
        b, n, dim = tokens.shape
        u = blk.norm1(tokens)
        q, k, v = _split_qkv(attn, u)
        a = ((q @ k.transpose(-2, -1)) * attn.scale).softmax(dim=-1)
        ctx = (a @ v).transpose(1, 2).reshape(b, n, dim)
        branch = blk.ls1(attn.proj(ctx))
        y = tokens + branch
        h = blk.norm2(y)
        act = blk.mlp.act(blk.mlp.fc1(h))
        mlp = blk.ls2(blk.mlp.fc2(act))
        acts.append(_BlockActs(*(t.detach() for t in (tokens, u, q, k, v, a, ctx, branch, y, h,
                                                      act, mlp))))
        probs.append(a)
        tokens = y + mlp
    final = model.norm(tokens[:, 0])
    return model.head(final), final.detach(), acts, probs


def _lrp_block(blk, t: _BlockActs, r: torch.Tensor):
    """ViT_LRP.Block.relprop: relevance at the block output [B, N, D] -> at its input.

    Also returns the attention relevance `attn_cam` [B, H, N, N] that transformer attribution
    weighs. LayerNorm, GELU, softmax and dropout pass relevance through unchanged, as the authors'
    `RelProp` base class does; timm's layer scale (absent from their model) is treated the same
    way, being an elementwise scale like LayerNorm's affine part.
    """
    attn = blk.attn
    r_res, r_mlp = _lrp_add(t.y, t.mlp, r)
    r_h = _lrp_linear(blk.mlp.fc1, t.h, _lrp_linear(blk.mlp.fc2, t.act, r_mlp))
    r = _lrp_clone(t.y, r_res, r_h)

    r_res, r_branch = _lrp_add(t.x, t.branch, r)
    r_ctx = _lrp_linear(attn.proj, t.ctx, r_branch)
    r_ctx = r_ctx.unflatten(-1, (attn.num_heads, attn.head_dim)).transpose(1, 2)  # [B, H, N, d]
    attn_cam, r_v = _lrp_matmul(t.a, t.v, r_ctx)
    attn_cam, r_v = attn_cam / 2, r_v / 2
    # Softmax passes relevance through; Z = q k^T without the scale, which cancels in the ratios.
    r_q, r_kt = _lrp_matmul(t.q, t.k.transpose(-2, -1), attn_cam)
    r_q, r_k = r_q / 2, r_kt.transpose(-2, -1) / 2
    r_qkv = torch.stack([r_q, r_k, r_v], dim=2)  # [B, H, 3, N, d] -> timm's (3, H, d) layout
    r_qkv = r_qkv.permute(0, 3, 2, 1, 4).flatten(2)
    r_u = _lrp_linear(attn.qkv, t.u, r_qkv)
    return _lrp_clone(t.x, r_res, r_u), attn_cam


def transformer_attribution(model: VisionTransformer, x: torch.Tensor,
                            classes: torch.Tensor | int = 1, start_layer: int = 0) -> MethodMaps:
    """Chefer et al. CVPR 2021 as their `LRP.generate_LRP(method="transformer_attribution")`.

    LRP from relevance one-hot(c) at the logits (not one-hot × logit: their `relprop` gets the
    bare one-hot vector) down through every block, keeping each block's attention relevance
    R_A (after the halving at A·V). Per block Ā = mean over heads of max(0, ∇A ⊙ R_A), ∇A the
    full gradient of logit c; then Ā's rolled out with identity, rows not renormalised, from
    `start_layer`: their default 0 is what AGCAM's authors ran; their own ImageNet segmentation
    and perturbation scripts pass start_layer=1. Map = rollout[CLS, patch tokens].
    Class-token pooling only (the relevance starts at the class token).
    """
    check_supported(model)
    if not 0 <= start_layer < len(model.blocks):
        raise ValueError(f"start_layer {start_layer} outside 0..{len(model.blocks) - 1}")
    with torch.enable_grad():
        logits, final, acts, probs = _recorded_forward(model, x)
        classes = _resolve_classes(logits, classes)
        slots = _slot_gradients(logits, classes, probs)
    relevance, sums = [], []
    with torch.no_grad():
        for j, grads in enumerate(slots):
            r = F.one_hot(classes[:, j], logits.shape[1]).to(logits.dtype)
            r_cls = _lrp_linear(model.head, final, r)
            # IndexSelect.relprop puts it on the class token (x·r/x); the final norm passes it on.
            r = torch.zeros_like(acts[-1].x)
            r[:, 0] = final * _safe_divide(r_cls, final)
            per_layer = [None] * len(acts)
            slot_sums = [r.sum(dim=(1, 2))]
            for i in reversed(range(len(acts))):
                r, attn_cam = _lrp_block(model.blocks[i], acts[i], r)
                per_layer[i] = (grads[i].detach() * attn_cam).clamp(min=0).mean(dim=1)
                slot_sums.append(r.sum(dim=(1, 2)))
            relevance.append(_rollout(per_layer, start_layer))
            sums.append(torch.stack(slot_sums))
    relevance = torch.stack(relevance, dim=1)  # [B, K, N, N]
    return MethodMaps(logits.detach(), classes, _grid(model, relevance[:, :, 0]), relevance,
                      torch.stack(sums, dim=-1))  # [L + 1, B, K], output side first


# --- self-check ---------------------------------------------------------------------------------


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item() / b.abs().max().item()


def _small_model(global_pool: str = "token") -> VisionTransformer:
    """Depth 3, D 48, 3 heads, 32×48 input in 16-px patches: an odd 2×3 grid; layer scale and qkv
    bias on, so every term of method.md §1 is exercised."""
    model = VisionTransformer(img_size=(32, 48), patch_size=16, embed_dim=48, depth=3,
                              num_heads=3, mlp_ratio=2.5, num_classes=7, init_values=0.5,
                              global_pool=global_pool).eval()
    randomize_for_testing(model, torch.Generator().manual_seed(5))
    return model.double()


def _self_check(force_timings: bool = False) -> None:
    model = _small_model()
    x = torch.randn(3, 3, 32, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    n = 1 + 2 * 3

    # Grad-CAM: closed form == autograd.
    ref = grad_cam(model, x, classes=3)
    closed = grad_cam_closed_form(model, x, classes=3)
    err = _rel_err(closed.maps, ref.maps)
    print(f"grad-cam closed form vs autograd (B=3, K=3): max|map| "
          f"{ref.maps.abs().max().item():.4g}, relative err {err:.3g}")
    assert torch.equal(closed.classes, ref.classes) and err <= 1e-10
    assert ref.maps.shape == (3, 3, 2, 3) and (ref.maps >= 0).all()
    assert (ref.maps > 0).any(), "grad-cam maps all zero: the check would prove nothing"

    # Generic attention: R = prod (I + Ā) with Ā >= 0, so R >= I elementwise; compared with the
    # literal recursion R <- R + Ā R written independently here.
    ga = generic_attention(model, x, classes=ref.classes)
    assert ga.maps.shape == (3, 3, 2, 3) and ga.relevance.shape == (3, 3, n, n)
    eye = torch.eye(n, dtype=torch.float64)
    assert (ga.relevance - eye >= -1e-15).all(), "R >= I violated"
    assert (ga.relevance.diagonal(dim1=-2, dim2=-1) >= 1).all()
    row_sums = ga.relevance.sum(dim=-1)
    assert (row_sums >= 1).all()
    record: list = []
    with torch.enable_grad(), _explicit_attention(model, record, detach_input=False):
        logits = model(x)
        target = logits.gather(1, ga.classes[:, :1]).sum()
        grads = torch.autograd.grad(target, [a for _, a in record])
    r = eye.expand(3, n, n)
    for g, (_, a) in zip(grads, record, strict=True):
        a_bar = (g * a).clamp(min=0).mean(dim=1)
        r = r + a_bar @ r
    err = _rel_err(ga.relevance[:, 0], r.detach())
    print(f"generic attention: R >= I, diag >= 1, row sums in [{row_sums.min().item():.4g}, "
          f"{row_sums.max().item():.4g}]; vs literal recursion {err:.3g}")
    assert err <= 1e-12
    detached = torch.stack([g.detach() for g in grads])
    assert (detached != 0).any()

    # Transformer attribution.
    ta = transformer_attribution(model, x, classes=ref.classes)
    with torch.no_grad():
        logits2, *_ = _recorded_forward(model, x)
        direct = model(x)
    print(f"recorded forward vs model(x): logits err {(logits2 - direct).abs().max().item():.3g}")
    assert (logits2 - direct).abs().max().item() <= 1e-12
    assert ta.maps.shape == (3, 3, 2, 3) and ta.conservation.shape == (4, 3, 3)
    drift = (ta.conservation - 1).abs().max().item()
    print(f"transformer attribution: LRP relevance sum at each block input vs the 1 it starts "
          f"with: max drift "
          f"{drift:.3g}; map range [{ta.maps.min().item():.4g}, {ta.maps.max().item():.4g}]")
    assert drift <= 1e-6, "LRP relevance not conserved"
    assert (ta.relevance - eye >= -1e-15).all()
    ta1 = transformer_attribution(model, x, classes=ref.classes, start_layer=1)
    assert not torch.equal(ta1.maps, ta.maps)

    # Batch independence and several classes: image 1 alone, its second class, equals the batch.
    for fn in (generic_attention, grad_cam, grad_cam_closed_form, transformer_attribution):
        one = fn(model, x[1:2], classes=ref.classes[1:2, 1:2])
        err = _rel_err(one.maps[0, 0], fn(model, x, classes=ref.classes).maps[1, 1])
        assert err <= 1e-12, f"{fn.__name__}: batch element differs alone ({err:.3g})"
        again = fn(model, x[1:2], classes=ref.classes[1:2, 1:2])
        assert torch.equal(again.maps, one.maps), f"{fn.__name__} is not deterministic"
    print("batched = one image at a time, several classes, deterministic: OK")

    # Average pooling: only Grad-CAM (autograd) is defined; the others refuse.
    avg = _small_model("avg")
    cam = grad_cam(avg, x, classes=2).maps
    assert cam.shape == (3, 2, 2, 3) and (cam > 0).any()
    for fn in (generic_attention, grad_cam_closed_form, transformer_attribution):
        try:
            fn(avg, x)
        except ValueError:
            continue
        raise AssertionError(f"{fn.__name__} accepted an average-pooled model")
    print("average pooling: grad-cam by autograd works; the class-token methods refuse it")

    _timings(force_timings)
    print("self-check PASS")


def _timings(force: bool, budget_s: float = 30.0) -> None:
    """Each method on random-init vit_base_patch16_224 at batch 1, float64.

    On CPU the methods took about 1 (each Grad-CAM), 3 (generic attention) and 13 (transformer
    attribution) forwards, so they run only when that predicts under `budget_s`, or with
    `--timings`.
    """
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_base_patch16_224", pretrained=False).eval().double()
    x = torch.randn(1, 3, 224, 224, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    with torch.inference_mode():
        model(x)
    forward = time.perf_counter() - start
    print(f"vit_base_patch16_224, float64, batch 1, {torch.get_num_threads()} threads: "
          f"forward {forward:.2f} s")
    predicted = forward * (1 + 1 + 3 + 13)
    if predicted > budget_s and not force:
        print(f"  method timings skipped: about {predicted:.0f} s predicted (> {budget_s:.0f} s); "
              "run with --timings for them")
        return
    for fn in (grad_cam_closed_form, grad_cam, generic_attention, transformer_attribution):
        t0 = time.perf_counter()
        fn(model, x)
        took = time.perf_counter() - t0
        print(f"  {fn.__name__}: {took:.2f} s ({took / forward:.1f} forwards)")


if __name__ == "__main__":
    _self_check("--timings" in sys.argv[1:])
