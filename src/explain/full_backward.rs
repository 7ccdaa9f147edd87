//! The full backward through the ViT on the GPU (no detach, every token), and generic attention
//! (method.md §6.1) on top of it.
//!
//! Unlike AGCAM's chain (agcam.rs), nothing is detached: the gradient flows back through every
//! attention block too, so it is dense over the tokens below the last block. Gradient rows are
//! laid out [B, N, K, D] (image, token, class): the K classes of one token share that token's
//! kept activations, so LayerNorm's backward reads input row r / K. Per block, from the last:
//!
//! ```text
//! dH   = gelu'(pre) ⊙ ((ls2 ⊙ G) · W_fc2)            G = ∂logit/∂x_k
//! G   += LN2ᵀ(dH · W_fc1)                             now ∂logit/∂y_k
//! dO   = (ls1 ⊙ G) · W_proj
//! ∇A_h = dO_h · V_hᵀ                                  [H, N, N], every row
//! r    = r + r · mean_h max(0, ∇A_h ⊙ A_h)            generic attention, never forming R
//! dV_h = A_hᵀ · dO_h;   dS = A ⊙ (∇A − rowsum(∇A ⊙ A))
//! dQ_h = d^-½ dS_h · K_h;   dK_h = d^-½ dS_hᵀ · Q_h
//! G   += LN1ᵀ([dQ dK dV] · W_qkv)                     now ∂logit/∂x_{k-1}
//! ```
//!
//! from G = LN_finalᵀ(W_head[c]) at the class token of x_L, zero elsewhere (with average
//! pooling: fc_normᵀ(W_head[c]) / P at every patch token). No parameter gradients. The
//! forward keeps per layer what this reads ([`FullKeep`]).

use super::agcam::{record_head_gradient, record_topk, Backward, ClassChoice};
use crate::gpu::Gpu;
use crate::kernels::{
    BackwardKernels, Batch, ChainStep, Dispatch, Finish, Kernels, Mat, Right, RowMap,
};
use crate::model::ModelConfig;
use crate::vit::{full_keep_bytes_per_image, Activations, FullKeep, GpuWeights};

/// The forward's kept activations and the backward's gradients, for up to `images` images
/// with `per_image` classes each.
pub(crate) struct FullBackward {
    pub per_image: usize,
    /// The first layer whose activations are kept: 0 for generic attention, the last block for
    /// Grad-CAM on average-pooled models, which needs the last block's backward only.
    pub kept_from: usize,
    /// The kept activations of layers `kept_from..depth`.
    pub keep: Vec<FullKeep>,
    /// [B·K, D]: head rows of the explained classes, then their class-token gradient at x_L.
    head_rows: wgpu::Buffer,
    cls_grad: wgpu::Buffer,
    /// [B·N·K, D]: the residual-stream gradient G.
    pub grad: wgpu::Buffer,
    /// [B·N·K, D]: the gradient at a branch's output side (LN2 / LN1 output, attention output).
    pub branch: wgpu::Buffer,
    /// [B·N·K, F]: the gradient at fc1's pre-activation.
    hidden: wgpu::Buffer,
    /// [B·N·K, 3D]: the gradient of q, k, v.
    d_qkv: wgpu::Buffer,
    /// [B, K, H, N, padded]: ∂logit/∂A of the current layer, then ∂logit/∂S.
    pub d_attn: wgpu::Buffer,
    /// [B·K, N]: generic attention's relevance row, alternately.
    ping: wgpu::Buffer,
    pong: wgpu::Buffer,
}

/// Bytes of gradient buffers per gradient row (one image × one class).
fn bytes_per_row(cfg: &ModelConfig) -> usize {
    let (n, d, f) = (cfg.tokens(), cfg.embed_dim, cfg.mlp_hidden);
    4 * (2 * d + n * (5 * d + f) + cfg.num_heads * n * n.next_multiple_of(4) + 2 * n)
}

/// Bytes per image of the full backward with `per_image` classes, keeping the activations of
/// the layers from `kept_from` on, and the gradients.
pub(crate) fn full_bytes_per_image(cfg: &ModelConfig, per_image: usize, kept_from: usize) -> usize {
    full_keep_bytes_per_image(cfg, cfg.depth - kept_from) + per_image * bytes_per_row(cfg)
}

/// Bytes per image of the largest single buffer of the full backward, which must stay under
/// the adapter's binding limit.
pub(crate) fn full_largest_binding_per_image(cfg: &ModelConfig, per_image: usize) -> usize {
    let (n, d, f) = (cfg.tokens(), cfg.embed_dim, cfg.mlp_hidden);
    let attn = cfg.num_heads * n * n.next_multiple_of(4);
    4 * per_image * (n * (3 * d).max(f)).max(attn)
}

