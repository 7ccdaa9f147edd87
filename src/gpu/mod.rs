//! Device and adapter choice, and the small buffer helpers every kernel launcher uses.

mod buffers;
mod context;

pub use context::{list_adapters, AdapterSummary, Backend, Gpu, GpuOptions};
