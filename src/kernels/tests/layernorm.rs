//! LayerNorm forward and backward (layernorm.wgsl) against f64, the backward reference itself
//! checked against finite differences, with row maps that read one input row for several
//! output rows or skip input rows.

use super::*;

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