impl FullBackward {
    pub fn new(
        gpu: &Gpu,
        cfg: &ModelConfig,
        (images, per_image): (usize, usize),
        kept_from: usize,
    ) -> FullBackward {
        let (n, d, f) = (
            cfg.tokens() as u64,
            cfg.embed_dim as u64,
            cfg.mlp_hidden as u64,
        );
        let rows = (images * per_image) as u64;
        let attn = cfg.num_heads as u64 * n * n.next_multiple_of(4);
        FullBackward {
            per_image,
            kept_from,
            keep: FullKeep::new(gpu, cfg, images, cfg.depth - kept_from),
            head_rows: gpu.storage("head rows", 4 * rows * d),
            cls_grad: gpu.storage("class token gradient", 4 * rows * d),
            grad: gpu.storage("residual gradient", 4 * rows * n * d),
            branch: gpu.storage("branch gradient", 4 * rows * n * d),
            hidden: gpu.storage("mlp gradient", 4 * rows * n * f),
            d_qkv: gpu.storage("qkv gradient", 4 * rows * n * 3 * d),
            d_attn: gpu.storage("attention gradient", 4 * rows * attn),
            ping: gpu.storage("relevance row", 4 * rows * n),
            pong: gpu.storage("relevance row", 4 * rows * n),
        }
    }
}

/// Records the full backward of `batch` images with `per_image` classes each, after a forward
/// that kept [`FullKeep`] of every layer in `full.keep`, and generic attention's map of each
/// gradient row into `back.maps`. With `probe = Some(layer)` it stops once ∂logit/∂A of that
/// layer is in `full.d_attn` (for the tests); otherwise `full.grad` ends as ∂logit/∂x_0.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_generic_attention(
    gpu: &Gpu,
    k: &Kernels,
    cfg: &ModelConfig,
    w: &GpuWeights,
    acts: &Activations,
    (back, full): (&Backward, &FullBackward),
    (batch, per_image): (usize, usize),
    choice: ClassChoice,
    probe: Option<usize>,
) -> Vec<Dispatch> {
    let shape = (batch, per_image);
    let mut relevance = |layer: usize, out: &mut Vec<Dispatch>| {
        let weights = (&full.keep[layer].probs, false);
        out.push(relevance_row_step(
            gpu,
            k,
            cfg,
            (back, full),
            shape,
            layer,
            0,
            weights,
        ));
    };
    let stop = probe.map_or(Stop::Layer(0), Stop::Probe);
    let bufs = (back, full);
    record_full_backward(
        gpu,
        k,
        (cfg, w, acts),
        bufs,
        shape,
        choice,
        stop,
        &mut relevance,
    )
}

/// Records the last block's backward of `batch` images with `per_image` classes each, after a
/// forward that kept at least the last block's [`FullKeep`]: `full.branch` [B, N, K, D] ends as
/// ∂logit/∂X, X the last block's LN1 output at every token (Grad-CAM's activations on
/// average-pooled models, method.md §6.2).
pub(crate) fn record_last_norm1_gradient(
    gpu: &Gpu,
    (k, cfg, w, acts): (&Kernels, &ModelConfig, &GpuWeights, &Activations),
    bufs: (&Backward, &FullBackward),
    shape: (usize, usize),
    choice: ClassChoice,
) -> Vec<Dispatch> {
    let stop = Stop::LastNorm1Output;
    record_full_backward(
        gpu,
        k,
        (cfg, w, acts),
        bufs,
        shape,
        choice,
        stop,
        &mut |_, _| {},
    )
}

/// Where the full backward stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// After the relevance step of this layer and the rest of its backward (the layers below it
    /// are not needed: their relevance steps start lower).
    Layer(usize),
    /// Once ∂logit/∂A of this layer is in `full.d_attn`, before its relevance step (tests).
    Probe(usize),
    /// Once ∂logit/∂(the last block's LN1 output) is in `full.branch` (Grad-CAM on
    /// average-pooled models).
    LastNorm1Output,
}

