//! From image files to explanations: finds the images, decodes and preprocesses them on CPU
//! threads while the GPU works on the previous chunk, and hands each result to the caller as
//! soon as its chunk is done. A file that cannot be read is reported and skipped; the rest
//! of the run goes on.

use std::borrow::Cow;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::explain::{Engine, Explanation, Method, Target};
use crate::image::{decode_file, preprocess_rgb, Orientation};
use crate::model::ModelConfig;

/// File extensions searched for inside folders (files named explicitly are read whatever
/// their extension).
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp", "bmp"];

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The pictures named by a list of inputs, and what was passed over on the way.
#[derive(Debug, Default)]
pub struct FoundImages {
    /// The picture files, in input order, folders' contents sorted; each file once.
    pub images: Vec<PathBuf>,
    /// One line per thing passed over inside a folder, naming it and saying why (a FIFO or
    /// other special file with an image extension, a dangling link, a folder already searched
    /// through a symbolic link, a picture already found by another path).
    pub skipped: Vec<String>,
}

/// The folder walk: remembers the folders and files already seen (by canonical path), so that
/// symbolic links back to a parent folder neither loop nor give the same picture twice.
#[derive(Default)]
struct Walk {
    found: FoundImages,
    folders: HashSet<PathBuf>,
    files: HashSet<PathBuf>,
}

impl Walk {
    /// Adds a picture unless the same file was found already.
    fn add_file(&mut self, path: PathBuf) {
        let key = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if self.files.insert(key) {
            self.found.images.push(path);
        } else {
            self.found.skipped.push(format!(
                "{}: skipped, the same file as a picture already listed",
                path.display()
            ));
        }
    }

    fn folder(&mut self, dir: &Path) -> Result<()> {
        let key = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
        if !self.folders.insert(key) {
            self.found.skipped.push(format!(
                "{}: skipped, a folder already searched (a symbolic link loop?)",
                dir.display()
            ));
            return Ok(());
        }
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        let mut paths = Vec::new();
        for entry in entries {
            paths.push(entry.map_err(|e| Error::io(dir, e))?.path());
        }
        paths.sort();
        for path in paths {
            // metadata follows symbolic links: a link to a folder is searched (once), a link to
            // a picture is read.
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_dir() => self.folder(&path)?,
                Ok(meta) if is_image(&path) => match crate::files::not_regular(&meta) {
                    None => self.add_file(path),
                    Some(why) => self
                        .found
                        .skipped
                        .push(format!("{}: skipped, {why}", path.display())),
                },
                Ok(_) => {}
                Err(e) if is_image(&path) => self
                    .found
                    .skipped
                    .push(format!("{}: skipped, {e}", path.display())),
                Err(_) => {}
            }
        }
        Ok(())
    }
}

/// The image files named by `inputs`: files as given, folders searched recursively (following
/// symbolic links, each folder once) for regular files with an image extension, in sorted order;
/// each file once. What was passed over inside folders is listed in
/// [`FoundImages::skipped`]; a file named explicitly is kept whatever it is, so that reading it
/// fails with a message.
///
/// # Errors
/// [`Error::Invalid`] for no inputs or a folder without pictures; [`Error::Io`] for an input
/// that does not exist or a folder that cannot be read.
pub fn find_images(inputs: &[PathBuf]) -> Result<FoundImages> {
    if inputs.is_empty() {
        return Err(Error::Invalid("no input images given".into()));
    }
    let mut walk = Walk::default();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|e| Error::io(input, e))?;
        if meta.is_dir() {
            let before = walk.found.images.len();
            walk.folder(input)?;
            if walk.found.images.len() == before {
                return Err(Error::Invalid(format!(
                    "{}: no images ({}) in this folder",
                    input.display(),
                    IMAGE_EXTENSIONS.join(", ")
                )));
            }
        } else {
            walk.add_file(input.clone());
        }
    }
    Ok(walk.found)
}

/// The image files named by `inputs`, as [`find_images`] finds them, without the list of what
/// was skipped.
///
/// # Errors
/// As [`find_images`].
pub fn collect_images(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    find_images(inputs).map(|f| f.images)
}

/// How input pictures are read.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    /// Whether EXIF orientation is applied ([`Orientation::Apply`] by default).
    pub orientation: Orientation,
    /// Keep the full-size decoded picture of an image in [`Prepared::original`] only up to this
    /// many bytes (width × height × 3); a larger one is decoded again when needed
    /// ([`Prepared::original_image`]), so that a chunk of huge photos does not hold them all.
    /// `None` keeps every one.
    pub keep_original_bytes: Option<usize>,
}

