//! Launcher of attention: two batched GEMMs (gemm.wgsl) around shaders/attention.wgsl.

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
    row_step: u32,
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
}

impl AttnShape {
    /// Score rows and Vᵀ rows are padded to a multiple of 4 so they can be read as vec4.
    pub fn padded(&self) -> usize {
        self.tokens.next_multiple_of(4)
    }

    /// Elements of the scores buffer per image: H·N·padded.
    pub fn scores_per_image(&self) -> usize {
        self.heads * self.tokens * self.padded()
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
    /// [B, H, N, padded] scratch.
    pub scores: &'a wgpu::Buffer,
    /// [B, H, d, padded] scratch.
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
}

const WG: u32 = 64;

#[cfg(test)]
pub(super) const MIRROR: super::Mirror = super::Mirror {
    shader: "attention",
    constants: &[("WG", WG)],
    workgroups: &[
        ("softmax_rows", [WG, 1, 1]),
        ("softmax_rows_serial", [WG, 1, 1]),
        ("split_v", [WG, 1, 1]),
    ],
    structs: &[super::layout!(AttnParams {
        rows,
        tokens,
        padded,
        heads,
        head_dim,
        dim,
        count,
        row_step
    })],
};

impl Attention {
    pub fn new(gpu: &Gpu, serial: bool) -> Attention {
        let m = module(gpu, "attention");
        Attention {
            serial,
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
    /// dispatches, named `{name}.scores`, `.softmax`, `.split_v` and `.values`.
    pub fn dispatch(
        &self,
        gpu: &Gpu,
        gemm: &Gemm,
        buf: AttnBuffers<'_>,
        s: AttnShape,
        name: &str,
    ) -> Vec<Dispatch> {
        let (b, n, h, d) = (s.batch, s.tokens, s.heads, s.head_dim);
        let dim = h * d;
        let np = s.padded();
        // Query rows per (image, head).
        let queries = if s.class_token_only { 1 } else { n };
        let params = AttnParams {
            rows: (b * h * queries) as u32,
            tokens: n as u32,
            padded: np as u32,
            heads: h as u32,
            head_dim: d as u32,
            dim: dim as u32,
            count: (b * n * dim) as u32,
            row_step: (n / queries) as u32,
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
            image: (h * n * np) as u32,
            head: (n * np) as u32,
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
        // The last score row softmax touches, and where its n values end.
        let last_row = (b * h * queries).saturating_sub(1) * (n / queries);
        let softmax = kernel
            .bind()
            .storage(0, buf.scores, words(last_row * np + n))
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
}
