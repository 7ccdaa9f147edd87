//! Decoding image files to 8-bit RGB, with the pixel conversions of PIL's `convert("RGB")`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use image::{DynamicImage, ImageBuffer, ImageReader, Pixel, RgbImage};

use crate::error::{Error, Result};

/// Decodes a PNG, JPEG, WebP or BMP file to 8-bit RGB, as PIL's `Image.open(path).convert("RGB")`.
///
/// The format is recognised from the file's content (its magic bytes); the extension is only a
/// fallback for content that is not recognised. Every pixel layout ends as RGB8 the way PIL
/// converts it:
///
/// * grayscale (any bit depth up to 8) is replicated to the three channels;
/// * alpha (RGBA, gray+alpha, `tRNS` transparency) is **discarded**, not composited: a fully
///   transparent pixel keeps its colour;
/// * palette images are looked up in their palette;
/// * 16-bit RGB, RGBA and gray+alpha keep the high byte of each sample (`v >> 8`);
/// * 16-bit grayscale **saturates** at 255 (`min(v, 255)`), which is what PIL does for its
///   `I;16` mode: such images come out mostly white, exactly as in the PyTorch pipeline.
///
/// No EXIF orientation is applied (PIL does not apply it on open either).
///
/// # Errors
/// [`Error::Io`] when the file cannot be opened or read; [`Error::Image`] with the path and the
/// decoder's message when the content is corrupt, truncated, too large for the decoder's limits
/// or in an unsupported format.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let reader = ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| Error::io(path, e))?;
    let decoded = catch_unwind(AssertUnwindSafe(|| reader.decode()));
    let image = match decoded {
        Ok(Ok(image)) => image,
        Ok(Err(e)) => return Err(image_error(path, e.to_string())),
        Err(_) => return Err(image_error(path, "the decoder panicked".to_string())),
    };
    Ok(to_rgb8_like_pil(image))
}

fn image_error(path: &Path, msg: String) -> Error {
    Error::Image {
        path: path.to_path_buf(),
        msg,
    }
}

/// Converts a decoded image to RGB8 with PIL's `convert("RGB")` rules (see [`load_rgb`]).
pub(crate) fn to_rgb8_like_pil(image: DynamicImage) -> RgbImage {
    match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageRgba8(img) => map_pixels(&img, |p| [p[0], p[1], p[2]]),
        DynamicImage::ImageLuma8(img) => map_pixels(&img, |p| [p[0]; 3]),
        DynamicImage::ImageLumaA8(img) => map_pixels(&img, |p| [p[0]; 3]),
        DynamicImage::ImageLuma16(img) => map_pixels(&img, |p| [p[0].min(255) as u8; 3]),
        DynamicImage::ImageLumaA16(img) => map_pixels(&img, |p| [(p[0] >> 8) as u8; 3]),
        DynamicImage::ImageRgb16(img) => map_pixels(&img, high_bytes),
        DynamicImage::ImageRgba16(img) => map_pixels(&img, high_bytes),
        // Float layouts come from none of the enabled decoders; convert them the image crate's way.
        other => other.to_rgb8(),
    }
}

fn high_bytes(p: &[u16]) -> [u8; 3] {
    [p[0], p[1], p[2]].map(|v| (v >> 8) as u8)
}

fn map_pixels<P: Pixel>(
    img: &ImageBuffer<P, Vec<P::Subpixel>>,
    f: impl Fn(&[P::Subpixel]) -> [u8; 3],
) -> RgbImage {
    let (w, h) = img.dimensions();
    let channels = usize::from(P::CHANNEL_COUNT);
    let mut raw = Vec::with_capacity(w as usize * h as usize * 3);
    for px in img.as_raw().chunks_exact(channels) {
        raw.extend_from_slice(&f(px));
    }
    // The buffer has exactly w * h * 3 bytes, so this cannot fail.
    RgbImage::from_raw(w, h, raw).unwrap_or_else(|| RgbImage::new(w, h))
}
