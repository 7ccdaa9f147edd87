//! Tests of the kernels: every shader validates with naga, and every launcher matches an f64 CPU
//! reference at awkward shapes (1, 7, 197, 769, rows and columns that are not multiples of any
//! tile) on every test device: Vulkan (lavapipe) and GL (llvmpipe) on CI.
//!
//! Tolerance: max |gpu − ref| ≤ 1e-4 · max(1, max |ref|) for arithmetic kernels; kernels that
//! only move values must be exact. A failure names the kernel, the shape and the backend, with
//! the max and mean absolute error, max |ref| and the worst index. Every comparison also prints a
//! `kernel-error` line (shown with `--nocapture`), so the measured errors can be collected.

use std::sync::OnceLock;

use super::gemm::{Batched, View};
use super::*;
use crate::gpu::testing::gpus;

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

// ---------------------------------------------------------------------------------------------
// Harness

/// Relative tolerance of f32 kernels against the f64 reference.
const TOL: f64 = 1e-4;
/// Kernels that only copy values (or add two of them once) must match exactly.
const EXACT: f64 = 0.0;

/// Deterministic pseudo-random numbers (SplitMix64): the same data on every run and backend.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }

    fn vec(&mut self, len: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..len).map(|_| self.uniform(lo, hi)).collect()
    }

    /// Uniform in 0..n.
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Every test device with each kernel set (the CPU set that llvmpipe and lavapipe use, and the
/// GPU set, which runs here too), compiled once per test binary.
fn devices() -> impl Iterator<Item = (&'static Gpu, &'static Kernels)> {
    static KERNELS: OnceLock<Vec<(usize, Kernels)>> = OnceLock::new();
    let gpus = gpus();
    let kernels = KERNELS.get_or_init(|| {
        gpus.iter()
            .enumerate()
            .flat_map(|(i, g)| {
                [KernelSet::Cpu, KernelSet::Gpu]
                    .map(|set| (i, Kernels::new(g, set, Precision::F32)))
            })
            .collect()
    });
    kernels.iter().map(move |(i, k)| (&gpus[*i], k))
}

/// Every test device with both kernel sets' GEMMs (the checks name the kernel that ran).
fn gemm_devices() -> impl Iterator<Item = (&'static Gpu, &'static Gemm)> {
    devices().map(|(gpu, k)| (gpu, &k.gemm))
}

fn backend(gpu: &Gpu) -> String {
    format!("{:?} ({})", gpu.info.backend, gpu.info.name)
}

/// Records `dispatches` into one compute pass and submits it.
fn run(gpu: &Gpu, dispatches: &[Dispatch]) {
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        encode(&mut pass, dispatches);
    }
    gpu.queue.submit([enc.finish()]);
}

fn download<T: bytemuck::Pod>(gpu: &Gpu, buffer: &wgpu::Buffer, len: usize) -> Vec<T> {
    gpu.download(buffer, len)
        .unwrap_or_else(|e| panic!("{}: download failed: {e}", backend(gpu)))
}

fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// Compares a GPU result with its f64 reference; panics unless every value is finite and
/// max |got − want| ≤ `tol` · max(1, max |want|).
fn check(kernel: &str, shape: &str, gpu: &Gpu, got: &[f32], want: &[f64], tol: f64) {
    let at = format!("{kernel} [{shape}] on {}", backend(gpu));
    assert_eq!(got.len(), want.len(), "{at}: output length");
    assert!(
        want.iter().all(|w| w.is_finite()),
        "{at}: the reference is not finite"
    );
    if let Some(i) = got.iter().position(|g| !g.is_finite()) {
        panic!(
            "{at}: non-finite output {} at index {i} (ref {})",
            got[i], want[i]
        );
    }
    let (mut max_err, mut sum_err, mut worst, mut max_ref) = (0.0f64, 0.0f64, 0usize, 0.0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let e = (g as f64 - w).abs();
        sum_err += e;
        if e > max_err {
            max_err = e;
            worst = i;
        }
        max_ref = max_ref.max(w.abs());
    }
    let mean_err = sum_err / want.len().max(1) as f64;
    let bound = tol * max_ref.max(1.0);
    eprintln!(
        "kernel-error {kernel} | {shape} | {:?} | max {max_err:.3e} mean {mean_err:.3e} \
         max|ref| {max_ref:.3e} rel {:.3e}",
        gpu.info.backend,
        max_err / max_ref.max(1.0)
    );
    assert!(
        max_err <= bound,
        "{at}: max abs error {max_err:.3e} > {bound:.3e} (= {tol:e} · max(1, max|ref|)); \
         mean abs error {mean_err:.3e}, max |ref| {max_ref:.4e}, worst index {worst}: \
         got {} want {}",
        got[worst],
        want[worst]
    );
}

/// Exact comparison of integer outputs.
fn check_u32(kernel: &str, shape: &str, gpu: &Gpu, got: &[u32], want: &[u32]) {
    let at = format!("{kernel} [{shape}] on {}", backend(gpu));
    assert_eq!(got.len(), want.len(), "{at}: output length");
    let wrong: Vec<usize> = (0..got.len()).filter(|&i| got[i] != want[i]).collect();
    eprintln!(
        "kernel-error {kernel} | {shape} | {:?} | {} of {} wrong",
        gpu.info.backend,
        wrong.len(),
        got.len()
    );
    if let Some(&i) = wrong.first() {
        panic!(
            "{at}: {} of {} values wrong, first at index {i}: got {} want {}\n got: {got:?}\nwant: {want:?}",
            wrong.len(),
            got.len(),
            got[i],
            want[i]
        );
    }
}

fn erf_gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

fn erf_gelu_grad(x: f64) -> f64 {
    0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
        + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

// ---------------------------------------------------------------------------------------------
// GEMM

/// `a[m, k] · w[n, k]ᵀ` in f64.
fn matmul_nt(a: &[f32], w: &[f32], (m, n, k): (usize, usize, usize)) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        let ar = &a[i * k..(i + 1) * k];
        for j in 0..n {
            let wr = &w[j * k..(j + 1) * k];
            c[i * n + j] = ar.iter().zip(wr).map(|(&x, &y)| x as f64 * y as f64).sum();
        }
    }
    c
}

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

/// What `epilogue` makes of the products `acc` (row-major, `bias.len()` columns), over C's
/// initial values `c0`, in f64.
fn epilogue_reference(
    epilogue: Epilogue,
    acc: &[f64],
    bias: &[f32],
    scale: &[f32],
    c0: &[f32],
) -> Vec<f64> {
    let n = bias.len();
    (0..acc.len())
        .map(|i| {
            let z = acc[i] + bias[i % n] as f64;
            match epilogue {
                Epilogue::Bias => z,
                Epilogue::Gelu => erf_gelu(z),
                Epilogue::Residual => c0[i] as f64 + scale[i % n] as f64 * z,
                Epilogue::Scaled => acc[i],
            }
        })
        .collect()
}

