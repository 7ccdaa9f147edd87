//! Reads a safetensors checkpoint (timm naming) and its optional JSON config into a [`Model`].

use std::path::Path;

use super::{ConfigOverrides, ModelConfig, VitWeights};
use crate::error::Result;

/// A loaded checkpoint: its configuration and host-side f32 weights.
#[derive(Debug, Clone)]
pub struct Model {
    /// Architecture, preprocessing and labels.
    pub config: ModelConfig,
    /// The weights, shape-checked against `config`.
    pub weights: VitWeights,
}

/// Loads `weights` (a `.safetensors` file), with an optional sidecar JSON `config`.
pub fn load_model(
    weights: &Path,
    config: Option<&Path>,
    overrides: &ConfigOverrides,
) -> Result<Model> {
    let _ = (weights, config, overrides);
    unimplemented!("being written")
}
