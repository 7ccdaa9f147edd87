//! The GEMMs (gemm.wgsl) against f64: nn.Linear with every epilogue over shapes that cross
//! each kernel's blocks and selection thresholds, f16 weights, refused undersized buffers, and
//! the batched strided products attention uses.

use super::*;
use crate::kernels::gemm::{Batched, View};

/// (m, n, k): K % 4 == 0 takes the vec4 path, the others the scalar one; m and n cover single
/// elements, partial 4×4 blocks and partial 32×32 workgroup tiles.
const LINEAR_SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 7, 4),
    (7, 5, 3),
    (3, 769, 12),
    (13, 9, 8),
    (6, 11, 7),
    (197, 769, 768),
    (197, 769, 191),
    // gemm_block (CPU set, 64 rows or more): partial row blocks, N below one workgroup's columns.
    (65, 7, 4),
    (100, 193, 36),
    // gemm_tiled128 (GPU set, 256 workgroups or more): partial tiles, K not a multiple of 8.
    (2049, 2049, 5),
];

/// Checks `shapes` through `Gemm::linear_keeping` (or `residual`) on every test device and
/// both kernel sets, with the kept pre-activation rows of the Bias and GELU epilogues; returns
/// the kernels that ran, per backend.
fn check_linear(
    epilogue: Epilogue,
    seed: u64,
    shapes: &[(usize, usize, usize)],
) -> Vec<(String, String)> {
    let mut ran = Vec::new();
    let mut rng = Rng::new(seed);
    for &(m, n, k) in shapes {
        let a = rng.vec(m * k, -1.0, 1.0);
        let w = rng.vec(n * k, -1.0, 1.0);
        let bias = rng.vec(n, -1.0, 1.0);
        let scale = rng.vec(n, -2.0, 2.0);
        let c0 = rng.vec(m * n, -1.0, 1.0);
        let acc = matmul_nt(&a, &w, (m, n, k));
        let want = epilogue_reference(epilogue, &acc, &bias, &scale, &c0);
        for (gpu, gemm) in gemm_devices() {
            let a_buf = gpu.storage_from("a", &a);
            let w_buf = gpu.storage_from("w", &w);
            let bias_buf = gpu.storage_from("bias", &bias);
            let scale_buf = gpu.storage_from("scale", &scale);
            // Every epilogue starts from c0: the ones that overwrite must overwrite everything.
            let c = gpu.storage_from("c", &c0);
            let buffers = [&a_buf, &w_buf, &bias_buf, &scale_buf, &c];
            let keeps = matches!(epilogue, Epilogue::Bias | Epilogue::Gelu);
            let kept_rows = m.div_ceil(KEEP_EVERY);
            let kept = keeps.then(|| gpu.storage("kept", words(kept_rows * n)));
            let shape = (m, n, k);
            let dispatches = linear_dispatches(gpu, gemm, buffers, shape, epilogue, kept.as_ref());
            run(gpu, &dispatches);
            let kernels: Vec<&str> = dispatches.iter().map(|d| d.kernel.as_str()).collect();
            ran.extend(kernels.iter().map(|k| (backend(gpu), k.to_string())));
            check(
                &format!("{}.linear.{epilogue:?}", kernels.join("+")),
                &format!("m={m} n={n} k={k}"),
                gpu,
                &download::<f32>(gpu, &c, m * n),
                &want,
                TOL,
            );
            if let Some(kept) = &kept {
                let pre = epilogue_reference(Epilogue::Bias, &acc, &bias, &scale, &c0);
                let want: Vec<f64> = (0..kept_rows * n)
                    .map(|i| pre[(i / n) * KEEP_EVERY * n + i % n])
                    .collect();
                check(
                    &format!("{}.linear.{epilogue:?}.kept", kernels.join("+")),
                    &format!("m={m} n={n} k={k}"),
                    gpu,
                    &download::<f32>(gpu, kept, kept_rows * n),
                    &want,
                    TOL,
                );
            }
        }
    }
    ran
}

/// A seeded sweep across every GEMM selection threshold: rows around 16 (`gemm_wide`), 64
/// (`gemm_block`) and 128 (`gemm_tiled128`), and grids just below and at its 256 workgroups,
/// with random widths and depths. Each backend must have run every kernel of its sets.
#[test]
fn gemm_sweep_crosses_every_selection_threshold() {
    let mut rng = Rng::new(0x5EED);
    let mut shapes: Vec<(usize, usize, usize)> = [15, 16, 17, 63, 64, 65, 127, 128, 129]
        .iter()
        .map(|&m| (m, 1 + rng.below(300), 1 + rng.below(64)))
        .collect();
    // 16 × 15 tiles of 128: 240 workgroups, below the threshold; 16 × 16: 256, at it.
    shapes.extend([(2048, 1920, 3), (2048, 2048, 3)]);
    // Depths a multiple of 4 too, so that the vec4 kernels run.
    shapes.extend([(16, 40, 8), (64, 40, 8), (3, 40, 8)]);
    let ran = check_linear(Epilogue::Bias, 17, &shapes);
    for gpu in gpus() {
        let mut want = vec![
            "gemm_scalar",
            "gemm_vec4",
            "gemm_wide",
            "gemm_tiled",
            "gemm_tiled128",
        ];
        if gpu.info.backend != wgpu::Backend::Gl {
            want.push("gemm_block");
        }
        for kernel in want {
            assert!(
                ran.iter().any(|(b, k)| *b == backend(gpu) && k == kernel),
                "{kernel} never ran on {}: {ran:?}",
                backend(gpu)
            );
        }
    }
}

