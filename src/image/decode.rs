//! Decoding image files to 8-bit RGB, with the pixel conversions of PIL's `convert("RGB")`.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use image::metadata::Orientation as ExifOrientation;
use image::{DynamicImage, ImageBuffer, ImageDecoder, ImageFormat, ImageReader, Pixel, RgbImage};

use crate::error::{Error, Result};

/// Whether the EXIF orientation tag of a picture is applied after decoding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Orientation {
    /// Rotate or flip the picture as its EXIF orientation says, as image viewers do: a phone
    /// photo taken upright is explained upright.
    #[default]
    Apply,
    /// Keep the stored pixel layout, as PIL's `Image.open` does without `ImageOps.exif_transpose`
    /// (pixel parity with such a pipeline, and boxes given in stored-pixel coordinates).
    Ignore,
}

/// A decoded picture and what its EXIF orientation tag said.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The pixels, RGB8, oriented as requested.
    pub image: RgbImage,
    /// The EXIF orientation tag (1 to 8) when the file has one.
    pub exif_orientation: Option<u8>,
    /// Whether a rotation or flip was applied (tag present, not 1, and [`Orientation::Apply`]).
    pub oriented: bool,
    /// A 16-bit grayscale picture with samples above 255, which saturated to white under PIL's
    /// `I;16` rule (see [`load_rgb`]): what is explained is a mostly white picture, as in the
    /// PyTorch pipeline. Convert such pictures to 8 bits first.
    pub saturated_16bit: bool,
}

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
/// No EXIF orientation is applied (PIL does not apply it on open either); [`decode_file`]
/// applies it on request.
///
/// # Errors
/// As [`decode_file`].
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    decode_file(path, Orientation::Ignore).map(|d| d.image)
}

/// Decodes a picture as [`load_rgb`] does, applying its EXIF orientation or not.
///
/// Only regular files are opened (a FIFO named `x.jpg` is refused, not waited on). A JPEG whose
/// data ends before its end-of-image marker (a truncated download) is refused, as PIL refuses it,
/// rather than decoded with its missing part filled in.
///
/// # Errors
/// [`Error::Io`] when the file cannot be opened or read or is not a regular file;
/// [`Error::Image`] with the path and the decoder's message when the content is corrupt,
/// truncated, too large for the decoder's limits or in an unsupported format.
pub fn decode_file(path: &Path, orientation: Orientation) -> Result<Decoded> {
    let bytes = crate::files::read_regular(path)?;
    decode_bytes(&bytes, ImageFormat::from_path(path).ok(), orientation).map_err(|msg| {
        Error::Image {
            path: path.to_path_buf(),
            msg,
        }
    })
}

/// Largest decoded picture, in bytes: the image crate's default allocation limit, 512 MiB (an
/// 8-bit RGB picture of 13,000 × 13,000 pixels).
pub const MAX_DECODED_BYTES: u64 = 512 * 1024 * 1024;

/// Decodes `bytes` (`hint`: the format to assume when the content is not recognised); the error
/// is the reason, without the path.
pub(crate) fn decode_bytes(
    bytes: &[u8],
    hint: Option<ImageFormat>,
    orientation: Orientation,
) -> std::result::Result<Decoded, String> {
    if bytes.is_empty() {
        return Err("the file is empty (0 bytes)".to_string());
    }
    let mut reader = ImageReader::new(Cursor::new(bytes));
    if let Some(format) = hint {
        reader.set_format(format);
    }
    let reader = reader.with_guessed_format().map_err(|e| e.to_string())?;
    if reader.format().is_none() {
        return Err(
            "not a picture agcam reads: neither its content nor its extension is PNG, JPEG, \
             WebP or BMP"
                .to_string(),
        );
    }
    if reader.format() == Some(ImageFormat::Jpeg) && jpeg_is_truncated(bytes) {
        return Err(
            "truncated JPEG: the data ends before the end-of-image marker (an incomplete \
             download or copy?)"
                .to_string(),
        );
    }
    let decoded = catch_unwind(AssertUnwindSafe(|| {
        let mut decoder = reader.into_decoder().map_err(|e| e.to_string())?;
        // Not every decoder applies the reader's allocation limit: a few header bytes claiming a
        // huge picture would otherwise abort the process on a failed allocation.
        let (w, h) = decoder.dimensions();
        if decoder.total_bytes() > MAX_DECODED_BYTES {
            return Err(format!(
                "the picture claims to be {w}×{h} pixels ({} MiB decoded), over the {} MiB \
                 limit: corrupt, or a decompression bomb",
                decoder.total_bytes() >> 20,
                MAX_DECODED_BYTES >> 20
            ));
        }
        let exif = decoder
            .exif_metadata()
            .ok()
            .flatten()
            .and_then(|chunk| ExifOrientation::from_exif_chunk(&chunk));
        DynamicImage::from_decoder(decoder)
            .map(|image| (image, exif))
            .map_err(|e| e.to_string())
    }));
    let (mut image, exif) = match decoded {
        Ok(v) => v?,
        Err(_) => return Err("the decoder panicked".to_string()),
    };
    let oriented = orientation == Orientation::Apply
        && exif.is_some_and(|o| o != ExifOrientation::NoTransforms);
    if let (true, Some(o)) = (oriented, exif) {
        image.apply_orientation(o);
    }
    let saturated_16bit =
        matches!(&image, DynamicImage::ImageLuma16(gray) if gray.pixels().any(|p| p[0] > 255));
    Ok(Decoded {
        image: to_rgb8_like_pil(image),
        exif_orientation: exif.map(ExifOrientation::to_exif),
        oriented,
        saturated_16bit,
    })
}

