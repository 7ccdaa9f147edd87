//! The ViT forward pass on the GPU, in the order of the model diagram (method.md §1), keeping
//! per layer what the AGCAM backward needs: V for every token, the class token's pre-softmax
//! score row, and the class token's residual stream before the MLP.

use crate::gpu::{Gpu, MIN_STORAGE_BYTES};
use crate::kernels::{
    AttnBuffers, AttnShape, Dispatch, Epilogue, Kernels, Precision, RowMap, View,
};
use crate::model::{HostTensor, ModelConfig, Pooling, VitWeights};

/// One block's weights on the GPU.
pub(crate) struct GpuBlock {
    pub norm1_w: wgpu::Buffer,
    pub norm1_b: wgpu::Buffer,
    pub qkv_w: wgpu::Buffer,
    pub qkv_b: wgpu::Buffer,
    pub proj_w: wgpu::Buffer,
    pub proj_b: wgpu::Buffer,
    /// Layer scale, or ones.
    pub ls1: wgpu::Buffer,
    pub norm2_w: wgpu::Buffer,
    pub norm2_b: wgpu::Buffer,
    pub fc1_w: wgpu::Buffer,
    pub fc1_b: wgpu::Buffer,
    pub fc2_w: wgpu::Buffer,
    pub fc2_b: wgpu::Buffer,
    /// Layer scale, or ones.
    pub ls2: wgpu::Buffer,
}

/// The model's weights on the GPU, each tensor in its own buffer, in checkpoint layout.
pub(crate) struct GpuWeights {
    pub patch_w: wgpu::Buffer,
    pub patch_b: wgpu::Buffer,
    pub cls_token: wgpu::Buffer,
    pub pos_embed: wgpu::Buffer,
    pub blocks: Vec<GpuBlock>,
    pub norm_w: wgpu::Buffer,
    pub norm_b: wgpu::Buffer,
    pub head_w: wgpu::Buffer,
    pub head_b: wgpu::Buffer,
    /// max(3D, F) ones: the scale of branches without layer scale, and of Grad-CAM's
    /// product with the whole W_qkv.
    pub ones: wgpu::Buffer,
}

/// `data` as f16, two values per u32 (low half first), as `unpack2x16float` reads them.
pub(crate) fn pack_f16(data: &[f32]) -> Vec<u32> {
    data.chunks(2)
        .map(|pair| {
            let lo = half::f16::from_f32(pair[0]).to_bits() as u32;
            let hi = pair
                .get(1)
                .map_or(0, |&v| half::f16::from_f32(v).to_bits() as u32);
            lo | hi << 16
        })
        .collect()
}

impl GpuWeights {
    /// Uploads every tensor once; with [`Precision::F16`] the weight matrices as f16.
    pub fn upload(
        gpu: &Gpu,
        cfg: &ModelConfig,
        w: &VitWeights,
        precision: Precision,
    ) -> GpuWeights {
        let up = |name: &str, t: &HostTensor| gpu.storage_from(name, &t.data);
        let matrix = |name: &str, t: &HostTensor| match precision {
            Precision::F32 => up(name, t),
            Precision::F16 => gpu.storage_from(name, &pack_f16(&t.data)),
        };
        let ones = vec![1.0f32; (3 * cfg.embed_dim).max(cfg.mlp_hidden)];
        let ones_buffer = gpu.storage_from("ones", &ones);
        let scale = |name: &str, t: &Option<HostTensor>| match t {
            Some(t) => up(name, t),
            None => ones_buffer.clone(),
        };
        GpuWeights {
            patch_w: matrix("patch_embed.proj.weight", &w.patch_w),
            patch_b: up("patch_embed.proj.bias", &w.patch_b),
            cls_token: up("cls_token", &w.cls_token),
            pos_embed: up("pos_embed", &w.pos_embed),
            blocks: w
                .blocks
                .iter()
                .map(|b| GpuBlock {
                    norm1_w: up("norm1.weight", &b.norm1_w),
                    norm1_b: up("norm1.bias", &b.norm1_b),
                    qkv_w: matrix("attn.qkv.weight", &b.qkv_w),
                    qkv_b: up("attn.qkv.bias", &b.qkv_b),
                    proj_w: matrix("attn.proj.weight", &b.proj_w),
                    proj_b: up("attn.proj.bias", &b.proj_b),
                    ls1: scale("ls1.gamma", &b.ls1),
                    norm2_w: up("norm2.weight", &b.norm2_w),
                    norm2_b: up("norm2.bias", &b.norm2_b),
                    fc1_w: matrix("mlp.fc1.weight", &b.fc1_w),
                    fc1_b: up("mlp.fc1.bias", &b.fc1_b),
                    fc2_w: matrix("mlp.fc2.weight", &b.fc2_w),
                    fc2_b: up("mlp.fc2.bias", &b.fc2_b),
                    ls2: scale("ls2.gamma", &b.ls2),
                })
                .collect(),
            norm_w: up("norm.weight", &w.norm_w),
            norm_b: up("norm.bias", &w.norm_b),
            head_w: matrix("head.weight", &w.head_w),
            head_b: up("head.bias", &w.head_b),
            ones: ones_buffer,
        }
    }
}

