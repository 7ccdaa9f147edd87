//! The token kernels (tokens.wgsl) against a CPU reference: im2col of the images, assembling
//! the tokens (class token and patch embeddings plus position embedding), and the row gathers.

use super::*;

#[test]
fn tokens_im2col_matches_reference() {
    let mut rng = Rng::new(10);
    // (batch, height, width, patch): non-square images, grids of 2×3 and 2×3 / 3×2.
    for (batch, height, width, patch) in [(2, 10, 15, 5), (1, 32, 48, 16), (2, 48, 32, 16)] {
        let images = rng.vec(batch * 3 * height * width, -1.0, 1.0);
        let (gh, gw) = (height / patch, width / patch);
        let patch_len = 3 * patch * patch;
        let mut want = Vec::with_capacity(batch * gh * gw * patch_len);
        for img in 0..batch {
            for py in 0..gh {
                for px in 0..gw {
                    for c in 0..3 {
                        for ky in 0..patch {
                            for kx in 0..patch {
                                let (y, x) = (py * patch + ky, px * patch + kx);
                                want.push(images[((img * 3 + c) * height + y) * width + x] as f64);
                            }
                        }
                    }
                }
            }
        }
        for (gpu, kern) in devices() {
            let src = gpu.storage_from("images", &images);
            let dst = gpu.storage("patches", 4 * want.len() as u64);
            run(
                gpu,
                &[kern
                    .tokens
                    .im2col(gpu, &src, &dst, batch, (height, width), patch)],
            );
            check(
                "tokens.im2col",
                &format!("batch={batch} image={height}x{width} patch={patch}"),
                gpu,
                &download::<f32>(gpu, &dst, want.len()),
                &want,
                EXACT,
            );
        }
    }
}

#[test]
fn tokens_assemble_matches_reference() {
    let mut rng = Rng::new(11);
    for (batch, n, dim) in [(1, 1, 5), (2, 7, 5), (3, 197, 192)] {
        let patches = rng.vec(batch * (n - 1) * dim, -1.0, 1.0);
        let cls = rng.vec(dim, -1.0, 1.0);
        let pos = rng.vec(n * dim, -1.0, 1.0);
        // One f32 addition per element: the f32 sum is exact to compare against.
        let want: Vec<f64> = (0..batch * n * dim)
            .map(|idx| {
                let (img, t, e) = (idx / (n * dim), idx / dim % n, idx % dim);
                let v = if t == 0 {
                    cls[e]
                } else {
                    patches[(img * (n - 1) + t - 1) * dim + e]
                };
                (v + pos[t * dim + e]) as f64
            })
            .collect();
        for (gpu, kern) in devices() {
            let p_buf = gpu.storage_from("patches", &patches);
            let c_buf = gpu.storage_from("cls", &cls);
            let pos_buf = gpu.storage_from("pos", &pos);
            let dst = gpu.storage("tokens", 4 * want.len() as u64);
            run(
                gpu,
                &[kern
                    .tokens
                    .assemble(gpu, &p_buf, &c_buf, &pos_buf, &dst, batch, n, dim)],
            );
            check(
                "tokens.assemble",
                &format!("batch={batch} tokens={n} dim={dim}"),
                gpu,
                &download::<f32>(gpu, &dst, want.len()),
                &want,
                EXACT,
            );
        }
    }
}

#[test]
fn tokens_gathers_match_reference() {
    let mut rng = Rng::new(12);
    // gather_strided: (rows, dim, stride).
    for (rows, dim, stride) in [(1, 1, 1), (3, 7, 5), (2, 769, 197), (5, 192, 1)] {
        let src = rng.vec(((rows - 1) * stride + 1) * dim, -1.0, 1.0);
        let want: Vec<f64> = (0..rows * dim)
            .map(|i| src[(i / dim) * stride * dim + i % dim] as f64)
            .collect();
        for (gpu, kern) in devices() {
            let s_buf = gpu.storage_from("src", &src);
            let dst = gpu.storage("dst", 4 * want.len() as u64);
            run(
                gpu,
                &[kern
                    .tokens
                    .gather_strided(gpu, &s_buf, &dst, rows, dim, stride)],
            );
            check(
                "tokens.gather_strided",
                &format!("rows={rows} dim={dim} stride={stride}"),
                gpu,
                &download::<f32>(gpu, &dst, want.len()),
                &want,
                EXACT,
            );
        }
    }
    // gather_indexed: repeated and out-of-order rows.
    for (src_rows, dim, index) in [
        (1, 1, vec![0u32]),
        (6, 7, vec![4, 0, 4, 2, 5]),
        (1000, 769, vec![999, 3, 0, 999, 500, 1, 7]),
    ] {
        let src = rng.vec(src_rows * dim, -1.0, 1.0);
        let rows = index.len();
        let want: Vec<f64> = (0..rows * dim)
            .map(|i| src[index[i / dim] as usize * dim + i % dim] as f64)
            .collect();
        for (gpu, kern) in devices() {
            let s_buf = gpu.storage_from("src", &src);
            let i_buf = gpu.storage_from("index", &index);
            let dst = gpu.storage("dst", 4 * want.len() as u64);
            run(
                gpu,
                &[kern
                    .tokens
                    .gather_indexed(gpu, (&s_buf, src_rows), &i_buf, &dst, rows, dim)],
            );
            check(
                "tokens.gather_indexed",
                &format!("src_rows={src_rows} dim={dim} index={index:?}"),
                gpu,
                &download::<f32>(gpu, &dst, want.len()),
                &want,
                EXACT,
            );
        }
    }
}
