//! The AGCAM backward (method.md §2) on the GPU: a chain over the class token only, K classes
//! per image as rows of a [B·K, D] matrix, and the fused map kernel per layer.
//!
//! With class-token pooling and the attention inputs detached, the residual-stream gradient is
//! non-zero only at the class token, so per layer k (last to first):
//!
//! ```text
//! g_y  = g + LN2ᵀ( fc1ᵀ( gelu'(fc1(LN2(y_k))) ⊙ fc2ᵀ(ls2 ⊙ g) ) )
//! dO   = (ls1 ⊙ g_y) · W_proj
//! map += Σ_h ReLU(⟨dO_h, V_k,h[j]⟩) · sigmoid(S_k,h[CLS, j])      j = patch keys
//! g    = g_y
//! ```
//!
//! starting from g = LN_finalᵀ(W_head[c]) at the class token of x_L. On the GPU kernel set,
//! four dispatches per layer: fc2ᵀ, fc1ᵀ (times γ₂), dO with the LN2 backward folded into its
//! input (it also writes g_y, so g alternates between two buffers), and the map. The CPU set,
//! and chains of many rows (which run on the tiled GEMM), take the LN2 backward as a dispatch
//! of its own instead.

use super::Method;
use crate::gpu::Gpu;
use crate::kernels::{Dispatch, Factor, Kernels, NormFold, RowMap};
use crate::model::{ModelConfig, Pooling};
use crate::vit::{Activations, GpuWeights};

/// Buffers of the backward chain for up to `rows` = images × classes gradient rows.
pub(crate) struct Backward {
    pub rows: usize,
    /// Explained class of each row [B·K] (u32).
    pub classes: wgpu::Buffer,
    /// Residual-stream gradient at the class token [B·K, D], twice: a folded chain step reads
    /// g from one and writes the next layer's to the other ([`Chain::grad`]).
    g: [wgpu::Buffer; 2],
    /// Scratch [B·K, D]: output-side gradients of LayerNorms; Grad-CAM's channel weights.
    pub upstream: wgpu::Buffer,
    /// [B·K, max(F, 3D)]: gradient at the MLP's pre-activation; Grad-CAM's mean qkv gradient.
    pub hidden: wgpu::Buffer,
    /// [B·K, D]: gradient of the merged attention output.
    pub d_out: wgpu::Buffer,
    /// [B·K, N-1]: the maps.
    pub maps: wgpu::Buffer,
}

impl Backward {
    pub fn new(gpu: &Gpu, cfg: &ModelConfig, rows: usize) -> Backward {
        let (d, hidden, n) = (
            cfg.embed_dim as u64,
            hidden_width(cfg) as u64,
            cfg.tokens() as u64,
        );
        let r = rows as u64;
        Backward {
            rows,
            classes: gpu.storage("classes", 4 * r),
            g: ["grad", "next grad"].map(|label| gpu.storage(label, 4 * r * d)),
            upstream: gpu.storage("grad upstream", 4 * r * d),
            hidden: gpu.storage("grad hidden", 4 * r * hidden),
            d_out: gpu.storage("grad attention output", 4 * r * d),
            maps: gpu.storage("maps", 4 * r * (n - 1)),
        }
    }
}

/// How the explained classes are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ClassChoice {
    /// The top K logits of each image, chosen on the GPU.
    TopK,
    /// Classes the host already wrote to `Backward::classes`.
    Given,
}

/// Width of `Backward::hidden`, the largest backward buffer per gradient row: the MLP's
/// hidden layer, or three embeddings where a narrow MLP would make it smaller.
fn hidden_width(cfg: &ModelConfig) -> usize {
    cfg.mlp_hidden.max(3 * cfg.embed_dim)
}

/// Bytes per gradient row (one image × one class).
pub(crate) fn backward_bytes_per_row(cfg: &ModelConfig) -> usize {
    4 * (4 * cfg.embed_dim + hidden_width(cfg) + cfg.tokens() + 1)
}

/// Bytes per gradient row of the largest backward buffer (`hidden`).
pub(crate) fn backward_largest_binding_per_row(cfg: &ModelConfig) -> usize {
    4 * hidden_width(cfg)
}