/// A launch whose buffer is smaller than its shape implies is refused when it is recorded,
/// naming kernel and slot, instead of running out of bounds without bounds checks.
#[test]
#[should_panic(expected = "binding 4 holds 64 bytes, the launch reaches byte 68")]
fn gemm_refuses_an_output_buffer_too_small_for_its_shape() {
    let (gpu, kernels) = devices().next().expect("a test device");
    let (m, n, k) = (17, 1, 4);
    let a = gpu.storage("a", words(m * k));
    let w = gpu.storage("w", words(n * k));
    let bias = gpu.storage("bias", words(n));
    let c = gpu.storage("c", words(m * n - 1));
    kernels
        .gemm
        .linear(gpu, &a, &w, &bias, &bias, &c, (m, n, k), Epilogue::Bias);
}

#[test]
fn gemm_linear_bias_matches_f64() {
    check_linear(Epilogue::Bias, 1, LINEAR_SHAPES);
}

/// The GPU set with f16 weights: gemm_tiled128 unpacks them and computes in f32, so it must
/// match f64 over the f16-rounded weights as tightly as f32 weights do.
#[test]
fn gemm_tiled128_reads_f16_weights() {
    let (m, n, k) = (2049, 2049, 40);
    let mut rng = Rng::new(17);
    let a = rng.vec(m * k, -1.0, 1.0);
    let w: Vec<f32> = rng
        .vec(n * k, -1.0, 1.0)
        .iter()
        .map(|&v| half::f16::from_f32(v).to_f32())
        .collect();
    let bias = rng.vec(n, -1.0, 1.0);
    let acc = matmul_nt(&a, &w, (m, n, k));
    let want: Vec<f64> = (0..m * n).map(|i| acc[i] + bias[i % n] as f64).collect();
    for gpu in gpus() {
        let gemm = Gemm::new(gpu, KernelSet::Gpu, Precision::F16);
        let a_buf = gpu.storage_from("a", &a);
        let w_buf = gpu.storage_from("w", &crate::vit::pack_f16(&w));
        let bias_buf = gpu.storage_from("bias", &bias);
        let c = gpu.storage("c", (m * n * 4) as u64);
        let d = gemm.linear(
            gpu,
            &a_buf,
            &w_buf,
            &bias_buf,
            &bias_buf,
            &c,
            (m, n, k),
            Epilogue::Bias,
        );
        assert_eq!(d.kernel, "gemm_tiled128");
        run(gpu, &[d]);
        let got = download::<f32>(gpu, &c, m * n);
        check(
            "gemm_tiled128.f16",
            "m=2049 n=2049 k=40",
            gpu,
            &got,
            &want,
            TOL,
        );
    }
}

/// GELU against the exact erf GELU (libm), not the tanh approximation.
#[test]
fn gemm_linear_gelu_matches_erf_gelu() {
    check_linear(Epilogue::Gelu, 2, LINEAR_SHAPES);
}

/// `C += scale ⊙ (A·Wᵀ + bias)` in place, starting from a random C.
#[test]
fn gemm_linear_residual_in_place_with_scale() {
    check_linear(Epilogue::Residual, 3, LINEAR_SHAPES);
}

/// One batched product over strided views, as attention uses it.
struct BatchedCase {
    name: &'static str,
    shape: Batched,
    /// A and W views; `shared` binds one buffer (A's data) for both, like Q and K in qkv.
    a: (View, usize),
    w: (View, usize),
    shared: bool,
    c: (View, usize),
    alpha: f32,
}

/// `c = alpha · a · wᵀ` per (image, head) in f64, on top of `c0` (elements outside the C view
/// keep their value, so stray writes show).
fn batched_reference(case: &BatchedCase, a: &[f32], w: &[f32], c0: &[f32]) -> Vec<f64> {
    let s = case.shape;
    let base = |v: &View, z: usize| {
        v.offset as usize + (z / s.heads) * v.image as usize + (z % s.heads) * v.head as usize
    };
    let mut c = f64s(c0);
    for z in 0..s.images * s.heads {
        let (ab, wb, cb) = (base(&case.a.0, z), base(&case.w.0, z), base(&case.c.0, z));
        for i in 0..s.m {
            for j in 0..s.n {
                let ar = ab + i * case.a.0.row as usize;
                let wr = wb + j * case.w.0.row as usize;
                let acc: f64 = (0..s.k).map(|t| a[ar + t] as f64 * w[wr + t] as f64).sum();
                c[cb + i * case.c.0.row as usize + j] = case.alpha as f64 * acc;
            }
        }
    }
    c
}

