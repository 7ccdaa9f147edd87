//! The one error type of the library. Every variant says what was wrong and where, so that the
//! CLI can print it as is.

use std::path::PathBuf;

/// Everything that can go wrong in agcam, with enough context to act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No adapter matched the request, or the device could not be created.
    #[error("GPU: {0}")]
    Gpu(String),
    /// A checkpoint or config file that cannot be used, with the reason.
    #[error("{path}: {msg}")]
    Checkpoint {
        /// The file that was being read.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A tensor whose shape does not fit the model.
    #[error("{}: tensor `{name}`: expected shape {expected:?}, found {actual:?}{why}", path.display())]
    Shape {
        /// The checkpoint that holds the tensor.
        path: PathBuf,
        /// Checkpoint name of the tensor.
        name: String,
        /// Why that shape was expected, where the names do not say (`""` or ` (because …)`).
        why: String,
        /// The shape the model needs.
        expected: Vec<usize>,
        /// The shape in the file.
        actual: Vec<usize>,
    },
    /// An image that cannot be decoded.
    #[error("{path}: cannot read image: {msg}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// The decoder's reason.
        msg: String,
    },
    /// A request that makes no sense for this model or input (class out of range, empty batch, ...).
    #[error("{0}")]
    Invalid(String),
    /// A file system error, with the path involved.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// Result with agcam's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A checkpoint or config problem in `path`.
    pub fn checkpoint(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            msg: msg.into(),
        }
    }
}
