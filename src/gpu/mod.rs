//! Device and adapter choice, and the small buffer helpers every kernel launcher uses.

mod buffers;
pub use buffers::MIN_STORAGE_BYTES;
mod context;
#[cfg(test)]
mod test_backends;
#[cfg(test)]
pub(crate) mod testing;

pub use context::{list_adapters, open_each, AdapterSummary, Backend, Gpu, GpuOptions};
