//! A plain CPU implementation of the model and of AGCAM in f64, written to read like
//! method.md: the forward of §1, then the class-token backward chain of §2.
//!
//! It is slow and exists as a reference: the GPU kernels are tested against it at shapes the
//! PyTorch fixtures do not cover, and it is itself tested against those fixtures.

use crate::model::{HostTensor, ModelConfig, Pooling, VitWeights};

/// What the reference computes for one image.
#[derive(Debug, Clone)]
pub struct ReferenceOutput {
    /// Raw logits.
    pub logits: Vec<f64>,
    /// One raw AGCAM map `[gh·gw]` per requested class, in request order.
    pub maps: Vec<Vec<f64>>,
    /// Attention rollout (method.md §5): `R[CLS, 1:]` with `R = Â_L ⋯ Â_1`.
    pub rollout: Vec<f64>,
    /// Raw attention: the last layer's class-token attention row over patches, mean over heads.
    pub raw_attention: Vec<f64>,
}

fn vec64(t: &HostTensor) -> Vec<f64> {
    t.data.iter().map(|&v| v as f64).collect()
}

/// Error function to within an ulp (libm's port of FreeBSD's).
fn erf(x: f64) -> f64 {
    libm::erf(x)
}

fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

fn gelu_grad(x: f64) -> f64 {
    let cdf = 0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2));
    let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    cdf + x * pdf
}

/// `x · Wᵀ + b` for one row, W in nn.Linear layout [out, in].
fn linear(x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
    let n_in = x.len();
    b.iter()
        .enumerate()
        .map(|(o, bo)| bo + dot(x, &w[o * n_in..(o + 1) * n_in]))
        .collect()
}

