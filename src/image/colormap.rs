//! OpenCV's `COLORMAP_JET`, rebuilt the way OpenCV builds its lookup table.

use std::sync::OnceLock;

/// Control values of one jet channel at `x = i / 255`: `clamp(min(4x + up, down - 4x), 0, 1)`.
///
/// These are the 256 values OpenCV's `colormap.cpp` lists for `Jet` (GNU Octave's `jet`), computed
/// in f64 and stored as f32 as its literals are.
fn jet_control(up: f64, down: f64) -> [f32; 256] {
    std::array::from_fn(|i| {
        let x = i as f64 / 255.0;
        (4.0 * x + up).min(down - 4.0 * x).clamp(0.0, 1.0) as f32
    })
}

/// OpenCV's `interp1_<float>` of the control values at the same 256 abscissae, then
/// `convertTo(CV_8U, 255)`, with OpenCV's f32 arithmetic and round-half-to-even.
fn opencv_lut_channel(y: &[f32; 256]) -> [u8; 256] {
    // linspace(0, 1, 256): x0 + i * step in f32.
    let step = (1.0f32 - 0.0) / 255.0;
    let xs: [f32; 256] = std::array::from_fn(|i| 0.0 + i as f32 * step);
    std::array::from_fn(|i| {
        let xi = xs[i];
        let (mut low, mut high) = (0usize, 255usize);
        if xi < xs[low] {
            high = 1;
        }
        if xi > xs[high] {
            low = high - 1;
        }
        while high - low > 1 {
            let c = low + ((high - low) >> 1);
            if xi > xs[c] {
                low = c;
            } else {
                high = c;
            }
        }
        let v = 0.0 + (y[low] + (xi - xs[low]) * (y[high] - y[low]) / (xs[high] - xs[low]));
        (v * 255.0).round_ties_even().clamp(0.0, 255.0) as u8
    })
}

/// The 256-entry jet lookup table, RGB order, equal to
/// `cv2.applyColorMap(np.arange(256, dtype=np.uint8), cv2.COLORMAP_JET)[..., ::-1]`.
pub fn jet_table() -> &'static [[u8; 3]; 256] {
    static TABLE: OnceLock<[[u8; 3]; 256]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let r = opencv_lut_channel(&jet_control(-1.5, 4.5));
        let g = opencv_lut_channel(&jet_control(-0.5, 3.5));
        let b = opencv_lut_channel(&jet_control(0.5, 2.5));
        std::array::from_fn(|i| [r[i], g[i], b[i]])
    })
}

/// Jet colour (RGB) of a value in `[0, 1]`: OpenCV's `COLORMAP_JET` entry for the byte
/// `round(v * 255)` (f32 product, round half to even as NumPy's `rint`). Values outside `[0, 1]`
/// are clamped; NaN maps to the colour of 0.
pub fn jet(v: f32) -> [u8; 3] {
    let i = (v * 255.0).round_ties_even();
    let i = if i.is_nan() {
        0
    } else {
        i.clamp(0.0, 255.0) as usize
    };
    jet_table()[i]
}
