//! Post-processing of explanation maps: bilinear upsampling and min-max normalisation.

/// Source indices and weights of one output index along one axis.
#[derive(Clone, Copy)]
struct Tap {
    i0: usize,
    i1: usize,
    w0: f32,
    w1: f32,
}

/// PyTorch's `compute_source_index_and_lambda` (CPU kernel, `align_corners=False`), in f32.
fn linear_taps(in_size: usize, out_size: usize) -> Vec<Tap> {
    if in_size == out_size {
        return (0..out_size)
            .map(|i| Tap {
                i0: i,
                i1: i,
                w0: 1.0,
                w1: 0.0,
            })
            .collect();
    }
    // area_pixel_compute_scale without a scale factor: input_size / output_size in f32.
    let scale = in_size as f32 / out_size as f32;
    (0..out_size)
        .map(|o| {
            let real = scale * (o as f32 + 0.5) - 0.5;
            let real = if real < 0.0 { 0.0 } else { real };
            let i0 = (real.floor() as usize).min(in_size - 1);
            let w1 = (real - i0 as f32).clamp(0.0, 1.0);
            let i1 = if i0 < in_size - 1 { i0 + 1 } else { i0 };
            Tap {
                i0,
                i1,
                w0: 1.0 - w1,
                w1,
            }
        })
        .collect()
}

/// Upsamples (or downsamples) a row-major `gh × gw` map to `out_h × out_w` with the semantics of
/// `torch.nn.functional.interpolate(mode="bilinear", align_corners=False)` on CPU: source index
/// `(dst + 0.5) * in / out - 0.5`, clamped at 0 below and to the last row/column above; an axis
/// whose size does not change is copied. No antialiasing when shrinking, as in PyTorch.
///
/// The arithmetic is that of PyTorch's separable CPU kernel as built for x86-64 with FMA
/// (measured against PyTorch 2.15): f32 weights, each row interpolated as `fma(x0, w0, x1 * w1)`,
/// then the two rows combined the same way. That is bit for bit what PyTorch returns at display
/// sizes (14×14 and 7×7 to 224×224, 24×24 to 384×384 and others checked). For some smaller
/// outputs PyTorch picks another kernel (a four-term sum with a fused source index), and results
/// differ by a few ulp there (measured: at most 7.2e-7 on values of unit scale).
///
/// An empty map (`gh` or `gw` zero) gives all zeros; a zero output size gives an empty vector.
///
/// # Panics
/// If `grid.len() != gh * gw`: the grid and its shape disagree, a bug in the caller.
pub fn upsample_bilinear(
    grid: &[f32],
    gh: usize,
    gw: usize,
    out_h: usize,
    out_w: usize,
) -> Vec<f32> {
    assert_eq!(
        grid.len(),
        gh * gw,
        "upsample_bilinear: grid of {} values is not {gh}×{gw}",
        grid.len()
    );
    if out_h == 0 || out_w == 0 {
        return Vec::new();
    }
    if gh == 0 || gw == 0 {
        return vec![0.0; out_h * out_w];
    }
    let rows = linear_taps(gh, out_h);
    let cols = linear_taps(gw, out_w);
    // Each source row interpolated along the width once (PyTorch recomputes the same values).
    let mut widened = Vec::with_capacity(gh * out_w);
    for src_row in grid.chunks_exact(gw) {
        widened.extend(
            cols.iter()
                .map(|c| src_row[c.i0].mul_add(c.w0, src_row[c.i1] * c.w1)),
        );
    }
    let mut out = Vec::with_capacity(out_h * out_w);
    for r in &rows {
        let t0 = &widened[r.i0 * out_w..(r.i0 + 1) * out_w];
        let t1 = &widened[r.i1 * out_w..(r.i1 + 1) * out_w];
        out.extend(t0.iter().zip(t1).map(|(&a, &b)| a.mul_add(r.w0, b * r.w1)));
    }
    out
}

/// Min-max normalises `values` in place to `[0, 1]`: `(v - min) / (max - min)` in f32, as
/// `(m - m.min()) / (m.max() - m.min())` does in PyTorch.
///
/// Non-finite inputs (NaN, ±∞) are first replaced by 0, so the result never holds NaN. When all
/// values are equal (max == min), or the slice is empty, every value becomes 0. A range too wide
/// for f32 (max − min overflowing to ∞) is handled in f64.
pub fn min_max_normalize(values: &mut [f32]) {
    let mut min = f32::INFINITY;
    let mut max = f32::NEG_INFINITY;
    for v in values.iter_mut() {
        if !v.is_finite() {
            *v = 0.0;
        }
        min = min.min(*v);
        max = max.max(*v);
    }
    if values.is_empty() || max <= min {
        values.fill(0.0);
        return;
    }
    let range = max - min;
    if range.is_finite() {
        for v in values.iter_mut() {
            *v = ((*v - min) / range).clamp(0.0, 1.0);
        }
    } else {
        let (min, range) = (f64::from(min), f64::from(max) - f64::from(min));
        for v in values.iter_mut() {
            *v = ((f64::from(*v) - min) / range).clamp(0.0, 1.0) as f32;
        }
    }
}
