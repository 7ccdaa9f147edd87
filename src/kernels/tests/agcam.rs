//! The AGCAM kernels (agcam.wgsl) against f64: top-k with ties and f32 extremes, the
//! vector-matrix products of the backward chain, and the accumulation of the maps.

use super::*;

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
        // ViT-B's fc1ᵀ at batch 1: depth 3072 over 768 columns.
        (1, 1, 3072, 768),
        // Many rows: the GPU set's tiled GEMM (from GEMM_MIN_ROWS = 128; rows and columns
        // crossing tile edges), the CPU set's vecmat4 and vecmat.
        (130, 5, 70, 68),
        (140, 7, 130, 70),
    ];
    // Both kernel sets, and the GPU set's `wide-slices` trial (128 slices per column).
    let wide: Vec<(&Gpu, AgcamKernels, Gemm)> = gpus()
        .iter()
        .map(|g| {
            let agcam = AgcamKernels::new(g, KernelSet::Gpu, Precision::F32, true);
            (g, agcam, Gemm::new(g, KernelSet::Gpu, Precision::F32))
        })
        .collect();
    let kernels: Vec<_> = devices()
        .map(|(g, k)| (g, &k.agcam, &k.gemm, k.set.resolve(g), ""))
        .chain(
            wide.iter()
                .map(|(g, agcam, gemm)| (*g, agcam, gemm, KernelSet::Gpu, " wide-slices")),
        )
        .collect();
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
            for &(gpu, agcam, gemm, set, trial) in &kernels {
                let i_buf = gpu.storage_from("input", &input);
                let s_buf = gpu.storage_from("scale", &scale);
                let w_buf = gpu.storage_from("weight", &weight);
                let g_buf = gpu.storage_from("gate", &gate);
                let out = gpu.storage("out", 4 * want.len() as u64);
                let d = agcam.vecmat(
                    gpu,
                    gemm,
                    &i_buf,
                    &s_buf,
                    &w_buf,
                    if gated {
                        Factor::GeluGrad(&g_buf)
                    } else {
                        Factor::One
                    },
                    &out,
                    (rows, per_image),
                    (in_dim, out_dim),
                );
                let kernel = format!("agcam.{}{trial}", d.kernel);
                if rows >= crate::kernels::agcam::GEMM_MIN_ROWS && set == KernelSet::Gpu {
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

/// The LayerNorm backward folded into the product's input (`vecmat_folded`, FOLD): g_y and
/// the product against f64, on the GPU kernel set (the one that folds) and its `wide-slices`
/// trial. Rows of one and
/// several classes per image, rows that do not fill a workgroup's 4 or 8, odd widths, a
/// LayerNorm width above the 64 lanes per row of `vecmat_sliced`'s statistics, and ViT-B's
/// proj at batch 1.
#[test]
fn agcam_vecmat_folded_matches_f64() {
    let mut rng = Rng::new(16);
    // (rows, per_image, in_dim, out_dim)
    let shapes = [
        (1, 1, 1, 1),
        (1, 1, 7, 5),
        (3, 3, 33, 36),
        (6, 2, 192, 192),
        (7, 7, 100, 772),
        (9, 3, 70, 130),
        (20, 10, 64, 68),
        (1, 1, 768, 768),
    ];
    let eps = 1e-6f32;
    let wide: Vec<(&Gpu, AgcamKernels)> = gpus()
        .iter()
        .map(|g| {
            (
                g,
                AgcamKernels::new(g, KernelSet::Gpu, Precision::F32, true),
            )
        })
        .collect();
    let kernels: Vec<_> = devices()
        .filter(|(g, k)| k.set.resolve(g) == KernelSet::Gpu)
        .map(|(g, k)| (g, &k.agcam, ""))
        .chain(wide.iter().map(|(g, agcam)| (*g, agcam, " wide-slices")))
        .collect();
    for (rows, per_image, in_dim, out_dim) in shapes {
        let residual = rng.vec(rows * in_dim, -1.0, 1.0);
        let upstream = rng.vec(rows * in_dim, -2.0, 2.0);
        // An offset and spread per image, as LayerNorm inputs have.
        let x: Vec<f32> = (0..rows / per_image)
            .flat_map(|_| {
                let (mean, spread) = (rng.uniform(-3.0, 3.0), rng.uniform(0.1, 4.0));
                rng.vec(in_dim, -1.0, 1.0)
                    .into_iter()
                    .map(move |v| mean + spread * v)
            })
            .collect();
        let scale = rng.vec(in_dim, -2.0, 2.0);
        let weight = rng.vec(in_dim * out_dim, -1.0, 1.0);
        let g_y: Vec<f64> = (0..rows)
            .flat_map(|r| {
                let x = f64s(&x[(r / per_image) * in_dim..][..in_dim]);
                let gu = f64s(&upstream[r * in_dim..][..in_dim]);
                let n = in_dim as f64;
                let mean = x.iter().sum::<f64>() / n;
                let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
                let rstd = 1.0 / (var + eps as f64).sqrt();
                let xhat: Vec<f64> = x.iter().map(|v| (v - mean) * rstd).collect();
                let mean_gu = gu.iter().sum::<f64>() / n;
                let mean_gux = gu.iter().zip(&xhat).map(|(g, h)| g * h).sum::<f64>() / n;
                let g = &residual[r * in_dim..][..in_dim];
                (0..in_dim)
                    .map(|i| g[i] as f64 + rstd * (gu[i] - mean_gu - xhat[i] * mean_gux))
                    .collect::<Vec<_>>()
            })
            .collect();
        let want: Vec<f64> = (0..rows * out_dim)
            .map(|idx| {
                let (r, j) = (idx / out_dim, idx % out_dim);
                (0..in_dim)
                    .map(|i| scale[i] as f64 * g_y[r * in_dim + i] * weight[i * out_dim + j] as f64)
                    .sum()
            })
            .collect();
        let shape = format!("rows={rows} per_image={per_image} in={in_dim} out={out_dim}");
        for &(gpu, agcam, trial) in &kernels {
            let residual_buf = gpu.storage_from("g", &residual);
            let upstream_buf = gpu.storage_from("gu", &upstream);
            let x_buf = gpu.storage_from("x", &x);
            let next = gpu.storage("g_y", 4 * g_y.len() as u64);
            let out = gpu.storage("out", 4 * want.len() as u64);
            let fold = NormFold {
                residual: &residual_buf,
                scaled_upstream: &upstream_buf,
                x: &x_buf,
                eps,
                out: &next,
            };
            let d = agcam.vecmat_folded(
                gpu,
                &fold,
                &gpu.storage_from("scale", &scale),
                &gpu.storage_from("weight", &weight),
                &out,
                (rows, per_image),
                (in_dim, out_dim),
            );
            let kernel = format!("agcam.{}{trial}", d.kernel);
            assert_eq!(d.kernel, "vecmat_sliced_folded", "{shape}");
            run(gpu, &[d]);
            let got_next = download::<f32>(gpu, &next, g_y.len());
            check(&format!("{kernel} g_y"), &shape, gpu, &got_next, &g_y, TOL);
            let got = download::<f32>(gpu, &out, want.len());
            check(&kernel, &shape, gpu, &got, &want, TOL);
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
