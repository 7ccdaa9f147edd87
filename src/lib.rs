#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod bench;
pub mod error;
pub mod eval;
pub mod explain;
pub mod files;
pub mod gpu;
pub mod image;
pub(crate) mod kernels;
pub use kernels::variants::{shader_variants, ShaderVariant};
pub use kernels::{KernelSet, Precision};
pub mod model;
pub mod output;
pub mod pipeline;
pub mod reference;
pub mod synth;
pub(crate) mod vit;

pub use error::{Error, Result};
pub use explain::{
    check_request, ClassMap, ClassScore, Engine, EngineOptions, Explanation, KernelTiming, Method,
    Profile, Target,
};
