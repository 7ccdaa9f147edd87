//! Launcher of attention: two batched GEMMs (gemm.wgsl) around shaders/attention.wgsl, or,
//! where the caller needs no attention matrix and the kernel set has it, one fused kernel that
//! never writes the [N, N] scores (`attention_fused`).

use super::gemm::{Batched, View};
use super::{linear_grid, module, words, Access, Dispatch, Gemm, Kernel};
use crate::gpu::Gpu;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AttnParams {
    rows: u32,
    tokens: u32,
    padded: u32,
    heads: u32,
    head_dim: u32,
    dim: u32,
    count: u32,
    queries: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct FusedParams {
    tokens: u32,
    heads: u32,
    head_dim: u32,
    dim: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

/// The shape of one attention call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttnShape {
    pub batch: usize,
    pub tokens: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// Compute the class token's query row only (keys and values still cover every token):
    /// all the last block needs under class-token pooling.
    pub class_token_only: bool,
    /// Leave the post-softmax attention in `scores` (attention rollout and the full backward
    /// read it). Without it, the fused kernel may run where the kernel set has it.
    pub keep_probs: bool,
}

impl AttnShape {
    /// Score rows and Vᵀ rows are padded to a multiple of 4 so they can be read as vec4.
    pub fn padded(&self) -> usize {
        self.tokens.next_multiple_of(4)
    }

    /// Query rows per (image, head): 1 for the class token's alone, else N.
    pub fn queries(&self) -> usize {
        if self.class_token_only {
            1
        } else {
            self.tokens
        }
    }

    /// Elements of the scores buffer per image the unfused path works in: H·queries·padded.
    pub fn scores_per_image(&self) -> usize {
        self.heads * self.queries() * self.padded()
    }

    /// Elements of the Vᵀ buffer per image: H·d·padded.
    pub fn v_t_per_image(&self) -> usize {
        self.heads * self.head_dim * self.padded()
    }
}

/// Buffers one attention call works in.
pub(crate) struct AttnBuffers<'a> {
    /// [B·N, 3D] from the qkv projection.
    pub qkv: &'a wgpu::Buffer,
    /// [B, H, queries, padded] scratch (see [`AttnShape::queries`]); unused by the fused
    /// kernel.
    pub scores: &'a wgpu::Buffer,
    /// [B, H, d, padded] scratch; unused by the fused kernel.
    pub v_t: &'a wgpu::Buffer,
    /// [B·N, D] output, heads merged.
    pub out: &'a wgpu::Buffer,
    /// [B, H, N] kept: the class token's pre-softmax scores.
    pub cls_scores: &'a wgpu::Buffer,
    /// [B·N, D] kept: V.
    pub v_keep: &'a wgpu::Buffer,
}

pub(crate) struct Attention {
    /// One invocation per softmax row (CPU kernel set), instead of one workgroup per row.
    serial: bool,
    softmax: Kernel,
    softmax_serial: Kernel,
    split_v: Kernel,
    /// The fused kernel, on the kernel sets that select it.
    fused: Option<Kernel>,
}

const WG: u32 = 64;
const FA_WG: u32 = 64;
/// Keys per workgroup-memory tile of the fused kernel: the host sizes nothing by it.
#[cfg(test)]
const FA_KEYS: u32 = 16;
const FA_MAX_D: u32 = 64;

#[cfg(test)]
pub(super) const MIRROR: super::Mirror = super::Mirror {
    shader: "attention",
    constants: &[
        ("WG", WG),
        ("FA_WG", FA_WG),
        ("FA_KEYS", FA_KEYS),
        ("FA_MAX_D", FA_MAX_D),
    ],
    workgroups: &[
        ("softmax_rows", [WG, 1, 1]),
        ("softmax_rows_serial", [WG, 1, 1]),
        ("split_v", [WG, 1, 1]),
        ("attention_fused", [FA_WG, 1, 1]),
    ],
    structs: &[
        super::layout!(AttnParams {
            rows,
            tokens,
            padded,
            heads,
            head_dim,
            dim,
            count,
            queries
        }),
        super::layout!(FusedParams {
            tokens,
            heads,
            head_dim,
            dim,
            scale
        }),
    ],
};

impl Attention {
    /// `serial`: the CPU kernel set's softmax; `fused`: compile the fused kernel (the GPU
    /// kernel set; on llvmpipe and lavapipe it is slower than the GEMMs, BENCHMARKS.md).
    pub fn new(gpu: &Gpu, serial: bool, fused: bool) -> Attention {
        let m = module(gpu, "attention");
        let fused = fused.then(|| {
            Kernel::new(
                gpu,
                &m,
                "attention_fused",
                &[
                    (1, Access::ReadWrite),
                    (3, Access::Read),
                    (4, Access::ReadWrite),
                    (6, Access::ReadWrite),
                    (7, Access::Uniform),
                ],
                &[],
            )
        });
        Attention {
            serial,
            fused,
            softmax: Kernel::new(
                gpu,
                &m,
                "softmax_rows",
                &[
                    (0, Access::ReadWrite),
                    (1, Access::ReadWrite),
                    (2, Access::Uniform),
                ],
                &[],
            ),
            softmax_serial: Kernel::new(
                gpu,
                &m,
                "softmax_rows_serial",
                &[
                    (0, Access::ReadWrite),
                    (1, Access::ReadWrite),
                    (2, Access::Uniform),
                ],
                &[],
            ),
            split_v: Kernel::new(
                gpu,
                &m,
                "split_v",
                &[
                    (2, Access::Uniform),
                    (3, Access::Read),
                    (4, Access::ReadWrite),
                    (5, Access::ReadWrite),
                ],
                &[],
            ),
        }
    }

