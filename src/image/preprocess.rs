//! Model input preparation: decode, resize, `ToTensor` and `Normalize`.

use std::path::Path;

use image::RgbImage;

use super::decode::load_rgb;
use super::resize::resize_bilinear_antialias;
use crate::error::{Error, Result};

/// Converts an RGB image to a normalised CHW tensor `[3, H, W]` (row-major), as torchvision's
/// `ToTensor()` followed by `Normalize(mean, std)`: each value is `(x / 255 - mean[c]) / std[c]`,
/// computed in f32 in that order, so results equal PyTorch's bit for bit.
///
/// A zero `std` gives infinities; [`preprocess`] refuses it.
pub fn normalize_chw(img: &RgbImage, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let (w, h) = img.dimensions();
    let plane = w as usize * h as usize;
    let mut out = vec![0f32; 3 * plane];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (f32::from(px[c]) / 255.0 - mean[c]) / std[c];
        }
    }
    out
}

/// Loads an image file and prepares it for a model of input size `height × width`: decodes it with
/// [`load_rgb`] and prepares it with [`preprocess_rgb`].
///
/// Returns the original decoded image (for overlays) and the normalised `[3, height, width]`
/// tensor.
///
/// # Errors
/// The errors of [`preprocess_rgb`], checked before the file is read; the errors of
/// [`load_rgb`] for the file.
pub fn preprocess(
    path: &Path,
    height: usize,
    width: usize,
    mean: [f32; 3],
    std: [f32; 3],
) -> Result<(RgbImage, Vec<f32>)> {
    check_input_settings(height, width, mean, std)?;
    let original = load_rgb(path)?;
    let tensor = preprocess_rgb(&original, height, width, mean, std)?;
    Ok((original, tensor))
}

/// Prepares an already decoded RGB picture for a model of input size `height × width`, exactly
/// as [`preprocess`] prepares a file: resizes it (ignoring aspect ratio) with
/// [`resize_bilinear_antialias`] as torchvision's `Resize((height, width))` does on a PIL image,
/// and normalises it with [`normalize_chw`]. For pixels decoded elsewhere, e.g. by PIL.
///
/// # Errors
/// [`Error::Invalid`] for a zero or too large size, or a `std` that is zero or not finite, or a
/// `mean` that is not finite.
pub fn preprocess_rgb(
    image: &RgbImage,
    height: usize,
    width: usize,
    mean: [f32; 3],
    std: [f32; 3],
) -> Result<Vec<f32>> {
    let (h, w) = check_input_settings(height, width, mean, std)?;
    let resized = resize_bilinear_antialias(image, w, h);
    Ok(normalize_chw(&resized, mean, std))
}

/// The model input size as `u32`s, once the size and normalisation are checked.
fn check_input_settings(
    height: usize,
    width: usize,
    mean: [f32; 3],
    std: [f32; 3],
) -> Result<(u32, u32)> {
    let size = |v: usize, what: &str| {
        u32::try_from(v).ok().filter(|&v| v > 0).ok_or_else(|| {
            Error::Invalid(format!(
                "input {what} {v} must be between 1 and {}",
                u32::MAX
            ))
        })
    };
    let (h, w) = (size(height, "height")?, size(width, "width")?);
    if std.iter().any(|s| !s.is_finite() || *s == 0.0) {
        return Err(Error::Invalid(format!(
            "normalisation std {std:?} must be finite and non-zero"
        )));
    }
    if mean.iter().any(|m| !m.is_finite()) {
        return Err(Error::Invalid(format!(
            "normalisation mean {mean:?} must be finite"
        )));
    }
    Ok((h, w))
}