/// What the forward keeps of one layer for the backward.
pub(crate) struct LayerKeep {
    /// V of every token, merged heads: [B·N, D].
    pub v: wgpu::Buffer,
    /// The class token's pre-softmax scores: [B, H, N].
    pub cls_scores: wgpu::Buffer,
    /// The class token's residual stream after attention (the MLP's input): [B, D].
    pub y_cls: wgpu::Buffer,
    /// The class token's fc1 pre-activation, kept by the forward's fc1: [B, F].
    pub pre_cls: wgpu::Buffer,
}

/// What the forward keeps of one layer for the full backward (no detach), all tokens.
pub(crate) struct FullKeep {
    /// The block's input x_{k-1} [B·N, D] (LN1's input).
    pub x: wgpu::Buffer,
    /// q, k, v [B·N, 3D].
    pub qkv: wgpu::Buffer,
    /// Post-softmax attention [B, H, N, padded].
    pub probs: wgpu::Buffer,
    /// The residual stream after attention y_k [B·N, D] (LN2's input).
    pub y: wgpu::Buffer,
    /// fc1's pre-activation [B·N, F].
    pub pre: wgpu::Buffer,
}

/// Bytes per image of the [`FullKeep`] buffers of `layers` layers.
pub(crate) fn full_keep_bytes_per_image(cfg: &ModelConfig, layers: usize) -> usize {
    let n = cfg.tokens();
    let (d, f) = (cfg.embed_dim, cfg.mlp_hidden);
    4 * layers * (n * (5 * d + f) + attention_shape(cfg, 1).scores_per_image())
}

impl FullKeep {
    /// One per layer for the last `layers` layers, for up to `capacity` images.
    pub fn new(gpu: &Gpu, cfg: &ModelConfig, capacity: usize, layers: usize) -> Vec<FullKeep> {
        let rows = (capacity * cfg.tokens()) as u64;
        let (d, f) = (cfg.embed_dim as u64, cfg.mlp_hidden as u64);
        let scores = (capacity * attention_shape(cfg, 1).scores_per_image()) as u64;
        (0..layers)
            .map(|_| FullKeep {
                x: gpu.storage("kept block input", 4 * rows * d),
                qkv: gpu.storage("kept qkv", 4 * rows * 3 * d),
                probs: gpu.storage("kept attention", 4 * scores),
                y: gpu.storage("kept mlp input", 4 * rows * d),
                pre: gpu.storage("kept fc1 pre-activation", 4 * rows * f),
            })
            .collect()
    }
}