/// Whether a JPEG stream ends before its end-of-image marker. Walks the marker segments (so a
/// thumbnail inside EXIF data, or a second picture appended after the end, cannot mislead it)
/// and the entropy-coded data of each scan, where a 0xFF byte is always stuffed (0xFF00) or
/// starts a restart marker, until the next real marker.
fn jpeg_is_truncated(bytes: &[u8]) -> bool {
    let mut i = 2; // after SOI
    while i + 1 < bytes.len() {
        if bytes[i] != 0xFF {
            // No marker where one must be: corrupt rather than truncated; the decoder says so.
            return false;
        }
        let marker = bytes[i + 1];
        match marker {
            0xFF => i += 1, // fill byte before a marker
            0xD9 => return false,
            0x01 | 0xD0..=0xD7 => i += 2,
            _ => {
                let Some(len) = bytes.get(i + 2..i + 4) else {
                    return true;
                };
                i += 2 + usize::from(u16::from_be_bytes([len[0], len[1]]));
                if marker == 0xDA {
                    loop {
                        match bytes.get(i..i + 2) {
                            None => return true,
                            Some(&[0xFF, m])
                                if m != 0x00 && m != 0xFF && !(0xD0..=0xD7).contains(&m) =>
                            {
                                break
                            }
                            _ => i += 1,
                        }
                    }
                }
            }
        }
    }
    true
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A JPEG of a `w × h` picture whose left column is white and the rest black, with an
    /// APP1 EXIF segment giving `orientation` when set.
    fn jpeg(w: u32, h: u32, orientation: Option<u16>) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, _| {
            if x == 0 {
                image::Rgb([255; 3])
            } else {
                image::Rgb([0; 3])
            }
        });
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95)
            .encode_image(&img)
            .unwrap();
        let Some(o) = orientation else { return bytes };
        // TIFF, little endian: one IFD entry, tag 0x0112 (orientation), SHORT, count 1.
        let mut tiff = b"II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0".to_vec();
        tiff.extend_from_slice(&o.to_le_bytes());
        tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let mut out = bytes[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&bytes[2..]);
        out
    }

    #[test]
    fn exif_orientation_is_applied_on_request() {
        let bytes = jpeg(16, 8, Some(6));
        let applied = decode_bytes(&bytes, None, Orientation::Apply).unwrap();
        assert_eq!(applied.exif_orientation, Some(6));
        assert!(applied.oriented);
        // 6 = rotate 90° clockwise: the white left column becomes the top row.
        assert_eq!(applied.image.dimensions(), (8, 16));
        assert!(applied.image.get_pixel(4, 0)[0] > 200, "top row is white");
        assert!(applied.image.get_pixel(4, 15)[0] < 60);

        let ignored = decode_bytes(&bytes, None, Orientation::Ignore).unwrap();
        assert_eq!(ignored.exif_orientation, Some(6));
        assert!(!ignored.oriented);
        assert_eq!(ignored.image.dimensions(), (16, 8));

        let plain = decode_bytes(&jpeg(16, 8, None), None, Orientation::Apply).unwrap();
        assert_eq!(plain.exif_orientation, None);
        assert_eq!(plain.image.dimensions(), (16, 8));
    }

    #[test]
    fn empty_and_unknown_files_say_why() {
        let err = decode_bytes(b"", Some(ImageFormat::Jpeg), Orientation::Apply).unwrap_err();
        assert_eq!(err, "the file is empty (0 bytes)");
        let err = decode_bytes(b"plain text", None, Orientation::Apply).unwrap_err();
        assert!(err.contains("PNG, JPEG, WebP or BMP"), "{err}");
    }

    #[test]
    fn a_truncated_jpeg_is_refused() {
        let full = jpeg(64, 48, Some(1));
        assert!(!jpeg_is_truncated(&full));
        assert!(decode_bytes(&full, None, Orientation::Apply).is_ok());
        for cut in [full.len() - 2, full.len() * 2 / 3, full.len() / 2] {
            let err = decode_bytes(&full[..cut], None, Orientation::Apply).unwrap_err();
            assert!(err.contains("truncated JPEG"), "{cut}: {err}");
        }
        // Bytes appended after the end-of-image marker are not a truncation.
        let mut trailing = full.clone();
        trailing.extend_from_slice(b"\xFF\xD8\xFF\xDAtrailer");
        assert!(!jpeg_is_truncated(&trailing));
    }
}
