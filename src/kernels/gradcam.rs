//! Launcher of shaders/gradcam.wgsl: Grad-CAM's closed form (method.md §6.2) around the
//! backward product `w = u · W_qkv`, which `AgcamKernels::vecmat` runs.

use super::{module, words, Access, Dispatch, Kernel};
use crate::gpu::Gpu;

const WG: u32 = 64;

#[cfg(test)]
pub(super) const MIRROR: super::Mirror = super::Mirror {
    shader: "gradcam",
    constants: &[("WG", WG)],
    workgroups: &[
        ("key_value_gradient", [WG, 1, 1]),
        ("patch_map", [WG, 1, 1]),
    ],
    structs: &[super::layout!(GradCamParams {
        rows,
        per_image,
        tokens,
        heads,
        head_dim,
        scale,
        inv_patches
    })],
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GradCamParams {
    rows: u32,
    per_image: u32,
    tokens: u32,
    heads: u32,
    head_dim: u32,
    scale: f32,
    inv_patches: f32,
    _pad: u32,
}

impl GradCamParams {
    fn new(
        (rows, per_image): (usize, usize),
        (tokens, heads, head_dim): (usize, usize, usize),
    ) -> Self {
        GradCamParams {
            rows: rows as u32,
            per_image: per_image as u32,
            tokens: tokens as u32,
            heads: heads as u32,
            head_dim: head_dim as u32,
            scale: (head_dim as f64).powf(-0.5) as f32,
            inv_patches: (1.0 / (tokens - 1) as f64) as f32,
            _pad: 0,
        }
    }
}

pub(crate) struct GradCamKernels {
    key_value_gradient: Kernel,
    patch_map: Kernel,
}

impl GradCamKernels {
    pub fn new(gpu: &Gpu) -> GradCamKernels {
        let m = module(gpu, "gradcam");
        GradCamKernels {
            key_value_gradient: Kernel::new(
                gpu,
                &m,
                "key_value_gradient",
                &[
                    (0, Access::Uniform),
                    (1, Access::Read),
                    (2, Access::Read),
                    (3, Access::Read),
                    (4, Access::Read),
                    (5, Access::ReadWrite),
                ],
                &[],
            ),
            patch_map: Kernel::new(
                gpu,
                &m,
                "patch_map",
                &[
                    (0, Access::Uniform),
                    (6, Access::Read),
                    (7, Access::Read),
                    (8, Access::ReadWrite),
                ],
                &[],
            ),
        }
    }

    /// `u[r]` [R, 3D]: the mean over the patch tokens of ∂logit/∂qkv of the last block, from
    /// `d_out` [R, D] (∂logit/∂ its merged attention output at the class token), its V
    /// [B·N, D], class-token scores [B, H, N] and `qkv` [B·N, 3D] (the class token's query).
    #[allow(clippy::too_many_arguments)]
    pub fn key_value_gradient(
        &self,
        gpu: &Gpu,
        d_out: &wgpu::Buffer,
        v: &wgpu::Buffer,
        cls_scores: &wgpu::Buffer,
        qkv: &wgpu::Buffer,
        u: &wgpu::Buffer,
        (rows, per_image): (usize, usize),
        (tokens, heads, head_dim): (usize, usize, usize),
    ) -> Dispatch {
        let params = GradCamParams::new((rows, per_image), (tokens, heads, head_dim));
        let uniform = gpu.uniform("grad-cam params", &params);
        let dim = heads * head_dim;
        let images = rows.div_ceil(per_image);
        self.key_value_gradient
            .bind()
            .uniform(0, &uniform)
            .storage(1, d_out, words(rows * dim))
            .storage(2, v, words(images * tokens * dim))
            .storage(3, cls_scores, words(images * heads * tokens))
            .storage(4, qkv, words(images * tokens * 3 * dim))
            .storage(5, u, words(rows * 3 * dim))
            .dispatch(gpu, [heads as u32, rows as u32, 1])
            .work(
                2 * rows * tokens * dim,
                4 * (rows * 4 * dim + images * tokens * (dim + heads)),
            )
    }

    /// `maps[r, j − 1] = ReLU(x[r / K, j] · w[r])` over the patch tokens j, with `x` the last
    /// block's LN1 output [B·N, D] and `w` [R, D].
    pub fn patch_map(
        &self,
        gpu: &Gpu,
        x: &wgpu::Buffer,
        w: &wgpu::Buffer,
        maps: &wgpu::Buffer,
        (rows, per_image): (usize, usize),
        (tokens, heads, head_dim): (usize, usize, usize),
    ) -> Dispatch {
        let params = GradCamParams::new((rows, per_image), (tokens, heads, head_dim));
        let uniform = gpu.uniform("grad-cam map params", &params);
        let dim = heads * head_dim;
        let images = rows.div_ceil(per_image);
        let patches = tokens - 1;
        self.patch_map
            .bind()
            .uniform(0, &uniform)
            .storage(6, x, words(images * tokens * dim))
            .storage(7, w, words(rows * dim))
            .storage(8, maps, words(rows * patches))
            .dispatch(gpu, [(patches as u32).div_ceil(WG), rows as u32, 1])
            .work(
                2 * rows * patches * dim,
                4 * (images * tokens * dim + rows * (dim + patches)),
            )
    }
}
