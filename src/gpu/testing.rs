//! Devices for unit tests: one per backend among Vulkan and GL (lavapipe and llvmpipe on CI),
//! opened once per test binary. `AGCAM_TEST_BACKEND=vulkan|gl` restricts the set (empty: both).

use std::sync::OnceLock;

pub(crate) use super::test_backends::test_backends;
use super::{open_each, Gpu};

/// Every test device; panics when there is none, since the GPU tests would prove nothing.
pub(crate) fn gpus() -> &'static [Gpu] {
    static GPUS: OnceLock<Vec<Gpu>> = OnceLock::new();
    GPUS.get_or_init(|| {
        let gpus: Vec<Gpu> = open_each(&test_backends())
            .into_iter()
            .map(|g| g.unwrap_or_else(|e| panic!("{e}")))
            .collect();
        assert!(
            !gpus.is_empty(),
            "no GPU adapter: install mesa-vulkan-drivers"
        );
        gpus
    })
}
