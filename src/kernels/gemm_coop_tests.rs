//! The cooperative-matrix GEMM through its scalar twins (gemm_twin16, gemm_twin8), which share
//! its tiling, staging, fragment layout and epilogues: against an f64 reference over
//! f16-rounded operands at shapes that are not multiples of any tile, and in the whole engine
//! on the PyTorch fixtures against f32.

use super::*;
use crate::explain::{Engine, EngineOptions, Explanation, Target};
use crate::kernels::gemm::{force_twin, CoopKernel};

/// Devices of this test's own, one per test back end. wgpu's GL backend panics when a thread
/// waits more than a second for a device's context while another thread compiles on it, and
/// the twins take Mesa's GL compiler longer than that: on devices of their own they hold up
/// no other test.
fn own_gpus() -> Vec<Gpu> {
    crate::gpu::open_each(&crate::gpu::testing::test_backends())
        .into_iter()
        .map(|g| g.expect("a test device opens"))
        .collect()
}

/// Forces the twin of side `fragment` into launchers built by `f` on this thread.
fn with_twin<T>(fragment: u32, f: impl FnOnce() -> T) -> T {
    force_twin(Some(fragment));
    let out = f();
    force_twin(None);
    out
}

fn f16_rounded(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect()
}

/// f16 rounding of the operands moves these products by about 1e-3 of their scale; f32 sums
/// of exact f16 products stay within 1e-6. So the bound tells the twin's f16 operands and f32
/// sums from f32 operands (or from sums rounded to f16).
const TWIN_TOL: f64 = 1e-5;

/// (m, n, k): below one fragment, across fragment and tile edges (16, 64; 8, 32), depths
/// that end inside a fragment, an odd element pair and a stage of 32.
const TWIN_SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (7, 5, 3),
    (17, 9, 16),
    (65, 70, 33),
    (33, 130, 100),
    (197, 67, 191),
    (70, 40, 768),
];

/// Runs every shape of [`TWIN_SHAPES`] with every nn.Linear epilogue through `Gemm::linear` /
/// `residual` on the GEMMs that `gemms` gives for each test device (each with the cooperative
/// kernel or twin it must run on), against f64 over f16-rounded A and W, within `tol`.
fn check_cooperative(gemms: impl Fn(&Gpu) -> Vec<(Gemm, CoopKernel)>, tol: f64) {
    let gpus = own_gpus();
    let mut rng = Rng::new(0xC00B);
    for &(m, n, k) in TWIN_SHAPES {
        let a = rng.vec(m * k, -1.0, 1.0);
        let w = rng.vec(n * k, -1.0, 1.0);
        let bias = rng.vec(n, -1.0, 1.0);
        let scale = rng.vec(n, -2.0, 2.0);
        let c0 = rng.vec(m * n, -1.0, 1.0);
        let acc = matmul_nt(&f16_rounded(&a), &f16_rounded(&w), (m, n, k));
        for gpu in &gpus {
            for (gemm, kernel) in gemms(gpu) {
                assert_eq!(gemm.cooperative(), Some(kernel));
                for epilogue in [
                    Epilogue::Bias,
                    Epilogue::Gelu,
                    Epilogue::Residual,
                    Epilogue::Scaled,
                ] {
                    let want = epilogue_reference(epilogue, &acc, &bias, &scale, &c0);
                    let a_buf = gpu.storage_from("a", &a);
                    let w_buf = gpu.storage_from("w", &crate::vit::pack_f16(&w));
                    let bias_buf = gpu.storage_from("bias", &bias);
                    let scale_buf = gpu.storage_from("scale", &scale);
                    let c = gpu.storage_from("c", &c0);
                    let buffers = [&a_buf, &w_buf, &bias_buf, &scale_buf, &c];
                    let dispatches =
                        linear_dispatches(gpu, &gemm, buffers, (m, n, k), epilogue, None);
                    let kernels: Vec<&str> = dispatches.iter().map(|d| d.kernel.as_str()).collect();
                    assert_eq!(kernels, [kernel.entry()], "one dispatch, on {kernel:?}");
                    run(gpu, &dispatches);
                    check(
                        &format!("{}.{epilogue:?}", kernel.entry()),
                        &format!("m={m} n={n} k={k}"),
                        gpu,
                        &download::<f32>(gpu, &c, m * n),
                        &want,
                        tol,
                    );
                }
            }
        }
    }
}

