//! The LRP kernels (shaders/lrp.wgsl, and the z⁺ products of backward.wgsl with B_SIGN) against
//! f64 on the CPU, on every test device with both kernel sets: one z⁺ linear layer with f32 and
//! f16 weights (several classes per input row), and the residual Add rule with its per-row
//! conservation. Odd sizes cross the GEMM blocks; shapes as the transformer's rows.

use super::lrp::Linear;
use super::tests::helpers::{gpus, run, Rng};
use super::*;

/// Deterministic values in [-1, 1).
fn values(seed: u64, len: usize) -> Vec<f32> {
    Rng::new(seed).vec(len, -1.0, 1.0)
}

/// The authors' safe_divide in f64.
fn safe_div(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        a / (b + 1e-9)
    }
}

/// max |got − want| / max |want|.
fn rel_error(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    assert!(got.iter().all(|g| g.is_finite()), "non-finite output");
    let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
    let err = got
        .iter()
        .zip(want)
        .fold(0.0f64, |m, (&g, w)| m.max((g as f64 - w).abs()));
    err / scale
}

/// One z⁺ linear: R_in = x⁺ ⊙ (sW⁺) + x⁻ ⊙ (sW⁻), s = ε(R, x⁺W⁺ᵀ + x⁻W⁻ᵀ), against f64,
/// and Σ R_in = Σ R over the outputs with a positive contribution (the others, Z⁺ = 0, drop
/// their relevance: with 8 inputs some do).
#[test]
fn zplus_linear_matches_f64_and_conserves() {
    // (input rows, classes, out, in)
    let shapes = [(7, 3, 45, 37), (10, 2, 12, 44), (3, 1, 70, 8)];
    for gpu in gpus() {
        for set in [KernelSet::Cpu, KernelSet::Gpu] {
            for precision in [Precision::F32, Precision::F16] {
                let lk = LrpKernels::new(gpu, set, precision);
                for (seed, &(rows, classes, f_out, f_in)) in shapes.iter().enumerate() {
                    let seed = seed as u64;
                    let x = values(seed, rows * f_in);
                    // f16-representable weights: both storages hold the same values.
                    let w: Vec<f32> = values(seed + 10, f_out * f_in)
                        .into_iter()
                        .map(|v| half::f16::from_f32(v).to_f32())
                        .collect();
                    let r: Vec<f32> = values(seed + 20, rows * classes * f_out)
                        .into_iter()
                        .map(|v| v + 1.2)
                        .collect();
                    let w_buf = match precision {
                        Precision::F32 => gpu.storage_from("w", &w),
                        Precision::F16 => gpu.storage_from("w", &crate::vit::pack_f16(&w)),
                    };
                    let x_buf = gpu.storage_from("x", &x);
                    let r_buf = gpu.storage_from("r", &r);
                    let zeros = |len: usize| gpu.storage_from("scratch", &vec![0.0f32; len]);
                    let (r_in, part) = (zeros(rows * classes * f_in), zeros(rows * classes * f_in));
                    let z = zeros(rows * f_out);
                    let linear = Linear {
                        weight: &w_buf,
                        input: &x_buf,
                        rows,
                        features: (f_out, f_in),
                        r_out: &r_buf,
                        r_in: (&r_in, &part),
                    };
                    run(gpu, &lk.zplus(gpu, linear, classes, &z, "test"));
                    let got: Vec<f32> = gpu.download(&r_in, rows * classes * f_in).unwrap();

                    let xs: Vec<f64> = x.iter().map(|&v| v as f64).collect();
                    let mut want = vec![0.0f64; rows * classes * f_in];
                    let mut conserved = vec![0.0f64; rows * classes];
                    for row in 0..rows {
                        let xr = &xs[row * f_in..][..f_in];
                        for c in 0..classes {
                            let g = row * classes + c;
                            for o in 0..f_out {
                                let wo = &w[o * f_in..][..f_in];
                                let pos_terms = |i: usize| (xr[i] * wo[i] as f64).max(0.0);
                                let z: f64 = (0..f_in).map(pos_terms).sum();
                                let s = safe_div(r[g * f_out + o] as f64, z);
                                if z > 0.0 {
                                    conserved[g] += r[g * f_out + o] as f64;
                                }
                                for i in 0..f_in {
                                    want[g * f_in + i] += s * pos_terms(i);
                                }
                            }
                        }
                    }
                    let tag = format!(
                        "z+ {rows}x{classes} rows {f_out}<-{f_in} {set:?} {precision:?} on {:?}",
                        gpu.info.backend
                    );
                    let err = rel_error(&got, &want);
                    eprintln!("kernel-error {tag}: {err:.3e}");
                    assert!(err <= 1e-5, "{tag}: error {err:e} of max|R_in|");
                    assert!(conserved.iter().any(|&c| c > 0.0));
                    for (g, &total) in conserved.iter().enumerate() {
                        let total_in: f64 = got[g * f_in..][..f_in].iter().map(|&v| v as f64).sum();
                        let drift = (total_in - total).abs() / total.abs();
                        assert!(
                            drift <= 1e-5,
                            "{tag}: row {g} relevance {total_in} of {total}"
                        );
                    }
                }
            }
        }
    }
}