/// Activation buffers for up to `capacity` images.
pub(crate) struct Activations {
    /// Normalised input images [B, 3, H, W].
    pub images: wgpu::Buffer,
    patches: wgpu::Buffer,
    patch_out: wgpu::Buffer,
    /// The residual stream [B·N, D]; after the forward, x_L.
    pub x: wgpu::Buffer,
    /// LN1's output [B·N, D]; after a class-token-pooled forward, the last block's.
    pub normed: wgpu::Buffer,
    /// The qkv projection [B·N, 3D]; after a class-token-pooled forward, the last block's K
    /// and V of every token and Q of the class token.
    pub qkv: wgpu::Buffer,
    /// The unfused attention's scores and Vᵀ, sized by `scratch` (see [`AttnScratch`]).
    scores: wgpu::Buffer,
    v_t: wgpu::Buffer,
    scratch: AttnScratch,
    capacity: usize,
    attn_out: wgpu::Buffer,
    hidden: wgpu::Buffer,
    /// Mean of the patch tokens [B, D] (average-pooled models only).
    pub pooled: wgpu::Buffer,
    /// The final LayerNorm's output [B, D]: the head's input.
    pub final_cls: wgpu::Buffer,
    /// [B, C].
    pub logits: wgpu::Buffer,
    pub layers: Vec<LayerKeep>,
}

fn attention_shape(cfg: &ModelConfig, batch: usize) -> AttnShape {
    AttnShape {
        batch,
        tokens: cfg.tokens(),
        heads: cfg.num_heads,
        head_dim: cfg.head_dim(),
        class_token_only: false,
        keep_probs: true,
    }
}

/// What a forward keeps beyond what every forward keeps for the AGCAM backward; it decides
/// how each block's attention runs, and so which scratch the forward needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ForwardKeeps {
    /// Every layer's head-averaged attention (attention rollout).
    pub mixed: bool,
    /// The full backward's activations of the last `full_layers` layers.
    pub full_layers: usize,
}

impl ForwardKeeps {
    /// Block `i`'s attention for `batch` images, and whether its attention matrix goes
    /// straight into the full backward's copy instead of the `scores` scratch.
    fn block(self, cfg: &ModelConfig, i: usize, batch: usize) -> (AttnShape, bool) {
        // Under class-token pooling only the class token of the last block reaches the logits
        // (and the AGCAM backward): its block needs K and V of every token, the rest for the
        // class token alone. Rollout and the full backward keep the full last block, since
        // they read every attention row.
        let short_last = cfg.pooling == Pooling::Token && !self.mixed && self.full_layers == 0;
        let into_full = i + self.full_layers >= cfg.depth;
        let shape = AttnShape {
            class_token_only: short_last && i + 1 == cfg.depth,
            // Rollout and the full backward read the attention matrices; AGCAM, Grad-CAM's
            // closed form, raw attention and predictions only the class token's scores.
            keep_probs: self.mixed || into_full,
            ..attention_shape(cfg, batch)
        };
        (shape, into_full)
    }
}

/// Elements per image of the attention scratch a forward works in: `scores` [H, queries,
/// padded] and `v_t` [H, d, padded] of the blocks that run the unfused attention. Blocks on
/// the fused kernel use neither, and those whose attention matrix goes into the full
/// backward's copy use no `scores`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct AttnScratch {
    pub scores: usize,
    pub v_t: usize,
}

impl AttnScratch {
    /// What the forward with `keeps` needs on kernels `k` for chunks of up to `batch` images
    /// (whether the fused kernel runs can depend on the batch, never in favour of larger ones).
    pub fn of(
        gpu: &Gpu,
        k: &Kernels,
        cfg: &ModelConfig,
        keeps: ForwardKeeps,
        batch: usize,
    ) -> Self {
        (0..cfg.depth)
            .map(|i| keeps.block(cfg, i, batch))
            .filter(|&(shape, _)| !k.attention.fuses(gpu, shape))
            .fold(AttnScratch::default(), |need, (shape, into_full)| {
                need.max(AttnScratch {
                    scores: if into_full {
                        0
                    } else {
                        shape.scores_per_image()
                    },
                    v_t: shape.v_t_per_image(),
                })
            })
    }

