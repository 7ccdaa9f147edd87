//! The backward chain's products on the tiled GEMM (the GPU kernel set, from
//! `GEMM_MIN_ROWS` gradient rows) in the whole engine: top-k explanations whose chains have
//! many gradient rows equal those of the `vecmat_sliced` kernel.

use super::force_gemm_rows;
use crate::explain::{Engine, EngineOptions, Explanation, Target};
use crate::gpu::Gpu;
use crate::kernels::tests::gemm_coop::fixture;
use crate::kernels::{KernelSet, Precision};

/// Explains `input` with the GPU kernel set's engine, built while the chain takes the tiled
/// GEMM from `gemm_rows` gradient rows (`None`: from `GEMM_MIN_ROWS`).
fn explain(
    gpu: &Gpu,
    (model, input): (&crate::model::Model, &[f32]),
    options: &EngineOptions,
    top_k: usize,
    gemm_rows: Option<usize>,
) -> Vec<Explanation> {
    force_gemm_rows(gemm_rows);
    let engine = Engine::with_options(gpu.clone(), model, options);
    force_gemm_rows(None);
    engine
        .unwrap()
        .explain(input, &Target::TopK(top_k))
        .unwrap()
}

#[test]
fn many_row_chains_on_the_tiled_gemm_match_vecmat() {
    // vit_ti at the real threshold (2 images × 64 classes = 128 rows); the odd fixtures, whose
    // 7 and 10 classes give at most 20 rows, with the threshold forced down to 2 rows. Their
    // widths (30, 36, 60, 90) are not multiples of a tile.
    let gpus: Vec<Gpu> = crate::gpu::open_each(&crate::gpu::testing::test_backends())
        .into_iter()
        .map(|g| g.expect("a test device opens"))
        .collect();
    // f16 weights (unpacked by both kinds of product) on one fixture: every engine compiles
    // its kernels, and the test is long enough as it is.
    let f32_only = &[Precision::F32][..];
    let cases = [
        ("vit_ti", 64, None, f32_only),
        ("odd_ls", 10, Some(2), &[Precision::F32, Precision::F16]),
        ("odd_nols", 7, Some(2), f32_only),
    ];
    for (name, top_k, gemm_rows, precisions) in cases {
        let (model, input) = fixture(name);
        for gpu in &gpus {
            for &precision in precisions {
                let options = EngineOptions {
                    kernels: KernelSet::Gpu,
                    precision,
                    ..Default::default()
                };
                let at = format!(
                    "{name} top-{top_k}, {precision:?} on {:?}",
                    gpu.info.backend
                );
                let run = |rows| explain(gpu, (&model, &input), &options, top_k, rows);
                let (sliced, tiled) = (run(Some(usize::MAX)), run(gemm_rows));
                assert_same_maps(&at, &sliced, &tiled);
            }
        }
    }
}

/// Same classes, and every map within 1e-5 × its max |value|.
fn assert_same_maps(at: &str, want: &[Explanation], got: &[Explanation]) {
    assert_eq!(want.len(), got.len(), "{at}: images");
    for (b, (w, g)) in want.iter().zip(got).enumerate() {
        assert_eq!(w.maps.len(), g.maps.len(), "{at}: image {b}: maps");
        for (s, (wm, gm)) in w.maps.iter().zip(&g.maps).enumerate() {
            assert_eq!(wm.class, gm.class, "{at}: image {b} slot {s}: class");
            let scale = wm.map.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let err = wm
                .map
                .iter()
                .zip(&gm.map)
                .fold(0.0f32, |e, (x, y)| e.max((x - y).abs()));
            assert!(
                err <= 1e-5 * scale,
                "{at}: image {b} slot {s} (class {}): error {err:e} of max {scale:e}",
                wm.class
            );
        }
    }
}
