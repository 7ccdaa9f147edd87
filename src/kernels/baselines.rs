//! Launcher of shaders/baselines.wgsl: raw attention and attention rollout.

use super::{linear_grid, module, words, Access, Dispatch, Kernel};
use crate::gpu::Gpu;

const WG: u32 = 64;

#[cfg(test)]
pub(super) const MIRROR: super::Mirror = super::Mirror {
    shader: "baselines",
    constants: &[("WG", WG)],
    workgroups: &[
        ("head_mean", [WG, 1, 1]),
        ("rollout_step", [WG, 1, 1]),
        ("raw_attention", [WG, 1, 1]),
    ],
    structs: &[super::layout!(BaselineParams {
        images,
        tokens,
        padded,
        heads,
        mode,
        count
    })],
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, Default)]
struct BaselineParams {
    images: u32,
    tokens: u32,
    padded: u32,
    heads: u32,
    mode: u32,
    count: u32,
    _pad: [u32; 2],
}

/// Where a rollout step sits in the chain.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChainStep {
    /// The chain starts here: r = e_CLS · Â (the class-token row of Â).
    pub first: bool,
    /// The chain ends here: write r[1:] as the map.
    pub last: bool,
}

pub(crate) struct Baselines {
    head_mean: Kernel,
    rollout_step: Kernel,
    raw_attention: Kernel,
}

const BINDINGS: &[(u32, Access)] = &[
    (0, Access::Read),
    (1, Access::Read),
    (2, Access::ReadWrite),
    (3, Access::Uniform),
];

impl Baselines {
    pub fn new(gpu: &Gpu) -> Baselines {
        let m = module(gpu, "baselines");
        Baselines {
            head_mean: Kernel::new(gpu, &m, "head_mean", BINDINGS, &[]),
            rollout_step: Kernel::new(gpu, &m, "rollout_step", BINDINGS, &[]),
            raw_attention: Kernel::new(
                gpu,
                &m,
                "raw_attention",
                &[
                    (0, Access::Read),
                    (2, Access::ReadWrite),
                    (3, Access::Uniform),
                ],
                &[],
            ),
        }
    }

    /// `mixed[b] = (mean_h probs[b, h] + I) / 2`, [B, N, N], from the padded probabilities.
    pub fn head_mean(
        &self,
        gpu: &Gpu,
        probs: &wgpu::Buffer,
        mixed: &wgpu::Buffer,
        (images, tokens, padded, heads): (usize, usize, usize, usize),
    ) -> Dispatch {
        let count = images * tokens * tokens;
        let params = BaselineParams {
            images: images as u32,
            tokens: tokens as u32,
            padded: padded as u32,
            heads: heads as u32,
            count: count as u32,
            ..Default::default()
        };
        let u = gpu.uniform("head mean params", &params);
        let probs_end = (images * heads * tokens).saturating_sub(1) * padded + tokens;
        self.head_mean
            .bind()
            .storage(0, probs, words(probs_end))
            .unused(gpu, 1)
            .storage(2, mixed, words(count))
            .uniform(3, &u)
            .dispatch(gpu, linear_grid((count as u32).div_ceil(WG)))
            .work(count * heads, 4 * count * (heads + 1))
    }

    /// One step of the rollout chain: `out[b] = r[b] · mixed[b]`.
    pub fn rollout_step(
        &self,
        gpu: &Gpu,
        mixed: &wgpu::Buffer,
        r: &wgpu::Buffer,
        out: &wgpu::Buffer,
        (images, tokens): (usize, usize),
        step: ChainStep,
    ) -> Dispatch {
        let count = images * tokens;
        let params = BaselineParams {
            images: images as u32,
            tokens: tokens as u32,
            mode: step.first as u32 | (step.last as u32) << 1,
            count: count as u32,
            ..Default::default()
        };
        let u = gpu.uniform("rollout params", &params);
        let written = if step.last {
            images * (tokens - 1)
        } else {
            count
        };
        let bind = self
            .rollout_step
            .bind()
            .storage(0, mixed, words(images * tokens * tokens))
            .storage(2, out, words(written))
            .uniform(3, &u);
        // The first step starts from e_CLS and reads no chain vector.
        let bind = if step.first {
            bind.unused(gpu, 1)
        } else {
            bind.storage(1, r, words(count))
        };
        bind.dispatch(gpu, linear_grid((count as u32).div_ceil(WG)))
            .work(2 * count * tokens, 4 * count * tokens)
    }

    /// `map[b] = mean_h softmax(cls_scores[b, h])[1:]`.
    pub fn raw_attention(
        &self,
        gpu: &Gpu,
        cls_scores: &wgpu::Buffer,
        map: &wgpu::Buffer,
        (images, tokens, heads): (usize, usize, usize),
    ) -> Dispatch {
        let params = BaselineParams {
            images: images as u32,
            tokens: tokens as u32,
            heads: heads as u32,
            ..Default::default()
        };
        let u = gpu.uniform("raw attention params", &params);
        self.raw_attention
            .bind()
            .storage(0, cls_scores, words(images * heads * tokens))
            .storage(2, map, words(images * (tokens - 1)))
            .uniform(3, &u)
            .dispatch(gpu, [images as u32, 1, 1])
            .work(4 * images * heads * tokens, 8 * images * heads * tokens)
    }
}