/// `v · W` for one row: the transpose of an nn.Linear applied to a gradient.
fn linear_transpose(v: &[f64], w: &[f64]) -> Vec<f64> {
    let n_in = w.len() / v.len();
    let mut out = vec![0.0; n_in];
    for (o, vo) in v.iter().enumerate() {
        for (i, acc) in out.iter_mut().enumerate() {
            *acc += vo * w[o * n_in + i];
        }
    }
    out
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn layer_norm(x: &[f64], g: &[f64], b: &[f64], eps: f64) -> Vec<f64> {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let rstd = 1.0 / (var + eps).sqrt();
    x.iter()
        .zip(g.iter().zip(b))
        .map(|(v, (g, b))| (v - mean) * rstd * g + b)
        .collect()
}

/// Input gradient of LayerNorm at input `x` for output gradient `u`.
fn layer_norm_backward(x: &[f64], g: &[f64], u: &[f64], eps: f64) -> Vec<f64> {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let rstd = 1.0 / (var + eps).sqrt();
    let xhat: Vec<f64> = x.iter().map(|v| (v - mean) * rstd).collect();
    let gu: Vec<f64> = g.iter().zip(u).map(|(g, u)| g * u).collect();
    let mean_gu = gu.iter().sum::<f64>() / n;
    let mean_gux = dot(&gu, &xhat) / n;
    gu.iter()
        .zip(&xhat)
        .map(|(gu, xh)| rstd * (gu - mean_gu - xh * mean_gux))
        .collect()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// What the forward keeps of one layer (method.md §2).
struct Kept {
    v: Vec<Vec<f64>>,
    cls_scores: Vec<Vec<f64>>,
    y_cls: Vec<f64>,
    mixed: Vec<Vec<f64>>,
}

/// Logits and AGCAM maps of one normalised image `[3, H, W]` for each class in `classes`.
pub fn explain(
    cfg: &ModelConfig,
    w: &VitWeights,
    image: &[f32],
    classes: &[usize],
) -> ReferenceOutput {
    let (d, p) = (cfg.embed_dim, cfg.patch_size);
    let (h_img, w_img) = cfg.image_size;
    let (gh, gw) = cfg.grid();
    let n = cfg.tokens();
    let (heads, hd) = (cfg.num_heads, cfg.head_dim());
    let eps = cfg.layer_norm_eps as f64;

    // x0 = [cls; PatchEmbed(img)] + pos_embed
    let patch_w = vec64(&w.patch_w);
    let patch_b = vec64(&w.patch_b);
    let pos = vec64(&w.pos_embed);
    let mut x: Vec<Vec<f64>> = Vec::with_capacity(n);
    x.push(vec64(&w.cls_token));
    for py in 0..gh {
        for px in 0..gw {
            let mut patch = Vec::with_capacity(3 * p * p);
            for c in 0..3 {
                for ky in 0..p {
                    for kx in 0..p {
                        let (y, xx) = (py * p + ky, px * p + kx);
                        patch.push(image[(c * h_img + y) * w_img + xx] as f64);
                    }
                }
            }
            x.push(linear(&patch, &patch_w, &patch_b));
        }
    }
    for (t, row) in x.iter_mut().enumerate() {
        for (e, v) in row.iter_mut().enumerate() {
            *v += pos[t * d + e];
        }
    }

    let mut kept = Vec::with_capacity(cfg.depth);
    for blk in &w.blocks {
        let (n1w, n1b) = (vec64(&blk.norm1_w), vec64(&blk.norm1_b));
        let (qkv_w, qkv_b) = (vec64(&blk.qkv_w), vec64(&blk.qkv_b));
        let (proj_w, proj_b) = (vec64(&blk.proj_w), vec64(&blk.proj_b));
        let ls1 = blk.ls1.as_ref().map_or(vec![1.0; d], vec64);
        let ls2 = blk.ls2.as_ref().map_or(vec![1.0; d], vec64);
        let qkv: Vec<Vec<f64>> = x
            .iter()
            .map(|row| linear(&layer_norm(row, &n1w, &n1b, eps), &qkv_w, &qkv_b))
            .collect();
        let scale = (hd as f64).powf(-0.5);
        let mut merged = vec![vec![0.0; d]; n];
        let mut cls_scores = Vec::with_capacity(heads);
        // (mean over heads of A + I) / 2, for rollout.
        let mut mixed = vec![vec![0.0; n]; n];
        for (i, row) in mixed.iter_mut().enumerate() {
            row[i] = 0.5;
        }
        for h in 0..heads {
            let q = |i: usize| &qkv[i][h * hd..(h + 1) * hd];
            let k = |j: usize| &qkv[j][d + h * hd..d + (h + 1) * hd];
            let v = |j: usize| &qkv[j][2 * d + h * hd..2 * d + (h + 1) * hd];
            for i in 0..n {
                let s: Vec<f64> = (0..n).map(|j| dot(q(i), k(j)) * scale).collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for (j, ej) in e.iter().enumerate() {
                    mixed[i][j] += 0.5 * ej / z / heads as f64;
                    for (o, vv) in merged[i][h * hd..(h + 1) * hd].iter_mut().zip(v(j)) {
                        *o += ej / z * vv;
                    }
                }
                if i == 0 {
                    cls_scores.push(s);
                }
            }
        }
        for (row, o) in x.iter_mut().zip(&merged) {
            let branch = linear(o, &proj_w, &proj_b);
            for e in 0..d {
                row[e] += ls1[e] * branch[e];
            }
        }
        kept.push(Kept {
            v: qkv.iter().map(|r| r[2 * d..].to_vec()).collect(),
            cls_scores,
            y_cls: x[0].clone(),
            mixed,
        });
        let (n2w, n2b) = (vec64(&blk.norm2_w), vec64(&blk.norm2_b));
        let (fc1_w, fc1_b) = (vec64(&blk.fc1_w), vec64(&blk.fc1_b));
        let (fc2_w, fc2_b) = (vec64(&blk.fc2_w), vec64(&blk.fc2_b));
        for row in x.iter_mut() {
            let hidden: Vec<f64> = linear(&layer_norm(row, &n2w, &n2b, eps), &fc1_w, &fc1_b)
                .into_iter()
                .map(gelu)
                .collect();
            let branch = linear(&hidden, &fc2_w, &fc2_b);
            for e in 0..d {
                row[e] += ls2[e] * branch[e];
            }
        }
    }

    let (norm_w, norm_b) = (vec64(&w.norm_w), vec64(&w.norm_b));
    let head_w = vec64(&w.head_w);
    let pooled = match cfg.pooling {
        Pooling::Token => x[0].clone(),
        Pooling::Avg => (0..d)
            .map(|e| x[1..].iter().map(|row| row[e]).sum::<f64>() / (n - 1) as f64)
            .collect(),
    };
    let logits = linear(
        &layer_norm(&pooled, &norm_w, &norm_b, eps),
        &head_w,
        &vec64(&w.head_b),
    );

    // The class-token backward chain of method.md §2, once per class. Under average pooling the
    // class token does not reach the logits except through attention, whose inputs are
    // detached: its gradient, and with it every map, is exactly zero.
    let maps = classes
        .iter()
        .map(|&c| {
            if cfg.pooling == Pooling::Avg {
                return vec![0.0; n - 1];
            }
            let mut g = layer_norm_backward(&x[0], &norm_w, &head_w[c * d..(c + 1) * d], eps);
            let mut cam = vec![0.0; n - 1];
            for (blk, keep) in w.blocks.iter().zip(&kept).rev() {
                let ls1 = blk.ls1.as_ref().map_or(vec![1.0; d], vec64);
                let ls2 = blk.ls2.as_ref().map_or(vec![1.0; d], vec64);
                let (n2w, n2b) = (vec64(&blk.norm2_w), vec64(&blk.norm2_b));
                let fc1_w = vec64(&blk.fc1_w);
                let pre = linear(
                    &layer_norm(&keep.y_cls, &n2w, &n2b, eps),
                    &fc1_w,
                    &vec64(&blk.fc1_b),
                );
                let scaled: Vec<f64> = g.iter().zip(&ls2).map(|(g, s)| g * s).collect();
                let hidden: Vec<f64> = linear_transpose(&scaled, &vec64(&blk.fc2_w))
                    .iter()
                    .zip(&pre)
                    .map(|(h, z)| h * gelu_grad(*z))
                    .collect();
                let u = linear_transpose(&hidden, &fc1_w);
                let back = layer_norm_backward(&keep.y_cls, &n2w, &u, eps);
                for (g, b) in g.iter_mut().zip(&back) {
                    *g += b;
                }
                let scaled: Vec<f64> = g.iter().zip(&ls1).map(|(g, s)| g * s).collect();
                let d_out = linear_transpose(&scaled, &vec64(&blk.proj_w));
                for h in 0..heads {
                    let dh = &d_out[h * hd..(h + 1) * hd];
                    for (j, cell) in cam.iter_mut().enumerate() {
                        let grad = dot(dh, &keep.v[j + 1][h * hd..(h + 1) * hd]);
                        *cell += grad.max(0.0) * sigmoid(keep.cls_scores[h][j + 1]);
                    }
                }
            }
            cam
        })
        .collect();
    // Rollout: the class-token row of Â_L ⋯ Â_1, as the row-vector chain r ← r · Â_k.
    let mut r: Vec<f64> = (0..n).map(|j| if j == 0 { 1.0 } else { 0.0 }).collect();
    for keep in kept.iter().rev() {
        r = (0..n)
            .map(|j| (0..n).map(|i| r[i] * keep.mixed[i][j]).sum())
            .collect();
    }
    let last = kept.last().expect("at least one block");
    let raw_attention = (1..n)
        .map(|j| {
            last.cls_scores
                .iter()
                .map(|s| {
                    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
                    (s[j] - m).exp() / z
                })
                .sum::<f64>()
                / heads as f64
        })
        .collect();
    ReferenceOutput {
        logits,
        maps,
        rollout: r[1..].to_vec(),
        raw_attention,
    }
}
