//! Reading tensors out of a memory-mapped `.safetensors` file, converted to f32.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensorError, SafeTensors};

use super::HostTensor;
use crate::error::{Error, Result};

/// Element types the loader converts to f32.
const SUPPORTED_DTYPES: &str = "F32, F16, BF16, F64";

/// An open, memory-mapped safetensors file. The mapping is the only copy of the file's bytes;
/// tensors are converted from it one at a time.
pub(crate) struct MappedFile {
    path: PathBuf,
    mmap: Mmap,
}

impl MappedFile {
    /// Opens and maps `path`. A missing or unreadable file is an [`Error::Io`]; a file too short to
    /// be safetensors is an [`Error::Checkpoint`].
    pub(crate) fn open(path: &Path) -> Result<Self> {
        if path.is_dir() {
            return Err(Error::checkpoint(
                path,
                "is a directory; pass the `.safetensors` file itself",
            ));
        }
        // Only a regular file: a FIFO would block, a device would map nonsense.
        let file: File = crate::files::open_regular(path)?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        if meta.len() < 8 {
            return Err(not_safetensors(
                path,
                &format!(
                    "the file is {} bytes long, shorter than the 8-byte header length",
                    meta.len()
                ),
            ));
        }
        // SAFETY: the mapping is read-only and lives as long as `self`. As with every memory-mapped
        // checkpoint reader, the file must not be truncated by another process while it is loaded.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Ok(MappedFile {
            path: path.to_path_buf(),
            mmap,
        })
    }

    /// Parses the safetensors header.
    pub(crate) fn parse(&self) -> Result<Checkpoint<'_>> {
        check_header(&self.mmap).map_err(|why| not_safetensors(&self.path, &why))?;
        let st = SafeTensors::deserialize(&self.mmap)
            .map_err(|e| not_safetensors(&self.path, &describe(&e, &self.mmap)))?;
        Ok(Checkpoint {
            path: &self.path,
            st,
        })
    }
}

/// The format's limit on the header's size (`safetensors::tensor::MAX_HEADER_SIZE`).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The header's entries in file order, duplicates kept (a JSON map would keep only the last).
struct HeaderEntries(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for HeaderEntries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = HeaderEntries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object with one entry per tensor")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<HeaderEntries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, serde_json::Value>()? {
                    entries.push(entry);
                }
                Ok(HeaderEntries(entries))
            }
        }
        d.deserialize_map(Entries)
    }
}