/// The residual Add x = x1 + x2 on [B, N, K, D] relevance: the parts against f64, and each
/// gradient row's parts summing to its relevance (Add.relprop's rescaling).
#[test]
fn add_rule_matches_f64_and_conserves() {
    // (images, tokens, classes, dim): one row spans several workgroup strides.
    for (images, tokens, classes, dim) in [(2, 5, 3, 7), (1, 13, 2, 33)] {
        let acts = images * tokens * dim;
        let count = acts * classes;
        let x1 = values(1, acts);
        let x2 = values(2, acts);
        let x: Vec<f32> = x1.iter().zip(&x2).map(|(a, b)| a + b).collect();
        let r = values(3, count);
        for gpu in gpus() {
            let lk = LrpKernels::new(gpu, KernelSet::Auto, Precision::F32);
            let r_buf = gpu.storage_from("r", &r);
            let r1_buf = gpu.storage_from("r1", &vec![0.0f32; count]);
            let factors = gpu.storage_from("factors", &vec![0.0f32; 2 * images * classes]);
            let (x_buf, x1_buf) = (gpu.storage_from("x", &x), gpu.storage_from("x1", &x1));
            let shape = (images, tokens, classes, dim);
            let dispatches = lk.add(gpu, (&r_buf, &r1_buf), (&x_buf, &x1_buf), &factors, shape);
            run(gpu, &dispatches);
            let got_r2: Vec<f32> = gpu.download(&r_buf, count).unwrap();
            let got_r1: Vec<f32> = gpu.download(&r1_buf, count).unwrap();

            // [B, N, K, D] relevance against [B·N, D] activations.
            let act = |i: usize| (i / (classes * dim)) * dim + i % dim;
            let row = |i: usize| (i / (tokens * classes * dim)) * classes + (i / dim) % classes;
            let rows = images * classes;
            let (mut s1, mut s2, mut total) = (vec![0.0; rows], vec![0.0; rows], vec![0.0; rows]);
            let s: Vec<f64> = (0..count)
                .map(|i| safe_div(r[i] as f64, x[act(i)] as f64))
                .collect();
            for i in 0..count {
                s1[row(i)] += x1[act(i)] as f64 * s[i];
                s2[row(i)] += (x[act(i)] - x1[act(i)]) as f64 * s[i];
                total[row(i)] += r[i] as f64;
            }
            let factor = |own: f64, other: f64, t: f64| {
                safe_div(safe_div(own.abs(), own.abs() + other.abs()) * t, own)
            };
            let mut want_r1 = vec![0.0; count];
            let mut want_r2 = vec![0.0; count];
            for i in 0..count {
                let g = row(i);
                want_r1[i] = x1[act(i)] as f64 * s[i] * factor(s1[g], s2[g], total[g]);
                want_r2[i] =
                    (x[act(i)] - x1[act(i)]) as f64 * s[i] * factor(s2[g], s1[g], total[g]);
            }
            let tag = format!("add {shape:?} on {:?}", gpu.info.backend);
            for (part, got, want) in [("r1", &got_r1, &want_r1), ("r2", &got_r2, &want_r2)] {
                let err = rel_error(got, want);
                eprintln!("kernel-error {tag} {part}: {err:.3e}");
                assert!(err <= 1e-4, "{tag}: {part} error {err:e} of max");
            }
            let mut sums = vec![0.0f64; rows];
            for i in 0..count {
                sums[row(i)] += got_r1[i] as f64 + got_r2[i] as f64;
            }
            for g in 0..rows {
                let drift = (sums[g] - total[g]).abs() / total[g].abs();
                assert!(
                    drift <= 1e-4,
                    "{tag}: row {g} parts sum {} of {}",
                    sums[g],
                    total[g]
                );
            }
        }
    }
}
