//! File handling that never blocks, never reads a special file and never leaves half a file:
//! opening only regular files (a FIFO named `x.png` would block a reader forever), checking that
//! an output location is writable before the work starts, and writing outputs under a temporary
//! name that is renamed into place only when complete.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What kind of non-regular file `meta` describes, for messages ("a FIFO", "a socket", ...).
fn special_kind(meta: &std::fs::Metadata) -> &'static str {
    let ft = meta.file_type();
    if ft.is_dir() {
        return "a folder";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if ft.is_socket() {
            return "a socket";
        }
        if ft.is_block_device() || ft.is_char_device() {
            return "a device";
        }
    }
    "not a regular file"
}

/// Why `meta` is not a regular file, or `None` when it is one.
pub fn not_regular(meta: &std::fs::Metadata) -> Option<String> {
    (!meta.is_file()).then(|| format!("is {}, not a regular file", special_kind(meta)))
}

/// Opens `path` for reading if it is a regular file (symbolic links followed).
///
/// On Unix the file is opened non-blocking and checked on the open descriptor, so a FIFO, a
/// socket or a device is refused at once instead of blocking the reader (or reading forever)
/// and a file swapped after a check is still caught.
///
/// # Errors
/// [`Error::Io`] when the file cannot be opened, or is not a regular file.
pub fn open_regular(path: &Path) -> Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK: opening a FIFO with no writer returns at once. It has no effect on reads
        // of regular files, the only ones that get past the check below.
        const O_NONBLOCK: i32 = 0o4000;
        options.custom_flags(O_NONBLOCK);
    }
    #[cfg(not(target_os = "linux"))]
    {
        // Elsewhere, check before opening (racy, but never blocks on a FIFO left in place).
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if let Some(why) = not_regular(&meta) {
            return Err(Error::io(path, std::io::Error::other(why)));
        }
    }
    let file = options.open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if let Some(why) = not_regular(&meta) {
        return Err(Error::io(path, std::io::Error::other(why)));
    }
    Ok(file)
}

/// Reads a whole regular file (see [`open_regular`]).
///
/// # Errors
/// [`Error::Io`] when the file cannot be opened or read, or is not a regular file.
pub fn read_regular(path: &Path) -> Result<Vec<u8>> {
    let mut file = open_regular(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    Ok(bytes)
}

/// Reads a whole regular file as UTF-8 text (see [`open_regular`]).
///
/// # Errors
/// [`Error::Io`] when the file cannot be opened or read, is not a regular file, or is not UTF-8.
pub fn read_regular_to_string(path: &Path) -> Result<String> {
    String::from_utf8(read_regular(path)?).map_err(|e| {
        Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()),
        )
    })
}

/// Creates `dir` (and its parents) if needed and checks that a file can be created in it, so
/// that a run fails before its work, not after.
///
/// # Errors
/// [`Error::Io`] naming `dir` when it cannot be created or written to.
pub fn ensure_writable_dir(dir: &Path) -> Result<()> {
    // create_dir_all's own error for an existing file is a bare "File exists".
    if let Ok(meta) = std::fs::metadata(dir) {
        if !meta.is_dir() {
            return Err(Error::io(
                dir,
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "exists and is not a folder: give a folder for the outputs",
                ),
            ));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    probe(dir)
}

/// Checks that the file `path` can be written: creates its folder (and that folder's parents)
/// if needed, as [`ensure_writable_dir`] does, checks that the folder accepts a new file and
/// that `path` is not a folder. Only the created folders are left behind.
///
/// # Errors
/// [`Error::Io`] naming the path when it cannot be written.
pub fn ensure_writable_file(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(Error::io(
            path,
            std::io::Error::other("is a folder; give a file name"),
        ));
    }
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => ensure_writable_dir(p),
        _ => probe(Path::new(".")),
    }
}

/// Creates and removes a probe file in `dir`.
fn probe(dir: &Path) -> Result<()> {
    let probe = dir.join(format!(".agcam-write-test-{}", std::process::id()));
    File::create(&probe).map_err(|e| Error::io(dir, e))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// The hidden temporary name `path` is written under before it is renamed into place.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.agcam-tmp-{}", std::process::id()))
}

/// A set of files written together: each is written under a temporary name, and only
/// [`AtomicSet::commit`] renames them into place, in the order they were added (so the last one
/// added, e.g. a JSON record, is present only when the others are). Dropped without a commit
/// (an error, a panic, an interrupted run), it removes its temporary files: the final names
/// never hold a truncated file.
#[derive(Debug, Default)]
pub struct AtomicSet {
    /// (temporary, final) paths of the files written so far.
    pending: Vec<(PathBuf, PathBuf)>,
}