    /// Each buffer the larger of the two.
    pub fn max(self, other: AttnScratch) -> AttnScratch {
        AttnScratch {
            scores: self.scores.max(other.scores),
            v_t: self.v_t.max(other.v_t),
        }
    }
}

/// Bytes per image of the largest single activation buffer, with `scratch`: chunks must keep
/// every binding under the adapter's `max_storage_buffer_binding_size`.
pub(crate) fn largest_binding_per_image(cfg: &ModelConfig, scratch: AttnScratch) -> usize {
    let n = cfg.tokens();
    let widest = (3 * cfg.embed_dim).max(cfg.mlp_hidden);
    4 * (n * widest.max(3 * cfg.patch_size * cfg.patch_size))
        .max(scratch.scores)
        .max(scratch.v_t)
}

/// Bytes of activations per image, with `scratch`.
pub(crate) fn activation_bytes_per_image(cfg: &ModelConfig, scratch: AttnScratch) -> usize {
    let n = cfg.tokens();
    let (d, f, c) = (cfg.embed_dim, cfg.mlp_hidden, cfg.num_classes);
    let (h, w) = cfg.image_size;
    let per_layer = n * d + cfg.num_heads * n + d + f;
    // An unused scratch buffer still holds MIN_STORAGE_BYTES.
    let least = MIN_STORAGE_BYTES as usize / 4;
    4 * (2 * 3 * h * w
        + n * (4 * d + 3 * d + f)
        + scratch.scores.max(least)
        + scratch.v_t.max(least)
        + d
        + c
        + cfg.depth * per_layer)
}

impl Activations {
    /// Buffers for up to `capacity` images, with `scratch` for the attention.
    pub fn new(gpu: &Gpu, cfg: &ModelConfig, capacity: usize, scratch: AttnScratch) -> Activations {
        let b = capacity as u64;
        let n = cfg.tokens() as u64;
        let (d, f) = (cfg.embed_dim as u64, cfg.mlp_hidden as u64);
        let (h, w) = (cfg.image_size.0 as u64, cfg.image_size.1 as u64);
        let g = n - 1;
        let f32s = |count: u64| 4 * count;
        Activations {
            images: gpu.storage("images", f32s(b * 3 * h * w)),
            patches: gpu.storage("patches", f32s(b * 3 * h * w)),
            patch_out: gpu.storage("patch embeddings", f32s(b * g * d)),
            x: gpu.storage("residual stream", f32s(b * n * d)),
            normed: gpu.storage("normed", f32s(b * n * d)),
            qkv: gpu.storage("qkv", f32s(b * n * 3 * d)),
            scores: Self::scores_buffer(gpu, capacity, scratch),
            v_t: Self::v_t_buffer(gpu, capacity, scratch),
            scratch,
            capacity,
            attn_out: gpu.storage("attention output", f32s(b * n * d)),
            hidden: gpu.storage("mlp hidden", f32s(b * n * f)),
            pooled: gpu.storage("pooled tokens", f32s(b * d)),
            final_cls: gpu.storage("final class token", f32s(b * d)),
            logits: gpu.storage("logits", f32s(b * cfg.num_classes as u64)),
            layers: (0..cfg.depth)
                .map(|_| LayerKeep {
                    v: gpu.storage("kept v", f32s(b * n * d)),
                    cls_scores: gpu.storage("kept scores", f32s(b * cfg.num_heads as u64 * n)),
                    y_cls: gpu.storage("kept class token", f32s(b * d)),
                    pre_cls: gpu.storage("kept class token fc1", f32s(b * f)),
                })
                .collect(),
        }
    }

    fn scores_buffer(gpu: &Gpu, capacity: usize, scratch: AttnScratch) -> wgpu::Buffer {
        gpu.storage("attention scores", 4 * (capacity * scratch.scores) as u64)
    }

