//! Grad-CAM on the last block's LN1 output (method.md §6.2), class-token pooling, in closed
//! form: the AGCAM chain's first step gives dO, the gradient of the last block's merged
//! attention output at the class token, and then per gradient row
//!
//! ```text
//! u   = (1/P) [0, concat_h(−d^-0.5 · dS_h[CLS] · q_h[CLS]), concat_h((1 − a_h[CLS]) · dO_h)]
//! w   = u · W_qkv                 the mean over the patch tokens of ∂logit/∂X
//! map = ReLU(X[1..] · w)
//! ```
//!
//! from what the forward leaves of the last block: X in `normed`, q[CLS] in `qkv`, V and the
//! class token's scores in its `LayerKeep`.
//!
//! With average pooling every token reaches the logits, queries included, and the closed form
//! does not hold: [`record_grad_cam_full`] runs the last block's full backward instead.

use super::agcam::{record_chain_start, record_chain_step, Chain, ClassChoice};
use super::full_backward::{record_last_norm1_gradient, FullBackward};
use crate::kernels::{Dispatch, Factor, RowMap};
use crate::model::Pooling;

/// Records the Grad-CAM maps into `back.maps`, after a forward of a class-token-pooled model.
pub(crate) fn record_grad_cam(c: &Chain<'_>, choice: ClassChoice) -> Vec<Dispatch> {
    let (gpu, k, cfg, w) = (c.gpu, c.k, c.cfg, c.w);
    let (acts, back, batch, per_image) = (c.acts, c.back, c.batch, c.per_image);
    debug_assert_eq!(
        cfg.pooling,
        Pooling::Token,
        "the closed form needs class-token pooling"
    );
    let last = cfg.depth - 1;
    let rows = (batch * per_image, per_image);
    let shape = (cfg.tokens(), cfg.num_heads, cfg.head_dim());
    let d = cfg.embed_dim;
    let mut out = record_chain_start(c, choice);
    out.extend(record_chain_step(c, last));
    let keep = &acts.layers[last];
    out.push(
        k.gradcam
            .key_value_gradient(
                gpu,
                &back.d_out,
                &keep.v,
                &keep.cls_scores,
                &acts.qkv,
                &back.hidden,
                rows,
                shape,
            )
            .named(format!("grad-cam.blocks.{last}.qkv_gradient")),
    );
    out.push(
        k.agcam
            .vecmat(
                gpu,
                &k.gemm,
                &back.hidden,
                &w.ones,
                &w.blocks[last].qkv_w,
                Factor::One,
                &back.upstream,
                rows,
                (3 * d, d),
            )
            .named(format!("grad-cam.blocks.{last}.norm1_gradient")),
    );
    out.push(
        k.gradcam
            .patch_map(gpu, &acts.normed, &back.upstream, &back.maps, rows, shape)
            .named("grad-cam.map"),
    );
    out
}

/// Records the Grad-CAM maps into `back.maps` after a forward that kept the last block's
/// activations in `full` (any pooling; the engine uses it for average-pooled models): the last
/// block's full backward gives ∂logit/∂X at every token, then
///
/// ```text
/// w   = (1/P) Σ_{j ≥ 1} ∂logit/∂X[j]
/// map = ReLU(X[1..] · w)
/// ```
pub(crate) fn record_grad_cam_full(
    c: &Chain<'_>,
    full: &FullBackward,
    choice: ClassChoice,
) -> Vec<Dispatch> {
    let (gpu, k, cfg, w) = (c.gpu, c.k, c.cfg, c.w);
    let (acts, back, batch, per_image) = (c.acts, c.back, c.batch, c.per_image);
    let last = cfg.depth - 1;
    let (n, d) = (cfg.tokens(), cfg.embed_dim);
    let bufs = (back, full);
    let mut out =
        record_last_norm1_gradient(gpu, (k, cfg, w, acts), bufs, (batch, per_image), choice);
    // ∂logit/∂X is [B, N, K, D], so each image's tokens are rows of K·D values.
    out.push(
        k.tokens
            .mean_patches(gpu, &full.branch, &back.upstream, batch, n, per_image * d)
            .named(format!("grad-cam.blocks.{last}.weights")),
    );
    // X itself: the forward's LN1 output of the last block is overwritten by its LN2 output, so
    // it is recomputed from the kept block input, into the residual gradient (dead: the backward
    // stopped above LN1).
    let blk = &w.blocks[last];
    out.push(
        k.layernorm
            .dispatch(
                gpu,
                &full.keep[last - full.kept_from].x,
                &blk.norm1_w,
                &blk.norm1_b,
                &full.grad,
                (batch * n, d),
                RowMap::IDENTITY,
                cfg.layer_norm_eps,
            )
            .named(format!("grad-cam.blocks.{last}.norm1")),
    );
    let rows = (batch * per_image, per_image);
    let shape = (n, cfg.num_heads, cfg.head_dim());
    out.push(
        k.gradcam
            .patch_map(gpu, &full.grad, &back.upstream, &back.maps, rows, shape)
            .named("grad-cam.map"),
    );
    out
}
