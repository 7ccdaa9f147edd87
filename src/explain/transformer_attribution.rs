//! Transformer attribution (Chefer, Gur & Wolf, CVPR 2021; method.md §6.3) on the GPU: LRP with
//! the authors' rules through every block, interleaved with the full backward (full_backward.rs)
//! from the last block down, so that each block's attention relevance R_A,k meets its gradient
//! ∇A_k and only one block's [H, N, N] tensors exist at a time:
//!
//! ```text
//! R  = x_L[CLS] ⊙ ε(z⁺_head(one-hot(c)), x_L[CLS])     the head, then class-token pooling
//! per block k, from the last down to start_layer:
//!   add2 → fc2 z⁺ → fc1 z⁺ → clone2 → add1 → proj z⁺ → A·V   (R_A,k, R_V halved)
//!   r ← r + r · mean_h max(0, ∇A_k ⊙ R_A,k)                 generic attention's step
//!   q·kᵀ (halved) → qkv z⁺ → clone1                          (above start_layer only)
//! map = r[1:]
//! ```
//!
//! LayerNorms, GELU, softmax and layer scale pass relevance unchanged. Relevance tensors have
//! the gradients' layout [B, N, K, width] (image, token, class); each rule reads the kept
//! per-image activations, recomputing LN1's and LN2's outputs and the attention output A·V.
//! The z⁺ products sum only positive terms or read W⁺ and W⁻ as the weights load (`Products`
//! with a `WeightPart`), with no copies of the weights.

use super::agcam::{Backward, ClassChoice};
use super::full_backward::{
    record_full_backward, relevance_row_step, FullBackward, HeadProducts, Stop,
};
use crate::gpu::Gpu;
use crate::kernels::{Dispatch, Kernels, Linear, LrpKernels, RowMap, Shared};
use crate::model::{ModelConfig, Pooling};
use crate::vit::{Activations, GpuWeights};

/// Relevance buffers for up to `images` images with `per_image` classes each.
pub(crate) struct LrpBuffers {
    pub per_image: usize,
    /// [B·K, C]: one-hot at the logits, then its z⁺ ratio.
    logits: wgpu::Buffer,
    /// [B·N·K, D]: the relevance R, and the residual part of an Add.
    rel: wgpu::Buffer,
    res: wgpu::Buffer,
    /// [B·N·K, D]: a z⁺ input relevance x⁺⊙(sW⁺) (then the relevance) and x⁻'s part sW⁻.
    narrow_p: wgpu::Buffer,
    narrow_q: wgpu::Buffer,
    /// [B·N·K, max(F, 3D)]: the same for fc2's input; the q, k, v relevance.
    wide_p: wgpu::Buffer,
    wide_q: wgpu::Buffer,
    /// [B, K, H, N, padded]: the attention relevance R_A of the current block.
    attn: wgpu::Buffer,
    /// [B·K, 2]: an Add's rescaling factors.
    factors: wgpu::Buffer,
    /// Per image: fc2's input GELU(pre) [B·N, F]; a z⁺ rule's Z⁺ [B·N, max(F, 3D)] (and the
    /// head's [B, C]); a recomputed LayerNorm output and attention output [B·N, D]; q·kᵀ
    /// [B, H, N, padded].
    activation: wgpu::Buffer,
    z: wgpu::Buffer,
    normed: wgpu::Buffer,
    context: wgpu::Buffer,
    scores: wgpu::Buffer,
}

/// Values of (per gradient row, per image) buffers.
fn sizes(cfg: &ModelConfig) -> (usize, usize) {
    let (n, d, f, c) = (cfg.tokens(), cfg.embed_dim, cfg.mlp_hidden, cfg.num_classes);
    let wide = f.max(3 * d);
    let attn = cfg.num_heads * n * n.next_multiple_of(4);
    let per_row = c + 2 + n * (4 * d + 2 * wide) + attn;
    let per_image = n * (f + wide + 2 * d) + attn + c;
    (per_row, per_image)
}

/// Bytes per image of the LRP buffers with `per_image` classes.
pub(crate) fn lrp_bytes_per_image(cfg: &ModelConfig, per_image: usize) -> usize {
    let (row, image) = sizes(cfg);
    4 * (per_image * row + image)
}

/// Bytes per image of the largest LRP buffer (under the adapter's binding limit).
pub(crate) fn lrp_largest_binding_per_image(cfg: &ModelConfig, per_image: usize) -> usize {
    let (n, d, f) = (cfg.tokens(), cfg.embed_dim, cfg.mlp_hidden);
    let attn = cfg.num_heads * n * n.next_multiple_of(4);
    4 * per_image * (n * f.max(3 * d)).max(attn).max(cfg.num_classes)
}