/// Each twin, through a launcher of either kernel set.
#[test]
fn twins_match_f64_over_f16_operands_with_every_epilogue() {
    check_cooperative(
        |gpu| {
            // The kernel set does not change the kernel, only what it replaces (gemm_block's
            // split residual on the CPU set): one set per twin covers both.
            [(16, KernelSet::Cpu), (8, KernelSet::Gpu)]
                .map(|(fragment, set)| {
                    let gemm = with_twin(fragment, || Gemm::new(gpu, set, Precision::F16));
                    let twin = CoopKernel {
                        fragment,
                        twin: true,
                    };
                    (gemm, twin)
                })
                .into()
        },
        TWIN_TOL,
    );
}

/// The cooperative kernel itself, on adapters that offer it (a lent GPU; none of the CPU
/// adapters): the engine selects it for f16 weights, and it matches f64 over f16 operands. Its
/// sums are f32 in an order (and, on tensor cores, a rounding) of the hardware's choosing: the
/// bound is that of the f32 kernels.
#[test]
fn cooperative_kernel_matches_f64_where_offered() {
    check_cooperative(
        |gpu| {
            let Some(fragment) = gpu.cooperative_fragment() else {
                eprintln!(
                    "no cooperative matrices on {}: nothing to run",
                    backend(gpu)
                );
                return Vec::new();
            };
            let kernel = CoopKernel {
                fragment,
                twin: false,
            };
            eprintln!("cooperative-kernel {} on {}", kernel.entry(), backend(gpu));
            [KernelSet::Cpu, KernelSet::Gpu]
                .map(|set| (Gemm::new(gpu, set, Precision::F16), kernel))
                .into()
        },
        TOL,
    );
}

/// Strided views as the last block uses them (class-token rows of a wider buffer, a slice of a
/// weight's output features from `col_offset`, rows of C further apart than N): elements of C
/// outside the view keep their values.
#[test]
fn twins_follow_strided_views_and_column_offsets() {
    let (m, n, k) = (5, 37, 70);
    let (a_row, c_row, col_offset, w_rows) = (3 * k + 2, n + 9, 11, 60);
    let mut rng = Rng::new(0x5712);
    let a = rng.vec(m * a_row, -1.0, 1.0);
    let w = rng.vec(w_rows * k, -1.0, 1.0);
    let bias = rng.vec(w_rows, -1.0, 1.0);
    let c0 = rng.vec(m * c_row, -1.0, 1.0);
    let (a16, w16) = (f16_rounded(&a), f16_rounded(&w));
    let mut want = f64s(&c0);
    for i in 0..m {
        for j in 0..n {
            let f = col_offset + j;
            let dot: f64 = (0..k)
                .map(|t| a16[i * a_row + t] as f64 * w16[f * k + t] as f64)
                .sum();
            want[i * c_row + j] = dot + bias[f] as f64;
        }
    }
    for gpu in &own_gpus() {
        for fragment in [16, 8] {
            let gemm = with_twin(fragment, || Gemm::new(gpu, KernelSet::Gpu, Precision::F16));
            let a_buf = gpu.storage_from("a", &a);
            let w_buf = gpu.storage_from("w", &crate::vit::pack_f16(&w));
            let bias_buf = gpu.storage_from("bias", &bias);
            let c = gpu.storage_from("c", &c0);
            let w_view = View {
                offset: (col_offset * k) as u32,
                ..View::rows(k)
            };
            let d = gemm.linear_strided(
                gpu,
                (&a_buf, View::rows(a_row)),
                (&w_buf, w_view),
                (&bias_buf, &bias_buf, col_offset),
                (&c, View::rows(c_row)),
                (m, n, k),
                Epilogue::Bias,
            );
            assert!(d.kernel.starts_with("gemm_twin"), "{}", d.kernel);
            run(gpu, &[d]);
            check(
                &format!("gemm_twin{fragment}.strided"),
                &format!("m={m} n={n} k={k}"),
                gpu,
                &download::<f32>(gpu, &c, m * c_row),
                &want,
                TWIN_TOL,
            );
        }
    }
}

/// The reference batch of fixture `name` and its model.
pub(in crate::kernels) fn fixture(name: &str) -> (crate::model::Model, Vec<f32>) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let model = crate::model::load_model(
        &dir.join("model.safetensors"),
        None,
        &crate::model::ConfigOverrides::default(),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let input = st.tensor("input").unwrap();
    assert_eq!(input.dtype(), safetensors::Dtype::F32, "{name}: input");
    let input = bytemuck::pod_collect_to_vec::<u8, f32>(input.data());
    (model, input)
}

