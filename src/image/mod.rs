//! Image decoding, preprocessing (PIL-exact antialiased resize, normalisation) and display
//! (bilinear upsampling of maps, min-max normalisation, jet colormap, overlays).
//!
//! Everything here reproduces the Python pipeline of the reference implementation:
//!
//! * [`load_rgb`]: PIL's `Image.open(path).convert("RGB")`;
//! * [`resize_bilinear_antialias`]: PIL's `resize((w, h), Image.BILINEAR)`, bit for bit (what
//!   torchvision's `Resize` does on PIL images), Pillow 13's pass order by default and Pillow 12's
//!   on request ([`resize_bilinear_antialias_with`]);
//! * [`normalize_chw`]: torchvision's `ToTensor()` + `Normalize(mean, std)`;
//! * [`preprocess`]: the three above from a file to a model input;
//! * [`upsample_bilinear`]: `F.interpolate(mode="bilinear", align_corners=False)`;
//! * [`min_max_normalize`], [`jet`] (OpenCV's `COLORMAP_JET`) and [`overlay`] for display;
//! * [`write_npy_f32`]: `np.save` of a float32 array.

mod colormap;
mod decode;
mod map;
mod npy;
mod overlay;
mod preprocess;
mod resize;

pub use colormap::{jet, jet_table};
pub use decode::{decode_file, load_rgb, Decoded, Orientation, MAX_DECODED_BYTES};
pub use map::{min_max_normalize, upsample_bilinear};
pub use npy::{write_npy_f32, write_npy_f32_to};
pub use overlay::{overlay, DEFAULT_OVERLAY_ALPHA};
pub use preprocess::{normalize_chw, preprocess, preprocess_rgb};
pub use resize::{resize_bilinear_antialias, resize_bilinear_antialias_with, ResizePassOrder};

#[cfg(test)]
mod tests;