/// The class-token relevance row's step at `layer` from the last layer down to `start`:
/// r ← r + r · mean_h max(0, ∇A ⊙ weights) (`relevance_step` of shaders/backward.wgsl), with
/// ∇A in `full.d_attn` and weights (the attention, or, flagged, one set per gradient row), the
/// map into `back.maps` at `start`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn relevance_row_step(
    gpu: &Gpu,
    k: &Kernels,
    cfg: &ModelConfig,
    (back, full): (&Backward, &FullBackward),
    (batch, per_image): (usize, usize),
    layer: usize,
    start: usize,
    weights: (&wgpu::Buffer, bool),
) -> Dispatch {
    // Ping-pong from the last layer down.
    let (r_in, r_out) = if (cfg.depth - 1 - layer).is_multiple_of(2) {
        (&full.pong, &full.ping)
    } else {
        (&full.ping, &full.pong)
    };
    let r_out = if layer == start { &back.maps } else { r_out };
    let attn_shape = (batch, per_image, cfg.num_heads, cfg.tokens());
    let step = ChainStep {
        first: layer + 1 == cfg.depth,
        last: layer == start,
    };
    k.backward(gpu)
        .relevance_step(gpu, weights, &full.d_attn, r_in, r_out, attn_shape, step)
        .named(format!("full.blocks.{layer}.relevance"))
}

/// Records the full backward (as [`record_generic_attention`] describes) down to `stop`, with
/// `relevance(layer, out)` recording each layer's use of ∂logit/∂A in `full.d_attn` (before
/// the softmax backward turns it into ∂logit/∂S).
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_full_backward(
    gpu: &Gpu,
    k: &Kernels,
    (cfg, w, acts): (&ModelConfig, &GpuWeights, &Activations),
    (back, full): (&Backward, &FullBackward),
    (batch, per_image): (usize, usize),
    choice: ClassChoice,
    stop: Stop,
    relevance: &mut dyn FnMut(usize, &mut Vec<Dispatch>),
) -> Vec<Dispatch> {
    debug_assert!(
        stop == Stop::LastNorm1Output || full.kept_from == 0,
        "the backward below the last block needs every layer's activations"
    );
    let n = cfg.tokens();
    let (d, f, h, hd) = (cfg.embed_dim, cfg.mlp_hidden, cfg.num_heads, cfg.head_dim());
    let kk = per_image;
    let rows = batch * n * kk;
    let eps = cfg.layer_norm_eps;
    let scale = (hd as f64).powf(-0.5) as f32;
    let bk = k.backward(gpu);
    let mut out = Vec::with_capacity(4 + 14 * cfg.depth);

    if choice == ClassChoice::TopK {
        out.push(record_topk(gpu, k, cfg, acts, back, batch, kk));
    }
    // G = LN_finalᵀ(W_head[c]) at the class token of x_L, zero at the other tokens; with
    // average pooling, fc_normᵀ(W_head[c]) / P at each of the P patch tokens, zero at the class
    // token.
    let buffers = (&back.classes, &full.head_rows, &full.cls_grad);
    out.extend(record_head_gradient(
        gpu,
        k,
        (cfg, w, acts),
        buffers,
        (batch * kk, kk),
        "full",
    ));
    out.push(
        bk.seed(
            gpu,
            &full.cls_grad,
            &full.grad,
            (batch, n, kk, d),
            cfg.pooling,
        )
        .named("full.seed"),
    );

    // Gradient rows [B, N, K]: K of them share one row of the kept activations.
    let per_token = RowMap {
        rows_per_input: kk,
        input_row_stride: 1,
    };
    let heads = HeadProducts::new(gpu, k, cfg, (batch, kk));
    let attn_shape = (batch, kk, h, n);

    for (i, keep) in full.keep.iter().enumerate().rev() {
        let layer = full.kept_from + i;
        let blk = &w.blocks[layer];
        let name = |part: &str| format!("full.blocks.{layer}.{part}");
        // MLP: dH = gelu'(pre) ⊙ ((ls2 ⊙ G) · W_fc2), then G += LN2ᵀ(dH · W_fc1).
        out.push(
            bk.product(
                gpu,
                (&full.grad, Mat::rows(d)),
                Right::Weight(&blk.fc2_w, Mat::rows(f)),
                (&full.hidden, Mat::rows(f)),
                (rows, f, d),
                Batch::ONE,
                Finish {
                    alpha: 1.0,
                    k_scale: Some(&blk.ls2),
                    gelu_grad: Some((&keep.pre, Mat::rows(f), kk)),
                },
            )
            .named(name("mlp.fc2_t")),
        );
        out.push(
            bk.product(
                gpu,
                (&full.hidden, Mat::rows(f)),
                Right::Weight(&blk.fc1_w, Mat::rows(d)),
                (&full.branch, Mat::rows(d)),
                (rows, d, f),
                Batch::ONE,
                Finish::scaled(1.0),
            )
            .named(name("mlp.fc1_t")),
        );
        out.push(
            k.layernorm
                .dispatch_backward_rows(
                    gpu,
                    &keep.y,
                    &blk.norm2_w,
                    &full.branch,
                    &full.grad,
                    (rows, d),
                    per_token,
                    eps,
                    true,
                )
                .named(name("norm2_backward")),
        );

        // Attention: dO = (ls1 ⊙ G) · W_proj, ∇A_h = dO_h · V_hᵀ.
        out.push(
            bk.product(
                gpu,
                (&full.grad, Mat::rows(d)),
                Right::Weight(&blk.proj_w, Mat::rows(d)),
                (&full.branch, Mat::rows(d)),
                (rows, d, d),
                Batch::ONE,
                Finish {
                    alpha: 1.0,
                    k_scale: Some(&blk.ls1),
                    gelu_grad: None,
                },
            )
            .named(name("attn.proj_t")),
        );
        out.push(
            heads
                .times_values_t(&full.branch, &keep.qkv, &full.d_attn)
                .named(name("attn.grad_attn")),
        );
        if stop == Stop::Probe(layer) {
            return out;
        }
        relevance(layer, &mut out);

        // dV_h = A_hᵀ · dO_h, then dS, dQ_h = d^-½ dS_h · K_h, dK_h = d^-½ dS_hᵀ · Q_h.
        out.push(
            heads
                .attention_t_times(&keep.probs, &full.branch, &full.d_qkv)
                .named(name("attn.grad_v")),
        );
        out.push(
            bk.softmax_backward(gpu, &keep.probs, &full.d_attn, attn_shape)
                .named(name("attn.softmax_backward")),
        );
        out.push(
            heads
                .times_keys(&full.d_attn, &keep.qkv, &full.d_qkv, scale)
                .named(name("attn.grad_q")),
        );
        out.push(
            heads
                .t_times_queries(&full.d_attn, &keep.qkv, &full.d_qkv, scale)
                .named(name("attn.grad_k")),
        );
        // G += LN1ᵀ([dQ dK dV] · W_qkv).
        out.push(
            bk.product(
                gpu,
                (&full.d_qkv, Mat::rows(3 * d)),
                Right::Weight(&blk.qkv_w, Mat::rows(d)),
                (&full.branch, Mat::rows(d)),
                (rows, d, 3 * d),
                Batch::ONE,
                Finish::scaled(1.0),
            )
            .named(name("attn.qkv_t")),
        );
        if stop == Stop::LastNorm1Output {
            return out;
        }
        out.push(
            k.layernorm
                .dispatch_backward_rows(
                    gpu,
                    &keep.x,
                    &blk.norm1_w,
                    &full.branch,
                    &full.grad,
                    (rows, d),
                    per_token,
                    eps,
                    true,
                )
                .named(name("norm1_backward")),
        );
        if stop == Stop::Layer(layer) {
            break;
        }
    }
    out
}

