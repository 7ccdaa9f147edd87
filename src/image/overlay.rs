//! Heatmap overlays: the explanation map in jet colours blended over the original image.

use image::RgbImage;

use super::colormap::jet;
use super::map::{min_max_normalize, upsample_bilinear};

/// Weight of the heatmap in [`overlay`] unless the caller chooses another.
pub const DEFAULT_OVERLAY_ALPHA: f32 = 0.5;

/// Blends the explanation `grid` (row-major `gh × gw`, raw values) over `original`.
///
/// The grid is upsampled to the image's size with [`upsample_bilinear`], min-max normalised with
/// [`min_max_normalize`], coloured with [`jet`], and blended per channel as
/// `alpha * heat + (1 - alpha) * image` in f32, rounded half to even and saturated to `u8`, exactly
/// as `cv2.addWeighted(heat, alpha, image, 1 - alpha, 0)` computes it on x86-64 and ARM (a fused
/// multiply-add of the heat term onto the rounded image term). `alpha` is clamped to `[0, 1]`; NaN
/// means [`DEFAULT_OVERLAY_ALPHA`].
///
/// # Panics
/// If `grid.len() != gh * gw` (see [`upsample_bilinear`]).
pub fn overlay(original: &RgbImage, grid: &[f32], gh: usize, gw: usize, alpha: f32) -> RgbImage {
    let (w, h) = original.dimensions();
    let mut heat = upsample_bilinear(grid, gh, gw, h as usize, w as usize);
    min_max_normalize(&mut heat);
    let alpha = if alpha.is_nan() {
        DEFAULT_OVERLAY_ALPHA
    } else {
        alpha.clamp(0.0, 1.0)
    };
    let beta = 1.0 - alpha;
    let mut out = original.clone();
    for (px, &v) in out.pixels_mut().zip(&heat) {
        let colour = jet(v);
        for (dst, c) in px.0.iter_mut().zip(colour) {
            // cv2.addWeighted's SIMD path: fma(heat, alpha, fma(image, beta, 0)).
            let blended = f32::from(c).mul_add(alpha, f32::from(*dst) * beta);
            *dst = blended.round_ties_even().clamp(0.0, 255.0) as u8;
        }
    }
    out
}