    fn v_t_buffer(gpu: &Gpu, capacity: usize, scratch: AttnScratch) -> wgpu::Buffer {
        gpu.storage("v transposed", 4 * (capacity * scratch.v_t) as u64)
    }

    /// The attention scratch the buffers hold, per image.
    pub fn scratch(&self) -> AttnScratch {
        self.scratch
    }

    /// Enlarges the attention scratch to hold `need` (a forward that keeps more than those
    /// recorded so far). Returns whether a buffer was replaced: dispatches recorded over the
    /// old one must be recorded again.
    pub fn grow_scratch(&mut self, gpu: &Gpu, need: AttnScratch) -> bool {
        let want = self.scratch.max(need);
        if want == self.scratch {
            return false;
        }
        if want.scores > self.scratch.scores {
            self.scores = Self::scores_buffer(gpu, self.capacity, want);
        }
        if want.v_t > self.scratch.v_t {
            self.v_t = Self::v_t_buffer(gpu, self.capacity, want);
        }
        self.scratch = want;
        true
    }

    /// Every buffer held.
    #[cfg(test)]
    pub fn buffers(&self) -> Vec<&wgpu::Buffer> {
        let fixed = [
            &self.images,
            &self.patches,
            &self.patch_out,
            &self.x,
            &self.normed,
            &self.qkv,
            &self.scores,
            &self.v_t,
            &self.attn_out,
            &self.hidden,
            &self.pooled,
            &self.final_cls,
            &self.logits,
        ];
        let kept = self
            .layers
            .iter()
            .flat_map(|l| [&l.v, &l.cls_scores, &l.y_cls, &l.pre_cls]);
        fixed.into_iter().chain(kept).collect()
    }
}

/// Appends dispatches that together make one step: the first takes `name`, the others
/// `name.add` (a residual branch added by a second kernel, see `Gemm::residual`).
fn push_named(out: &mut Vec<Dispatch>, dispatches: Vec<Dispatch>, name: &str) {
    for (i, d) in dispatches.into_iter().enumerate() {
        out.push(d.named(if i == 0 {
            name.to_string()
        } else {
            format!("{name}.add")
        }));
    }
}