/// Rows of C apart that `check_linear` keeps (Bias and GELU epilogues).
const KEEP_EVERY: usize = 3;

/// The dispatches of one nn.Linear product over plain row-major buffers `[a, w, bias, scale,
/// c]`: through `Gemm::residual` for [`Epilogue::Residual`] (which splits the branch and the
/// add on gemm_block), `Gemm::linear_keeping` otherwise, keeping every [`KEEP_EVERY`]-th row
/// in `kept` when given.
fn linear_dispatches(
    gpu: &Gpu,
    gemm: &Gemm,
    [a, w, bias, scale, c]: [&wgpu::Buffer; 5],
    (m, n, k): (usize, usize, usize),
    epilogue: Epilogue,
    kept: Option<&wgpu::Buffer>,
) -> Vec<Dispatch> {
    if epilogue == Epilogue::Residual {
        let scratch = gpu.storage("scratch", words(m * n));
        gemm.residual(
            gpu,
            (a, View::rows(k)),
            (w, View::rows(k)),
            (bias, scale, 0),
            (c, View::rows(n)),
            &scratch,
            (m, n, k),
        )
    } else {
        let keep = kept.map(|kept| (kept, KEEP_EVERY));
        let buffers = [a, w, bias, scale, c];
        vec![gemm.linear_keeping(gpu, buffers, (m, n, k), epilogue, keep)]
    }
}

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

// ---------------------------------------------------------------------------------------------
// LayerNorm

/// Mean and 1/sqrt(var + eps) of a row, in f64.
fn ln_stats(x: &[f64], eps: f64) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

fn ln_forward_row(x: &[f64], g: &[f64], b: &[f64], eps: f64) -> Vec<f64> {
    let (mean, rstd) = ln_stats(x, eps);
    (0..x.len())
        .map(|i| (x[i] - mean) * rstd * g[i] + b[i])
        .collect()
}

/// dL/dx of L = Σ u ⊙ LayerNorm(x), written from the textbook derivation:
/// dx = rstd · (γu − mean(γu) − x̂ · mean(γu ⊙ x̂)).
fn ln_backward_row(x: &[f64], g: &[f64], u: &[f64], eps: f64) -> Vec<f64> {
    let (mean, rstd) = ln_stats(x, eps);
    let n = x.len() as f64;
    let xhat: Vec<f64> = x.iter().map(|v| (v - mean) * rstd).collect();
    let gu: Vec<f64> = g.iter().zip(u).map(|(g, u)| g * u).collect();
    let mean_gu = gu.iter().sum::<f64>() / n;
    let mean_gux = gu.iter().zip(&xhat).map(|(a, b)| a * b).sum::<f64>() / n;
    (0..x.len())
        .map(|i| rstd * (gu[i] - mean_gu - xhat[i] * mean_gux))
        .collect()
}

/// Input rows a LayerNorm dispatch with `map` reads for `rows` output rows.
fn ln_input_rows(rows: usize, map: RowMap) -> usize {
    (rows - 1) / map.rows_per_input * map.input_row_stride + 1
}

fn map(rows_per_input: usize, input_row_stride: usize) -> RowMap {
    RowMap {
        rows_per_input,
        input_row_stride,
    }
}

/// The reference formula itself, against central finite differences of the f64 forward.
#[test]
fn layernorm_backward_reference_matches_finite_differences() {
    let mut rng = Rng::new(5);
    for (dim, offset) in [(2, 0.0), (7, 0.0), (33, 3.0)] {
        let x: Vec<f64> = f64s(&rng.vec(dim, -1.0, 1.0))
            .iter()
            .map(|v| v + offset)
            .collect();
        let g = f64s(&rng.vec(dim, -1.5, 1.5));
        let b = f64s(&rng.vec(dim, -1.0, 1.0));
        let u = f64s(&rng.vec(dim, -1.0, 1.0));
        let eps = 1e-6;
        let loss = |x: &[f64]| -> f64 {
            let y = ln_forward_row(x, &g, &b, eps);
            y.iter().zip(&u).map(|(y, u)| y * u).sum()
        };
        let analytic = ln_backward_row(&x, &g, &u, eps);
        let h = 1e-6;
        for i in 0..dim {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[i] += h;
            xm[i] -= h;
            let numeric = (loss(&xp) - loss(&xm)) / (2.0 * h);
            let err = (numeric - analytic[i]).abs();
            assert!(
                err <= 1e-6 * analytic[i].abs().max(1.0),
                "dim {dim}, x[{i}]: finite difference {numeric} vs reference {analytic:?}[{i}]"
            );
        }
    }
}

struct LnCase {
    rows: usize,
    dim: usize,
    map: RowMap,
    eps: f32,
    /// Added to every input: a large mean tests the two-pass variance.
    offset: f32,
}

fn ln_case(rows: usize, dim: usize, map: RowMap) -> LnCase {
    LnCase {
        rows,
        dim,
        map,
        eps: 1e-6,
        offset: 0.0,
    }
}

#[test]
fn layernorm_forward_matches_f64() {
    let cases = [
        // dim 1: the variance is 0, so the output is beta exactly (and not NaN).
        ln_case(5, 1, RowMap::IDENTITY),
        LnCase {
            eps: 1e-12,
            ..ln_case(3, 1, RowMap::IDENTITY)
        },
        ln_case(5, 7, RowMap::IDENTITY),
        LnCase {
            eps: 1e-12,
            ..ln_case(4, 7, RowMap::IDENTITY)
        },
        ln_case(197, 192, RowMap::IDENTITY),
        ln_case(4, 769, RowMap::IDENTITY),
        LnCase {
            offset: 20.0,
            ..ln_case(9, 192, RowMap::IDENTITY)
        },
        // Class-token rows of 3 images of 7 tokens.
        ln_case(3, 1, map(1, 7)),
        ln_case(3, 192, map(1, 7)),
        ln_case(3, 769, map(1, 197)),
        // Several output rows per input row.
        ln_case(6, 7, map(2, 3)),
        // More rows than one dispatch dimension holds: the grid spills into y.
        ln_case(65_600, 3, RowMap::IDENTITY),
    ];
    let mut rng = Rng::new(6);
    for c in &cases {
        let in_rows = ln_input_rows(c.rows, c.map);
        let x: Vec<f32> = rng
            .vec(in_rows * c.dim, -1.0, 1.0)
            .iter()
            .map(|v| v + c.offset)
            .collect();
        let gamma = rng.vec(c.dim, -1.5, 1.5);
        let beta = rng.vec(c.dim, -1.0, 1.0);
        let out0 = rng.vec(c.rows * c.dim, -1.0, 1.0);
        let (x64, g64, b64) = (f64s(&x), f64s(&gamma), f64s(&beta));
        let want: Vec<f64> = (0..c.rows)
            .flat_map(|r| {
                let i = r / c.map.rows_per_input * c.map.input_row_stride;
                ln_forward_row(&x64[i * c.dim..(i + 1) * c.dim], &g64, &b64, c.eps as f64)
            })
            .collect();
        for (gpu, kern) in devices() {
            let x_buf = gpu.storage_from("x", &x);
            let g_buf = gpu.storage_from("gamma", &gamma);
            let b_buf = gpu.storage_from("beta", &beta);
            let out = gpu.storage_from("out", &out0);
            let d = kern.layernorm.dispatch(
                gpu,
                &x_buf,
                &g_buf,
                &b_buf,
                &out,
                (c.rows, c.dim),
                c.map,
                c.eps,
            );
            run(gpu, &[d]);
            check(
                "layernorm",
                &format!(
                    "rows={} dim={} rows_per_input={} input_row_stride={} eps={:e} offset={}",
                    c.rows, c.dim, c.map.rows_per_input, c.map.input_row_stride, c.eps, c.offset
                ),
                gpu,
                &download::<f32>(gpu, &out, c.rows * c.dim),
                &want,
                TOL,
            );
        }
    }
}

