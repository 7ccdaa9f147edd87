//! agcam: Attention-Guided CAM for Vision Transformers on wgpu.

pub mod error;
pub mod gpu;
pub mod image;
pub mod model;

pub use error::{Error, Result};