/// Issue 11's bound for `--precision f16`: each image's predicted class (its first map) is that
/// of f32, and that map is within 1e-2 × max|map| of f32's. Prints the ratio (`f16-map-error`).
fn assert_within_f16_bound(at: &str, full: &[Explanation], half: &[Explanation]) {
    assert_eq!(full.len(), half.len(), "{at}: images");
    for (b, (f, h)) in full.iter().zip(half).enumerate() {
        let (cf, ch) = (f.maps[0].class, h.maps[0].class);
        assert_eq!(
            cf, ch,
            "{at}: image {b}: predicted class (f32 logits {} and {}, f16 logits {} and {})",
            f.logits[cf], f.logits[ch], h.logits[cf], h.logits[ch]
        );
        let want = f64s(&f.maps[0].map);
        let scale = want.iter().fold(0.0f64, |s, v| s.max(v.abs()));
        let err = h.maps[0]
            .map
            .iter()
            .zip(&want)
            .fold(0.0f64, |e, (&g, w)| e.max((g as f64 - w).abs()));
        eprintln!("f16-map-error {at} image {b}: {:.3e}", err / scale);
        assert!(
            err <= 1e-2 * scale,
            "{at}: image {b}: map error {err:e} of max {scale:e}"
        );
    }
}

/// Issue 11's bound for `--precision f16`, checked with the twins forced into the engine on
/// every test device: on the fixtures, the predicted class is that of f32 and every map is
/// within 1e-2 × max|map| of f32's.
#[test]
fn engine_on_twins_stays_within_f16_bound_of_f32() {
    // The twins are a test vehicle, not a fast path: vit_ti's explanation took gemm_twin16
    // 2.3 s on lavapipe and 8.6 s on llvmpipe GL (3.6× and 6.6× f32), so one twin there.
    for (name, fragments) in [
        ("odd_ls", &[16, 8][..]),
        ("odd_nols", &[16, 8]),
        ("vit_ti", &[16]),
    ] {
        let (model, input) = fixture(name);
        for gpu in &own_gpus() {
            let run = |precision| {
                let options = EngineOptions {
                    precision,
                    ..Default::default()
                };
                // Shaders compile here, so the explanation alone is timed: to show what the twin
                // costs on a CPU adapter (it is a test vehicle, not a fast path).
                let mut engine = Engine::with_options(gpu.clone(), &model, &options).unwrap();
                let start = std::time::Instant::now();
                let out = engine.explain(&input, &Target::TopK(2)).unwrap();
                (out, start.elapsed())
            };
            let (full, f32_time) = run(Precision::F32);
            for &fragment in fragments {
                let (half, twin_time) = with_twin(fragment, || run(Precision::F16));
                eprintln!(
                    "twin-time {name} on {}: f32 {f32_time:.2?}, gemm_twin{fragment} {twin_time:.2?}",
                    backend(gpu)
                );
                let at = format!("{name} gemm_twin{fragment} on {}", backend(gpu));
                assert_within_f16_bound(&at, &full, &half);
            }
        }
    }
}

/// Issue 11's bound for `--precision f16` on ViT-B/16 (random weights, seed 0; two images):
/// the predicted class of f32, and every map within 1e-2 × max|map| of f32's, with whatever
/// f16 GEMM the adapter selects: the cooperative kernel on a GPU that offers it. Ignored by
/// default (minutes on a CPU adapter); scripts/gpu-check.sh runs it on a lent GPU.
#[test]
#[ignore]
fn vit_b_f16_stays_within_bound_of_f32() {
    let config = crate::model::ModelConfig::standard("vit_base_patch16_224").unwrap();
    let model = crate::model::Model::random(config, 0);
    let len = 3 * 224 * 224;
    let input: Vec<f32> = (0..2 * len)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    for gpu in gpus() {
        let run = |precision| {
            let options = EngineOptions {
                precision,
                ..Default::default()
            };
            let mut engine = Engine::with_options(gpu.clone(), &model, &options).unwrap();
            engine.explain(&input, &Target::TopK(1)).unwrap()
        };
        let (full, half) = (run(Precision::F32), run(Precision::F16));
        let at = format!(
            "ViT-B/16 on {} (cooperative fragment {:?})",
            backend(gpu),
            gpu.cooperative_fragment()
        );
        assert_within_f16_bound(&at, &full, &half);
    }
}
