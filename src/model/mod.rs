//! Model description and weights: what a checkpoint holds, independent of where it came from.
//!
//! [`load_model`] reads a safetensors checkpoint, or a folder holding one, into a [`Model`]: a
//! [`ModelConfig`] inferred from the tensor shapes plus the JSON configs beside it, [`VitWeights`]
//! (host-side f32), and a [`Provenance`] saying what was detected and from which file. Inside:
//! `source` finds the files (weights file or folder, `config.json`, `preprocessor_config.json`),
//! `checkpoint` maps the file and converts tensors, `naming` knows where each parameter lives in
//! a checkpoint (timm or Hugging Face), `config_file` reads the JSON configs, `family` checks
//! the configs against the tensors and refuses unsupported variants, `labels` holds the bundled
//! ImageNet-1k class names, `dims` reads the dimensions off the tensor shapes, `settings`
//! resolves what shapes cannot say (heads, input size, mean/std, labels) from flags and configs,
//! `reader` reads the tensors by role, and `loader` puts them together.

mod checkpoint;
mod config;
mod config_file;
mod dims;
mod family;
mod labels;
mod loader;
mod naming;
mod random;
mod reader;
mod settings;
mod source;
#[cfg(test)]
mod tests;

pub use config::{ConfigOverrides, ModelConfig, Pooling};
pub use loader::{load_model, Model, Provenance};

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

    /// Number of values (`shape.iter().product()`).
    pub fn numel(&self) -> usize {
        self.data.len()
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

impl BlockWeights {
    /// All tensors of the block, layer scale included when present.
    pub fn tensors(&self) -> impl Iterator<Item = &HostTensor> {
        [
            &self.norm1_w,
            &self.norm1_b,
            &self.qkv_w,
            &self.qkv_b,
            &self.proj_w,
            &self.proj_b,
            &self.norm2_w,
            &self.norm2_b,
            &self.fc1_w,
            &self.fc1_b,
            &self.fc2_w,
            &self.fc2_b,
        ]
        .into_iter()
        .chain(self.ls1.iter())
        .chain(self.ls2.iter())
    }
}

impl VitWeights {
    /// Number of parameters as loaded (a qkv bias the checkpoint lacks counts, as zeros).
    pub fn num_params(&self) -> usize {
        let top = [
            &self.patch_w,
            &self.patch_b,
            &self.cls_token,
            &self.pos_embed,
            &self.norm_w,
            &self.norm_b,
            &self.head_w,
            &self.head_b,
        ];
        let blocks: usize = self
            .blocks
            .iter()
            .flat_map(BlockWeights::tensors)
            .map(HostTensor::numel)
            .sum();
        top.iter().map(|t| t.numel()).sum::<usize>() + blocks
    }
}
