//! The report's overlays: the map over the picture (the `explain` overlay), shrunk for the
//! page, with the target, distractor and predicted boxes drawn, as base64 PNG data URLs.

use std::io::Cursor;
use std::path::Path;

use image::{Rgb, RgbImage};

use crate::error::{Error, Result};
use crate::image::{load_rgb, overlay, resize_bilinear_antialias, DEFAULT_OVERLAY_ALPHA};

/// Longest side of a gallery picture, in pixels.
pub(crate) const THUMBNAIL: u32 = 240;

/// Outline colours, named in the page's legend.
pub(crate) const TARGET: [u8; 3] = [255, 255, 255];
pub(crate) const DISTRACTOR: [u8; 3] = [255, 0, 255];
pub(crate) const PREDICTED: [u8; 3] = [0, 0, 0];

/// A box to draw: `[xmin, ymin, xmax, ymax]` in the decoded picture's pixels (max exclusive),
/// and its colour.
pub(crate) type Outline = ([f64; 4], [u8; 3]);

/// The overlay of `map` (raw `grid`) on the picture at `path`, shrunk to at most
/// [`THUMBNAIL`] pixels a side, with `boxes` drawn (scaled along), as PNG bytes.
pub(crate) fn overlay_png(
    path: &Path,
    map: &[f32],
    (gh, gw): (usize, usize),
    boxes: &[Outline],
) -> Result<(Vec<u8>, (u32, u32))> {
    let original = load_rgb(path)?;
    let blended = overlay(&original, map, gh, gw, DEFAULT_OVERLAY_ALPHA);
    let (w, h) = blended.dimensions();
    let scale = (f64::from(THUMBNAIL) / f64::from(w.max(h))).min(1.0);
    let (tw, th) = (
        ((f64::from(w) * scale).round() as u32).max(1),
        ((f64::from(h) * scale).round() as u32).max(1),
    );
    let mut thumb = resize_bilinear_antialias(&blended, tw, th);
    let (sx, sy) = (f64::from(tw) / f64::from(w), f64::from(th) / f64::from(h));
    for ([x0, y0, x1, y1], colour) in boxes {
        draw_outline(&mut thumb, [x0 * sx, y0 * sy, x1 * sx, y1 * sy], *colour, 2);
    }
    let mut png = Vec::new();
    thumb
        .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| Error::Image {
            path: path.to_path_buf(),
            msg: format!("cannot encode the report overlay as PNG: {e}"),
        })?;
    Ok((png, (tw, th)))
}

/// Draws the outline of `[x0, y0, x1, y1]` (pixel edges, max exclusive), `thickness` pixels
/// wide inside the box; edges outside the image are not drawn, nor is a box outside it.
pub(crate) fn draw_outline(img: &mut RgbImage, b: [f64; 4], colour: [u8; 3], thickness: u32) {
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    // The box's own edges decide what is outline; only the part inside the image is drawn.
    let (bx0, by0) = (b[0].floor() as i64, b[1].floor() as i64);
    let (bx1, by1) = (b[2].ceil() as i64, b[3].ceil() as i64);
    let t = i64::from(thickness);
    for y in by0.max(0)..by1.min(h) {
        for x in bx0.max(0)..bx1.min(w) {
            let edge = x < bx0 + t || x >= bx1 - t || y < by0 + t || y >= by1 - t;
            if edge {
                img.put_pixel(x as u32, y as u32, Rgb(colour));
            }
        }
    }
}

/// Standard base64 (RFC 4648, with padding), for `data:` URLs.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
