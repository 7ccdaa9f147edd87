//! Tests of the kernels: every shader validates with naga, and every launcher matches an f64 CPU
//! reference at awkward shapes (1, 7, 197, 769, rows and columns that are not multiples of any
//! tile) on every test device: Vulkan (lavapipe) and GL (llvmpipe) on CI.
//!
//! Tolerance: max |gpu − ref| ≤ 1e-4 · max(1, max |ref|) for arithmetic kernels; kernels that
//! only move values must be exact. A failure names the kernel, the shape and the backend, with
//! the max and mean absolute error, max |ref| and the worst index. Every comparison also prints a
//! `kernel-error` line (shown with `--nocapture`), so the measured errors can be collected.
//!
//! One file per kernel family under `tests/`; the harness they share is `tests/helpers.rs`. The
//! checks that need no device stay here.

use super::*;
use helpers::*;

mod agcam;
mod attention;
mod backward;
mod gemm;
mod gradcam;
pub(super) mod helpers;
mod layernorm;
mod tokens;

/// Every shader parses and validates with naga, with no device at all (the cooperative GEMMs
/// with f16 arithmetic only: their operands are f16).
#[test]
fn shaders_validate_with_naga() {
    for (name, _) in SHADERS {
        for f16_math in [false, true] {
            if !f16_math && name.starts_with("gemm_coop") {
                continue;
            }
            let source = shader_source(name, f16_math);
            let module = naga::front::wgsl::parse_str(&source)
                .unwrap_or_else(|e| panic!("{name}.wgsl: {}", e.emit_to_string(&source)));
            naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::all(),
            )
            .validate(&module)
            .unwrap_or_else(|e| panic!("{name}.wgsl (f16 math {f16_math}): {e:?}"));
        }
    }
}

#[test]
fn linear_grid_stays_within_limits() {
    assert_eq!(linear_grid(0), [1, 1, 1]);
    assert_eq!(linear_grid(65535), [65535, 1, 1]);
    assert_eq!(linear_grid(65536), [65535, 2, 1]);
    let [x, y, _] = linear_grid(1_000_000);
    assert!(x * y >= 1_000_000 && y <= 65535);
}

#[path = "gemm_coop_tests.rs"]
pub(super) mod gemm_coop;