/// Records the choice of each image's `per_image` best classes into `back.classes`.
pub(crate) fn record_topk(
    gpu: &Gpu,
    k: &Kernels,
    cfg: &ModelConfig,
    acts: &Activations,
    back: &Backward,
    batch: usize,
    per_image: usize,
) -> Dispatch {
    k.agcam
        .topk(
            gpu,
            &acts.logits,
            &back.classes,
            batch,
            cfg.num_classes,
            per_image,
        )
        .named("topk")
}

/// Records `out` = LN_finalᵀ(W_head[c]) at the class token of x_L (with average pooling:
/// fc_normᵀ(W_head[c]) at the mean of the patch tokens) for each of `rows` gradient rows
/// (`per_image` per image) and its class c in `classes`: where every backward starts.
/// `head_rows` [rows, D] is scratch. The dispatches are named `{prefix}.head_rows` and
/// `{prefix}.norm_backward`.
pub(crate) fn record_head_gradient(
    gpu: &Gpu,
    k: &Kernels,
    (cfg, w, acts): (&ModelConfig, &GpuWeights, &Activations),
    (classes, head_rows, out): (&wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer),
    (rows, per_image): (usize, usize),
    prefix: &str,
) -> [Dispatch; 2] {
    let d = cfg.embed_dim;
    let (pooled, stride) = match cfg.pooling {
        Pooling::Token => (&acts.x, cfg.tokens()),
        Pooling::Avg => (&acts.pooled, 1),
    };
    [
        k.tokens
            .gather_indexed(
                gpu,
                (&w.head_w, cfg.num_classes),
                classes,
                head_rows,
                rows,
                d,
            )
            .named(format!("{prefix}.head_rows")),
        k.layernorm
            .dispatch_backward(
                gpu,
                pooled,
                &w.norm_w,
                head_rows,
                out,
                (rows, d),
                RowMap {
                    rows_per_input: per_image,
                    input_row_stride: stride,
                },
                cfg.layer_norm_eps,
                false,
            )
            .named(format!("{prefix}.norm_backward")),
    ]
}

/// What the backward's dispatches are recorded against: the device and its kernels, the model's
/// weights, the forward's activations, the backward's buffers, `batch` images with `per_image`
/// classes each, and the method whose chain it is.
pub(crate) struct Chain<'a> {
    pub gpu: &'a Gpu,
    pub k: &'a Kernels,
    pub cfg: &'a ModelConfig,
    pub w: &'a GpuWeights,
    pub acts: &'a Activations,
    pub back: &'a Backward,
    pub batch: usize,
    pub per_image: usize,
    /// The method recorded: its name prefixes the dispatches' names in profiles.
    pub method: Method,
}

impl Chain<'_> {
    /// Whether the chain's steps fold the LN2 backward into dO's product.
    fn folds(&self) -> bool {
        let rows = self.batch * self.per_image;
        self.k.agcam.folds(&self.k.gemm, rows)
    }

    /// The buffer that holds g at the output of `layer`, and the other one: folded steps
    /// alternate between them.
    fn grad(&self, layer: usize) -> (&wgpu::Buffer, &wgpu::Buffer) {
        let steps = if self.folds() {
            self.cfg.depth - 1 - layer
        } else {
            0
        };
        let g = &self.back.g;
        (&g[steps % 2], &g[(steps + 1) % 2])
    }
}

/// Records the AGCAM backward after the forward.
pub(crate) fn record_backward(c: &Chain<'_>, choice: ClassChoice) -> Vec<Dispatch> {
    let (gpu, k, cfg, acts) = (c.gpu, c.k, c.cfg, c.acts);
    let (back, batch, per_image) = (c.back, c.batch, c.per_image);
    let n = cfg.tokens();
    let rows = batch * per_image;
    let mut out = Vec::with_capacity(3 + 8 * cfg.depth);
    out.extend(record_chain_start(c, choice));
    for layer in (0..cfg.depth).rev() {
        out.extend(record_chain_step(c, layer));
        out.push(
            k.agcam
                .accumulate(
                    gpu,
                    &back.d_out,
                    &acts.layers[layer].v,
                    &acts.layers[layer].cls_scores,
                    &back.maps,
                    (rows, per_image),
                    (n, cfg.num_heads, cfg.head_dim()),
                    layer + 1 != cfg.depth,
                )
                .named(format!("agcam.blocks.{layer}.map")),
        );
    }
    out
}