/// Records the forward pass of `batch` images (already in `acts.images`) up to the logits.
/// With `keep_mixed` (one [B, N, N] buffer per layer), also keeps each layer's head-averaged
/// attention mixed with the identity, for attention rollout; with `keep_full`, everything the
/// full backward reads, every block computed for all tokens: `keep_full` holds the last
/// `keep_full.len()` layers (all of them for generic attention, the last for Grad-CAM).
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_forward(
    gpu: &Gpu,
    k: &Kernels,
    cfg: &ModelConfig,
    w: &GpuWeights,
    acts: &Activations,
    batch: usize,
    keep_mixed: Option<&[wgpu::Buffer]>,
    keep_full: Option<&[FullKeep]>,
) -> Vec<Dispatch> {
    let n = cfg.tokens();
    let (d, f, p) = (cfg.embed_dim, cfg.mlp_hidden, cfg.patch_size);
    let rows = batch * n;
    let eps = cfg.layer_norm_eps;
    let keeps = ForwardKeeps {
        mixed: keep_mixed.is_some(),
        full_layers: keep_full.map_or(0, <[FullKeep]>::len),
    };
    let need = AttnScratch::of(gpu, k, cfg, keeps, batch);
    assert!(
        acts.scratch.max(need) == acts.scratch,
        "the attention scratch {:?} is smaller than the forward needs: {need:?}",
        acts.scratch
    );
    let mut out = Vec::with_capacity(4 + 11 * cfg.depth);

    // Patch embedding as im2col + GEMM, then [CLS; patches] + pos_embed.
    out.push(
        k.tokens
            .im2col(gpu, &acts.images, &acts.patches, batch, cfg.image_size, p)
            .named("patch_embed.im2col"),
    );
    out.push(
        k.gemm
            .linear(
                gpu,
                &acts.patches,
                &w.patch_w,
                &w.patch_b,
                &w.patch_b,
                &acts.patch_out,
                (batch * (n - 1), d, 3 * p * p),
                Epilogue::Bias,
            )
            .named("patch_embed.proj"),
    );
    out.push(
        k.tokens
            .assemble(
                gpu,
                &acts.patch_out,
                &w.cls_token,
                &w.pos_embed,
                &acts.x,
                batch,
                n,
                d,
            )
            .named("tokens"),
    );

    for (i, (blk, keep)) in w.blocks.iter().zip(&acts.layers).enumerate() {
        let (attn, _) = keeps.block(cfg, i, batch);
        let cls_only = attn.class_token_only;
        // The full backward's copies: the activations are written straight into them.
        let full = keep_full.and_then(|f| f.get((i + f.len()).checked_sub(cfg.depth)?));
        let qkv = full.map_or(&acts.qkv, |f| &f.qkv);
        let scores = full.map_or(&acts.scores, |f| &f.probs);
        // Rows the query side works on, and how far apart they sit in the token matrices.
        let (q_rows, stride) = if cls_only { (batch, n) } else { (rows, 1) };
        let tokens_view = |width: usize| View::rows(width * stride);
        let name = |part: &str| format!("blocks.{i}.{part}");
        // Where the branches and LN2's output go: LN1's output in `normed` is dead once qkv is
        // computed, except in the class-token-only last block, which keeps it (all tokens) for
        // Grad-CAM and works in the patch embeddings' buffer, dead since `tokens` and large
        // enough for its B rows.
        let scratch = if cls_only {
            &acts.patch_out
        } else {
            &acts.normed
        };

        // y = x + ls1 · proj(attention(LN1(x)))
        if let Some(f) = full {
            out.push(
                k.backward(gpu)
                    .copy(gpu, &acts.x, &f.x, rows * d)
                    .named(name("keep_x")),
            );
        }
        out.push(
            k.layernorm
                .dispatch(
                    gpu,
                    &acts.x,
                    &blk.norm1_w,
                    &blk.norm1_b,
                    &acts.normed,
                    (rows, d),
                    RowMap::IDENTITY,
                    eps,
                )
                .named(name("norm1")),
        );
        if cls_only {
            // K and V of every token: output features D..3D of the qkv projection.
            out.push(
                k.gemm
                    .linear_strided(
                        gpu,
                        (&acts.normed, View::rows(d)),
                        (
                            &blk.qkv_w,
                            View {
                                offset: (d * d) as u32,
                                ..View::rows(d)
                            },
                        ),
                        (&blk.qkv_b, &blk.qkv_b, d),
                        (
                            qkv,
                            View {
                                offset: d as u32,
                                ..View::rows(3 * d)
                            },
                        ),
                        (rows, 2 * d, d),
                        Epilogue::Bias,
                    )
                    .named(name("attn.kv")),
            );
        }
        out.push(
            k.gemm
                .linear_strided(
                    gpu,
                    (&acts.normed, tokens_view(d)),
                    (&blk.qkv_w, View::rows(d)),
                    (&blk.qkv_b, &blk.qkv_b, 0),
                    (qkv, tokens_view(3 * d)),
                    (q_rows, if cls_only { d } else { 3 * d }, d),
                    Epilogue::Bias,
                )
                .named(name(if cls_only { "attn.q" } else { "attn.qkv" })),
        );
        out.extend(k.attention.dispatch(
            gpu,
            &k.gemm,
            AttnBuffers {
                qkv,
                scores,
                v_t: &acts.v_t,
                out: &acts.attn_out,
                cls_scores: &keep.cls_scores,
                v_keep: &keep.v,
            },
            attn,
            &name("attn"),
        ));
        if let Some(mixed) = keep_mixed {
            let shape = (batch, n, attn.padded(), cfg.num_heads);
            out.push(
                k.baselines
                    .head_mean(gpu, scores, &mixed[i], shape)
                    .named(name("attn.head_mean")),
            );
        }
        let proj = k.gemm.residual(
            gpu,
            (&acts.attn_out, tokens_view(d)),
            (&blk.proj_w, View::rows(d)),
            (&blk.proj_b, &blk.ls1, 0),
            (&acts.x, tokens_view(d)),
            scratch,
            (q_rows, d, d),
        );
        push_named(&mut out, proj, &name("attn.proj"));
        out.push(
            k.tokens
                .gather_strided(gpu, &acts.x, &keep.y_cls, batch, d, n)
                .named(name("keep_cls")),
        );

        // x = y + ls2 · fc2(gelu(fc1(LN2(y))))
        if let Some(f) = full {
            out.push(
                k.backward(gpu)
                    .copy(gpu, &acts.x, &f.y, rows * d)
                    .named(name("keep_y")),
            );
        }
        out.push(
            k.layernorm
                .dispatch(
                    gpu,
                    &acts.x,
                    &blk.norm2_w,
                    &blk.norm2_b,
                    scratch,
                    (q_rows, d),
                    RowMap {
                        rows_per_input: 1,
                        input_row_stride: stride,
                    },
                    eps,
                )
                .named(name("norm2")),
        );
        // With `keep_full`, fc1 keeps its pre-activation and the GELU runs on its own.
        let (fc1_out, fc1_epilogue) = match full {
            Some(keep) => (&keep.pre, Epilogue::Bias),
            None => (&acts.hidden, Epilogue::Gelu),
        };
        // fc1 also keeps the class tokens' pre-activation for the AGCAM backward: every N-th
        // row, or every row where the rows are class tokens only.
        let cls_every = if cls_only { 1 } else { n };
        out.push(
            k.gemm
                .linear_keeping(
                    gpu,
                    [scratch, &blk.fc1_w, &blk.fc1_b, &blk.fc1_b, fc1_out],
                    (q_rows, f, d),
                    fc1_epilogue,
                    Some((&keep.pre_cls, cls_every)),
                )
                .named(name("mlp.fc1")),
        );
        if let Some(keep) = full {
            out.push(
                k.backward(gpu)
                    .gelu_copy(gpu, &keep.pre, &acts.hidden, q_rows * f)
                    .named(name("mlp.gelu")),
            );
        }
        // LN2's output in `scratch` is dead once fc1 has read it.
        let fc2 = k.gemm.residual(
            gpu,
            (&acts.hidden, View::rows(f)),
            (&blk.fc2_w, View::rows(f)),
            (&blk.fc2_b, &blk.ls2, 0),
            (&acts.x, tokens_view(d)),
            scratch,
            (q_rows, d, f),
        );
        push_named(&mut out, fc2, &name("mlp.fc2"));
    }

    // Class-token pooling: logits = head(LN(x_L)[CLS]).
    // Average pooling: logits = head(fc_norm(mean(x_L[1:]))); fc_norm sits in norm_w/norm_b.
    let (pooled, final_norm) = match cfg.pooling {
        Pooling::Token => (
            &acts.x,
            RowMap {
                rows_per_input: 1,
                input_row_stride: n,
            },
        ),
        Pooling::Avg => {
            out.push(
                k.tokens
                    .mean_patches(gpu, &acts.x, &acts.pooled, batch, n, d)
                    .named("pool"),
            );
            (&acts.pooled, RowMap::IDENTITY)
        }
    };
    out.push(
        k.layernorm
            .dispatch(
                gpu,
                pooled,
                &w.norm_w,
                &w.norm_b,
                &acts.final_cls,
                (batch, d),
                final_norm,
                eps,
            )
            .named("norm"),
    );
    out.push(
        k.gemm
            .linear(
                gpu,
                &acts.final_cls,
                &w.head_w,
                &w.head_b,
                &w.head_b,
                &acts.logits,
                (batch, cfg.num_classes, d),
                Epilogue::Bias,
            )
            .named("head"),
    );
    out
}
