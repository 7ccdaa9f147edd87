//! Launcher of shaders/tokens.wgsl: im2col, token assembly and row gathers.

use super::{linear_grid, module, words, Access, Dispatch, Kernel, Precision};
use crate::gpu::Gpu;

const WG: u32 = 256;

#[cfg(test)]
pub(super) const MIRROR: super::Mirror = super::Mirror {
    shader: "tokens",
    constants: &[("WG", WG)],
    workgroups: &[
        ("im2col", [WG, 1, 1]),
        ("assemble", [WG, 1, 1]),
        ("gather_strided", [WG, 1, 1]),
        ("gather_indexed", [WG, 1, 1]),
        ("mean_patches", [WG, 1, 1]),
    ],
    structs: &[super::layout!(TokenParams { count, dim, a, b })],
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct TokenParams {
    count: u32,
    dim: u32,
    a: u32,
    b: u32,
}

pub(crate) struct Tokens {
    /// Whether `gather_indexed` reads its source as f16 pairs.
    src_f16: bool,
    im2col: Kernel,
    assemble: Kernel,
    gather_strided: Kernel,
    gather_indexed: Kernel,
    mean_patches: Kernel,
}

impl Tokens {
    /// `precision` is that of the matrix `gather_indexed` reads (the classifier weights).
    pub fn new(gpu: &Gpu, precision: Precision) -> Tokens {
        let m = module(gpu, "tokens");
        let src_dst: &'static [(u32, Access)] = &[
            (0, Access::Read),
            (3, Access::ReadWrite),
            (4, Access::Uniform),
        ];
        Tokens {
            src_f16: precision == Precision::F16,
            im2col: Kernel::new(gpu, &m, "im2col", src_dst, &[]),
            assemble: Kernel::new(
                gpu,
                &m,
                "assemble",
                &[
                    (0, Access::Read),
                    (1, Access::Read),
                    (2, Access::Read),
                    (3, Access::ReadWrite),
                    (4, Access::Uniform),
                ],
                &[],
            ),
            gather_strided: Kernel::new(gpu, &m, "gather_strided", src_dst, &[]),
            mean_patches: Kernel::new(gpu, &m, "mean_patches", src_dst, &[]),
            gather_indexed: Kernel::new(
                gpu,
                &m,
                "gather_indexed",
                &[
                    (0, Access::Read),
                    (3, Access::ReadWrite),
                    (4, Access::Uniform),
                    (5, Access::Read),
                    (6, Access::Read),
                ],
                &[("SRC_F16", (precision == Precision::F16) as u32 as f64)],
            ),
        }
    }

    fn uniform(
        gpu: &Gpu,
        count: usize,
        dim: usize,
        a: usize,
        b: usize,
    ) -> (wgpu::Buffer, [u32; 3]) {
        let params = TokenParams {
            count: count as u32,
            dim: dim as u32,
            a: a as u32,
            b: b as u32,
        };
        let groups = linear_grid((count as u32).div_ceil(WG));
        (gpu.uniform("tokens params", &params), groups)
    }

    /// `images` [B, 3, H, W] → `patches` [B·gh·gw, 3·P·P].
    pub fn im2col(
        &self,
        gpu: &Gpu,
        images: &wgpu::Buffer,
        patches: &wgpu::Buffer,
        batch: usize,
        (height, width): (usize, usize),
        patch: usize,
    ) -> Dispatch {
        let count = batch * 3 * height * width;
        let (u, groups) = Self::uniform(gpu, count, patch, height, width);
        self.im2col
            .bind()
            .storage(0, images, words(count))
            .storage(3, patches, words(count))
            .uniform(4, &u)
            .dispatch(gpu, groups)
            .work(0, 8 * count)
    }

    /// Tokens [B·N, D] = [class token; patch embeddings] + position embedding.
    #[allow(clippy::too_many_arguments)]
    pub fn assemble(
        &self,
        gpu: &Gpu,
        patch_embeddings: &wgpu::Buffer,
        cls_token: &wgpu::Buffer,
        pos_embed: &wgpu::Buffer,
        tokens: &wgpu::Buffer,
        batch: usize,
        n_tokens: usize,
        dim: usize,
    ) -> Dispatch {
        let (u, groups) = Self::uniform(gpu, batch * n_tokens * dim, dim, n_tokens, 0);
        let count = batch * n_tokens * dim;
        self.assemble
            .bind()
            .storage(0, patch_embeddings, words(batch * (n_tokens - 1) * dim))
            .storage(1, cls_token, words(dim))
            .storage(2, pos_embed, words(n_tokens * dim))
            .storage(3, tokens, words(count))
            .uniform(4, &u)
            .dispatch(gpu, groups)
            .work(count, 12 * count)
    }

    /// `dst[r] = src[r · stride]` for `rows` rows of width `dim`.
    pub fn gather_strided(
        &self,
        gpu: &Gpu,
        src: &wgpu::Buffer,
        dst: &wgpu::Buffer,
        rows: usize,
        dim: usize,
        stride: usize,
    ) -> Dispatch {
        let (u, groups) = Self::uniform(gpu, rows * dim, dim, stride, 0);
        let src_end = match rows {
            0 => 0,
            _ => ((rows - 1) * stride + 1) * dim,
        };
        self.gather_strided
            .bind()
            .storage(0, src, words(src_end))
            .storage(3, dst, words(rows * dim))
            .uniform(4, &u)
            .dispatch(gpu, groups)
            .work(0, 8 * rows * dim)
    }

    /// `dst[r] = src[index[r]]` for `rows` rows of width `dim`, from a source of `src_rows`
    /// rows (f16 pairs when the precision is f16); every index must be below `src_rows`.
    pub fn gather_indexed(
        &self,
        gpu: &Gpu,
        (src, src_rows): (&wgpu::Buffer, usize),
        index: &wgpu::Buffer,
        dst: &wgpu::Buffer,
        rows: usize,
        dim: usize,
    ) -> Dispatch {
        let (u, groups) = Self::uniform(gpu, rows * dim, dim, 0, 0);
        let (src_slot, src_bytes, other_slot) = if self.src_f16 {
            let bytes = (2 * src_rows * dim).next_multiple_of(4) as u64;
            (6, bytes, 0)
        } else {
            (0, words(src_rows * dim), 6)
        };
        self.gather_indexed
            .bind()
            .storage(src_slot, src, src_bytes)
            .unused(gpu, other_slot)
            .storage(3, dst, words(rows * dim))
            .uniform(4, &u)
            .storage(5, index, words(rows))
            .dispatch(gpu, groups)
            .work(0, 8 * rows * dim)
    }

    /// `dst[b]` = mean over the patch tokens of image b (global average pooling), [B, D].
    pub fn mean_patches(
        &self,
        gpu: &Gpu,
        tokens: &wgpu::Buffer,
        dst: &wgpu::Buffer,
        batch: usize,
        n_tokens: usize,
        dim: usize,
    ) -> Dispatch {
        let (u, groups) = Self::uniform(gpu, batch * dim, dim, n_tokens, 0);
        self.mean_patches
            .bind()
            .storage(0, tokens, words(batch * n_tokens * dim))
            .storage(3, dst, words(batch * dim))
            .uniform(4, &u)
            .dispatch(gpu, groups)
            .work(batch * n_tokens * dim, 4 * batch * n_tokens * dim)
    }
}
