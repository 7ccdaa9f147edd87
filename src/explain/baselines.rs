//! The class-agnostic baselines of method.md §5 on the GPU: raw attention (last layer) and
//! attention rollout (all layers, from the head-averaged attention kept during the forward).

use crate::gpu::Gpu;
use crate::kernels::{ChainStep, Dispatch, Kernels};
use crate::model::ModelConfig;
use crate::vit::Activations;

/// Buffers attention rollout needs for up to `capacity` images.
pub(crate) struct RolloutBuffers {
    /// Per layer, (mean_h A + I) / 2: [B, N, N].
    pub mixed: Vec<wgpu::Buffer>,
    /// The chain's row vectors, [B, N] each, used in turn.
    ping: wgpu::Buffer,
    pong: wgpu::Buffer,
}

/// Bytes per image of the rollout buffers.
pub(crate) fn rollout_bytes_per_image(cfg: &ModelConfig) -> usize {
    let n = cfg.tokens();
    4 * (cfg.depth * n * n + 2 * n)
}

/// Bytes per image of rollout's largest buffer: one layer's kept attention [N, N].
pub(crate) fn rollout_largest_binding_per_image(cfg: &ModelConfig) -> usize {
    4 * cfg.tokens() * cfg.tokens()
}

impl RolloutBuffers {
    pub fn new(gpu: &Gpu, cfg: &ModelConfig, capacity: usize) -> RolloutBuffers {
        let n = cfg.tokens() as u64;
        let b = capacity as u64;
        RolloutBuffers {
            mixed: (0..cfg.depth)
                .map(|_| gpu.storage("rollout attention", 4 * b * n * n))
                .collect(),
            ping: gpu.storage("rollout row", 4 * b * n),
            pong: gpu.storage("rollout row", 4 * b * n),
        }
    }
}

/// Records the rollout chain over the kept layers into `maps` [B, N-1].
pub(crate) fn record_rollout(
    gpu: &Gpu,
    k: &Kernels,
    cfg: &ModelConfig,
    rollout: &RolloutBuffers,
    maps: &wgpu::Buffer,
    batch: usize,
) -> Vec<Dispatch> {
    let n = cfg.tokens();
    let depth = cfg.depth;
    let mut out = Vec::with_capacity(depth);
    // r ← r · Â_k from the last layer down; the ping-pong buffers alternate as input/output.
    for (step, layer) in (0..depth).rev().enumerate() {
        let first = step == 0;
        let last = layer == 0;
        let (input, output) = if step % 2 == 0 {
            (&rollout.pong, &rollout.ping)
        } else {
            (&rollout.ping, &rollout.pong)
        };
        let target = if last { maps } else { output };
        out.push(
            k.baselines
                .rollout_step(
                    gpu,
                    &rollout.mixed[layer],
                    input,
                    target,
                    (batch, n),
                    ChainStep { first, last },
                )
                .named(format!("rollout.blocks.{layer}")),
        );
    }
    out
}

/// Records raw attention (the last layer's class-token row, mean over heads) into `maps`.
pub(crate) fn record_raw_attention(
    gpu: &Gpu,
    k: &Kernels,
    cfg: &ModelConfig,
    acts: &Activations,
    maps: &wgpu::Buffer,
    batch: usize,
) -> Vec<Dispatch> {
    let last = acts.layers.last().expect("a model has at least one block");
    vec![k
        .baselines
        .raw_attention(
            gpu,
            &last.cls_scores,
            maps,
            (batch, cfg.tokens(), cfg.num_heads),
        )
        .named("raw_attention")]
}
