"""PyTorch references for Attention-Guided CAM (AGCAM) on timm Vision Transformers.

Three independent ways to compute the map of docs/method.md §2, kept side by side so that each
checks the others:

* `agcam_autograd`: the definition, by autograd. Every attention block sees a detached input and
  computes its attention explicitly (timm's fused SDPA never materialises the attention matrix);
  the raw logit of each requested class is differentiated with respect to every post-softmax
  attention A_k. This is what the golden fixtures are made of, so that they test the cheap
  CLS-only backward the engine implements rather than restate it.
* `agcam_shortcut`: that CLS-only backward of method.md §2, written out by hand (one forward,
  then a chain of small matrix products per layer). The self-check below shows it equals
  autograd; the benchmark uses it as the fastest PyTorch with the same semantics.
* `authors_style_explain`: batch 1, fp32, module hooks and a full `loss.backward()`, the way the
  authors' public code runs. It is the baseline the benchmark compares against.

Run `python3 tools/agcam_reference.py` for the self-check on a small random model.
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import Attention, LayerScale, Mlp
from timm.models.vision_transformer import Block, VisionTransformer


@dataclass
class AgcamTrace:
    """Everything the autograd reference computes, for fixtures and debugging.

    Shapes: B images, K class slots, L layers, H heads, N = 1 + gh*gw tokens.
    """

    logits: torch.Tensor  # [B, C] raw logits
    classes: torch.Tensor  # [B, K] int64, the explained classes
    maps: torch.Tensor  # [B, K, gh, gw] raw AGCAM grids
    cls_scores: torch.Tensor  # [L, B, H, N] CLS query row of the pre-softmax scores S_k
    cls_grads: torch.Tensor  # [K, L, B, H, N] CLS row of d logit[class slot] / d A_k


def check_supported(model: nn.Module, allow_avg: bool = False) -> None:
    """Raise ValueError unless `model` is exactly the architecture of method.md §1.

    The references (and the engine) assume class-token pooling through the final LayerNorm, plain
    pre-norm blocks with optional layer scale and qkv bias, unnormalised q/k and an erf-GELU MLP.
    timm's `no_embed_class` (DeiT III: the class token gets no position embedding) is the same
    model with a zero class position. With `allow_avg` (autograd only: the shortcut is
    class-token only), timm's average pooling of the patch tokens through `fc_norm` is accepted
    too. Anything else would silently give a different map, so it is refused here instead.
    """
    problems = []
    if not isinstance(model, VisionTransformer):
        problems.append(f"not a timm VisionTransformer: {type(model).__name__}")
    else:
        avg = allow_avg and model.global_pool == "avg"
        if model.cls_token is None:
            problems.append("no class token")
        if model.global_pool != "token" and not avg:
            problems.append(f"global_pool={model.global_pool!r}: class-token pooling needed")
        if avg and (model.pool_include_prefix or not isinstance(model.fc_norm, nn.LayerNorm)
                    or not isinstance(model.norm, nn.Identity)):
            problems.append("average pooling other than timm's default (fc_norm, prefix excluded)")
        if model.num_prefix_tokens != 1:
            problems.append(f"{model.num_prefix_tokens} prefix tokens (register tokens?)")
        if model.attn_pool is not None:
            problems.append("attention pooling head")
        for name in ("norm_pre", "head_drop") + (() if avg else ("fc_norm",)):
            if not isinstance(getattr(model, name), (nn.Identity, nn.Dropout)):
                problems.append(f"{name} is {type(getattr(model, name)).__name__}")
        final = model.fc_norm if avg else model.norm
        if not isinstance(final, nn.LayerNorm) or final.eps != 1e-6:
            problems.append("final norm is not LayerNorm(eps=1e-6)")
        for i, blk in enumerate(model.blocks):
            attn = getattr(blk, "attn", None)
            mlp = getattr(blk, "mlp", None)
            if type(blk) is not Block or type(attn) is not Attention or type(mlp) is not Mlp:
                problems.append(f"block {i} is not a plain timm Block/Attention/Mlp")
                continue
            if not all(isinstance(m, nn.Identity) for m in (attn.q_norm, attn.k_norm, attn.norm)):
                problems.append(f"block {i}: q/k/scale norm present")
            if getattr(attn, "gate", None) is not None:
                problems.append(f"block {i}: gated attention")
            if not isinstance(mlp.act, nn.GELU) or mlp.act.approximate != "none":
                problems.append(f"block {i}: MLP activation is not erf GELU")
            if not isinstance(mlp.norm, nn.Identity):
                problems.append(f"block {i}: MLP norm present")
            for ln in (blk.norm1, blk.norm2):
                if not isinstance(ln, nn.LayerNorm) or ln.eps != 1e-6:
                    problems.append(f"block {i}: norm is not LayerNorm(eps=1e-6)")
    if problems:
        raise ValueError("unsupported model for AGCAM: " + "; ".join(problems))


def _resolve_classes(logits: torch.Tensor, classes: torch.Tensor | int) -> torch.Tensor:
    """[B, K] int64 class indices: given explicitly, or the top-`classes` by logit, descending."""
    if isinstance(classes, int):
        return logits.topk(classes, dim=-1).indices
    classes = torch.as_tensor(classes, dtype=torch.long, device=logits.device)
    if classes.shape[0] != logits.shape[0] or classes.dim() != 2:
        raise ValueError(f"classes must be [B, K], got {tuple(classes.shape)}")
    return classes


def _split_qkv(attn: Attention, x: torch.Tensor):
    """q, k, v as [B, H, N, d] from the block's attention input x [B, N, D]."""
    b, n, _ = x.shape
    qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    return qkv.unbind(0)


