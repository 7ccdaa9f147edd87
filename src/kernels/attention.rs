//! Launcher of shaders/attention.wgsl.

use super::{module, Access, Dispatch, Kernel};
use crate::gpu::Gpu;

/// Must match MAX_TOKENS and MAX_HEAD_DIM in attention.wgsl.
pub(crate) const MAX_TOKENS: usize = 2048;
pub(crate) const MAX_HEAD_DIM: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AttnParams {
    tokens: u32,
    heads: u32,
    head_dim: u32,
    dim: u32,
    scale: f32,
    _pad: [u32; 3],
}

pub(crate) struct Attention {
    kernel: Kernel,
}

/// The shape of one attention call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttnShape {
    pub batch: usize,
    pub tokens: usize,
    pub heads: usize,
    pub head_dim: usize,
}

impl Attention {
    pub fn new(gpu: &Gpu) -> Attention {
        let m = module(gpu, "attention");
        Attention {
            kernel: Kernel::new(
                gpu,
                &m,
                "attention",
                &[
                    (0, Access::Read),
                    (1, Access::ReadWrite),
                    (2, Access::ReadWrite),
                    (3, Access::ReadWrite),
                    (4, Access::Uniform),
                ],
                &[],
            ),
        }
    }

    /// Softmax attention of `qkv` [B·N, 3D] into `out` [B·N, D]; also writes the class-token
    /// score rows to `cls_scores` [B, H, N] and V to `v_keep` [B·N, D].
    pub fn dispatch(
        &self,
        gpu: &Gpu,
        qkv: &wgpu::Buffer,
        out: &wgpu::Buffer,
        cls_scores: &wgpu::Buffer,
        v_keep: &wgpu::Buffer,
        s: AttnShape,
    ) -> Dispatch {
        debug_assert!(s.tokens <= MAX_TOKENS && s.head_dim <= MAX_HEAD_DIM);
        let params = AttnParams {
            tokens: s.tokens as u32,
            heads: s.heads as u32,
            head_dim: s.head_dim as u32,
            dim: (s.heads * s.head_dim) as u32,
            scale: (s.head_dim as f64).powf(-0.5) as f32,
            _pad: [0; 3],
        };
        let uniform = gpu.uniform("attention params", &params);
        self.kernel.dispatch(
            gpu,
            &[qkv, out, cls_scores, v_keep, &uniform],
            [s.tokens as u32, s.heads as u32, s.batch as u32],
        )
    }
}
