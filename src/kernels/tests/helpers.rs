//! The kernel tests' harness: the test devices with both kernel sets, deterministic data,
//! running and reading back dispatches, the tolerance check that prints every measured error,
//! f64 activations, and the nn.Linear references and launches that the plain and cooperative
//! GEMM tests share.

use std::sync::OnceLock;

pub(in crate::kernels) use crate::gpu::testing::gpus;
use crate::kernels::gemm::View;
use crate::kernels::*;

/// Relative tolerance of f32 kernels against the f64 reference.
pub(in crate::kernels) const TOL: f64 = 1e-4;
/// Kernels that only copy values (or add two of them once) must match exactly.
pub(in crate::kernels) const EXACT: f64 = 0.0;

/// Deterministic pseudo-random numbers (SplitMix64): the same data on every run and backend.
pub(in crate::kernels) struct Rng(u64);

impl Rng {
    pub(in crate::kernels) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(in crate::kernels) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    pub(in crate::kernels) fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }

    pub(in crate::kernels) fn vec(&mut self, len: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..len).map(|_| self.uniform(lo, hi)).collect()
    }

    /// Uniform in 0..n.
    pub(in crate::kernels) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Every test device with each kernel set (the CPU set that llvmpipe and lavapipe use, and the
/// GPU set, which runs here too), compiled once per test binary.
pub(in crate::kernels) fn devices() -> impl Iterator<Item = (&'static Gpu, &'static Kernels)> {
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
pub(in crate::kernels) fn gemm_devices() -> impl Iterator<Item = (&'static Gpu, &'static Gemm)> {
    devices().map(|(gpu, k)| (gpu, &k.gemm))
}

pub(in crate::kernels) fn backend(gpu: &Gpu) -> String {
    format!("{:?} ({})", gpu.info.backend, gpu.info.name)
}

/// Records `dispatches` into one compute pass and submits it.
pub(in crate::kernels) fn run(gpu: &Gpu, dispatches: &[Dispatch]) {
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        encode(&mut pass, dispatches);
    }
    gpu.queue.submit([enc.finish()]);
}

pub(in crate::kernels) fn download<T: bytemuck::Pod>(
    gpu: &Gpu,
    buffer: &wgpu::Buffer,
    len: usize,
) -> Vec<T> {
    gpu.download(buffer, len)
        .unwrap_or_else(|e| panic!("{}: download failed: {e}", backend(gpu)))
}

pub(in crate::kernels) fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// Compares a GPU result with its f64 reference; panics unless every value is finite and
/// max |got − want| ≤ `tol` · max(1, max |want|).
pub(in crate::kernels) fn check(
    kernel: &str,
    shape: &str,
    gpu: &Gpu,
    got: &[f32],
    want: &[f64],
    tol: f64,
) {
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
pub(in crate::kernels) fn check_u32(
    kernel: &str,
    shape: &str,
    gpu: &Gpu,
    got: &[u32],
    want: &[u32],
) {
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

pub(in crate::kernels) fn erf_gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

pub(in crate::kernels) fn erf_gelu_grad(x: f64) -> f64 {
    0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
        + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

pub(in crate::kernels) fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

// GEMM references, shared with the cooperative GEMM's tests.

/// `a[m, k] · w[n, k]ᵀ` in f64.
pub(in crate::kernels) fn matmul_nt(
    a: &[f32],
    w: &[f32],
    (m, n, k): (usize, usize, usize),
) -> Vec<f64> {
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

/// What `epilogue` makes of the products `acc` (row-major, `bias.len()` columns), over C's
/// initial values `c0`, in f64.
pub(in crate::kernels) fn epilogue_reference(
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
pub(in crate::kernels) const KEEP_EVERY: usize = 3;

/// The dispatches of one nn.Linear product over plain row-major buffers `[a, w, bias, scale,
/// c]`: through `Gemm::residual` for [`Epilogue::Residual`] (which splits the branch and the
/// add on gemm_block), `Gemm::linear_keeping` otherwise, keeping every [`KEEP_EVERY`]-th row
/// in `kept` when given.
pub(in crate::kernels) fn linear_dispatches(
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
