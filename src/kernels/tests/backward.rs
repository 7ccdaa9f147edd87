//! The full backward's general product (backward.wgsl, `bgemm` / `bgemm_block`) against f64:
//! batched, transposed A with the GELU' epilogue, and weight products in f32 and f16.

use super::*;

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

/// `len` random weights that f16 holds exactly, and a buffer of them stored as `precision`
/// says (f16 weights are read as f16 pairs).
fn weights(gpu: &Gpu, rng: &mut Rng, len: usize, precision: Precision) -> (Vec<f32>, wgpu::Buffer) {
    let w: Vec<f32> = rng
        .vec(len, -1.0, 1.0)
        .into_iter()
        .map(|v| half::f16::from_f32(v).to_f32())
        .collect();
    let buffer = match precision {
        Precision::F32 => gpu.storage_from("w", &w),
        Precision::F16 => gpu.storage_from("w", &crate::vit::pack_f16(&w)),
    };
    (w, buffer)
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

            // 45 and 773 columns: scalar loads; 44 and 772: vec4; 772 and 773 on the CPU
            // set's wide blocks, with a partial column block.
            for n in [45, 44, 773, 772] {
                // A weight product with term scales: f16 weights are read as f16 pairs.
                let (m, k) = (70, 33);
                let (w, w_buf) = weights(gpu, &mut rng, k * n, precision);
                let x = rng.vec(m * k, -1.0, 1.0);
                let scale = rng.vec(k, 0.1, 1.0);
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

            // A transposed weight (the LRP's Z⁺ reads W so): with k a multiple of 4, the CPU
            // set reads 4 terms of each column per load; 45 and 772 columns.
            for n in [45, 772] {
                let (m, k) = (70, 36);
                let (w, w_buf) = weights(gpu, &mut rng, n * k, precision);
                let x = rng.vec(m * k, -1.0, 1.0);
                let x_buf = gpu.storage_from("x", &x);
                let c_buf = gpu.storage_from("c", &vec![0.0f32; m * n]);
                let d = bk.product(
                    gpu,
                    (&x_buf, Mat::rows(k)),
                    Right::Weight(&w_buf, Mat::rows(k).t()),
                    (&c_buf, Mat::rows(n)),
                    (m, n, k),
                    Batch::ONE,
                    Finish::scaled(1.0),
                );
                run(gpu, &[d]);
                let want: Vec<f64> = (0..m * n)
                    .map(|e| {
                        let (r, c) = (e / n, e % n);
                        (0..k)
                            .map(|kk| x[r * k + kk] as f64 * w[c * k + kk] as f64)
                            .sum()
                    })
                    .collect();
                let got: Vec<f32> = download(gpu, &c_buf, m * n);
                let shape = format!("{m}x{n}x{k}, {precision:?} weights transposed");
                check(kernel, &shape, gpu, &got, &want, TOL);
            }
        }
    }
}
