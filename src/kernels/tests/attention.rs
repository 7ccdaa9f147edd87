//! Multi-head softmax attention against f64: the unfused path, the fused kernel against it, and
//! the softmax and V split past 65535 rows.

use super::*;

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
