//! agcam: Attention-Guided CAM for Vision Transformers on wgpu.

pub mod error;
pub mod explain;
pub mod gpu;
pub mod image;
pub(crate) mod kernels;
pub mod model;
pub mod reference;
pub mod synth;
pub(crate) mod vit;

pub use error::{Error, Result};
pub use explain::{
    ClassMap, ClassScore, Engine, EngineOptions, Explanation, KernelTiming, Profile, Target,
};