/// Checks the header and tensor table of a safetensors file as the `safetensors` crate does, but
/// with a reason that names the tensor at fault: a header over the format's 100 MB limit, a
/// duplicate name, data offsets that end before they begin, leave a gap, overlap or run past the
/// end of the file, or a data size that does not match shape × data type (a zero dimension
/// included). `Ok` leaves the rest to the crate, whose errors [`describe`] explains.
fn check_header(bytes: &[u8]) -> std::result::Result<(), String> {
    let Some(len) = bytes.get(..8) else {
        return Ok(());
    };
    let n = u64::from_le_bytes(len.try_into().expect("8 bytes"));
    if n > MAX_HEADER_BYTES {
        let what = match sniff(bytes) {
            Some(what) => format!("; {what}"),
            None => ": not a safetensors file, or a corrupt one".to_string(),
        };
        return Err(format!(
            "its first 8 bytes give a header length of {n} bytes, over the format's limit of \
             {MAX_HEADER_BYTES} bytes{what}"
        ));
    }
    let Some(header) = bytes.get(8..8 + n as usize) else {
        return Ok(()); // the crate's "file too short" reason, with describe's guess
    };
    let Ok(text) = std::str::from_utf8(header) else {
        return Ok(());
    };
    let Ok(HeaderEntries(entries)) = serde_json::from_str::<HeaderEntries>(text) else {
        return Ok(());
    };
    let data_len = bytes.len() - 8 - n as usize;
    let mut seen = std::collections::HashSet::new();
    let mut tensors = Vec::with_capacity(entries.len());
    for (name, value) in entries {
        if !seen.insert(name.clone()) {
            return Err(format!("the header lists tensor `{name}` twice"));
        }
        if name == "__metadata__" {
            continue;
        }
        let info: safetensors::tensor::TensorInfo = serde_json::from_value(value)
            .map_err(|e| format!("tensor `{name}`: its header entry is not valid: {e}"))?;
        tensors.push((name, info));
    }
    tensors.sort_by_key(|(_, info)| info.data_offsets);
    let mut end_of_previous = 0usize;
    for (name, info) in &tensors {
        let (begin, end) = info.data_offsets;
        if end < begin {
            return Err(format!(
                "tensor `{name}`: its data offsets [{begin}, {end}] end before they begin"
            ));
        }
        if end > data_len {
            return Err(format!(
                "tensor `{name}`: its data offsets [{begin}, {end}] go past the end of the file, \
                 which holds {data_len} bytes of tensor data: the file is probably truncated or \
                 was not fully downloaded"
            ));
        }
        if begin != end_of_previous {
            return Err(format!(
                "tensor `{name}`: its data starts at byte {begin} of the data section, but the \
                 previous tensor ends at byte {end_of_previous} (a gap or an overlap)"
            ));
        }
        end_of_previous = end;
        let bytes_needed = info
            .shape
            .iter()
            .try_fold(info.dtype.bitsize(), |acc, &d| acc.checked_mul(d))
            .map(|bits| bits.div_ceil(8));
        let zero = if info.shape.contains(&0) {
            " (it has a zero dimension)"
        } else {
            ""
        };
        match bytes_needed {
            Some(b) if b == end - begin => {}
            Some(b) => {
                return Err(format!(
                    "tensor `{name}`: shape {:?} of {:?} takes {b} bytes{zero}, but its data \
                     offsets [{begin}, {end}] hold {} bytes",
                    info.shape,
                    info.dtype,
                    end - begin
                ))
            }
            None => {
                return Err(format!(
                    "tensor `{name}`: shape {:?} is too large to address",
                    info.shape
                ))
            }
        }
    }
    if end_of_previous != data_len {
        return Err(format!(
            "the tensors' data ends at byte {end_of_previous}, but the file holds {data_len} \
             bytes of data after the header: {} bytes unaccounted for",
            data_len - end_of_previous
        ));
    }
    Ok(())
}

/// The "not a valid safetensors file (reason)" error.
fn not_safetensors(path: &Path, reason: &str) -> Error {
    Error::checkpoint(path, format!("not a valid safetensors file ({reason})"))
}

/// A user-facing reason for a safetensors parse error, with a guess at what the file really is.
fn describe(err: &SafeTensorError, bytes: &[u8]) -> String {
    let reason = match err {
        SafeTensorError::HeaderTooLarge | SafeTensorError::InvalidHeaderLength => {
            let n = bytes
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map_or(0, u64::from_le_bytes);
            format!(
                "its first 8 bytes give a header length of {n} bytes, but the file is only {} \
                 bytes long: not a safetensors file, or a truncated one",
                bytes.len()
            )
        }
        SafeTensorError::MetadataIncompleteBuffer => {
            "the tensor data does not match the sizes in the header; the file is probably truncated \
             or was not fully downloaded"
                .to_string()
        }
        SafeTensorError::InvalidHeader(_) => "the header is not UTF-8 text".to_string(),
        SafeTensorError::InvalidHeaderDeserialization(e) => format!("the header is not valid JSON: {e}"),
        other => other.to_string(),
    };
    match sniff(bytes) {
        Some(what) => format!("{reason}; {what}"),
        None => reason,
    }
}

/// What a non-safetensors file probably is, from its first bytes.
fn sniff(bytes: &[u8]) -> Option<&'static str> {
    let first_non_space = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if bytes.starts_with(b"PK\x03\x04") {
        Some(
            "it starts like a ZIP archive, as PyTorch `.pth`/`.pt`/`.bin` files do: convert it with \
             `safetensors.torch.save_file(model.state_dict(), \"model.safetensors\")`",
        )
    } else if bytes.first() == Some(&0x80) && bytes.get(1).is_some_and(|v| (2..=5).contains(v)) {
        Some(
            "it starts like a Python pickle (a legacy PyTorch `.pth`/`.bin` file): convert it with \
             `safetensors.torch.save_file(model.state_dict(), \"model.safetensors\")`",
        )
    } else if bytes.starts_with(b"\x89HDF") {
        Some("it is an HDF5 file (Keras?), not safetensors")
    } else if bytes.starts_with(b"GGUF") {
        Some("it is a GGUF file, not safetensors")
    } else if matches!(first_non_space, Some(b'{') | Some(b'[')) {
        Some("it looks like a JSON text (a config file?), not a weights file")
    } else {
        None
    }
}