impl LrpBuffers {
    pub fn new(gpu: &Gpu, cfg: &ModelConfig, images: usize, per_image: usize) -> LrpBuffers {
        let (n, d, f, c) = (cfg.tokens(), cfg.embed_dim, cfg.mlp_hidden, cfg.num_classes);
        let wide = f.max(3 * d);
        let rows = images * per_image;
        let attn = cfg.num_heads * n * n.next_multiple_of(4);
        let buffer = |label: &str, values: usize| gpu.storage(label, 4 * values as u64);
        LrpBuffers {
            per_image,
            logits: buffer("lrp logits", rows * c),
            rel: buffer("lrp relevance", rows * n * d),
            res: buffer("lrp residual relevance", rows * n * d),
            narrow_p: buffer("lrp input relevance", rows * n * d),
            narrow_q: buffer("lrp negative part", rows * n * d),
            wide_p: buffer("lrp wide input relevance", rows * n * wide),
            wide_q: buffer("lrp wide negative part", rows * n * wide),
            attn: buffer("lrp attention relevance", rows * attn),
            factors: buffer("lrp add factors", 2 * rows),
            activation: buffer("lrp mlp activation", images * n * f),
            z: buffer("lrp z+", images * (n * wide).max(c)),
            normed: buffer("lrp layernorm output", images * n * d),
            context: buffer("lrp attention output", images * n * d),
            scores: buffer("lrp q k", images * attn),
        }
    }
}

/// Records the forward's follow-up for transformer attribution: the full backward and the LRP
/// pass of `batch` images with `per_image` classes each, the map of each gradient row into
/// `back.maps`. Blocks below `start_layer` contribute nothing (method.md §6.3).
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_transformer_attribution(
    gpu: &Gpu,
    k: &Kernels,
    (cfg, w, acts): (&ModelConfig, &GpuWeights, &Activations),
    (back, full, lrp): (&Backward, &FullBackward, &LrpBuffers),
    (batch, per_image): (usize, usize),
    choice: ClassChoice,
    start_layer: usize,
) -> Vec<Dispatch> {
    assert!(start_layer < cfg.depth, "start layer past the last block");
    let pass = Lrp {
        gpu,
        k,
        lk: k.lrp(gpu),
        cfg,
        bufs: lrp,
        batch,
        classes: per_image,
    };
    let shape = (batch, per_image);
    let mut relevance = |layer: usize, out: &mut Vec<Dispatch>| {
        if layer + 1 == cfg.depth {
            // The classes are known now (the backward's first dispatches choose them).
            pass.record_head(out, w, acts, back);
        }
        let next = if layer + 1 == cfg.depth {
            &acts.x
        } else {
            &full.keep[layer + 1].x
        };
        pass.record_block(out, (layer, start_layer), w, (full, next));
        let weights = (&lrp.attn, true);
        let bufs = (back, full);
        out.push(relevance_row_step(
            gpu,
            k,
            cfg,
            bufs,
            shape,
            layer,
            start_layer,
            weights,
        ));
        if layer > start_layer {
            pass.record_block_input(out, layer, w, full);
        }
    };
    let stop = Stop::Layer(start_layer);
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

/// One recording of the LRP pass.
struct Lrp<'a> {
    gpu: &'a Gpu,
    k: &'a Kernels,
    lk: &'a LrpKernels,
    cfg: &'a ModelConfig,
    bufs: &'a LrpBuffers,
    batch: usize,
    classes: usize,
}