#[test]
fn layernorm_backward_matches_f64() {
    // (case, accumulate)
    let cases = [
        (ln_case(4, 1, RowMap::IDENTITY), false),
        (ln_case(4, 7, RowMap::IDENTITY), true),
        (ln_case(197, 192, RowMap::IDENTITY), false),
        // K gradient rows per kept class-token row (the norm2 backward of the AGCAM chain).
        (ln_case(6, 192, map(3, 1)), false),
        (ln_case(5, 7, map(5, 1)), true),
        // K gradient rows per image reading the class token of x_L (the final norm).
        (ln_case(6, 769, map(3, 7)), true),
        (ln_case(2, 769, map(1, 197)), false),
        (
            LnCase {
                offset: 20.0,
                ..ln_case(4, 192, map(2, 1))
            },
            true,
        ),
    ];
    let mut rng = Rng::new(7);
    for (c, accumulate) in &cases {
        let in_rows = ln_input_rows(c.rows, c.map);
        let x: Vec<f32> = rng
            .vec(in_rows * c.dim, -1.0, 1.0)
            .iter()
            .map(|v| v + c.offset)
            .collect();
        let gamma = rng.vec(c.dim, -1.5, 1.5);
        let upstream = rng.vec(c.rows * c.dim, -1.0, 1.0);
        let out0 = rng.vec(c.rows * c.dim, -1.0, 1.0);
        let (x64, g64, u64s) = (f64s(&x), f64s(&gamma), f64s(&upstream));
        let mut want = Vec::with_capacity(c.rows * c.dim);
        for r in 0..c.rows {
            let i = r / c.map.rows_per_input * c.map.input_row_stride;
            let dx = ln_backward_row(
                &x64[i * c.dim..(i + 1) * c.dim],
                &g64,
                &u64s[r * c.dim..(r + 1) * c.dim],
                c.eps as f64,
            );
            for (e, v) in dx.into_iter().enumerate() {
                let prior = if *accumulate {
                    out0[r * c.dim + e] as f64
                } else {
                    0.0
                };
                want.push(prior + v);
            }
        }
        for (gpu, kern) in devices() {
            let x_buf = gpu.storage_from("x", &x);
            let g_buf = gpu.storage_from("gamma", &gamma);
            let u_buf = gpu.storage_from("upstream", &upstream);
            let out = gpu.storage_from("out", &out0);
            let d = kern.layernorm.dispatch_backward(
                gpu,
                &x_buf,
                &g_buf,
                &u_buf,
                &out,
                (c.rows, c.dim),
                c.map,
                c.eps,
                *accumulate,
            );
            run(gpu, &[d]);
            check(
                "layernorm_backward",
                &format!(
                    "rows={} dim={} rows_per_input={} input_row_stride={} offset={} accumulate={}",
                    c.rows,
                    c.dim,
                    c.map.rows_per_input,
                    c.map.input_row_stride,
                    c.offset,
                    accumulate
                ),
                gpu,
                &download::<f32>(gpu, &out, c.rows * c.dim),
                &want,
                TOL,
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Attention

/// f64 multi-head softmax attention of a [B·N, 3D] qkv matrix (timm layout: q, k, v, each
/// head-major). Returns the merged output [B·N, D], the class-token pre-softmax scores
/// [B, H, N] and V [B·N, D].
fn attention_reference(qkv: &[f32], s: AttnShape) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (b, n, h, d) = (s.batch, s.tokens, s.heads, s.head_dim);
    let dim = h * d;
    let at = |img: usize, tok: usize, col: usize| qkv[(img * n + tok) * 3 * dim + col] as f64;
    let scale = (d as f64).powf(-0.5);
    let mut out = vec![0.0; b * n * dim];
    let mut cls = vec![0.0; b * h * n];
    for img in 0..b {
        for head in 0..h {
            for i in 0..n {
                let scores: Vec<f64> = (0..n)
                    .map(|j| {
                        scale
                            * (0..d)
                                .map(|e| at(img, i, head * d + e) * at(img, j, dim + head * d + e))
                                .sum::<f64>()
                    })
                    .collect();
                if i == 0 {
                    cls[(img * h + head) * n..(img * h + head + 1) * n].copy_from_slice(&scores);
                }
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = exps.iter().sum();
                for e in 0..d {
                    out[(img * n + i) * dim + head * d + e] = (0..n)
                        .map(|j| exps[j] / total * at(img, j, 2 * dim + head * d + e))
                        .sum();
                }
            }
        }
    }
    let v = (0..b * n * dim)
        .map(|idx| at(0, idx / dim, 2 * dim + idx % dim))
        .collect();
    (out, cls, v)
}

#[test]
fn attention_matches_f64_softmax_attention() {
    let mut rng = Rng::new(8);
    for (tokens, heads, head_dim, class_token_only) in [1, 7, 197]
        .into_iter()
        .flat_map(|t| [1, 3].map(|h| (t, h)))
        .flat_map(|(t, h)| [6, 12, 64].map(|d| (t, h, d)))
        .flat_map(|(t, h, d)| [false, true].map(|c| (t, h, d, c)))
    {
        {
            {
                let s = AttnShape {
                    batch: 2,
                    tokens,
                    heads,
                    head_dim,
                    class_token_only,
                    keep_probs: true,
                };
                let dim = heads * head_dim;
                let rows = s.batch * tokens;
                // Wide enough that some softmax rows are peaked.
                let qkv = rng.vec(rows * 3 * dim, -2.0, 2.0);
                let sentinel = rng.vec(rows * dim, -1.0, 1.0);
                let cls0 = rng.vec(s.batch * heads * tokens, -1.0, 1.0);
                let (want_out, want_cls, want_v) = attention_reference(&qkv, s);
                let shape = format!(
                    "batch={} tokens={tokens} heads={heads} head_dim={head_dim} \
                     class_token_only={class_token_only}",
                    s.batch
                );
                // With the class token's query only, the other rows keep their old values.
                let want_out: Vec<f64> = if class_token_only {
                    want_out
                        .iter()
                        .enumerate()
                        .map(|(i, &w)| {
                            if (i / dim) % tokens == 0 {
                                w
                            } else {
                                sentinel[i] as f64
                            }
                        })
                        .collect()
                } else {
                    want_out
                };
                for (gpu, kern) in devices() {
                    let qkv_buf = gpu.storage_from("qkv", &qkv);
                    let scores = gpu.storage("scores", 4 * (s.batch * s.scores_per_image()) as u64);
                    let v_t = gpu.storage("v_t", 4 * (s.batch * s.v_t_per_image()) as u64);
                    let out = gpu.storage_from("out", &sentinel);
                    let cls = gpu.storage_from("cls", &cls0);
                    let v_keep = gpu.storage_from("v_keep", &sentinel);
                    let ds = kern.attention.dispatch(
                        gpu,
                        &kern.gemm,
                        AttnBuffers {
                            qkv: &qkv_buf,
                            scores: &scores,
                            v_t: &v_t,
                            out: &out,
                            cls_scores: &cls,
                            v_keep: &v_keep,
                        },
                        s,
                        "test",
                    );
                    run(gpu, &ds);
                    let got = |b: &wgpu::Buffer, len| download::<f32>(gpu, b, len);
                    check(
                        "attention.out",
                        &shape,
                        gpu,
                        &got(&out, rows * dim),
                        &want_out,
                        TOL,
                    );
                    check(
                        "attention.cls_scores",
                        &shape,
                        gpu,
                        &got(&cls, s.batch * heads * tokens),
                        &want_cls,
                        TOL,
                    );
                    check(
                        "attention.v_keep",
                        &shape,
                        gpu,
                        &got(&v_keep, rows * dim),
                        &want_v,
                        EXACT,
                    );
                }
            }
        }
    }
}

/// The fused kernel (GPU kernel set) against the unfused path on the same device, on awkward
/// token counts (one key tile, several tiles with a ragged last one, several query blocks):
/// outputs within 1e-5 of max |out|, the class token's pre-softmax scores within 1e-5 of their
/// max, V exact; and against the f64 reference as tightly as the unfused path. Head dims past
/// its registers keep the unfused path.
#[test]
fn fused_attention_matches_unfused() {
    let mut rng = Rng::new(10);
    for (gpu, kern) in devices() {
        let fused_set = kern.set.resolve(gpu) == KernelSet::Gpu;
        for (tokens, heads, head_dim) in [
            (197, 3, 64),
            (17, 3, 12),
            (1 + 2 * 3, 5, 6),
            (1, 2, 8),
            (65, 1, 64),
            (19, 2, 80),
        ] {
            let s = AttnShape {
                batch: 2,
                tokens,
                heads,
                head_dim,
                class_token_only: false,
                keep_probs: false,
            };
            let shape = format!("tokens={tokens} heads={heads} head_dim={head_dim}");
            let fuses = kern.attention.fuses(gpu, s);
            assert_eq!(fuses, fused_set && head_dim <= 64, "{shape}");
            let dim = heads * head_dim;
            let rows = s.batch * tokens;
            let qkv = rng.vec(rows * 3 * dim, -2.0, 2.0);
            let (want_out, want_cls, want_v) = attention_reference(&qkv, s);
            let qkv_buf = gpu.storage_from("qkv", &qkv);
            // Each path's outputs: (out, class-token scores, V).
            let mut results = Vec::new();
            for keep_probs in [true, false] {
                let s = AttnShape { keep_probs, ..s };
                let scores = gpu.storage("scores", 4 * (s.batch * s.scores_per_image()) as u64);
                let v_t = gpu.storage("v_t", 4 * (s.batch * s.v_t_per_image()) as u64);
                let out = gpu.storage("out", 4 * (rows * dim) as u64);
                let cls = gpu.storage("cls", 4 * (s.batch * heads * tokens) as u64);
                let v_keep = gpu.storage("v_keep", 4 * (rows * dim) as u64);
                let buffers = AttnBuffers {
                    qkv: &qkv_buf,
                    scores: &scores,
                    v_t: &v_t,
                    out: &out,
                    cls_scores: &cls,
                    v_keep: &v_keep,
                };
                let ds = kern.attention.dispatch(gpu, &kern.gemm, buffers, s, "test");
                let ran_fused = ds.len() == 1 && ds[0].kernel.ends_with("attention_fused");
                assert_eq!(ran_fused, fuses && !keep_probs, "{shape}");
                run(gpu, &ds);
                let got = |b: &wgpu::Buffer, len| download::<f32>(gpu, b, len);
                results.push((
                    got(&out, rows * dim),
                    got(&cls, s.batch * heads * tokens),
                    got(&v_keep, rows * dim),
                ));
            }
            let (unfused, fused) = (&results[0], &results[1]);
            let tag = "attention_fused vs unfused";
            check(tag, &shape, gpu, &fused.0, &f64s(&unfused.0), 1e-5);
            check(tag, &shape, gpu, &fused.1, &f64s(&unfused.1), 1e-5);
            check(tag, &shape, gpu, &fused.2, &f64s(&unfused.2), EXACT);
            check("attention_fused.out", &shape, gpu, &fused.0, &want_out, TOL);
            check("attention_fused.cls", &shape, gpu, &fused.1, &want_cls, TOL);
            check(
                "attention_fused.v_keep",
                &shape,
                gpu,
                &fused.2,
                &want_v,
                EXACT,
            );
        }
    }
}

/// softmax_rows and split_v alone, with more score rows (B·H·N) than one dispatch dimension
/// holds, so the grid spills into y. The scores are given; the GEMMs are not run.
#[test]
fn attention_softmax_and_split_v_past_65535_rows() {
    let s = AttnShape {
        batch: 8200,
        tokens: 2,
        heads: 4,
        head_dim: 3,
        class_token_only: false,
        keep_probs: true,
    };
    let (b, n, h, d) = (s.batch, s.tokens, s.heads, s.head_dim);
    let (dim, np) = (h * d, s.padded());
    assert!(b * h * n > 65535);
    let mut rng = Rng::new(9);
    let qkv = rng.vec(b * n * 3 * dim, -1.0, 1.0);
    let scores0 = rng.vec(b * s.scores_per_image(), -4.0, 4.0);
    let mut want_scores = f64s(&scores0);
    let mut want_cls = vec![0.0; b * h * n];
    for row in 0..b * h * n {
        let r = &mut want_scores[row * np..row * np + n];
        if row % n == 0 {
            want_cls[row / n * n..row / n * n + n].copy_from_slice(r);
        }
        let max = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let total: f64 = r.iter().map(|v| (v - max).exp()).sum();
        r.iter_mut().for_each(|v| *v = (*v - max).exp() / total);
    }
    let (_, _, want_v) = attention_reference(&qkv, s);
    // Vᵀ per head with zero padding (the buffer starts zeroed; the padding is never written).
    let mut want_v_t = vec![0.0; b * s.v_t_per_image()];
    for (idx, &v) in want_v.iter().enumerate() {
        let (tok, col) = (idx / dim, idx % dim);
        let (img, j, head, e) = (tok / n, tok % n, col / d, col % d);
        want_v_t[((img * h + head) * d + e) * np + j] = v;
    }
    for (gpu, kern) in devices() {
        let qkv_buf = gpu.storage_from("qkv", &qkv);
        let scores = gpu.storage_from("scores", &scores0);
        let v_t = gpu.storage("v_t", 4 * want_v_t.len() as u64);
        let out = gpu.storage("out", 4 * (b * n * dim) as u64);
        let cls = gpu.storage("cls", 4 * want_cls.len() as u64);
        let v_keep = gpu.storage("v_keep", 4 * want_v.len() as u64);
        let mut ds = kern.attention.dispatch(
            gpu,
            &kern.gemm,
            AttnBuffers {
                qkv: &qkv_buf,
                scores: &scores,
                v_t: &v_t,
                out: &out,
                cls_scores: &cls,
                v_keep: &v_keep,
            },
            s,
            "test",
        );
        // [scores, softmax, split_v, values]: keep the middle two.
        ds.truncate(3);
        ds.remove(0);
        run(gpu, &ds);
        let shape = format!(
            "batch={b} tokens={n} heads={h} head_dim={d} ({} rows)",
            b * h * n
        );
        let got = |buf: &wgpu::Buffer, len| download::<f32>(gpu, buf, len);
        check(
            "attention.softmax_rows",
            &shape,
            gpu,
            &got(&scores, want_scores.len()),
            &want_scores,
            TOL,
        );
        check(
            "attention.softmax_rows.cls_scores",
            &shape,
            gpu,
            &got(&cls, want_cls.len()),
            &want_cls,
            EXACT,
        );
        check(
            "attention.split_v.v_keep",
            &shape,
            gpu,
            &got(&v_keep, want_v.len()),
            &want_v,
            EXACT,
        );
        check(
            "attention.split_v.v_t",
            &shape,
            gpu,
            &got(&v_t, want_v_t.len()),
            &want_v_t,
            EXACT,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens

#[test]
fn tokens_im2col_matches_reference() {
    let mut rng = Rng::new(10);
    // (batch, height, width, patch): non-square images, grids of 2×3 and 2×3 / 3×2.
    for (batch, height, width, patch) in [(2, 10, 15, 5), (1, 32, 48, 16), (2, 48, 32, 16)] {
        let images = rng.vec(batch * 3 * height * width, -1.0, 1.0);
        let (gh, gw) = (height / patch, width / patch);
        let patch_len = 3 * patch * patch;
        let mut want = Vec::with_capacity(batch * gh * gw * patch_len);
        for img in 0..batch {
            for py in 0..gh {
                for px in 0..gw {
                    for c in 0..3 {
                        for ky in 0..patch {
                            for kx in 0..patch {
                                let (y, x) = (py * patch + ky, px * patch + kx);
                                want.push(images[((img * 3 + c) * height + y) * width + x] as f64);
                            }
                        }
                    }
                }
            }
        }
        for (gpu, kern) in devices() {
            let src = gpu.storage_from("images", &images);
            let dst = gpu.storage("patches", 4 * want.len() as u64);
            run(
                gpu,
                &[kern
                    .tokens
                    .im2col(gpu, &src, &dst, batch, (height, width), patch)],
            );
            check(
                "tokens.im2col",
                &format!("batch={batch} image={height}x{width} patch={patch}"),
                gpu,
                &download::<f32>(gpu, &dst, want.len()),
                &want,
                EXACT,
            );
        }
    }
}

#[test]
fn tokens_assemble_matches_reference() {
    let mut rng = Rng::new(11);
    for (batch, n, dim) in [(1, 1, 5), (2, 7, 5), (3, 197, 192)] {
        let patches = rng.vec(batch * (n - 1) * dim, -1.0, 1.0);
        let cls = rng.vec(dim, -1.0, 1.0);
        let pos = rng.vec(n * dim, -1.0, 1.0);
        // One f32 addition per element: the f32 sum is exact to compare against.
        let want: Vec<f64> = (0..batch * n * dim)
            .map(|idx| {
                let (img, t, e) = (idx / (n * dim), idx / dim % n, idx % dim);
                let v = if t == 0 {
                    cls[e]
                } else {
                    patches[(img * (n - 1) + t - 1) * dim + e]
                };
                (v + pos[t * dim + e]) as f64
            })
            .collect();
        for (gpu, kern) in devices() {
            let p_buf = gpu.storage_from("patches", &patches);
            let c_buf = gpu.storage_from("cls", &cls);
            let pos_buf = gpu.storage_from("pos", &pos);
            let dst = gpu.storage("tokens", 4 * want.len() as u64);
            run(
                gpu,
                &[kern
                    .tokens
                    .assemble(gpu, &p_buf, &c_buf, &pos_buf, &dst, batch, n, dim)],
            );
            check(
                "tokens.assemble",
                &format!("batch={batch} tokens={n} dim={dim}"),
                gpu,
                &download::<f32>(gpu, &dst, want.len()),
                &want,
                EXACT,
            );
        }
    }
}

#[test]
fn tokens_gathers_match_reference() {
    let mut rng = Rng::new(12);
    // gather_strided: (rows, dim, stride).
    for (rows, dim, stride) in [(1, 1, 1), (3, 7, 5), (2, 769, 197), (5, 192, 1)] {
        let src = rng.vec(((rows - 1) * stride + 1) * dim, -1.0, 1.0);
        let want: Vec<f64> = (0..rows * dim)
            .map(|i| src[(i / dim) * stride * dim + i % dim] as f64)
            .collect();
        for (gpu, kern) in devices() {
            let s_buf = gpu.storage_from("src", &src);
            let dst = gpu.storage("dst", 4 * want.len() as u64);
            run(
                gpu,
                &[kern
                    .tokens
                    .gather_strided(gpu, &s_buf, &dst, rows, dim, stride)],
            );
            check(
                "tokens.gather_strided",
                &format!("rows={rows} dim={dim} stride={stride}"),
                gpu,
                &download::<f32>(gpu, &dst, want.len()),
                &want,
                EXACT,
            );
        }
    }
    // gather_indexed: repeated and out-of-order rows.
    for (src_rows, dim, index) in [
        (1, 1, vec![0u32]),
        (6, 7, vec![4, 0, 4, 2, 5]),
        (1000, 769, vec![999, 3, 0, 999, 500, 1, 7]),
    ] {
        let src = rng.vec(src_rows * dim, -1.0, 1.0);
        let rows = index.len();
        let want: Vec<f64> = (0..rows * dim)
            .map(|i| src[index[i / dim] as usize * dim + i % dim] as f64)
            .collect();
        for (gpu, kern) in devices() {
            let s_buf = gpu.storage_from("src", &src);
            let i_buf = gpu.storage_from("index", &index);
            let dst = gpu.storage("dst", 4 * want.len() as u64);
            run(
                gpu,
                &[kern
                    .tokens
                    .gather_indexed(gpu, (&s_buf, src_rows), &i_buf, &dst, rows, dim)],
            );
            check(
                "tokens.gather_indexed",
                &format!("src_rows={src_rows} dim={dim} index={index:?}"),
                gpu,
                &download::<f32>(gpu, &dst, want.len()),
                &want,
                EXACT,
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// AGCAM

/// The K best classes of each image: value descending, the lower index first among equal
/// values (torch.topk and argmax on CPU).
fn topk_reference(logits: &[f32], classes: usize, k: usize) -> Vec<u32> {
    logits
        .chunks(classes)
        .flat_map(|row| {
            let mut order: Vec<usize> = (0..classes).collect();
            order.sort_by(|&a, &b| {
                (row[b] as f64)
                    .partial_cmp(&(row[a] as f64))
                    .unwrap()
                    .then(a.cmp(&b))
            });
            order.into_iter().take(k).map(|c| c as u32)
        })
        .collect()
}

#[test]
fn agcam_topk_orders_ties_by_index() {
    let mut rng = Rng::new(13);
    // (batch, classes): classes not a multiple of 64, below and above one workgroup.
    for (batch, classes) in [(1, 1), (3, 7), (2, 100), (2, 1000)] {
        // Few distinct values, so most logits tie with others; one image all equal.
        let mut logits: Vec<f32> = (0..batch * classes)
            .map(|_| rng.below(5) as f32 * 0.5 - 1.0)
            .collect();
        logits[..classes].iter_mut().for_each(|v| *v = 0.25);
        for k in [1, 3, classes] {
            let k = k.min(classes);
            let want = topk_reference(&logits, classes, k);
            for (gpu, kern) in devices() {
                let l_buf = gpu.storage_from("logits", &logits);
                let out = gpu.storage("classes", 4 * want.len() as u64);
                run(
                    gpu,
                    &[kern.agcam.topk(gpu, &l_buf, &out, batch, classes, k)],
                );
                check_u32(
                    "agcam.topk",
                    &format!("batch={batch} classes={classes} k={k}"),
                    gpu,
                    &download::<u32>(gpu, &out, want.len()),
                    &want,
                );
            }
        }
    }
}

#[test]
fn agcam_vecmat_matches_f64() {
    let mut rng = Rng::new(14);
    // (rows, per_image, in_dim, out_dim); rows not multiples of VM_ROWS = 4 or VM4_ROWS = 8,
    // output widths that are and are not multiples of 4 and of 16 (VM_COLS4 vec4 per lane).
    let shapes = [
        (1, 1, 1, 1),
        (3, 3, 7, 5),
        (6, 3, 192, 769),
        (7, 7, 769, 192),
        (6, 2, 192, 192),
        (19, 19, 33, 36),
        (20, 10, 8, 1028),
        // A single row: vecmat4 with one row per invocation (CPU set).
        (1, 1, 300, 772),
        // Many rows: the GPU set's tiled GEMM (from GEMM_MIN_ROWS = 128; rows and columns
        // crossing tile edges), the CPU set's vecmat4 and vecmat.
        (130, 5, 70, 68),
        (140, 7, 130, 70),
    ];
    for (rows, per_image, in_dim, out_dim) in shapes {
        let input = rng.vec(rows * in_dim, -1.0, 1.0);
        let scale = rng.vec(in_dim, -2.0, 2.0);
        let weight = rng.vec(in_dim * out_dim, -1.0, 1.0);
        let gate = rng.vec(rows / per_image * out_dim, -3.0, 3.0);
        let product: Vec<f64> = (0..rows * out_dim)
            .map(|idx| {
                let (r, j) = (idx / out_dim, idx % out_dim);
                (0..in_dim)
                    .map(|i| {
                        scale[i] as f64
                            * input[r * in_dim + i] as f64
                            * weight[i * out_dim + j] as f64
                    })
                    .sum()
            })
            .collect();
        for gated in [false, true] {
            let want: Vec<f64> = if gated {
                product
                    .iter()
                    .enumerate()
                    .map(|(idx, p)| {
                        let (r, j) = (idx / out_dim, idx % out_dim);
                        p * erf_gelu_grad(gate[(r / per_image) * out_dim + j] as f64)
                    })
                    .collect()
            } else {
                product.clone()
            };
            for (gpu, kern) in devices() {
                let i_buf = gpu.storage_from("input", &input);
                let s_buf = gpu.storage_from("scale", &scale);
                let w_buf = gpu.storage_from("weight", &weight);
                let g_buf = gpu.storage_from("gate", &gate);
                let out = gpu.storage("out", 4 * want.len() as u64);
                let d = kern.agcam.vecmat(
                    gpu,
                    &kern.gemm,
                    &i_buf,
                    &s_buf,
                    &w_buf,
                    gated.then_some(&g_buf),
                    &out,
                    (rows, per_image),
                    (in_dim, out_dim),
                );
                let kernel = format!("agcam.{}", d.kernel);
                if rows >= super::agcam::GEMM_MIN_ROWS && kern.set.resolve(gpu) == KernelSet::Gpu {
                    assert_eq!(
                        d.kernel, "gemm_tiled",
                        "rows={rows}: the GPU set's many-row product"
                    );
                }
                run(gpu, &[d]);
                check(
                    &kernel,
                    &format!(
                        "rows={rows} per_image={per_image} in={in_dim} out={out_dim} gelu'={gated}"
                    ),
                    gpu,
                    &download::<f32>(gpu, &out, want.len()),
                    &want,
                    TOL,
                );
            }
        }
    }
}

#[test]
fn agcam_accumulate_matches_f64() {
    let mut rng = Rng::new(15);
    // (images, per_image, tokens, heads, head_dim)
    let shapes = [
        (1, 1, 2, 1, 1),
        (2, 2, 7, 1, 6),
        (2, 3, 7, 3, 5),
        (1, 2, 197, 3, 64),
        (2, 1, 197, 1, 12),
        // accumulate_heads (GPU set): 12 heads leave 4 of 256 invocations idle, and the
        // tokens span several workgroups.
        (2, 2, 50, 12, 8),
    ];
    for (images, per_image, tokens, heads, head_dim) in shapes {
        let rows = images * per_image;
        let dim = heads * head_dim;
        let d_out = rng.vec(rows * dim, -1.0, 1.0);
        let v = rng.vec(images * tokens * dim, -1.0, 1.0);
        let cls = rng.vec(images * heads * tokens, -4.0, 4.0);
        let maps0 = rng.vec(rows * (tokens - 1), -1.0, 1.0);
        let fresh: Vec<f64> = (0..rows * (tokens - 1))
            .map(|idx| {
                let (r, j) = (idx / (tokens - 1), idx % (tokens - 1) + 1);
                let img = r / per_image;
                (0..heads)
                    .map(|h| {
                        let g: f64 = (0..head_dim)
                            .map(|e| {
                                d_out[r * dim + h * head_dim + e] as f64
                                    * v[(img * tokens + j) * dim + h * head_dim + e] as f64
                            })
                            .sum();
                        g.max(0.0) * sigmoid(cls[(img * heads + h) * tokens + j] as f64)
                    })
                    .sum()
            })
            .collect();
        for add in [false, true] {
            let want: Vec<f64> = if add {
                fresh
                    .iter()
                    .zip(&maps0)
                    .map(|(f, m)| f + *m as f64)
                    .collect()
            } else {
                fresh.clone()
            };
            for (gpu, kern) in devices() {
                let d_buf = gpu.storage_from("d_out", &d_out);
                let v_buf = gpu.storage_from("v", &v);
                let c_buf = gpu.storage_from("cls", &cls);
                let maps = gpu.storage_from("maps", &maps0);
                let d = kern.agcam.accumulate(
                    gpu,
                    &d_buf,
                    &v_buf,
                    &c_buf,
                    &maps,
                    (rows, per_image),
                    (tokens, heads, head_dim),
                    add,
                );
                let kernel = format!("agcam.{}", d.kernel);
                run(gpu, &[d]);
                check(
                    &kernel,
                    &format!(
                        "images={images} per_image={per_image} tokens={tokens} heads={heads} \
                         head_dim={head_dim} add={add}"
                    ),
                    gpu,
                    &download::<f32>(gpu, &maps, want.len()),
                    &want,
                    TOL,
                );
            }
        }
    }
}

/// Logits at the f32 extremes: an earlier topk started each slot from the sentinels ±3.4e38,
/// which hid a logit ≥ 3.4e38 and left a slot of one ≤ −3.4e38 unwritten.
#[test]
fn agcam_topk_handles_logits_beyond_3_4e38() {
    let logits = [1.0f32, f32::MAX, -f32::MAX, 0.0, 3.4e38];
    let classes = logits.len();
    for k in [1, classes] {
        let want = topk_reference(&logits, classes, k);
        for (gpu, kern) in devices() {
            let l_buf = gpu.storage_from("logits", &logits);
            let out = gpu.storage("classes", 4 * k as u64);
            run(gpu, &[kern.agcam.topk(gpu, &l_buf, &out, 1, classes, k)]);
            check_u32(
                "agcam.topk",
                &format!("logits={logits:?} k={k}"),
                gpu,
                &download::<u32>(gpu, &out, k),
                &want,
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The full backward's general product (backward.wgsl)

/// Element (r, c) of batch entry (i, s, h) of a [`Mat`] view.
fn mat_index(t: &Mat, (i, s, h): (usize, usize, usize), r: usize, c: usize) -> usize {
    let stride = |v: u32| v as usize;
    stride(t.offset)
        + i * stride(t.image)
        + s * stride(t.cls)
        + h * stride(t.head)
        + r * stride(t.row)
        + c * stride(t.col)
}

/// `bgemm` / `bgemm_block` on both kernel sets against f64: a transposed, batched A over
/// images × classes × heads with B shared by the classes and the GELU' epilogue reading every
/// third aux row, then a plain weight product with term scales, with f32 and f16 weights. Odd
/// sizes cross the 32-row blocks and leave partial column blocks.
#[test]
fn backward_product_matches_f64() {
    let mut rng = Rng::new(41);
    for (gpu, kernels) in devices() {
        for precision in [Precision::F32, Precision::F16] {
            let set = if kernels.backward(gpu).is_block() {
                KernelSet::Cpu
            } else {
                KernelSet::Gpu
            };
            let bk = BackwardKernels::new(gpu, set, precision);
            let kernel = if bk.is_block() {
                "bgemm_block"
            } else {
                "bgemm"
            };

            for n in [13, 12] {
                // Batched: A is stored transposed ([k, m] per matrix, padded rows).
                let (images, classes, heads) = (2, 3, 2);
                let (m, k) = (37, 19);
                let batch = Batch {
                    images,
                    classes,
                    heads,
                };
                let a_mat = Mat::at(5, 1, 40).batched(classes * heads * 800, heads * 800, 800);
                // Scalar B loads (unaligned), then vec4 ones.
                let b_mat = if n == 13 {
                    Mat::at(3, n + 2, 1).batched(heads * 400, 0, 400)
                } else {
                    Mat::at(4, n + 4, 1).batched(heads * 400, 0, 400)
                };
                let c_mat = Mat::at(1, 1, m).batched(classes * heads * 500, heads * 500, 500);
                let aux_rows = m.div_ceil(3);
                let aux_mat = Mat::rows(n).batched(aux_rows * n, 0, 0);
                let a = rng.vec(images * classes * heads * 800 + 8, -1.0, 1.0);
                let b = rng.vec(images * heads * 400 + 8, -1.0, 1.0);
                let aux = rng.vec(images * aux_rows * n, -2.0, 2.0);
                let c_len = images * classes * heads * 500 + 2;
                let a_buf = gpu.storage_from("a", &a);
                let b_buf = gpu.storage_from("b", &b);
                let aux_buf = gpu.storage_from("aux", &aux);
                let c_buf = gpu.storage_from("c", &vec![0.0f32; c_len]);
                let finish = Finish {
                    alpha: 0.5,
                    k_scale: None,
                    gelu_grad: Some((&aux_buf, aux_mat, 3)),
                };
                let d = bk.product(
                    gpu,
                    (&a_buf, a_mat),
                    Right::Activation(&b_buf, b_mat),
                    (&c_buf, c_mat),
                    (m, n, k),
                    batch,
                    finish,
                );
                run(gpu, &[d]);
                let mut want = vec![0.0f64; c_len];
                for i in 0..images {
                    for s in 0..classes {
                        for h in 0..heads {
                            let at = (i, s, h);
                            for r in 0..m {
                                for c in 0..n {
                                    let sum: f64 = (0..k)
                                        .map(|kk| {
                                            a[mat_index(&a_mat, at, r, kk)] as f64
                                                * b[mat_index(&b_mat, at, kk, c)] as f64
                                        })
                                        .sum();
                                    let pre = aux[mat_index(&aux_mat, at, r / 3, c)] as f64;
                                    want[mat_index(&c_mat, at, r, c)] =
                                        0.5 * sum * erf_gelu_grad(pre);
                                }
                            }
                        }
                    }
                }
                let got: Vec<f32> = download(gpu, &c_buf, c_len);
                let shape = format!("{images}x{classes}x{heads} of {m}x{n}x{k}, Aᵀ, gelu'");
                check(kernel, &shape, gpu, &got, &want, TOL);
            }

            // 45 columns: scalar loads; 44: vec4.
            for n in [45, 44] {
                // A weight product with term scales: f16 weights are read as f16 pairs.
                let (m, k) = (70, 33);
                let w: Vec<f32> = rng
                    .vec(k * n, -1.0, 1.0)
                    .into_iter()
                    .map(|v| half::f16::from_f32(v).to_f32())
                    .collect();
                let x = rng.vec(m * k, -1.0, 1.0);
                let scale = rng.vec(k, 0.1, 1.0);
                let w_buf = match precision {
                    Precision::F32 => gpu.storage_from("w", &w),
                    Precision::F16 => gpu.storage_from("w", &crate::vit::pack_f16(&w)),
                };
                let x_buf = gpu.storage_from("x", &x);
                let s_buf = gpu.storage_from("scale", &scale);
                let c_buf = gpu.storage_from("c", &vec![0.0f32; m * n]);
                let finish = Finish {
                    alpha: 1.0,
                    k_scale: Some(&s_buf),
                    gelu_grad: None,
                };
                let d = bk.product(
                    gpu,
                    (&x_buf, Mat::rows(k)),
                    Right::Weight(&w_buf, Mat::rows(n)),
                    (&c_buf, Mat::rows(n)),
                    (m, n, k),
                    Batch::ONE,
                    finish,
                );
                run(gpu, &[d]);
                let want: Vec<f64> = (0..m * n)
                    .map(|e| {
                        let (r, c) = (e / n, e % n);
                        (0..k)
                            .map(|kk| {
                                x[r * k + kk] as f64 * scale[kk] as f64 * w[kk * n + c] as f64
                            })
                            .sum()
                    })
                    .collect();
                let got: Vec<f32> = download(gpu, &c_buf, m * n);
                let shape = format!("{m}x{n}x{k}, {precision:?} weights, scaled terms");
                check(kernel, &shape, gpu, &got, &want, TOL);
            }
        }
    }
}

/// Grad-CAM's two kernels (method.md §6.2) against f64: the mean qkv gradient u from dO, V, the
/// class-token scores and q[CLS], and the map ReLU(X·w). Shapes cover tokens and head widths
/// beyond one workgroup (64), several classes per image, and one token per patch grid cell.
#[test]
fn gradcam_kernels_match_f64() {
    let mut rng = Rng::new(31);
    // (images, per_image, tokens, heads, head_dim)
    let shapes = [
        (1, 1, 2, 1, 1),
        (2, 3, 7, 3, 5),
        (3, 2, 13, 5, 6),
        (2, 1, 70, 2, 70),
        (1, 2, 197, 3, 64),
    ];
    for (images, per_image, tokens, heads, head_dim) in shapes {
        let rows = images * per_image;
        let dim = heads * head_dim;
        let patches = tokens - 1;
        let d_out = rng.vec(rows * dim, -1.0, 1.0);
        let v = rng.vec(images * tokens * dim, -1.0, 1.0);
        let cls = rng.vec(images * heads * tokens, -4.0, 4.0);
        let qkv = rng.vec(images * tokens * 3 * dim, -1.0, 1.0);
        let x = rng.vec(images * tokens * dim, -1.0, 1.0);
        let w = rng.vec(rows * dim, -1.0, 1.0);
        let scale = (head_dim as f64).powf(-0.5);
        let mut want_u = vec![0.0f64; rows * 3 * dim];
        for r in 0..rows {
            let img = r / per_image;
            for h in 0..heads {
                let s = &cls[(img * heads + h) * tokens..][..tokens];
                let m = s.iter().fold(f64::MIN, |m, &v| m.max(v as f64));
                let e: Vec<f64> = s.iter().map(|&v| (v as f64 - m).exp()).collect();
                let z: f64 = e.iter().sum();
                let da: Vec<f64> = (0..tokens)
                    .map(|j| {
                        (0..head_dim)
                            .map(|c| {
                                d_out[r * dim + h * head_dim + c] as f64
                                    * v[(img * tokens + j) * dim + h * head_dim + c] as f64
                            })
                            .sum()
                    })
                    .collect();
                let a0 = e[0] / z;
                let mean: f64 = (0..tokens).map(|j| e[j] / z * da[j]).sum();
                let ds0 = a0 * (da[0] - mean);
                for c in h * head_dim..(h + 1) * head_dim {
                    let q = qkv[img * tokens * 3 * dim + c] as f64;
                    want_u[r * 3 * dim + dim + c] = -scale * ds0 * q / patches as f64;
                    want_u[r * 3 * dim + 2 * dim + c] =
                        (1.0 - a0) * d_out[r * dim + c] as f64 / patches as f64;
                }
            }
        }
        let want_map: Vec<f64> = (0..rows * patches)
            .map(|i| {
                let (r, j) = (i / patches, i % patches + 1);
                let xo = (r / per_image * tokens + j) * dim;
                let sum: f64 = (0..dim)
                    .map(|e| x[xo + e] as f64 * w[r * dim + e] as f64)
                    .sum();
                sum.max(0.0)
            })
            .collect();
        let shape = format!(
            "images={images} per_image={per_image} tokens={tokens} heads={heads} \
             head_dim={head_dim}"
        );
        let rows = (rows, per_image);
        let dims = (tokens, heads, head_dim);
        for (gpu, kern) in devices() {
            // Garbage in the outputs: every value, the zero query block included, is written.
            let u = gpu.storage_from("u", &rng.vec(want_u.len(), -9.0, 9.0));
            let maps = gpu.storage_from("maps", &rng.vec(want_map.len(), -9.0, 9.0));
            let (d_buf, v_buf) = (gpu.storage_from("dO", &d_out), gpu.storage_from("v", &v));
            let (c_buf, q_buf) = (gpu.storage_from("cls", &cls), gpu.storage_from("qkv", &qkv));
            let (x_buf, w_buf) = (gpu.storage_from("x", &x), gpu.storage_from("w", &w));
            let g = &kern.gradcam;
            run(
                gpu,
                &[
                    g.key_value_gradient(gpu, &d_buf, &v_buf, &c_buf, &q_buf, &u, rows, dims),
                    g.patch_map(gpu, &x_buf, &w_buf, &maps, rows, dims),
                ],
            );
            // u is a mean over P tokens, far below 1: the bound is relative to its own size,
            // not to max(1, max|u|).
            let got_u = download::<f32>(gpu, &u, want_u.len());
            let u_max = want_u.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let u_tol = TOL * u_max.min(1.0);
            check(
                "gradcam.key_value_gradient",
                &shape,
                gpu,
                &got_u,
                &want_u,
                u_tol,
            );
            let got_map = download::<f32>(gpu, &maps, want_map.len());
            check("gradcam.patch_map", &shape, gpu, &got_map, &want_map, TOL);
        }
    }
}

#[path = "gemm_coop_tests.rs"]
pub(super) mod gemm_coop;