/// The parsed header of a mapped safetensors file.
pub(crate) struct Checkpoint<'a> {
    path: &'a Path,
    st: SafeTensors<'a>,
}

impl<'a> Checkpoint<'a> {
    /// The file's path, for error messages.
    pub(crate) fn path(&self) -> &'a Path {
        self.path
    }

    /// All tensor names, sorted.
    pub(crate) fn names(&self) -> Vec<&str> {
        let mut names = self.st.names();
        names.sort_unstable();
        names
    }

    /// Whether the file holds a tensor called `name`.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.st.tensor(name).is_ok()
    }

    /// The shape of tensor `name`, when present.
    pub(crate) fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.st.tensor(name).ok().map(|t| t.shape().to_vec())
    }

    /// Reads tensor `name`, checks its shape is `expected`, and converts it to f32.
    /// Returns `Ok(None)` when the file has no such tensor.
    pub(crate) fn read_opt(&self, name: &str, expected: &[usize]) -> Result<Option<HostTensor>> {
        let mut data = Vec::new();
        if !self.read_into(name, expected, &mut data)? {
            return Ok(None);
        }
        Ok(Some(HostTensor {
            shape: expected.to_vec(),
            data,
        }))
    }

    /// Checks that tensor `name` has shape `expected` and appends its values, converted to f32,
    /// to `out`: the one conversion from the mapped file, straight into the final buffer (so a
    /// fused qkv assembled from three tensors, or a padded position embedding, is not copied
    /// again). Returns `Ok(false)` when the file has no such tensor.
    pub(crate) fn read_into(
        &self,
        name: &str,
        expected: &[usize],
        out: &mut Vec<f32>,
    ) -> Result<bool> {
        let view = match self.st.tensor(name) {
            Ok(v) => v,
            Err(_) => return Ok(false),
        };
        if view.shape() != expected {
            return Err(Error::Shape {
                path: self.path.to_path_buf(),
                name: name.to_string(),
                why: String::new(),
                expected: expected.to_vec(),
                actual: view.shape().to_vec(),
            });
        }
        let numel: usize = expected.iter().product();
        let before = out.len();
        out.reserve_exact(numel);
        let unsupported = || {
            Error::checkpoint(
                self.path,
                format!(
                    "tensor `{name}` has dtype {:?}, which is not supported (supported: {SUPPORTED_DTYPES})",
                    view.dtype()
                ),
            )
        };
        if view.data().is_empty() && !extend_f32(view.dtype(), &[], out) {
            return Err(unsupported());
        }
        // Converted block by block, each checked for NaN and infinity while it is still in
        // the cache: the check costs little next to the conversion, on every load.
        let mut non_finite = None;
        for block in view.data().chunks(CHECK_BLOCK_BYTES) {
            let start = out.len();
            if !extend_f32(view.dtype(), block, out) {
                return Err(unsupported());
            }
            if non_finite.is_none() {
                non_finite = first_non_finite(&out[start..]).map(|i| start - before + i);
            }
        }
        if let Some(first) = non_finite {
            let count = out[before..].iter().filter(|v| !v.is_finite()).count();
            return Err(Error::checkpoint(
                self.path,
                format!(
                    "tensor `{name}` holds {count} non-finite values (NaN or infinity; the first \
                     at flat index {first}, {}): the checkpoint is corrupt, or was saved after \
                     training diverged",
                    out[before + first]
                ),
            ));
        }
        if out.len() - before != numel {
            // safetensors validates sizes against shapes; this guards the invariant of HostTensor.
            return Err(Error::checkpoint(
                self.path,
                format!(
                    "tensor `{name}` holds {} values for shape {expected:?}",
                    out.len() - before
                ),
            ));
        }
        Ok(true)
    }
}

/// Bytes of a tensor converted and checked at a time: a multiple of every element size, small
/// enough for the block and its f32 values to stay in the L1/L2 cache.
const CHECK_BLOCK_BYTES: usize = 16 << 10;