impl Lrp<'_> {
    fn shared(&self, inner: usize) -> Shared {
        Shared {
            classes: self.classes,
            inner,
        }
    }

    /// The z⁺ rule of `l` (LrpKernels::zplus) with this pass's scratch.
    fn zplus(&self, out: &mut Vec<Dispatch>, l: Linear<'_>, name: &str) {
        let z = &self.bufs.z;
        out.extend(self.lk.zplus(self.gpu, l, self.classes, z, name));
    }

    /// R at x_L: one-hot(c) at the logits through the head's z⁺ rule to the final LayerNorm's
    /// output, x ⊙ ε(R, x) at the class token (IndexSelect), zero at the other tokens.
    fn record_head(
        &self,
        out: &mut Vec<Dispatch>,
        w: &GpuWeights,
        acts: &Activations,
        back: &Backward,
    ) {
        let (gpu, cfg, b) = (self.gpu, self.cfg, self.bufs);
        let (d, c) = (cfg.embed_dim, cfg.num_classes);
        let rows = self.batch * self.classes;
        out.push(
            self.lk
                .one_hot(gpu, &back.classes, &b.logits, (rows, c))
                .named("lrp.one_hot"),
        );
        let head = Linear {
            weight: &w.head_w,
            input: &acts.final_cls,
            rows: self.batch,
            features: (c, d),
            r_out: &b.logits,
            r_in: (&b.narrow_p, &b.narrow_q),
        };
        self.zplus(out, head, "lrp.head");
        out.push(
            self.lk
                .clone_merge(
                    gpu,
                    (None, &b.narrow_p),
                    &acts.final_cls,
                    rows * d,
                    self.shared(d),
                )
                .named("lrp.pool"),
        );
        // Class-token pooling: the class token carries all of it (average pooling is refused).
        let shape = (self.batch, cfg.tokens(), self.classes, d);
        out.push(
            self.k
                .backward(gpu)
                .seed(gpu, &b.narrow_p, &b.rel, shape, Pooling::Token)
                .named("lrp.seed"),
        );
    }

    /// The recomputed output of a block's LayerNorm over the kept input `x`.
    fn layernorm(
        &self,
        x: &wgpu::Buffer,
        (gamma, beta): (&wgpu::Buffer, &wgpu::Buffer),
    ) -> Dispatch {
        let cfg = self.cfg;
        let rows = (self.batch * cfg.tokens(), cfg.embed_dim);
        let eps = cfg.layer_norm_eps;
        let dst = &self.bufs.normed;
        self.k
            .layernorm
            .dispatch(self.gpu, x, gamma, beta, dst, rows, RowMap::IDENTITY, eps)
    }

    /// Block `layer` from R at its output (in `rel`, `next` = the output x_{k+1}) down to the
    /// attention relevance R_A in `attn` (halved), with R_V (halved) in the v columns of
    /// `wide_q` and the residual part of add1 in `rel`; the q·kᵀ scores are recomputed for
    /// [`Lrp::record_block_input`] unless this is `start_layer`.
    fn record_block(
        &self,
        out: &mut Vec<Dispatch>,
        (layer, start_layer): (usize, usize),
        w: &GpuWeights,
        (full, next): (&FullBackward, &wgpu::Buffer),
    ) {
        let (gpu, cfg, b, lk) = (self.gpu, self.cfg, self.bufs, self.lk);
        let (blk, keep) = (&w.blocks[layer], &full.keep[layer]);
        let (n, d, f) = (cfg.tokens(), cfg.embed_dim, cfg.mlp_hidden);
        let (images, kk) = (self.batch, self.classes);
        let rows = images * n;
        let name = |part: &str| format!("lrp.blocks.{layer}.{part}");
        let add_shape = (images, n, kk, d);

        // add2: x_{k+1} = y + mlp; rel ← the MLP's part, res ← the residual's.
        let [sums, parts] = lk.add(
            gpu,
            (&b.rel, &b.res),
            (next, &keep.y),
            &b.factors,
            add_shape,
        );
        out.push(sums.named(name("add2.sums")));
        out.push(parts.named(name("add2.parts")));
        out.push(
            self.k
                .backward(gpu)
                .gelu_copy(gpu, &keep.pre, &b.activation, rows * f)
                .named(name("mlp.gelu")),
        );
        let fc2 = Linear {
            weight: &blk.fc2_w,
            input: &b.activation,
            rows,
            features: (d, f),
            r_out: &b.rel,
            r_in: (&b.wide_p, &b.wide_q),
        };
        self.zplus(out, fc2, &name("mlp.fc2"));
        out.push(
            self.layernorm(&keep.y, (&blk.norm2_w, &blk.norm2_b))
                .named(name("norm2")),
        );
        let fc1 = Linear {
            weight: &blk.fc1_w,
            input: &b.normed,
            rows,
            features: (f, d),
            r_out: &b.wide_p,
            r_in: (&b.narrow_p, &b.narrow_q),
        };
        self.zplus(out, fc1, &name("mlp.fc1"));
        // clone2: R at y = the residual's part and the MLP's, merged into res.
        let count = rows * kk * d;
        out.push(
            lk.clone_merge(
                gpu,
                (Some(&b.narrow_p), &b.res),
                &keep.y,
                count,
                self.shared(d),
            )
            .named(name("clone2")),
        );

        // add1: y = x + branch; res ← the branch's part, rel ← the residual's.
        let [sums, parts] = lk.add(
            gpu,
            (&b.res, &b.rel),
            (&keep.y, &keep.x),
            &b.factors,
            add_shape,
        );
        out.push(sums.named(name("add1.sums")));
        out.push(parts.named(name("add1.parts")));
        // The attention output A·V, per image, then proj's z⁺ rule.
        let heads = HeadProducts::new(gpu, self.k, cfg, (images, 1));
        out.push(
            heads
                .attention_times_values(&keep.probs, &keep.qkv, &b.context)
                .named(name("attn.context")),
        );
        let proj = Linear {
            weight: &blk.proj_w,
            input: &b.context,
            rows,
            features: (d, d),
            r_out: &b.res,
            r_in: (&b.narrow_p, &b.narrow_q),
        };
        self.zplus(out, proj, &name("attn.proj"));

        // A·V: s = ε(R, A·V); R_A = ½ A ⊙ (s Vᵀ), R_V = ½ V ⊙ (Aᵀ s) (scaled with R_q, R_k).
        out.push(
            lk.ratio(gpu, &b.narrow_p, &b.context, count, self.shared(d))
                .named(name("attn.av_ratio")),
        );
        let per_row = HeadProducts::new(gpu, self.k, cfg, (images, kk));
        out.push(
            per_row
                .times_values_t(&b.narrow_p, &keep.qkv, &b.attn)
                .named(name("attn.av_attention")),
        );
        let attn_inner = cfg.num_heads * n * n.next_multiple_of(4);
        let attn_count = images * kk * attn_inner;
        out.push(
            lk.scale_by(
                gpu,
                &b.attn,
                &keep.probs,
                0.5,
                attn_count,
                self.shared(attn_inner),
            )
            .named(name("attn.av_attention_scale")),
        );
        if layer > start_layer {
            out.push(
                per_row
                    .attention_t_times(&keep.probs, &b.narrow_p, &b.wide_q)
                    .named(name("attn.av_values")),
            );
            out.push(
                heads
                    .queries_times_keys_t(&keep.qkv, &b.scores)
                    .named(name("attn.scores")),
            );
        }
    }

    /// The rest of block `layer` once its R_A has been used: q·kᵀ (Z without the d^-½ scale,
    /// which cancels), qkv's z⁺ rule over LN1's output, clone1: R at the block input in `rel`.
    fn record_block_input(
        &self,
        out: &mut Vec<Dispatch>,
        layer: usize,
        w: &GpuWeights,
        full: &FullBackward,
    ) {
        let (gpu, cfg, b, lk) = (self.gpu, self.cfg, self.bufs, self.lk);
        let (blk, keep) = (&w.blocks[layer], &full.keep[layer]);
        let (n, d) = (cfg.tokens(), cfg.embed_dim);
        let (images, kk) = (self.batch, self.classes);
        let rows = images * n;
        let name = |part: &str| format!("lrp.blocks.{layer}.{part}");
        let attn_inner = cfg.num_heads * n * n.next_multiple_of(4);
        let attn_count = images * kk * attn_inner;
        out.push(
            lk.ratio(gpu, &b.attn, &b.scores, attn_count, self.shared(attn_inner))
                .named(name("attn.qk_ratio")),
        );
        let per_row = HeadProducts::new(gpu, self.k, cfg, (images, kk));
        out.push(
            per_row
                .times_keys(&b.attn, &keep.qkv, &b.wide_q, 1.0)
                .named(name("attn.qk_queries")),
        );
        out.push(
            per_row
                .t_times_queries(&b.attn, &keep.qkv, &b.wide_q, 1.0)
                .named(name("attn.qk_keys")),
        );
        let qkv_count = rows * kk * 3 * d;
        out.push(
            lk.scale_by(
                gpu,
                &b.wide_q,
                &keep.qkv,
                0.5,
                qkv_count,
                self.shared(3 * d),
            )
            .named(name("attn.qkv_scale")),
        );
        out.push(
            self.layernorm(&keep.x, (&blk.norm1_w, &blk.norm1_b))
                .named(name("norm1")),
        );
        let qkv = Linear {
            weight: &blk.qkv_w,
            input: &b.normed,
            rows,
            features: (3 * d, d),
            r_out: &b.wide_q,
            r_in: (&b.narrow_p, &b.narrow_q),
        };
        self.zplus(out, qkv, &name("attn.qkv"));
        // clone1: R at x = the residual's part (rel) and the attention branch's.
        let count = rows * kk * d;
        out.push(
            lk.clone_merge(
                gpu,
                (Some(&b.narrow_p), &b.rel),
                &keep.x,
                count,
                self.shared(d),
            )
            .named(name("clone1")),
        );
    }
}