/// Records the start of the chain: the class choice (for [`ClassChoice::TopK`]) and
/// g = LN_finalᵀ(W_head[c]) at the class token of x_L, into `back.g`.
pub(crate) fn record_chain_start(c: &Chain<'_>, choice: ClassChoice) -> Vec<Dispatch> {
    let (gpu, k, cfg, w) = (c.gpu, c.k, c.cfg, c.w);
    let (acts, back, batch, per_image) = (c.acts, c.back, c.batch, c.per_image);
    let rows = batch * per_image;
    let mut out = Vec::with_capacity(3);
    if choice == ClassChoice::TopK {
        out.push(record_topk(gpu, k, cfg, acts, back, batch, per_image));
    }
    let buffers = (&back.classes, &back.upstream, c.grad(c.cfg.depth - 1).0);
    out.extend(record_head_gradient(
        gpu,
        k,
        (cfg, w, acts),
        buffers,
        (rows, per_image),
        c.method.name(),
    ));
    out
}

/// Records one layer of the chain, from g (at the layer's output, [`Chain::grad`]) to g_y
/// (the previous layer's output) and dO = (ls1 ⊙ g_y) · W_proj (in `back.d_out`).
pub(crate) fn record_chain_step(c: &Chain<'_>, layer: usize) -> Vec<Dispatch> {
    let (gpu, k, cfg, w) = (c.gpu, c.k, c.cfg, c.w);
    let (acts, back, batch, per_image) = (c.acts, c.back, c.batch, c.per_image);
    let (d, f) = (cfg.embed_dim, cfg.mlp_hidden);
    let rows = (batch * per_image, per_image);
    let eps = cfg.layer_norm_eps;
    let (blk, keep) = (&w.blocks[layer], &acts.layers[layer]);
    let (g, g_next) = c.grad(layer);
    let name = |part: &str| format!("{}.blocks.{layer}.{part}", c.method.name());
    // fc1ᵀ(gelu' ⊙ fc2ᵀ(ls2 ⊙ g)), gelu' at the class token's fc1 pre-activation, which the
    // forward kept; times LN2's γ where the next product folds LN2's backward in.
    let fold = c.folds();
    let mut out = vec![
        k.agcam
            .vecmat(
                gpu,
                &k.gemm,
                g,
                &blk.ls2,
                &blk.fc2_w,
                Factor::GeluGrad(&keep.pre_cls),
                &back.hidden,
                rows,
                (d, f),
            )
            .named(name("mlp.fc2_t")),
        k.agcam
            .vecmat(
                gpu,
                &k.gemm,
                &back.hidden,
                &w.ones,
                &blk.fc1_w,
                if fold {
                    Factor::Column(&blk.norm2_w)
                } else {
                    Factor::One
                },
                &back.upstream,
                rows,
                (f, d),
            )
            .named(name("mlp.fc1_t")),
    ];
    // dO = (ls1 ⊙ g_y) · W_proj, g_y = g + LN2ᵀ(fc1ᵀ(…)).
    if fold {
        let norm = NormFold {
            residual: g,
            scaled_upstream: &back.upstream,
            x: &keep.y_cls,
            eps,
            out: g_next,
        };
        out.push(
            k.agcam
                .vecmat_folded(gpu, &norm, &blk.ls1, &blk.proj_w, &back.d_out, rows, (d, d))
                .named(name("attn.proj_t")),
        );
        return out;
    }
    out.push(
        k.layernorm
            .dispatch_backward(
                gpu,
                &keep.y_cls,
                &blk.norm2_w,
                &back.upstream,
                g,
                (rows.0, d),
                RowMap {
                    rows_per_input: per_image,
                    input_row_stride: 1,
                },
                eps,
                true,
            )
            .named(name("norm2_backward")),
    );
    out.push(
        k.agcam
            .vecmat(
                gpu,
                &k.gemm,
                g,
                &blk.ls1,
                &blk.proj_w,
                Factor::One,
                &back.d_out,
                rows,
                (d, d),
            )
            .named(name("attn.proj_t")),
    );
    out
}
