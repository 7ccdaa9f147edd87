//! Devices for unit tests: one per backend among Vulkan and GL (lavapipe and llvmpipe on CI),
//! opened once per test binary. `AGCAM_TEST_BACKEND=vulkan|gl` restricts the set (empty: both).

use std::sync::OnceLock;

use super::{open_each, Backend, Gpu};

/// The backends the tests run on, after the `AGCAM_TEST_BACKEND` filter.
pub(crate) fn test_backends() -> Vec<Backend> {
    let only = std::env::var("AGCAM_TEST_BACKEND")
        .ok()
        .filter(|o| !o.is_empty());
    [("vulkan", Backend::Vulkan), ("gl", Backend::Gl)]
        .into_iter()
        .filter(|(name, _)| only.as_deref().is_none_or(|o| o == *name))
        .map(|(_, b)| b)
        .collect()
}

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