impl AtomicSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes `path`'s content under a temporary name with `write` (which gets the open,
    /// buffered file); the file takes its name at [`AtomicSet::commit`].
    ///
    /// # Errors
    /// [`Error::Io`] naming `path` when the temporary file cannot be created, written or
    /// flushed (a full disk), or `write`'s own error.
    pub fn write_with(
        &mut self,
        path: &Path,
        write: impl FnOnce(&mut std::io::BufWriter<File>) -> Result<()>,
    ) -> Result<()> {
        let temp = temp_path(path);
        let file = File::create(&temp).map_err(|e| Error::io(path, e))?;
        // Registered before writing so that a failure below removes the temporary file.
        self.pending.push((temp, path.to_path_buf()));
        let mut w = std::io::BufWriter::new(file);
        write(&mut w)?;
        // Flushing reports a full disk here rather than leaving a short file; no fsync (the
        // goal is no truncated file after an error or a signal, not durability across a power
        // cut, and an fsync per file would slow large runs down).
        w.into_inner()
            .map_err(|e| Error::io(path, e.into_error()))?;
        Ok(())
    }

    /// Writes `bytes` as `path` (see [`AtomicSet::write_with`]).
    ///
    /// # Errors
    /// As [`AtomicSet::write_with`].
    pub fn write(&mut self, path: &Path, bytes: &[u8]) -> Result<()> {
        self.write_with(path, |w| w.write_all(bytes).map_err(|e| Error::io(path, e)))
    }

    /// Renames every file into place, in the order written.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file that could not be renamed; the files not yet renamed are
    /// removed.
    pub fn commit(mut self) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        let mut iter = pending.into_iter();
        while let Some((temp, path)) = iter.next() {
            if let Err(e) = std::fs::rename(&temp, &path) {
                self.pending = std::iter::once((temp, path.clone())).chain(iter).collect();
                return Err(Error::io(path, e));
            }
        }
        Ok(())
    }
}

impl Drop for AtomicSet {
    fn drop(&mut self) {
        for (temp, _) in &self.pending {
            let _ = std::fs::remove_file(temp);
        }
    }
}

/// Writes `bytes` to `path` atomically: a reader sees the old file or the whole new one, never a
/// truncated one.
///
/// # Errors
/// [`Error::Io`] naming `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut set = AtomicSet::new();
    set.write(path, bytes)?;
    set.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_set_leaves_nothing_when_dropped_and_everything_when_committed() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.npy");
        let b = dir.path().join("b.json");
        let mut set = AtomicSet::new();
        set.write(&a, b"one").unwrap();
        assert!(!a.exists(), "visible before commit");
        drop(set);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        let mut set = AtomicSet::new();
        set.write(&a, b"one").unwrap();
        set.write(&b, b"two").unwrap();
        set.commit().unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"one");
        assert_eq!(std::fs::read(&b).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_failed_write_removes_its_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut set = AtomicSet::new();
        let path = dir.path().join("x.png");
        let err = set.write_with(&path, |_| Err(Error::Invalid("disk full".into())));
        assert!(err.is_err());
        drop(set);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[cfg(unix)]
    #[test]
    fn special_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("x.png");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let err = read_regular(&fifo).unwrap_err().to_string();
        assert!(err.contains("FIFO") && err.contains("x.png"), "{err}");
        let err = read_regular(dir.path()).unwrap_err().to_string();
        assert!(err.contains("folder"), "{err}");
    }

    #[test]
    fn writability_is_checked_up_front() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ensure_writable_file(&dir.path().join("r.json")).is_ok());
        // The folder of a file is created, as an output folder is.
        assert!(ensure_writable_file(&dir.path().join("made/r.json")).is_ok());
        assert!(dir.path().join("made").is_dir());
        assert!(ensure_writable_file(dir.path()).is_err());
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        assert!(ensure_writable_dir(&file.join("sub")).is_err());
        assert!(ensure_writable_file(&file.join("r.json")).is_err());
        // An existing file given as a folder is named as such, not as a bare "File exists".
        let err = ensure_writable_dir(&file).unwrap_err().to_string();
        assert!(err.contains("exists and is not a folder"), "{err}");
        assert!(ensure_writable_dir(&dir.path().join("new/out")).is_ok());
        assert_eq!(
            std::fs::read_dir(dir.path().join("new/out"))
                .unwrap()
                .count(),
            0
        );
    }
}