@contextlib.contextmanager
def _explicit_attention(model: VisionTransformer, record: list, detach_input: bool):
    """Temporarily replace every attention forward by an explicit one that records (S_k, A_k).

    S = q k^T * d^-0.5 and A = softmax(S) are computed as method.md writes them, so A_k exists as a
    tensor autograd can differentiate with respect to. With `detach_input` the block's attention
    input is cut from the graph, the authors' `x = x.detach()`.
    """

    def forward(attn: Attention, x: torch.Tensor, attn_mask=None, is_causal=False):
        if attn_mask is not None or is_causal:
            raise ValueError("attention masks are not part of AGCAM")
        if detach_input:
            x = x.detach()
        q, k, v = _split_qkv(attn, x)
        scores = (q @ k.transpose(-2, -1)) * attn.scale
        probs = scores.softmax(dim=-1)
        if not probs.requires_grad:  # parameters frozen and input detached: make A_k a leaf
            probs.requires_grad_(True)
        record.append((scores, probs))
        out = (probs @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], attn.attn_dim)
        return attn.proj(out)

    attns = [blk.attn for blk in model.blocks]
    for attn in attns:
        attn.forward = forward.__get__(attn)
    try:
        yield
    finally:
        for attn in attns:
            del attn.forward


def agcam_autograd(
    model: VisionTransformer,
    x: torch.Tensor,
    classes: torch.Tensor | int = 1,
    detach_attention_input: bool = True,
) -> AgcamTrace:
    """AGCAM by its definition (method.md §2), differentiating with autograd.

    `classes` is a [B, K] tensor of class indices, or an int K meaning the top-K classes by logit
    (K = 1: the predicted class). Images in a batch are independent, so for class slot j the
    gradient of sum_b logits[b, classes[b, j]] gives every image its own gradient in one backward.
    Works in any dtype; the fixtures use float64. `detach_attention_input=False` drops the
    authors' detach, only to measure how much it matters. Average-pooled models (timm
    `global_pool="avg"`) are accepted: autograd needs nothing special for them.
    """
    check_supported(model, allow_avg=True)
    record: list = []
    with torch.enable_grad(), _explicit_attention(model, record, detach_attention_input):
        return _trace(model(x), record, classes, model.patch_embed.grid_size)