/// The per-head products of the attention's backward, which transformer attribution's bilinear
/// LRP rules share: per (image, class, head), a head's columns of a [B, N, K, width] gradient
/// (or relevance) `g` or of the kept [B·N, 3D] q, k, v (the same for every class), and the
/// [N, padded] matrices of a [B, K, H, N, padded] tensor or of the kept attention [B, H, N,
/// padded].
pub(crate) struct HeadProducts<'a> {
    gpu: &'a Gpu,
    bk: &'a BackwardKernels,
    batch: Batch,
    /// (N, padded N, D, head dim).
    dims: (usize, usize, usize, usize),
}

impl<'a> HeadProducts<'a> {
    pub fn new(
        gpu: &'a Gpu,
        k: &'a Kernels,
        cfg: &ModelConfig,
        (images, classes): (usize, usize),
    ) -> HeadProducts<'a> {
        let n = cfg.tokens();
        HeadProducts {
            gpu,
            bk: k.backward(gpu),
            batch: Batch {
                images,
                classes,
                heads: cfg.num_heads,
            },
            dims: (n, n.next_multiple_of(4), cfg.embed_dim, cfg.head_dim()),
        }
    }

    /// Columns `offset..offset + d` of a [B, N, K, width] tensor.
    fn rows(&self, width: usize, offset: usize) -> Mat {
        let (n, _, _, hd) = self.dims;
        let kk = self.batch.classes;
        Mat::at(offset, kk * width, 1).batched(n * kk * width, width, hd)
    }

    /// Columns `offset..offset + d` of the kept q, k, v.
    fn kept(&self, offset: usize) -> Mat {
        let (n, _, d, hd) = self.dims;
        Mat::at(offset, 3 * d, 1).batched(n * 3 * d, 0, hd)
    }

    /// [N, padded] matrices of a [B, K, H, N, padded] tensor.
    fn per_row(&self) -> Mat {
        let (n, np, _, _) = self.dims;
        let (kk, h) = (self.batch.classes, self.batch.heads);
        Mat::rows(np).batched(kk * h * n * np, h * n * np, n * np)
    }

    #[allow(clippy::too_many_arguments)]
    fn product(
        &self,
        a: (&wgpu::Buffer, Mat),
        b: (&wgpu::Buffer, Mat),
        c: (&wgpu::Buffer, Mat),
        (m, n, k): (usize, usize, usize),
        alpha: f32,
    ) -> Dispatch {
        let b = Right::Activation(b.0, b.1);
        let finish = Finish::scaled(alpha);
        self.bk
            .product(self.gpu, a, b, c, (m, n, k), self.batch, finish)
    }

    /// `out_h = g_h · V_hᵀ` into [B, K, H, N, padded] (∇A from dO; R_A's product).
    pub fn times_values_t(
        &self,
        g: &wgpu::Buffer,
        qkv: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) -> Dispatch {
        let (n, _, d, hd) = self.dims;
        let v = self.kept(2 * d).t();
        self.product(
            (g, self.rows(d, 0)),
            (qkv, v),
            (out, self.per_row()),
            (n, n, hd),
            1.0,
        )
    }

    /// `out_h = A_h · V_h` into the head's columns of [B·N, D] (the attention output; with one
    /// class per image).
    pub fn attention_times_values(
        &self,
        probs: &wgpu::Buffer,
        qkv: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) -> Dispatch {
        let (n, _, d, hd) = self.dims;
        let values = (qkv, self.kept(2 * d));
        self.product(
            (probs, self.per_row()),
            values,
            (out, self.rows(d, 0)),
            (n, hd, n),
            1.0,
        )
    }

    /// `out_h = Q_h · K_hᵀ` into [B, H, N, padded] (the unscaled scores; one class per image).
    pub fn queries_times_keys_t(&self, qkv: &wgpu::Buffer, out: &wgpu::Buffer) -> Dispatch {
        let (n, _, d, hd) = self.dims;
        let (q, k) = ((qkv, self.kept(0)), (qkv, self.kept(d).t()));
        self.product(q, k, (out, self.per_row()), (n, n, hd), 1.0)
    }

    /// `out_h = A_hᵀ · g_h` into the v columns of [B, N, K, 3D] (dV from dO; R_V's product).
    pub fn attention_t_times(
        &self,
        probs: &wgpu::Buffer,
        g: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) -> Dispatch {
        let (n, np, d, hd) = self.dims;
        let h = self.batch.heads;
        let a = Mat::rows(np).batched(h * n * np, 0, n * np).t();
        let g = (g, self.rows(d, 0));
        self.product(
            (probs, a),
            g,
            (out, self.rows(3 * d, 2 * d)),
            (n, hd, n),
            1.0,
        )
    }

    /// `out_h = alpha · m_h · K_h` into the q columns of [B, N, K, 3D], `m` [B, K, H, N, padded]
    /// (dQ from dS; R_q's product).
    pub fn times_keys(
        &self,
        m: &wgpu::Buffer,
        qkv: &wgpu::Buffer,
        out: &wgpu::Buffer,
        alpha: f32,
    ) -> Dispatch {
        let (n, _, d, hd) = self.dims;
        let keys = (qkv, self.kept(d));
        self.product(
            (m, self.per_row()),
            keys,
            (out, self.rows(3 * d, 0)),
            (n, hd, n),
            alpha,
        )
    }

    /// `out_h = alpha · m_hᵀ · Q_h` into the k columns of [B, N, K, 3D] (dK from dS; R_k's
    /// product).
    pub fn t_times_queries(
        &self,
        m: &wgpu::Buffer,
        qkv: &wgpu::Buffer,
        out: &wgpu::Buffer,
        alpha: f32,
    ) -> Dispatch {
        let (n, _, d, hd) = self.dims;
        let m = (m, self.per_row().t());
        let queries = (qkv, self.kept(0));
        self.product(m, queries, (out, self.rows(3 * d, d)), (n, hd, n), alpha)
    }
}

#[cfg(test)]
mod tests;
