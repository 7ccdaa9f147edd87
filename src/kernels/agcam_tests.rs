//! The backward chain's many-row products (the CPU set's 32-row `vecmat4`, the GPU set's tiled
//! GEMM) in the whole engine: top-k explanations whose chains have many gradient rows equal
//! those of the per-block `vecmat` kernels.

use super::force_many_rows;
use crate::explain::{Engine, EngineOptions, Explanation, Target};
use crate::gpu::Gpu;
use crate::kernels::tests::gemm_coop::fixture;
use crate::kernels::{KernelSet, Precision};

/// Explains `input` with an engine built while the many-row threshold is `many_rows` (`None`:
/// the measured thresholds).
fn explain(
    gpu: &Gpu,
    (model, input): (&crate::model::Model, &[f32]),
    options: &EngineOptions,
    top_k: usize,
    many_rows: Option<usize>,
) -> Vec<Explanation> {
    force_many_rows(many_rows);
    let engine = Engine::with_options(gpu.clone(), model, options);
    force_many_rows(None);
    engine
        .unwrap()
        .explain(input, &Target::TopK(top_k))
        .unwrap()
}

#[test]
fn many_row_chains_match_vecmat() {
    // vit_ti at its real thresholds (2 images × 40 classes = 80 rows: above both sets'); the
    // odd fixtures, whose 7 and 10 classes give at most 20 rows, with the threshold forced
    // down to 2 rows. Their widths (30, 36, 60, 90) are not all multiples of 4 or of a tile.
    let gpus: Vec<Gpu> = crate::gpu::open_each(&crate::gpu::testing::test_backends())
        .into_iter()
        .map(|g| g.expect("a test device opens"))
        .collect();
    // f16 weights (read by both kinds of product) on one fixture: every engine compiles its
    // kernels, and the test is long enough as it is.
    let f32_only = &[Precision::F32][..];
    let cases = [
        ("vit_ti", 40, None, f32_only),
        ("odd_ls", 10, Some(2), &[Precision::F32, Precision::F16]),
        ("odd_nols", 7, Some(2), f32_only),
    ];
    for (name, top_k, many_rows, precisions) in cases {
        let (model, input) = fixture(name);
        for gpu in &gpus {
            for kernels in [KernelSet::Cpu, KernelSet::Gpu] {
                for &precision in precisions {
                    let options = EngineOptions {
                        kernels,
                        precision,
                        ..Default::default()
                    };
                    let at = format!(
                        "{name} top-{top_k}, {kernels:?} kernels, {precision:?} on {:?}",
                        gpu.info.backend
                    );
                    let run = |rows| explain(gpu, (&model, &input), &options, top_k, rows);
                    let (narrow, many) = (run(Some(usize::MAX)), run(many_rows));
                    assert_same_maps(&at, &narrow, &many);
                }
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