/// Memory for the full-size pictures of one chunk kept for drawing overlays; larger pictures are
/// decoded again at write time. Two chunks are alive at once (one on the GPU, one decoding).
pub const ORIGINALS_PER_CHUNK_BYTES: usize = 256 << 20;

/// A decoded image and the model input made from it.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The file it came from.
    pub path: PathBuf,
    /// The image at its original size, RGB; empty (0 × 0) when it was too large to keep (see
    /// [`ReadOptions::keep_original_bytes`]): use [`Prepared::original_image`].
    pub original: ::image::RgbImage,
    /// Width and height of the decoded (and oriented) picture.
    pub size: (u32, u32),
    /// The EXIF orientation tag of the file (1 to 8), when it has one.
    pub exif_orientation: Option<u8>,
    /// How the picture was read; [`Prepared::original_image`] reads it the same way again.
    pub orientation: Orientation,
    /// 16-bit grayscale samples above 255 saturated to white ([`crate::image::Decoded::saturated_16bit`]).
    pub saturated_16bit: bool,
    /// The normalised `[3, H, W]` model input.
    pub input: Vec<f32>,
    /// Milliseconds spent decoding and preprocessing.
    pub preprocess_ms: f64,
}

impl Prepared {
    /// The full-size picture: the one kept, or the file decoded again when it was not kept.
    ///
    /// # Errors
    /// The file's errors when it must be read again (it changed or vanished since).
    pub fn original_image(&self) -> Result<Cow<'_, ::image::RgbImage>> {
        if self.original.dimensions() == self.size {
            return Ok(Cow::Borrowed(&self.original));
        }
        let again = decode_file(&self.path, self.orientation)?.image;
        if again.dimensions() != self.size {
            return Err(Error::Image {
                path: self.path.clone(),
                msg: "the file changed while it was being explained".into(),
            });
        }
        Ok(Cow::Owned(again))
    }

    /// Whether EXIF orientation was applied (the file has a tag other than 1, and it was
    /// honoured).
    pub fn oriented(&self) -> bool {
        self.orientation == Orientation::Apply && self.exif_orientation.is_some_and(|o| o != 1)
    }
}

/// Decodes and preprocesses one file for `cfg` (PIL-exact resize, then mean/std), as PIL reads
/// it (EXIF orientation not applied).
pub fn prepare(path: &Path, cfg: &ModelConfig) -> Result<Prepared> {
    prepare_with(
        path,
        cfg,
        &ReadOptions {
            orientation: Orientation::Ignore,
            keep_original_bytes: None,
        },
    )
}

/// Decodes and preprocesses one file for `cfg` as `options` say.
pub fn prepare_with(path: &Path, cfg: &ModelConfig, options: &ReadOptions) -> Result<Prepared> {
    let start = Instant::now();
    let (h, w) = cfg.image_size;
    let decoded = decode_file(path, options.orientation)?;
    let input = preprocess_rgb(&decoded.image, h, w, cfg.mean, cfg.std)?;
    let size = decoded.image.dimensions();
    let bytes = size.0 as usize * size.1 as usize * 3;
    let original = match options.keep_original_bytes {
        Some(limit) if bytes > limit => ::image::RgbImage::new(0, 0),
        _ => decoded.image,
    };
    Ok(Prepared {
        path: path.to_path_buf(),
        original,
        size,
        exif_orientation: decoded.exif_orientation,
        orientation: options.orientation,
        saturated_16bit: decoded.saturated_16bit,
        input,
        preprocess_ms: start.elapsed().as_secs_f64() * 1e3,
    })
}

/// Prepares the image of every item (`path` says where it is) on all CPU cores, in order.
fn prepare_all<T: Sync>(
    items: &[T],
    path: &(impl Fn(&T) -> &Path + Sync),
    cfg: &ModelConfig,
    options: &ReadOptions,
) -> Vec<Result<Prepared>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = items.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(per_thread)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|i| prepare_with(path(i), cfg, options))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("preprocessing thread panicked"))
            .collect()
    })
}

/// Runs `work` on consecutive chunks of up to `capacity` items with their prepared images
/// (decoded as PIL does, resized, normalised for `cfg`; `path` says where each item's image is),
/// while the next chunk is being prepared on CPU threads: decoding overlaps the GPU work of
/// `work`.
pub fn for_each_prepared_chunk<'a, T: Sync>(
    items: &'a [T],
    path: impl Fn(&T) -> &Path + Sync,
    cfg: &ModelConfig,
    capacity: usize,
    work: impl FnMut(&'a [T], Vec<Result<Prepared>>) -> Result<()>,
) -> Result<()> {
    let options = ReadOptions {
        orientation: Orientation::Ignore,
        keep_original_bytes: None,
    };
    for_each_prepared_chunk_with(items, path, cfg, capacity, &options, None, work)
}

