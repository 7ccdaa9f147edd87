//! Writing `.npy` files (NumPy format version 1.0) for inspection in Python.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// NumPy's alignment of the data start (`numpy.lib.format.ARRAY_ALIGN`).
const ARRAY_ALIGN: usize = 64;
/// Spare header room NumPy leaves for the first axis to grow (`GROWTH_AXIS_MAX_DIGITS`).
const GROWTH_AXIS_MAX_DIGITS: usize = 21;
/// Magic string, version 1.0, and the 2-byte header length.
const PREFIX_LEN: usize = 6 + 2 + 2;

/// The complete header (magic, version, length, dictionary, padding) exactly as `np.save` writes
/// it for a C-ordered little-endian float32 array of this shape.
pub(crate) fn npy_header_f32(shape: &[usize]) -> Result<Vec<u8>> {
    let shape_repr = match shape {
        [] => "()".to_string(),
        [n] => format!("({n},)"),
        _ => {
            let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
            format!("({})", dims.join(", "))
        }
    };
    let mut dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_repr}, }}");
    if let Some(first) = shape.first() {
        let digits = first.to_string().len();
        dict.push_str(&" ".repeat(GROWTH_AXIS_MAX_DIGITS.saturating_sub(digits)));
    }
    let hlen = dict.len() + 1; // the final newline
    let padlen = ARRAY_ALIGN - (PREFIX_LEN + hlen) % ARRAY_ALIGN;
    let total = u16::try_from(hlen + padlen).map_err(|_| {
        Error::Invalid(format!(
            "npy: shape {shape:?} needs a header too long for format version 1.0"
        ))
    })?;
    let mut header = Vec::with_capacity(PREFIX_LEN + usize::from(total));
    header.extend_from_slice(b"\x93NUMPY\x01\x00");
    header.extend_from_slice(&total.to_le_bytes());
    header.extend_from_slice(dict.as_bytes());
    header.resize(header.len() + padlen, b' ');
    header.push(b'\n');
    Ok(header)
}

/// Writes `data` as a NumPy `.npy` file (format 1.0, dtype `'<f4'`, C order) of the given shape,
/// byte for byte what `np.save` writes for the same array, so `np.load(path)` reads it back. The
/// file is written under a temporary name and renamed into place: never seen truncated.
///
/// # Errors
/// [`Error::Invalid`] when the product of `shape` is not `data.len()`; [`Error::Io`] when the
/// file cannot be written.
pub fn write_npy_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let mut set = crate::files::AtomicSet::new();
    set.write_with(path, |w| write_npy_f32_to(w, path, shape, data))?;
    set.commit()
}

/// Writes the `.npy` bytes of [`write_npy_f32`] to `out`; `path` names the destination in
/// errors.
///
/// # Errors
/// As [`write_npy_f32`].
pub fn write_npy_f32_to(
    out: &mut impl Write,
    path: &Path,
    shape: &[usize],
    data: &[f32],
) -> Result<()> {
    let count = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if count != Some(data.len()) {
        return Err(Error::Invalid(format!(
            "npy: shape {shape:?} does not hold {} values",
            data.len()
        )));
    }
    let header = npy_header_f32(shape)?;
    let mut write = || -> std::io::Result<()> {
        out.write_all(&header)?;
        for v in data {
            out.write_all(&v.to_le_bytes())?;
        }
        out.flush()
    };
    write().map_err(|e| Error::io(path, e))
}
