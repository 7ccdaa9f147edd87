//! Grad-CAM's two kernels (method.md §6.2) against f64.

use super::*;

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
