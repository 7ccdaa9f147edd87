//! The trial kernels (`Trials`) compute what the default kernels compute: the pipelined
//! 128 × 128 tile sums in the same order, so it must equal the default bit for bit; split-K
//! sums K in slices, so it must match f64 as tightly as the default does. They run on every
//! test device through the GPU kernel set. (The unfused attention they can select is the
//! reference of `fused_attention_matches_unfused`.)

use super::gemm::{Epilogue, Gemm};
use super::*;
use crate::kernels::tests::helpers::{gpus, run, Rng};

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
    run(gpu, &[d]);
    (gpu.download(&c, m * n).expect("download"), kernel)
}

/// Each trial runs where its rule says, on awkward shapes (depths that are no multiple of the
/// tiles' K steps, edges of partial tiles), with the GELU and bias epilogues: the pipelined tile
/// equals the default bit for bit, split-K is within 1e-4 of f64 everywhere, like the default.
#[test]
fn trial_kernels_match_the_default_kernels() {
    // (m, n, k, the kernel the trial runs, the default it replaces)
    let cases = [
        // ViT-B's fc2 at batch 1: 48 tiles, 6 slices of 512.
        (197, 768, 3072, "gemm_splitk", "gemm_tiled"),
        // Two tiles, 2 slices of 160 (the last one 140 terms).
        (33, 65, 300, "gemm_splitk", "gemm_tiled"),
        // The head of one image: one row.
        (1, 1000, 768, "gemm_splitk", "gemm_tiled"),
        // Too shallow to split: K < 2 × 128.
        (5, 7, 200, "gemm_tiled", "gemm_tiled"),
        (2049, 2049, 37, "gemm_prefetch128", "gemm_tiled128"),
        (2048, 2059, 8, "gemm_prefetch128", "gemm_tiled128"),
    ];
    let trials = Trials {
        splitk: true,
        prefetch128: true,
        ..Trials::default()
    };
    for gpu in gpus() {
        let default = Gemm::new(gpu, KernelSet::Gpu, Precision::F32);
        let trial = Gemm::with_trials(gpu, KernelSet::Gpu, Precision::F32, trials);
        for (i, &(m, n, k, trial_kernel, default_kernel)) in cases.iter().enumerate() {
            let seed = 10 * i as u64;
            let mut rng = Rng::new(seed);
            let (a, w, bias) = (
                rng.vec(m * k, -1.0, 1.0),
                rng.vec(n * k, -1.0, 1.0),
                rng.vec(n, -1.0, 1.0),
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
            if trial_kernel.ends_with("128") {
                let differ = got.iter().zip(&want).filter(|(g, w)| g != w).count();
                assert_eq!(
                    differ, 0,
                    "{at}: {trial_kernel} differs from {default_kernel}"
                );
            }
            // Both against f64: everywhere for the small products, at rows and columns spread
            // over the output for the large ones.
            let every = |len: usize| -> Vec<usize> {
                if m * n <= 200_000 {
                    (0..len).collect()
                } else {
                    vec![0, len / 3, len / 2, len - 1]
                }
            };
            for row in every(m) {
                for col in every(n) {
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
                    for (output, kernel) in [(&want, default_kernel), (&got, trial_kernel)] {
                        let v = output[row * n + col] as f64;
                        assert!(
                            (v - reference).abs() <= 1e-4 * reference.abs().max(1.0),
                            "{at}: {kernel} ({row}, {col}) = {v}, f64 {reference}"
                        );
                    }
                }
            }
        }
    }
}

/// `AGCAM_TRIAL_KERNELS` takes known names, separated by commas and blanks, and refuses the
/// rest by name instead of running the defaults silently.
#[test]
fn trial_names_parse_or_are_refused() {
    assert_eq!(Trials::parse("").unwrap(), Trials::default());
    let all = Trials::parse(" splitk, prefetch128 ,unfused-attention").unwrap();
    assert!(all.splitk && all.prefetch128 && all.unfused_attention);
    let one = Trials::parse("prefetch128").unwrap();
    assert_eq!(
        one,
        Trials {
            prefetch128: true,
            ..Trials::default()
        }
    );
    let e = Trials::parse("splitk,tiled32").unwrap_err().to_string();
    assert!(
        e.contains("AGCAM_TRIAL_KERNELS") && e.contains("\"tiled32\"") && e.contains("splitk"),
        "{e}"
    );
}

/// `unfused-attention` takes the GPU set's forward off the fused kernel, for an A/B.
#[test]
fn unfused_attention_trial_turns_the_fused_kernel_off() {
    let shape = AttnShape {
        batch: 2,
        tokens: 197,
        heads: 12,
        head_dim: 64,
        class_token_only: false,
        keep_probs: false,
    };
    let trials = Trials {
        unfused_attention: true,
        ..Trials::default()
    };
    for gpu in gpus() {
        let default = Kernels::new(gpu, KernelSet::Gpu, Precision::F32);
        assert!(default.attention.fuses(gpu, shape));
        let trial = Kernels::with_trials(gpu, KernelSet::Gpu, Precision::F32, trials);
        assert!(!trial.attention.fuses(gpu, shape));
    }
}
