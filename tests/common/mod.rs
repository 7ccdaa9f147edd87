//! Shared helpers of the integration tests.
#![allow(dead_code)]

use agcam::gpu::{list_adapters, Backend, Gpu, GpuOptions};

/// One device per available backend among Vulkan and GL (lavapipe and llvmpipe on CI), so
/// every GPU test runs on both. `AGCAM_TEST_BACKEND=vulkan|gl` restricts the set.
pub fn gpus() -> Vec<Gpu> {
    let only = std::env::var("AGCAM_TEST_BACKEND").ok();
    let mut out = Vec::new();
    for (name, backend) in [("vulkan", Backend::Vulkan), ("gl", Backend::Gl)] {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        if list_adapters(Some(backend)).is_empty() {
            eprintln!("no {name} adapter: skipping it");
            continue;
        }
        let gpu = Gpu::new(&GpuOptions {
            backend: Some(backend),
            adapter: None,
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        eprintln!("testing on {}", gpu.describe());
        out.push(gpu);
    }
    assert!(
        !out.is_empty(),
        "no GPU adapter at all: install mesa-vulkan-drivers"
    );
    out
}

/// Largest absolute difference and the largest magnitude of the reference.
pub fn max_error(actual: &[f32], expected: &[f64]) -> (f64, f64) {
    assert_eq!(actual.len(), expected.len(), "length mismatch");
    let err = actual
        .iter()
        .zip(expected)
        .map(|(a, e)| (*a as f64 - e).abs())
        .fold(0.0, f64::max);
    let scale = expected.iter().map(|e| e.abs()).fold(0.0, f64::max);
    (err, scale)
}

/// Deterministic pseudo-random values in [-1, 1).
pub fn noise(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}