/// [`for_each_prepared_chunk`], reading pictures as `options` say, and stopping before the next
/// chunk once `stop` is set (the chunk being prepared is dropped).
pub fn for_each_prepared_chunk_with<'a, T: Sync>(
    items: &'a [T],
    path: impl Fn(&T) -> &Path + Sync,
    cfg: &ModelConfig,
    capacity: usize,
    options: &ReadOptions,
    stop: Option<&AtomicBool>,
    mut work: impl FnMut(&'a [T], Vec<Result<Prepared>>) -> Result<()>,
) -> Result<()> {
    let chunks: Vec<&[T]> = items.chunks(capacity.max(1)).collect();
    let path = &path;
    let stopped = || stop.is_some_and(|s| s.load(Ordering::SeqCst));
    std::thread::scope(|s| {
        let mut pending = chunks
            .first()
            .map(|&c| s.spawn(move || prepare_all(c, path, cfg, options)));
        for (i, &chunk) in chunks.iter().enumerate() {
            let prepared = pending
                .take()
                .expect("one chunk in flight")
                .join()
                .expect("preprocessing thread panicked");
            if stopped() {
                break;
            }
            pending = chunks
                .get(i + 1)
                .map(|&c| s.spawn(move || prepare_all(c, path, cfg, options)));
            work(chunk, prepared)?;
        }
        Ok(())
    })
}

/// What happened to one input file.
#[derive(Debug)]
pub enum Outcome {
    /// Explained: the prepared image, its explanation and the GPU time per image of its chunk.
    Done {
        /// The decoded image and input.
        prepared: Prepared,
        /// Logits and maps.
        explanation: Explanation,
        /// Wall-clock milliseconds of its chunk on the GPU, divided by the chunk's images.
        gpu_ms: f64,
    },
    /// The file could not be read or decoded, or the model gave non-finite values for it.
    Failed {
        /// The file.
        path: PathBuf,
        /// Why.
        error: Error,
    },
}

/// How [`explain_files_with`] reads and when it stops.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileRunOptions<'a> {
    /// How pictures are read (EXIF orientation, originals kept for overlays). The default applies
    /// EXIF orientation and keeps at most [`ORIGINALS_PER_CHUNK_BYTES`] of full-size pictures
    /// per chunk.
    pub read: Option<ReadOptions>,
    /// Set (e.g. by a signal handler) to stop after the file being handed over: no further
    /// outcome reaches the sink, and the call returns `Ok`.
    pub stop: Option<&'a AtomicBool>,
}

/// Why an explanation cannot be used: a NaN or infinite logit or map value, from NaN or
/// infinite weights that got past the loader or from a normalisation that overflows (a
/// near-zero `std`).
pub fn non_finite(explanation: &Explanation) -> Option<String> {
    let bad = |v: &[f32]| v.iter().filter(|x| !x.is_finite()).count();
    let logits = bad(&explanation.logits);
    let maps: usize = explanation.maps.iter().map(|m| bad(&m.map)).sum();
    (logits + maps > 0).then(|| {
        format!(
            "the model gave non-finite values for this picture ({logits} of {} logits, {maps} map \
             values are NaN or infinite): check the weights and the normalisation (--mean, --std)",
            explanation.logits.len()
        )
    })
}

/// Explains every file in `paths` by `method` for `target` (not [`Target::PerImage`]: files that
/// fail to decode would shift it), calling `sink` once per file, in order, as PIL reads them
/// (see [`explain_files_with`] for EXIF orientation and stopping).
pub fn explain_files(
    engine: &mut Engine,
    paths: &[PathBuf],
    target: &Target,
    method: Method,
    sink: impl FnMut(Outcome),
) -> Result<()> {
    let options = FileRunOptions {
        read: Some(ReadOptions {
            orientation: Orientation::Ignore,
            keep_original_bytes: None,
        }),
        stop: None,
    };
    explain_files_with(engine, paths, target, method, &options, sink)
}

