//! Memory planning: what a chunk of images needs on the GPU for a method, and how many images
//! fit the memory budget and the adapter's largest binding.

use super::agcam::{backward_bytes_per_row, backward_largest_binding_per_row};
use super::baselines::{rollout_bytes_per_image, rollout_largest_binding_per_image};
use super::full_backward::{full_bytes_per_image, full_largest_binding_per_image};
use super::transformer_attribution::{lrp_bytes_per_image, lrp_largest_binding_per_image};
use super::Method;
use crate::error::Error;
use crate::gpu::Gpu;
use crate::kernels::Kernels;
use crate::model::{ModelConfig, Pooling};
use crate::vit::{
    activation_bytes_per_image, largest_binding_per_image, AttnScratch, ForwardKeeps,
};

/// What a chunk's buffers hold, per image, beyond those every chunk holds: what memory planning
/// counts against the budget and the adapter's binding limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Plan {
    /// The forward's attention scratch.
    pub(super) scratch: AttnScratch,
    /// Attention rollout's kept attention.
    pub(super) rollout: bool,
    /// The full backward for `.0` classes per image, keeping the layers from `.1` on.
    pub(super) full: Option<(usize, usize)>,
    /// Transformer attribution's relevance buffers for so many classes per image.
    pub(super) lrp: Option<usize>,
    /// Gradient rows per image of the backward chain's buffers (`Backward`): the classes
    /// explained per image, whatever the method; 0 for predictions.
    pub(super) chain_rows: usize,
}

impl Plan {
    /// What a chunk of up to `batch` images on kernels `k` needs for `explain` (a method and
    /// the classes explained per image), or for predictions.
    pub(super) fn of(
        gpu: &Gpu,
        k: &Kernels,
        cfg: &ModelConfig,
        explain: Option<(Method, usize)>,
        batch: usize,
    ) -> Plan {
        let method = explain.map(|(m, _)| m);
        let per_image = explain.map_or(0, |(_, classes)| classes);
        let full = method
            .and_then(|m| full_backward_from(cfg, m))
            .map(|kept_from| (per_image, kept_from));
        // What record_forward is given for this method (see Engine::recording).
        let keeps = ForwardKeeps {
            mixed: method == Some(Method::AttentionRollout),
            full_layers: full.map_or(0, |(_, kept_from)| cfg.depth - kept_from),
        };
        Plan {
            scratch: AttnScratch::of(gpu, k, cfg, keeps, batch),
            rollout: keeps.mixed,
            full,
            lrp: (method == Some(Method::TransformerAttribution)).then_some(per_image),
            chain_rows: per_image,
        }
    }

    /// Both plans' buffers, as the workspace holds them once both have run.
    pub(super) fn union(self, other: Plan) -> Plan {
        Plan {
            scratch: self.scratch.max(other.scratch),
            rollout: self.rollout || other.rollout,
            full: match (self.full, other.full) {
                (Some((k, from)), Some((k2, from2))) => Some((k.max(k2), from.min(from2))),
                (a, b) => a.or(b),
            },
            lrp: self.lrp.max(other.lrp),
            chain_rows: self.chain_rows.max(other.chain_rows),
        }
    }

    /// Bytes per image: the activations, and the buffers of the methods planned for.
    pub(super) fn bytes_per_image(&self, cfg: &ModelConfig) -> usize {
        let full = self.full.map_or(0, |(per_image, kept_from)| {
            full_bytes_per_image(cfg, per_image, kept_from)
        });
        activation_bytes_per_image(cfg, self.scratch)
            + self.chain_rows * backward_bytes_per_row(cfg)
            + if self.rollout {
                rollout_bytes_per_image(cfg)
            } else {
                0
            }
            + full
            + self.lrp.map_or(0, |k| lrp_bytes_per_image(cfg, k))
    }

    /// Bytes per image of the largest single buffer.
    fn largest_binding_per_image(&self, cfg: &ModelConfig) -> usize {
        largest_binding_per_image(cfg, self.scratch)
            .max(self.chain_rows * backward_largest_binding_per_row(cfg))
            .max(if self.rollout {
                rollout_largest_binding_per_image(cfg)
            } else {
                0
            })
            .max(
                self.full
                    .map_or(0, |(k, _)| full_largest_binding_per_image(cfg, k)),
            )
            .max(
                self.lrp
                    .map_or(0, |k| lrp_largest_binding_per_image(cfg, k)),
            )
    }
}

/// The limits chunks must fit.
pub(super) struct Budget {
    /// Bytes of activations (`--max-gpu-mem`).
    memory: usize,
    /// The adapter's largest storage binding.
    binding: usize,
}

impl Budget {
    pub(super) fn new(gpu: &Gpu, max_gpu_mem: u64) -> Budget {
        Budget {
            memory: usize::try_from(max_gpu_mem).unwrap_or(usize::MAX),
            binding: gpu.limits.max_storage_buffer_binding_size as usize,
        }
    }

    /// Most images per chunk whose buffers for `plan` fit.
    pub(super) fn images(&self, cfg: &ModelConfig, plan: Plan) -> usize {
        (self.memory / plan.bytes_per_image(cfg))
            .min(self.binding / plan.largest_binding_per_image(cfg))
    }

    /// Why not even one image fits, for `what` (a method of `classes` classes per image, or
    /// predictions at 0).
    pub(super) fn refusal(
        &self,
        cfg: &ModelConfig,
        plan: Plan,
        what: &str,
        classes: usize,
    ) -> Error {
        let size = |bytes: usize| match bytes {
            0..0x100000 => format!("{:.1} KiB", bytes as f64 / 1024.0),
            _ => format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64),
        };
        // The backward's buffers grow with the classes explained per image.
        let per_class = classes > 1;
        let bytes = plan.bytes_per_image(cfg);
        let why = if bytes > self.memory {
            format!(
                "{} of GPU memory, over --max-gpu-mem {}: raise --max-gpu-mem{}",
                size(bytes),
                size(self.memory),
                if per_class {
                    " or explain fewer classes"
                } else {
                    ""
                }
            )
        } else {
            format!(
                "a buffer of {}, over the adapter's binding limit of {}{}",
                size(plan.largest_binding_per_image(cfg)),
                size(self.binding),
                if per_class {
                    ": explain fewer classes"
                } else {
                    ""
                }
            )
        };
        Error::Invalid(format!(
            "{}: one image does not fit the GPU budget for {what}: it needs {why}",
            cfg.name
        ))
    }
}

/// The first layer whose activations `method` keeps for the full backward (every token, no
/// detach), or `None` when it does not run it: generic attention and transformer attribution go
/// back through every layer; Grad-CAM on an average-pooled model through the last block, where
/// its closed form (class-token pooling) does not hold.
fn full_backward_from(cfg: &ModelConfig, method: Method) -> Option<usize> {
    match (method, cfg.pooling) {
        (Method::GenericAttention | Method::TransformerAttribution, _) => Some(0),
        (Method::GradCam, Pooling::Avg) => Some(cfg.depth - 1),
        _ => None,
    }
}
