//! Shared helpers of the integration tests.
#![allow(dead_code)]

pub mod cli;
pub mod parity;

use agcam::gpu::{open_each, Backend, Gpu};

#[path = "../../src/gpu/test_backends.rs"]
mod backends;
pub use backends::test_backends;

/// One device per backend of [`test_backends`], so every GPU test runs on both.
pub fn gpus() -> Vec<Gpu> {
    let backends = test_backends();
    let gpus: Vec<Gpu> = open_each(&backends)
        .into_iter()
        .map(|g| g.unwrap_or_else(|e| panic!("{e}")))
        .collect();
    assert!(
        !gpus.is_empty(),
        "no GPU adapter at all: install mesa-vulkan-drivers"
    );
    gpus
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