/// Explains every file in `paths` by `method` for `target` (not [`Target::PerImage`]), calling
/// `sink` once per file, in order. Chunks go to the GPU while the next chunk is being decoded.
/// A file that cannot be read, or whose logits or map hold a NaN or an infinity, reaches `sink`
/// as [`Outcome::Failed`]. Once `options.stop` is set, the call returns after the outcome being
/// handed over (the rest of its chunk is dropped).
///
/// # Errors
/// Only when the GPU work fails.
pub fn explain_files_with(
    engine: &mut Engine,
    paths: &[PathBuf],
    target: &Target,
    method: Method,
    options: &FileRunOptions,
    mut sink: impl FnMut(Outcome),
) -> Result<()> {
    if matches!(target, Target::PerImage(_)) {
        return Err(Error::Invalid(
            "explain_files takes one target for all files; use Engine::explain for per-image classes"
                .into(),
        ));
    }
    let cfg = engine.config().clone();
    let capacity = engine.capacity();
    let read = options.read.unwrap_or(ReadOptions {
        orientation: Orientation::Apply,
        keep_original_bytes: Some(ORIGINALS_PER_CHUNK_BYTES / capacity.max(1)),
    });
    let stopped = || options.stop.is_some_and(|s| s.load(Ordering::SeqCst));
    for_each_prepared_chunk_with(
        paths,
        PathBuf::as_path,
        &cfg,
        capacity,
        &read,
        options.stop,
        |chunk, prepared| {
            let mut ok = Vec::new();
            let mut results: Vec<Option<Outcome>> = Vec::with_capacity(prepared.len());
            for (path, p) in chunk.iter().zip(prepared) {
                match p {
                    Ok(p) => {
                        ok.push(p);
                        results.push(None);
                    }
                    Err(error) => results.push(Some(Outcome::Failed {
                        path: path.clone(),
                        error,
                    })),
                }
            }
            let mut explained = Vec::new().into_iter();
            let mut gpu_ms = 0.0;
            if !ok.is_empty() {
                let inputs: Vec<f32> = ok.iter().flat_map(|p| p.input.iter().copied()).collect();
                let start = Instant::now();
                explained = engine.explain_with(&inputs, target, method)?.into_iter();
                gpu_ms = start.elapsed().as_secs_f64() * 1e3 / ok.len() as f64;
            }
            let mut ok = ok.into_iter();
            for r in results {
                if stopped() {
                    break;
                }
                sink(r.unwrap_or_else(|| {
                    let prepared = ok.next().expect("one prepared image per success");
                    let explanation = explained.next().expect("one explanation per image");
                    match non_finite(&explanation) {
                        Some(msg) => Outcome::Failed {
                            error: Error::Invalid(format!("{}: {msg}", prepared.path.display())),
                            path: prepared.path,
                        },
                        None => Outcome::Done {
                            prepared,
                            explanation,
                            gpu_ms,
                        },
                    }
                }));
            }
            Ok(())
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(path: &Path, w: u32, h: u32) {
        ::image::RgbImage::from_fn(w, h, |x, y| ::image::Rgb([x as u8, y as u8, 7]))
            .save(path)
            .unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn the_walk_survives_loops_and_special_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        png(&root.join("a.png"), 4, 4);
        std::fs::create_dir(root.join("sub")).unwrap();
        png(&root.join("sub/b.png"), 4, 4);
        for (link, target) in [
            ("loop", "."),
            ("loop2", "."),
            ("sub/up", ".."),
            ("alias.png", "a.png"),
        ] {
            std::os::unix::fs::symlink(target, root.join(link)).unwrap();
        }
        std::os::unix::fs::symlink("missing.png", root.join("dangling.png")).unwrap();
        let fifo = root.join("pipe.jpg");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let found = find_images(&[root.to_path_buf()]).unwrap();
        let names: Vec<_> = found
            .images
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().to_path_buf())
            .collect();
        assert_eq!(names, [PathBuf::from("a.png"), PathBuf::from("sub/b.png")]);
        let skipped = found.skipped.join("\n");
        assert!(
            skipped.contains("pipe.jpg: skipped, is a FIFO"),
            "{skipped}"
        );
        assert!(skipped.contains("dangling.png: skipped"), "{skipped}");
        assert!(
            skipped.contains("alias.png: skipped, the same file"),
            "{skipped}"
        );
        assert!(skipped.contains("already searched"), "{skipped}");
    }

    #[test]
    fn large_originals_are_dropped_and_decoded_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.png");
        png(&path, 40, 30);
        let cfg = ModelConfig::standard("vit_tiny_patch16_224").unwrap();
        let kept = prepare_with(&path, &cfg, &ReadOptions::default()).unwrap();
        assert_eq!(kept.original.dimensions(), (40, 30));
        let small = ReadOptions {
            keep_original_bytes: Some(40 * 30 * 3 - 1),
            ..ReadOptions::default()
        };
        let dropped = prepare_with(&path, &cfg, &small).unwrap();
        assert_eq!(dropped.original.dimensions(), (0, 0));
        assert_eq!(dropped.size, (40, 30));
        assert_eq!(dropped.input, kept.input);
        assert_eq!(*dropped.original_image().unwrap(), kept.original);
    }
}
