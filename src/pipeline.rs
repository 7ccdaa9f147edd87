//! From image files to explanations: finds the images, decodes and preprocesses them on CPU
//! threads while the GPU works on the previous chunk, and hands each result to the caller as
//! soon as its chunk is done. A file that cannot be read is reported and skipped; the rest
//! of the run goes on.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::explain::{Engine, Explanation, Method, Target};
use crate::model::ModelConfig;

/// File extensions searched for inside folders (files named explicitly are read whatever
/// their extension).
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp", "bmp"];

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut paths = Vec::new();
    for entry in entries {
        paths.push(entry.map_err(|e| Error::io(dir, e))?.path());
    }
    paths.sort();
    for path in paths {
        if path.is_dir() {
            walk(&path, out)?;
        } else if is_image(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// The image files named by `inputs`: files as given, folders searched recursively for files
/// with an image extension, in sorted order.
pub fn collect_images(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if inputs.is_empty() {
        return Err(Error::Invalid("no input images given".into()));
    }
    let mut out = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|e| Error::io(input, e))?;
        if meta.is_dir() {
            let before = out.len();
            walk(input, &mut out)?;
            if out.len() == before {
                return Err(Error::Invalid(format!(
                    "{}: no images ({}) in this folder",
                    input.display(),
                    IMAGE_EXTENSIONS.join(", ")
                )));
            }
        } else {
            out.push(input.clone());
        }
    }
    Ok(out)
}

/// A decoded image and the model input made from it.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The file it came from.
    pub path: PathBuf,
    /// The image at its original size, RGB.
    pub original: ::image::RgbImage,
    /// The normalised `[3, H, W]` model input.
    pub input: Vec<f32>,
    /// Milliseconds spent decoding and preprocessing.
    pub preprocess_ms: f64,
}

/// Decodes and preprocesses one file for `cfg` (PIL-exact resize, then mean/std).
pub fn prepare(path: &Path, cfg: &ModelConfig) -> Result<Prepared> {
    let start = Instant::now();
    let (h, w) = cfg.image_size;
    let (original, input) = crate::image::preprocess(path, h, w, cfg.mean, cfg.std)?;
    Ok(Prepared {
        path: path.to_path_buf(),
        original,
        input,
        preprocess_ms: start.elapsed().as_secs_f64() * 1e3,
    })
}

/// Prepares the image of every item (`path` says where it is) on all CPU cores, in order.
fn prepare_all<T: Sync>(
    items: &[T],
    path: &(impl Fn(&T) -> &Path + Sync),
    cfg: &ModelConfig,
) -> Vec<Result<Prepared>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = items.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(per_thread)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|i| prepare(path(i), cfg))
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
/// (decoded, resized, normalised for `cfg`; `path` says where each item's image is), while the
/// next chunk is being prepared on CPU threads: decoding overlaps the GPU work of `work`.
pub fn for_each_prepared_chunk<'a, T: Sync>(
    items: &'a [T],
    path: impl Fn(&T) -> &Path + Sync,
    cfg: &ModelConfig,
    capacity: usize,
    mut work: impl FnMut(&'a [T], Vec<Result<Prepared>>) -> Result<()>,
) -> Result<()> {
    let chunks: Vec<&[T]> = items.chunks(capacity.max(1)).collect();
    let path = &path;
    std::thread::scope(|s| {
        let mut pending = chunks
            .first()
            .map(|&c| s.spawn(move || prepare_all(c, path, cfg)));
        for (i, &chunk) in chunks.iter().enumerate() {
            let prepared = pending
                .take()
                .expect("one chunk in flight")
                .join()
                .expect("preprocessing thread panicked");
            pending = chunks
                .get(i + 1)
                .map(|&c| s.spawn(move || prepare_all(c, path, cfg)));
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
    /// The file could not be read or decoded.
    Failed {
        /// The file.
        path: PathBuf,
        /// Why.
        error: Error,
    },
}

/// Explains every file in `paths` by `method` for `target` (not [`Target::PerImage`]: files that fail to
/// decode would shift it), calling `sink` once per file, in order. Chunks go to the GPU while
/// the next chunk is being decoded. Returns an error only when the GPU work fails; unreadable
/// files reach `sink` as [`Outcome::Failed`].
pub fn explain_files(
    engine: &mut Engine,
    paths: &[PathBuf],
    target: &Target,
    method: Method,
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
    for_each_prepared_chunk(
        paths,
        PathBuf::as_path,
        &cfg,
        capacity,
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
                sink(r.unwrap_or_else(|| Outcome::Done {
                    prepared: ok.next().expect("one prepared image per success"),
                    explanation: explained.next().expect("one explanation per image"),
                    gpu_ms,
                }));
            }
            Ok(())
        },
    )
}
