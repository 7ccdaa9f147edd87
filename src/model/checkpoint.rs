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
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            return Err(Error::checkpoint(
                path,
                "is a directory; pass the `.safetensors` file itself",
            ));
        }
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
        let st = SafeTensors::deserialize(&self.mmap)
            .map_err(|e| not_safetensors(&self.path, &describe(&e, &self.mmap)))?;
        Ok(Checkpoint {
            path: &self.path,
            st,
        })
    }
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
                name: name.to_string(),
                expected: expected.to_vec(),
                actual: view.shape().to_vec(),
            });
        }
        let numel: usize = expected.iter().product();
        let before = out.len();
        out.reserve_exact(numel);
        if !extend_f32(view.dtype(), view.data(), out) {
            return Err(Error::checkpoint(
                self.path,
                format!(
                    "tensor `{name}` has dtype {:?}, which is not supported (supported: {SUPPORTED_DTYPES})",
                    view.dtype()
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
