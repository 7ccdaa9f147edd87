//! The `AGCAM_TEST_BACKEND` filter, shared by the unit tests (`gpu::testing`) and the
//! integration tests (`tests/common`, which include this file by path).

use super::Backend;

/// The backends the GPU tests run on: Vulkan and GL (lavapipe and llvmpipe on CI), or the one
/// `AGCAM_TEST_BACKEND=vulkan|gl` names (empty: both). Any other value is refused, so that a
/// typo cannot leave the tests without a device.
pub fn test_backends() -> Vec<Backend> {
    let only = std::env::var("AGCAM_TEST_BACKEND").unwrap_or_default();
    let picked: Vec<Backend> = [Backend::Vulkan, Backend::Gl]
        .into_iter()
        .filter(|b| only.is_empty() || b.name() == only)
        .collect();
    assert!(
        !picked.is_empty(),
        "AGCAM_TEST_BACKEND={only:?}: expected vulkan, gl or empty"
    );
    picked
}