def _trace(logits: torch.Tensor, record: list, classes, grid) -> AgcamTrace:
    """The AGCAM maps from a forward's logits and the recorded (S_k, A_k) of every layer."""
    classes = _resolve_classes(logits, classes)
    scores = torch.stack([s[:, :, 0, :] for s, _ in record]).detach()  # [L, B, H, N]
    probs = [a for _, a in record]
    grads = []
    for j in range(classes.shape[1]):
        target = logits.gather(1, classes[:, j : j + 1]).sum()
        g = torch.autograd.grad(target, probs, retain_graph=j + 1 < classes.shape[1],
                                allow_unused=True)
        # With average pooling the class token reaches no logit, so a last-layer A_k can be
        # unused: its gradient is zero.
        g = [torch.zeros_like(a) if gk is None else gk for gk, a in zip(g, probs)]
        grads.append(torch.stack([gk[:, :, 0, :] for gk in g]))  # [L, B, H, N]
    cls_grads = torch.stack(grads)  # [K, L, B, H, N]
    cam = (F.relu(cls_grads) * torch.sigmoid(scores)).sum(dim=(1, 3))  # [K, B, N]
    gh, gw = grid
    maps = cam[:, :, 1:].transpose(0, 1).reshape(logits.shape[0], classes.shape[1], gh, gw)
    return AgcamTrace(logits.detach(), classes, maps, scores, cls_grads)


