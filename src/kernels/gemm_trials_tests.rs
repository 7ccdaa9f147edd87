//! The trial kernels (`Trials`) compute what the default kernels compute: the same products,
//! summed in the same order, so their outputs must equal the default kernels' bit for bit, and
//! match f64 like them. They run on every test device through the GPU kernel set.

use super::*;
use crate::gpu::testing::gpus;
use crate::kernels::encode;
use crate::kernels::lrp_tests::values;

/// `a · wᵀ + bias` with GELU or not, on `gemm`; returns the output and the kernel that ran.
fn linear(
    gpu: &Gpu,
    gemm: &Gemm,
    (a, w, bias): (&[f32], &[f32], &[f32]),
    (m, n, k): (usize, usize, usize),
    epilogue: Epilogue,
) -> (Vec<f32>, String) {
    let a = gpu.storage_from("a", a);
    let w = gpu.storage_from("w", w);
    let bias = gpu.storage_from("bias", bias);
    let c = gpu.storage("c", words(m * n));
    let d = gemm.linear(gpu, &a, &w, &bias, &bias, &c, (m, n, k), epilogue);
    let kernel = d.kernel.clone();
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        encode(&mut pass, &[d]);
    }
    gpu.queue.submit([enc.finish()]);
    (gpu.download(&c, m * n).expect("download"), kernel)
}

/// Each trial runs where its rule says, on awkward shapes (depths that are no multiple of the
/// tiles' K steps, edges of partial tiles), and equals the default kernel bit for bit, which
/// itself is within 1e-4 of f64.
#[test]
fn trial_kernels_equal_the_default_kernels() {
    // (m, n, k, the kernel the trial runs, the default it replaces)
    let cases = [
        (197, 768, 37, "gemm_tiled32", "gemm_tiled"),
        (33, 65, 19, "gemm_tiled32", "gemm_tiled"),
        (1, 5, 3, "gemm_tiled32", "gemm_tiled"),
        (2049, 2049, 37, "gemm_tiled128+prefetch", "gemm_tiled128"),
        (2048, 2059, 8, "gemm_tiled128+prefetch", "gemm_tiled128"),
    ];
    let trials = Trials {
        tiled32: true,
        prefetch128: true,
    };
    for gpu in gpus() {
        let default = Gemm::new(gpu, KernelSet::Gpu, Precision::F32);
        let trial = Gemm::with_trials(gpu, KernelSet::Gpu, Precision::F32, trials);
        for (i, &(m, n, k, trial_kernel, default_kernel)) in cases.iter().enumerate() {
            let seed = 10 * i as u64;
            let (a, w, bias) = (
                values(seed, m * k),
                values(seed + 1, n * k),
                values(seed + 2, n),
            );
            let at = format!("m={m} n={n} k={k} on {:?}", gpu.info.backend);
            let epilogue = if i % 2 == 0 {
                Epilogue::Gelu
            } else {
                Epilogue::Bias
            };
            let (want, ran) = linear(gpu, &default, (&a, &w, &bias), (m, n, k), epilogue);
            assert_eq!(ran, default_kernel, "{at}: the default kernel");
            let (got, ran) = linear(gpu, &trial, (&a, &w, &bias), (m, n, k), epilogue);
            assert_eq!(ran, trial_kernel, "{at}: the trial kernel");
            let differ = got.iter().zip(&want).filter(|(g, w)| g != w).count();
            assert_eq!(
                differ, 0,
                "{at}: {trial_kernel} differs from {default_kernel}"
            );
            // The default against f64, at a few rows spread over the output.
            for row in [0, m / 2, m - 1] {
                for col in [0, n / 3, n - 1] {
                    let dot: f64 = (0..k)
                        .map(|j| a[row * k + j] as f64 * w[col * k + j] as f64)
                        .sum::<f64>()
                        + bias[col] as f64;
                    let reference = match epilogue {
                        Epilogue::Gelu => {
                            0.5 * dot * (1.0 + libm::erf(dot / std::f64::consts::SQRT_2))
                        }
                        _ => dot,
                    };
                    let got = want[row * n + col] as f64;
                    assert!(
                        (got - reference).abs() <= 1e-4 * reference.abs().max(1.0),
                        "{at}: ({row}, {col}) = {got}, f64 {reference}"
                    );
                }
            }
        }
    }
}
