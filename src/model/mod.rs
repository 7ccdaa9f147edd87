//! Model description and weights: what a checkpoint holds, independent of where it came from.
//!
//! `config` turns a checkpoint's tensor shapes plus an optional JSON config into a
//! [`ModelConfig`]; `loader` reads safetensors (timm naming) into [`VitWeights`], host-side f32.

mod config;
mod loader;
mod random;

pub use config::{ConfigOverrides, ModelConfig, Pooling};
pub use loader::{load_model, Model};

/// A host tensor in f32, row-major, with its checkpoint shape.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values, row-major.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// A tensor from its shape and data; panics if they disagree (a programming error).
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "shape/data mismatch"
        );
        HostTensor { shape, data }
    }
}

/// Weights of one transformer block, in PyTorch `nn.Linear` layout (`[out, in]`).
#[derive(Debug, Clone)]
pub struct BlockWeights {
    /// LayerNorm before attention: weight and bias, `[D]`.
    pub norm1_w: HostTensor,
    /// See `norm1_w`.
    pub norm1_b: HostTensor,
    /// Fused query/key/value projection `[3D, D]` (q rows first, then k, then v).
    pub qkv_w: HostTensor,
    /// `[3D]`.
    pub qkv_b: HostTensor,
    /// Attention output projection `[D, D]`.
    pub proj_w: HostTensor,
    /// `[D]`.
    pub proj_b: HostTensor,
    /// Layer scale of the attention branch `[D]`, absent when the model has none.
    pub ls1: Option<HostTensor>,
    /// LayerNorm before the MLP, `[D]`.
    pub norm2_w: HostTensor,
    /// See `norm2_w`.
    pub norm2_b: HostTensor,
    /// First MLP layer `[F, D]`.
    pub fc1_w: HostTensor,
    /// `[F]`.
    pub fc1_b: HostTensor,
    /// Second MLP layer `[D, F]`.
    pub fc2_w: HostTensor,
    /// `[D]`.
    pub fc2_b: HostTensor,
    /// Layer scale of the MLP branch `[D]`, absent when the model has none.
    pub ls2: Option<HostTensor>,
}

/// All weights of a ViT, checked against its [`ModelConfig`].
#[derive(Debug, Clone)]
pub struct VitWeights {
    /// Patch embedding convolution `[D, 3, P, P]`.
    pub patch_w: HostTensor,
    /// `[D]`.
    pub patch_b: HostTensor,
    /// Class token `[D]`.
    pub cls_token: HostTensor,
    /// Position embedding `[1 + gh*gw, D]`.
    pub pos_embed: HostTensor,
    /// Transformer blocks, first to last.
    pub blocks: Vec<BlockWeights>,
    /// Final LayerNorm (`norm`, or `fc_norm` for average-pooled models), `[D]`.
    pub norm_w: HostTensor,
    /// See `norm_w`.
    pub norm_b: HostTensor,
    /// Classifier `[C, D]`.
    pub head_w: HostTensor,
    /// `[C]`.
    pub head_b: HostTensor,
}