/// The scores product `d^-0.5 · Q Kᵀ` of attention: views into one [B·N, 3D] qkv buffer (plus
/// `shift` leading elements) and a [B, H, N, padded] output.
fn scores_case(
    name: &'static str,
    (b, n, h, d): (usize, usize, usize, usize),
    shift: usize,
) -> BatchedCase {
    let dim = h * d;
    let np = n.next_multiple_of(4);
    let qkv = |offset: usize| View {
        offset: (shift + offset) as u32,
        row: (3 * dim) as u32,
        image: (n * 3 * dim) as u32,
        head: d as u32,
    };
    let qkv_len = shift + b * n * 3 * dim;
    BatchedCase {
        name,
        shape: Batched {
            m: n,
            n,
            k: d,
            images: b,
            heads: h,
        },
        a: (qkv(0), qkv_len),
        w: (qkv(dim), qkv_len),
        shared: true,
        c: (
            View {
                offset: 0,
                row: np as u32,
                image: (h * n * np) as u32,
                head: (n * np) as u32,
            },
            b * h * n * np,
        ),
        alpha: (d as f64).powf(-0.5) as f32,
    }
}

/// The values product `P · V` of attention: P [B, H, N, row] by Vᵀ [B, H, d, row] into the
/// merged [B·N, D] output. `row` = N rounded up to 4 is the engine's (vec4) layout; `row` = N
/// with N odd forces the scalar path.
fn values_case(
    name: &'static str,
    (b, n, h, d): (usize, usize, usize, usize),
    row: usize,
    alpha: f32,
) -> BatchedCase {
    let dim = h * d;
    BatchedCase {
        name,
        shape: Batched {
            m: n,
            n: d,
            k: row,
            images: b,
            heads: h,
        },
        a: (
            View {
                offset: 0,
                row: row as u32,
                image: (h * n * row) as u32,
                head: (n * row) as u32,
            },
            b * h * n * row,
        ),
        w: (
            View {
                offset: 0,
                row: row as u32,
                image: (h * d * row) as u32,
                head: (d * row) as u32,
            },
            b * h * d * row,
        ),
        shared: false,
        c: (
            View {
                offset: 0,
                row: dim as u32,
                image: (n * dim) as u32,
                head: d as u32,
            },
            b * n * dim,
        ),
        alpha,
    }
}

#[test]
fn gemm_batched_strided_views_match_f64() {
    let mut odd_alpha = scores_case("scores d=8, views shifted by 2 (scalar)", (3, 5, 2, 8), 2);
    odd_alpha.alpha = -1.5;
    let cases = [
        scores_case("scores d=6 (scalar)", (2, 7, 3, 6), 0),
        scores_case("scores d=12 (vec4)", (2, 7, 3, 12), 0),
        scores_case("scores d=64 N=197 (vec4)", (1, 197, 3, 64), 0),
        odd_alpha,
        values_case("values d=64 N=197 (vec4)", (2, 197, 3, 64), 200, 1.0),
        values_case("values d=6 N=7 unpadded (scalar)", (2, 7, 3, 6), 7, 0.37),
    ];
    let mut rng = Rng::new(4);
    for case in &cases {
        let a = rng.vec(case.a.1, -1.0, 1.0);
        let w = if case.shared {
            a.clone()
        } else {
            rng.vec(case.w.1, -1.0, 1.0)
        };
        let c0 = rng.vec(case.c.1, -1.0, 1.0);
        let want = batched_reference(case, &a, &w, &c0);
        let s = case.shape;
        let aligned = |v: &View| (v.offset | v.row | v.image | v.head).is_multiple_of(4);
        let path = if s.k % 4 == 0 && aligned(&case.a.0) && aligned(&case.w.0) {
            "vec4"
        } else {
            "scalar"
        };
        assert_eq!(
            path,
            if case.name.contains("vec4") {
                "vec4"
            } else {
                "scalar"
            },
            "{}: the case does not take the path it names",
            case.name
        );
        for (gpu, gemm) in gemm_devices() {
            let a_buf = gpu.storage_from("a", &a);
            let w_buf = if case.shared {
                a_buf.clone()
            } else {
                gpu.storage_from("w", &w)
            };
            let c = gpu.storage_from("c", &c0);
            let d = gemm.batched(
                gpu,
                (&a_buf, case.a.0),
                (&w_buf, case.w.0),
                (&c, case.c.0),
                s,
                case.alpha,
            );
            let kernel = d.kernel.clone();
            run(gpu, &[d]);
            check(
                &format!("{kernel}.batched"),
                &format!(
                    "{}: m={} n={} k={} images={} heads={} alpha={}",
                    case.name, s.m, s.n, s.k, s.images, s.heads, case.alpha
                ),
                gpu,
                &download::<f32>(gpu, &c, case.c.1),
                &want,
                TOL,
            );
        }
    }
}