/// The index of the first NaN or infinity in `values`. Runs on every tensor of every load, so it
/// checks blocks without branching (vectorised) and looks for the exact position only in a block
/// that has one.
pub(crate) fn first_non_finite(values: &[f32]) -> Option<usize> {
    const BLOCK: usize = 4096;
    values.chunks(BLOCK).enumerate().find_map(|(b, block)| {
        block
            .iter()
            .fold(false, |bad, v| bad | !v.is_finite())
            .then(|| block.iter().position(|v| !v.is_finite()))
            .flatten()
            .map(|i| b * BLOCK + i)
    })
}

/// Appends little-endian `bytes` of `dtype` to `out` as f32; `false` for an unsupported dtype.
fn extend_f32(dtype: Dtype, bytes: &[u8], out: &mut Vec<f32>) -> bool {
    match dtype {
        Dtype::F32 => {
            // The common case: on little-endian machines with 4-byte aligned data (safetensors
            // aligns tensors, and the mapping is page-aligned) this is a plain memcpy.
            #[cfg(target_endian = "little")]
            if let Ok(floats) = bytemuck::try_cast_slice::<u8, f32>(bytes) {
                out.extend_from_slice(floats);
                return true;
            }
            out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
        }
        Dtype::F16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        Dtype::BF16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        Dtype::F64 => {
            out.extend(bytes.chunks_exact(8).map(|c| {
                f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
            }))
        }
        _ => return false,
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors file from a header (JSON text) and `data_len` bytes of data.
    fn file_with(header: &str, data_len: usize) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.resize(bytes.len() + data_len, 0);
        std::fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    fn parse_error(header: &str, data_len: usize) -> String {
        let (_dir, path) = file_with(header, data_len);
        let file = MappedFile::open(&path).unwrap();
        match file.parse() {
            Ok(_) => panic!("{header} parsed"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn header_errors_name_the_tensor_and_the_cause() {
        let cases = [
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#,
                16,
                "tensor `b`: its data offsets [8, 24] go past the end of the file",
            ),
            (
                r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                8,
                "tensor `w`: shape [3] of F32 takes 12 bytes, but its data offsets [0, 8] hold 8",
            ),
            (
                r#"{"w":{"dtype":"F32","shape":[0,2],"data_offsets":[0,8]}}"#,
                8,
                "tensor `w`: shape [0, 2] of F32 takes 0 bytes (it has a zero dimension)",
            ),
            (
                r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
                16,
                "the header lists tensor `w` twice",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
                12,
                "tensor `b`: its data starts at byte 8",
            ),
            (
                r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#,
                4,
                "tensor `w`: its data offsets [4, 0] end before they begin",
            ),
        ];
        for (header, len, want) in cases {
            let err = parse_error(header, len);
            assert!(err.contains(want), "{header}:\n{err}");
        }
    }

    #[test]
    fn a_header_over_the_limit_is_called_that() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let mut bytes = 200_000_000u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        std::fs::write(&path, bytes).unwrap();
        let err = MappedFile::open(&path)
            .unwrap()
            .parse()
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("over the format's limit of 100000000 bytes"),
            "{err}"
        );
    }

    #[test]
    fn non_finite_weights_are_found_wherever_they_are() {
        for (len, at) in [(1, 0), (5000, 4097), (9000, 8999), (4096, 4095)] {
            let mut v = vec![0.5f32; len];
            assert_eq!(first_non_finite(&v), None);
            v[at] = f32::NAN;
            assert_eq!(first_non_finite(&v), Some(at));
            v[at] = f32::NEG_INFINITY;
            assert_eq!(first_non_finite(&v), Some(at));
        }
    }

    #[test]
    fn a_nan_weight_is_an_error_naming_the_tensor() {
        let (_dir, path) = file_with(
            r#"{"blocks.3.w":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#,
            0,
        );
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&half::f16::from_f32(1.0).to_le_bytes());
        bytes.extend_from_slice(&half::f16::NAN.to_le_bytes());
        std::fs::write(&path, bytes).unwrap();
        let file = MappedFile::open(&path).unwrap();
        let ckpt = file.parse().unwrap();
        let err = ckpt.read_opt("blocks.3.w", &[2]).unwrap_err().to_string();
        assert!(
            err.contains("tensor `blocks.3.w` holds 1 non-finite"),
            "{err}"
        );
    }
}