def check_supported_hf(model: nn.Module) -> None:
    """Raise ValueError unless `model` is a transformers ViTForImageClassification that computes
    method.md §1 (erf GELU, class-token classifier, no pooler)."""
    from transformers import ViTForImageClassification

    problems = []
    if not isinstance(model, ViTForImageClassification):
        problems.append(f"not a ViTForImageClassification: {type(model).__name__}")
    else:
        cfg = model.config
        if cfg.hidden_act != "gelu":
            problems.append(f"hidden_act={cfg.hidden_act!r}: erf GELU needed")
        if model.vit.pooler is not None:
            problems.append("pooler present")
        for i, layer in enumerate(model.vit.layers):
            if not all(hasattr(layer.attention, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj")):
                problems.append(f"layer {i}: attention module of an unknown transformers version")
    if problems:
        raise ValueError("unsupported model for AGCAM: " + "; ".join(problems))


@contextlib.contextmanager
def _explicit_attention_hf(model, record: list, detach_input: bool):
    """`_explicit_attention` for transformers' ViT (v5 module layout: `attention.q_proj`, ...).

    The attention module's input is `layernorm_before(x)`, the same point timm's `attn` sees, so
    detaching it is the authors' detach.
    """

    def forward(attn, hidden_states, attention_mask=None, **kwargs):
        if attention_mask is not None:
            raise ValueError("attention masks are not part of AGCAM")
        x = hidden_states.detach() if detach_input else hidden_states
        b, n, _ = x.shape
        q, k, v = (proj(x).view(b, n, -1, attn.head_dim).transpose(1, 2)
                   for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
        scores = (q @ k.transpose(-2, -1)) * attn.scaling
        probs = scores.softmax(dim=-1)
        if not probs.requires_grad:
            probs.requires_grad_(True)
        record.append((scores, probs))
        out = (probs @ v).transpose(1, 2).reshape(b, n, -1)
        return attn.o_proj(out), probs

    attns = [layer.attention for layer in model.vit.layers]
    for attn in attns:
        attn.forward = forward.__get__(attn)
    try:
        yield
    finally:
        for attn in attns:
            del attn.forward


def agcam_autograd_hf(model, x: torch.Tensor, classes: torch.Tensor | int = 1,
                      detach_attention_input: bool = True) -> AgcamTrace:
    """`agcam_autograd` on a transformers ViTForImageClassification, through its own modules
    (separate q/k/v projections, LayerNorm eps from its config), with the same detach."""
    check_supported_hf(model)
    record: list = []
    h, w = x.shape[-2:]
    p = model.config.patch_size
    with torch.enable_grad(), _explicit_attention_hf(model, record, detach_attention_input):
        logits = model(pixel_values=x).logits
        return _trace(logits, record, classes, (h // p, w // p))


def agcam_maps(model: VisionTransformer, x: torch.Tensor, classes: torch.Tensor | int = 1):
    """[B, K, gh, gw] raw AGCAM grids by autograd; see `agcam_autograd`."""
    return agcam_autograd(model, x, classes).maps


def _layer_norm_backward(ln: nn.LayerNorm, x: torch.Tensor, grad_out: torch.Tensor):
    """Gradient w.r.t. the LayerNorm input x [..., 1, D] of output gradients grad_out [..., K, D]."""
    mean = x.mean(dim=-1, keepdim=True)
    rstd = torch.rsqrt(x.var(dim=-1, unbiased=False, keepdim=True) + ln.eps)
    xhat = (x - mean) * rstd
    g = grad_out * ln.weight
    return rstd * (g - g.mean(dim=-1, keepdim=True) - xhat * (g * xhat).mean(dim=-1, keepdim=True))


def _gelu_grad(h: torch.Tensor) -> torch.Tensor:
    """d/dh of erf-GELU h * Phi(h): Phi(h) + h * phi(h)."""
    cdf = 0.5 * (1.0 + torch.erf(h * (1.0 / math.sqrt(2.0))))
    pdf = torch.exp(-0.5 * h * h) * (1.0 / math.sqrt(2.0 * math.pi))
    return cdf + h * pdf


@torch.inference_mode()
def agcam_shortcut(
    model: VisionTransformer, x: torch.Tensor, classes: torch.Tensor | int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AGCAM by the CLS-only backward of method.md §2. Returns (logits, classes, maps).

    The forward keeps, per layer, v (all tokens), the CLS row of S and the CLS token after the
    attention residual; the last block runs its query, attention and MLP for the CLS token only.
    The backward is then a [K, D] chain per image through the MLP branches alone.
    """
    check_supported(model)
    tokens = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
    saved = []
    for i, blk in enumerate(model.blocks):
        attn = blk.attn
        q, k, v = _split_qkv(attn, blk.norm1(tokens))
        cls_scores = (q[:, :, :1] @ k.transpose(-2, -1)).squeeze(2) * attn.scale  # [B, H, N]
        if i + 1 < len(model.blocks):
            out = F.scaled_dot_product_attention(q, k, v)  # [B, H, N, d]
        else:
            tokens = tokens[:, :1]
            out = cls_scores.softmax(dim=-1).unsqueeze(2) @ v  # [B, H, 1, d]
        out = out.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[1], attn.attn_dim)
        y = tokens + blk.ls1(attn.proj(out))
        tokens = y + blk.ls2(blk.mlp(blk.norm2(y)))
        saved.append((v, cls_scores, y[:, :1]))
    cls = tokens[:, :1]  # [B, 1, D]
    logits = model.head(model.norm(cls[:, 0]))
    classes = _resolve_classes(logits, classes)

    g = _layer_norm_backward(model.norm, cls, model.head.weight[classes])  # [B, K, D]
    cam = torch.zeros(classes.shape + (saved[0][0].shape[2],), dtype=x.dtype, device=x.device)
    for blk, (v, cls_scores, y) in zip(reversed(model.blocks), reversed(saved)):
        mlp = blk.mlp
        hidden = mlp.fc1(blk.norm2(y))  # [B, 1, F]
        g_hidden = (blk.ls2(g) @ mlp.fc2.weight) * _gelu_grad(hidden)  # [B, K, F]
        g = g + _layer_norm_backward(blk.norm2, y, g_hidden @ mlp.fc1.weight)
        d_out = blk.ls1(g) @ blk.attn.proj.weight  # [B, K, D]
        d_out = d_out.unflatten(-1, (blk.attn.num_heads, blk.attn.head_dim))  # [B, K, H, d]
        grad_cls_row = torch.einsum("bkhd,bhnd->bkhn", d_out, v)
        cam += (F.relu(grad_cls_row) * torch.sigmoid(cls_scores).unsqueeze(1)).sum(dim=2)
    gh, gw = model.patch_embed.grid_size
    return logits, classes, cam[..., 1:].reshape(classes.shape + (gh, gw))


@contextlib.contextmanager
def _authors_hooks(model: VisionTransformer):
    """Install the authors' instrumentation on a stock timm model; yields (scores, grads) lists.

    Their modified timm Attention detaches its input, computes the attention explicitly and passes
    S through an identity module carrying a forward hook and A through one carrying a full
    backward hook. The same is grafted onto each block here, and removed afterwards.
    """
    scores, grads = [], []

    def forward(attn: Attention, x: torch.Tensor, attn_mask=None, is_causal=False):
        x = x.detach()
        q, k, v = _split_qkv(attn, x)
        s = attn.agcam_before_softmax((q @ k.transpose(-2, -1)) * attn.scale)
        a = attn.agcam_after_softmax(s.softmax(dim=-1))
        out = (a @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], attn.attn_dim)
        return attn.proj(out)

    handles = []
    attns = [blk.attn for blk in model.blocks]
    for attn in attns:
        attn.agcam_before_softmax = nn.Identity()
        attn.agcam_after_softmax = nn.Identity()
        handles.append(attn.agcam_before_softmax.register_forward_hook(
            lambda m, i, out: scores.append(out[:, :, 0, :])))
        handles.append(attn.agcam_after_softmax.register_full_backward_hook(
            lambda m, gi, go: grads.append(go[0][:, :, 0, :])))
        attn.forward = forward.__get__(attn)
    try:
        yield scores, grads
    finally:
        for h in handles:
            h.remove()
        for attn in attns:
            del attn.forward, attn.agcam_before_softmax, attn.agcam_after_softmax


def authors_style_explain(model: VisionTransformer, img: torch.Tensor, cls_idx: int | None = None):
    """One image [1, 3, h, w] explained as the authors' code does. Returns (class, map [gh, gw]).

    Parameters keep requires_grad, `model.zero_grad()` and `loss.backward()` run a full backward
    (parameter gradients included) from the raw logit, and the hooks read S and dA. This is the
    cost profile of the public implementation, kept for the benchmark's baseline.
    """
    if img.shape[0] != 1:
        raise ValueError("the authors' code explains one image at a time")
    check_supported(model)
    with torch.enable_grad(), _authors_hooks(model) as (scores, grads):
        model.zero_grad()
        logits = model(img)
        cls_idx = int(logits[0].argmax()) if cls_idx is None else cls_idx
        logits[0, cls_idx].backward()
        grads.reverse()  # backward hooks fire from the last layer down
        cam = sum((F.relu(g) * torch.sigmoid(s)).sum(dim=1) for s, g in zip(scores, grads))
    gh, gw = model.patch_embed.grid_size
    return cls_idx, cam[0, 1:].reshape(gh, gw).detach()


def randomize_for_testing(model: VisionTransformer, generator: torch.Generator) -> None:
    """Re-initialise `model` in place so that AGCAM maps are a meaningful test.

    timm's default init (std 0.02 everywhere, LayerNorm 1/0) gives near-uniform attention, near-zero
    logits and near-identical maps. Here every Linear gets a variance-preserving init, with q and k
    scaled so that pre-softmax scores have a standard deviation of about 1.5 (peaky attention);
    LayerNorm affine parameters, layer-scale gammas, biases and embeddings are all randomised.
    """

    def normal(shape, std, mean=0.0):
        return torch.randn(shape, generator=generator) * std + mean

    dim = model.embed_dim
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("qkv.weight"):
                q_k = normal((2 * dim, dim), math.sqrt(1.5 / dim))
                p.copy_(torch.cat([q_k, normal((dim, dim), 1 / math.sqrt(dim))]))
            elif p.dim() >= 2 and name != "pos_embed":  # Linear and conv weights
                p.copy_(normal(p.shape, 1 / math.sqrt(p[0].numel())))
            elif name.endswith("gamma"):  # layer scale
                p.copy_(torch.rand(p.shape, generator=generator) * 0.9 + 0.1)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(normal(p.shape, 0.2, mean=1.0))
            elif name in ("cls_token", "pos_embed"):
                p.copy_(normal(p.shape, 0.5))
            else:  # biases
                p.copy_(normal(p.shape, 0.05))


def randomize_hf_for_testing(model, generator: torch.Generator) -> None:
    """`randomize_for_testing` for a transformers ViTForImageClassification: the same
    distributions, with q and k (separate `q_proj`/`k_proj` here) scaled for peaky attention."""

    def normal(shape, std, mean=0.0):
        return torch.randn(shape, generator=generator) * std + mean

    dim = model.config.hidden_size
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                p.copy_(normal(p.shape, math.sqrt(1.5 / dim)))
            elif p.dim() >= 2 and not name.endswith(("position_embeddings", "cls_token")):
                p.copy_(normal(p.shape, 1 / math.sqrt(p[0].numel())))
            elif "layernorm" in name and name.endswith("weight"):
                p.copy_(normal(p.shape, 0.2, mean=1.0))
            elif name.endswith(("position_embeddings", "cls_token")):
                p.copy_(normal(p.shape, 0.5))
            else:  # biases
                p.copy_(normal(p.shape, 0.05))


def timm_from_hf(model) -> VisionTransformer:
    """The timm VisionTransformer with the weights of a transformers ViTForImageClassification
    (q/k/v concatenated into qkv), for cross-checks. LayerNorm eps is taken from the config."""
    cfg = model.config
    size = cfg.image_size if isinstance(cfg.image_size, (list, tuple)) else [cfg.image_size] * 2
    eps = cfg.layer_norm_eps
    vt = VisionTransformer(
        img_size=tuple(size), patch_size=cfg.patch_size, embed_dim=cfg.hidden_size,
        depth=cfg.num_hidden_layers, num_heads=cfg.num_attention_heads,
        mlp_ratio=cfg.intermediate_size / cfg.hidden_size, qkv_bias=cfg.qkv_bias,
        num_classes=cfg.num_labels, global_pool="token",
        norm_layer=functools.partial(nn.LayerNorm, eps=eps),
    ).to(next(model.parameters()).dtype).eval()
    v = model.vit
    with torch.no_grad():
        vt.cls_token.copy_(v.embeddings.cls_token)
        vt.pos_embed.copy_(v.embeddings.position_embeddings)
        vt.patch_embed.proj.weight.copy_(v.embeddings.patch_embeddings.projection.weight)
        vt.patch_embed.proj.bias.copy_(v.embeddings.patch_embeddings.projection.bias)
        for blk, layer in zip(vt.blocks, v.layers):
            a = layer.attention
            blk.attn.qkv.weight.copy_(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))
            if cfg.qkv_bias:
                blk.attn.qkv.bias.copy_(torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]))
            blk.attn.proj.load_state_dict(a.o_proj.state_dict())
            blk.norm1.load_state_dict(layer.layernorm_before.state_dict())
            blk.norm2.load_state_dict(layer.layernorm_after.state_dict())
            blk.mlp.fc1.load_state_dict(layer.mlp.fc1.state_dict())
            blk.mlp.fc2.load_state_dict(layer.mlp.fc2.state_dict())
        vt.norm.load_state_dict(v.layernorm.state_dict())
        vt.head.load_state_dict(model.classifier.state_dict())
    return vt


def _self_check_families() -> None:
    """Hugging Face hooks vs timm on the same weights; no_embed_class; average pooling."""
    from transformers import ViTConfig, ViTForImageClassification

    g = torch.Generator().manual_seed(3)
    cfg = ViTConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                    intermediate_size=72, image_size=[16, 24], patch_size=8, num_labels=6,
                    layer_norm_eps=1e-6)
    hf = ViTForImageClassification(cfg).eval()
    randomize_hf_for_testing(hf, g)
    hf.double()
    x = torch.randn(2, 3, 16, 24, dtype=torch.float64, generator=g)
    a = agcam_autograd_hf(hf, x, classes=3)
    b = agcam_autograd(timm_from_hf(hf), x, classes=3)
    err = (a.maps - b.maps).abs().max().item() / b.maps.abs().max().item()
    print(f"Hugging Face hooks vs timm on the same weights (float64): map error {err:.3g}, "
          f"logits error {(a.logits - b.logits).abs().max().item():.3g}")
    assert torch.equal(a.classes, b.classes) and err < 1e-12

    model = VisionTransformer(img_size=(16, 24), patch_size=8, embed_dim=32, depth=3,
                              num_heads=4, num_classes=6, no_embed_class=True, init_values=0.5,
                              qkv_bias=False).eval()
    randomize_for_testing(model, g)
    model.double()
    ref = agcam_autograd(model, x, classes=3)
    _, classes, maps = agcam_shortcut(model, x, classes=3)
    err = (maps - ref.maps).abs().max().item() / ref.maps.abs().max().item()
    print(f"no_embed_class, no qkv bias: shortcut vs autograd {err:.3g}")
    assert torch.equal(classes, ref.classes) and err < 1e-12

    model = VisionTransformer(img_size=(16, 24), patch_size=8, embed_dim=32, depth=3,
                              num_heads=4, num_classes=6, global_pool="avg").eval()
    randomize_for_testing(model, g)
    model.double()
    ref = agcam_autograd(model, x, classes=3)
    print(f"average pooling: max|map| {ref.maps.abs().max().item():.3g} (the class token "
          "reaches no logit, so its attention row gets no gradient)")
    assert ref.maps.abs().max().item() == 0.0


def _self_check() -> None:
    """Shortcut vs autograd in float64 on a small odd model; also the authors' code path."""
    torch.manual_seed(0)
    model = VisionTransformer(
        img_size=(24, 40), patch_size=8, embed_dim=36, depth=4, num_heads=3, mlp_ratio=2.5,
        num_classes=11, init_values=0.5, global_pool="token",
    ).eval()
    randomize_for_testing(model, torch.Generator().manual_seed(1))
    model.double()
    x = torch.randn(3, 3, 24, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    ref = agcam_autograd(model, x, classes=4)
    logits, classes, maps = agcam_shortcut(model, x, classes=4)
    scale = ref.maps.abs().max().item()
    err = (maps - ref.maps).abs().max().item()
    print(f"autograd vs shortcut (float64, B=3, K=4): max|map| {scale:.4g}, "
          f"max abs err {err:.3g}, relative {err / scale:.3g}, "
          f"logits err {(logits - ref.logits).abs().max().item():.3g}")
    assert torch.equal(classes, ref.classes), "class ranking differs"
    assert err <= 1e-10 * scale, "shortcut does not match autograd"

    undetached = agcam_autograd(model, x, classes=ref.classes, detach_attention_input=False)
    change = (undetached.maps - ref.maps).abs().max().item() / scale
    print(f"without the detach the maps change by {change:.3g} of max|map|")

    model.float()
    worst = 0.0
    for b in range(x.shape[0]):
        cls_idx, cam = authors_style_explain(model, x[b : b + 1].float())
        assert cls_idx == int(ref.classes[b, 0])
        worst = max(worst, (cam.double() - ref.maps[b, 0]).abs().max().item() / scale)
    print(f"authors-style (float32 hooks) vs autograd: max relative err {worst:.3g}")
    assert worst < 1e-4
    _self_check_families()
    print("self-check PASS")


if __name__ == "__main__":
    _self_check()