    /// Softmax attention of `qkv` into `out`, keeping the class-token scores and V: four
    /// dispatches, named `{name}.scores`, `.softmax`, `.split_v` and `.values`, or one,
    /// `{name}.fused`, where the fused kernel runs (see [`Attention::fuses`]).
    pub fn dispatch(
        &self,
        gpu: &Gpu,
        gemm: &Gemm,
        buf: AttnBuffers<'_>,
        s: AttnShape,
        name: &str,
    ) -> Vec<Dispatch> {
        if let (Some(kernel), true) = (&self.fused, self.fuses(gpu, s)) {
            return vec![Self::dispatch_fused(gpu, kernel, &buf, s).named(format!("{name}.fused"))];
        }
        let (b, n, h, d) = (s.batch, s.tokens, s.heads, s.head_dim);
        let dim = h * d;
        let np = s.padded();
        let queries = s.queries();
        let params = AttnParams {
            rows: (b * h * queries) as u32,
            tokens: n as u32,
            padded: np as u32,
            heads: h as u32,
            head_dim: d as u32,
            dim: dim as u32,
            count: (b * n * dim) as u32,
            queries: queries as u32,
        };
        let uniform = gpu.uniform("attention params", &params);
        // Views into qkv [B·N, 3D]: head h of image i starts at row i·N, column (0|D|2D) + h·d.
        let qkv_view = |offset: usize| View {
            offset: offset as u32,
            row: (3 * dim) as u32,
            image: (n * 3 * dim) as u32,
            head: d as u32,
        };
        let scores_view = View {
            offset: 0,
            row: np as u32,
            image: (h * queries * np) as u32,
            head: (queries * np) as u32,
        };
        let scale = (d as f64).powf(-0.5) as f32;
        let scores = gemm
            .batched(
                gpu,
                (buf.qkv, qkv_view(0)),
                (buf.qkv, qkv_view(dim)),
                (buf.scores, scores_view),
                Batched {
                    m: queries,
                    n,
                    k: d,
                    images: b,
                    heads: h,
                },
                scale,
            )
            .named(format!("{name}.scores"));
        let softmax_rows = (b * h * queries) as u32;
        let (kernel, groups) = if self.serial {
            (&self.softmax_serial, linear_grid(softmax_rows.div_ceil(WG)))
        } else {
            (&self.softmax, linear_grid(softmax_rows))
        };
        let softmax = kernel
            .bind()
            .storage(0, buf.scores, words(b * s.scores_per_image()))
            .storage(1, buf.cls_scores, words(b * h * n))
            .uniform(2, &uniform)
            .dispatch(gpu, groups)
            .work(4 * b * h * queries * n, 4 * 2 * b * h * queries * n)
            .named(format!("{name}.softmax"));
        let split = self
            .split_v
            .bind()
            .uniform(2, &uniform)
            .storage(3, buf.qkv, words(b * n * 3 * dim))
            .storage(4, buf.v_keep, words(b * n * dim))
            .storage(5, buf.v_t, words((b * h * d).saturating_sub(1) * np + n))
            .dispatch(gpu, linear_grid(((b * n * dim) as u32).div_ceil(WG)))
            .work(0, 4 * 3 * b * n * dim)
            .named(format!("{name}.split_v"));
        let values = gemm
            .batched(
                gpu,
                (buf.scores, scores_view),
                (
                    buf.v_t,
                    View {
                        offset: 0,
                        row: np as u32,
                        image: (h * d * np) as u32,
                        head: (d * np) as u32,
                    },
                ),
                (
                    buf.out,
                    View {
                        offset: 0,
                        row: dim as u32,
                        image: (n * dim) as u32,
                        head: d as u32,
                    },
                ),
                Batched {
                    m: queries,
                    n: d,
                    k: np,
                    images: b,
                    heads: h,
                },
                1.0,
            )
            .named(format!("{name}.values"));
        vec![scores, softmax, split, values]
    }

    /// Whether [`Attention::dispatch`] runs the fused kernel for `s`: the kernel set has it,
    /// the caller needs no attention matrix, every query row is computed (the class-token-only
    /// block has a single row per head and no [N, N] matrix to avoid), the head dim fits its
    /// per-row registers, and the images fit one dispatch dimension.
    pub fn fuses(&self, gpu: &Gpu, s: AttnShape) -> bool {
        self.fused.is_some()
            && !s.keep_probs
            && !s.class_token_only
            && s.head_dim <= FA_MAX_D as usize
            && s.batch <= gpu.limits.max_compute_workgroups_per_dimension as usize
    }

    fn dispatch_fused(gpu: &Gpu, kernel: &Kernel, buf: &AttnBuffers<'_>, s: AttnShape) -> Dispatch {
        let (b, n, h, d) = (s.batch, s.tokens, s.heads, s.head_dim);
        let dim = h * d;
        let params = FusedParams {
            tokens: n as u32,
            heads: h as u32,
            head_dim: d as u32,
            dim: dim as u32,
            scale: (d as f64).powf(-0.5) as f32,
            _pad0: 0,
            _pad1: 0,
            _pad2: 0,
        };
        let uniform = gpu.uniform("fused attention params", &params);
        kernel
            .bind()
            .storage(1, buf.cls_scores, words(b * h * n))
            .storage(3, buf.qkv, words(b * n * 3 * dim))
            .storage(4, buf.v_keep, words(b * n * dim))
            .storage(6, buf.out, words(b * n * dim))
            .uniform(7, &uniform)
            .dispatch(gpu, [(n as u32).div_ceil(FA_WG), h as u32, b as u32])
            .work(
                4 * b * h * n * n * d,
                4 * (b * n * 3 * dim + 2 * b * n * dim + b * h * n),
            )
    }
}
