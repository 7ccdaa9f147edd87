//! `agcam._agcam`: the compiled half of the `agcam` Python package. It turns Python inputs (paths,
//! numpy arrays) into the library's normalised batches, runs the engine with the GIL released,
//! and hands numpy arrays back. Every library error becomes a Python exception; so does any
//! panic, so nothing unwinds into the interpreter.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use agcam::gpu::{Backend, Gpu, GpuOptions};
use agcam::image::Orientation;
use agcam::model::{load_model, ConfigOverrides, ModelConfig};
use agcam::output::{class_record, RecordFiles, RecordImage, RunInfo};
use agcam::pipeline::{for_each_prepared_chunk_with, Prepared, ReadOptions};
use agcam::{Engine, EngineOptions, Error, Method, Precision, Target};
use clap::ValueEnum;
use image::RgbImage;
use numpy::{PyArray1, PyArray2, PyArray3, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyFileNotFoundError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyList, PyString, PyTuple};

create_exception!(
    _agcam,
    AgcamError,
    PyException,
    "An error of the agcam engine that is neither a missing file nor a bad argument: no usable \
     GPU adapter, a failed GPU operation, an unreadable file."
);

/// The Python exception for a library error, carrying the library's message.
fn py_error(e: Error) -> PyErr {
    let message = e.to_string();
    match e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(message)
        }
        Error::Invalid(_)
        | Error::Shape { .. }
        | Error::Checkpoint { .. }
        | Error::Image { .. } => PyValueError::new_err(message),
        Error::Io { .. } | Error::Gpu(_) => AgcamError::new_err(message),
    }
}

/// Runs `work` without the GIL, turning a panic into an `AgcamError` instead of unwinding into
/// Python.
fn without_gil<T: Send>(
    py: Python<'_>,
    work: impl FnOnce() -> agcam::Result<T> + Send,
) -> PyResult<T> {
    let outcome = py.detach(|| catch_unwind(AssertUnwindSafe(work)));
    match outcome {
        Ok(result) => result.map_err(py_error),
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown cause".into());
            Err(AgcamError::new_err(format!(
                "internal error in agcam: {why}"
            )))
        }
    }
}

/// Parses a value the command line takes as `--<flag> <value>`, with the same names.
fn parse_choice<T: ValueEnum>(value: &str, flag: &str) -> PyResult<T> {
    T::from_str(value, true).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
            .collect();
        PyValueError::new_err(format!(
            "{flag} must be one of {}, not {value:?}",
            names.join(", ")
        ))
    })
}

/// A count or index argument: a negative value is a ValueError naming the argument (pyo3's own
/// conversion to an unsigned type raises a bare OverflowError).
fn non_negative(value: i64, name: &str) -> PyResult<usize> {
    usize::try_from(value).map_err(|_| {
        PyValueError::new_err(format!(
            "{name} must be a non-negative integer, not {value}"
        ))
    })
}

/// `index` into `len` items, counting from the end when negative, as Python sequences do.
fn sequence_index(index: i64, len: usize, what: &str) -> PyResult<usize> {
    let from_end = if index < 0 {
        i64::try_from(len).ok().and_then(|n| n.checked_add(index))
    } else {
        Some(index)
    };
    from_end
        .and_then(|i| usize::try_from(i).ok())
        .filter(|&i| i < len)
        .ok_or_else(|| PyValueError::new_err(format!("{what} {index} is out of range 0..{len}")))
}

/// A ValueError naming the first image whose logits or maps hold a NaN or an infinity (what the
/// command line reports as a failed picture), so that no such result reaches the caller.
fn refuse_non_finite(explanations: &[agcam::Explanation], sources: &[Source]) -> PyResult<()> {
    for (i, e) in explanations.iter().enumerate() {
        if let Some(why) = agcam::pipeline::non_finite(e) {
            let name = match sources.get(i).and_then(|s| s.path.as_ref()) {
                Some(path) => format!("image {i} ({})", path.display()),
                None => format!("image {i}"),
            };
            return Err(PyValueError::new_err(format!("{name}: {why}")));
        }
    }
    Ok(())
}

/// Where one input image came from: what its JSON record says about it.
#[derive(Debug, Clone)]
struct Source {
    path: Option<PathBuf>,
    /// Width, height of the image before resizing.
    size: (u32, u32),
    /// The file's EXIF orientation tag, and whether it was applied (files only).
    exif_orientation: Option<u8>,
    orientation_applied: bool,
    /// 16-bit grayscale samples above 255 saturated to white when the file was read.
    saturated_16bit: bool,
    preprocess_ms: f64,
}

/// A batch of normalised model inputs and where each image came from.
struct Batch {
    inputs: Vec<f32>,
    sources: Vec<Source>,
}

/// What the caller handed in as `images`, copied out of Python objects.
enum Images {
    Paths(Vec<PathBuf>),
    Pixels(Vec<RgbImage>),
    Normalised { inputs: Vec<f32>, count: usize },
}

const IMAGES_HELP: &str = "images must be a path, a list of paths, a uint8 array [H, W, 3] or \
                           [B, H, W, 3], a list of uint8 [H, W, 3] arrays, or a float32 array \
                           [B, 3, H, W]";

/// A path from a `str` or `os.PathLike`, else `None`.
fn as_path(obj: &Bound<'_, PyAny>) -> PyResult<Option<PathBuf>> {
    if obj.is_instance_of::<PyString>() || obj.hasattr("__fspath__")? {
        let os = obj.py().import("os")?;
        let text: String = os.call_method1("fspath", (obj,))?.extract()?;
        return Ok(Some(PathBuf::from(text)));
    }
    Ok(None)
}

fn describe_array(array: &Bound<'_, PyUntypedArray>) -> String {
    format!("{} array of shape {:?}", array.dtype(), array.shape())
}

/// The pixels of a uint8 `[H, W, 3]` array.
fn pixels(array: &Bound<'_, PyUntypedArray>) -> PyResult<RgbImage> {
    let bad = || PyValueError::new_err(format!("{IMAGES_HELP}, not a {}", describe_array(array)));
    let typed = array.cast::<PyArray3<u8>>().map_err(|_| bad())?;
    let view = typed.readonly();
    rgb_image(view.as_array()).ok_or_else(bad)
}

/// The image of an `[H, W, 3]` view; `None` for another shape or a size `image` cannot hold.
fn rgb_image(view: numpy::ndarray::ArrayView3<'_, u8>) -> Option<RgbImage> {
    let (h, w, c) = view.dim();
    if c != 3 || h == 0 || w == 0 {
        return None;
    }
    let raw: Vec<u8> = view.iter().copied().collect();
    RgbImage::from_raw(u32::try_from(w).ok()?, u32::try_from(h).ok()?, raw)
}

/// Reads `images` as the API documents it.
/// Refuses a folder given as a picture, saying what to pass instead (the command line walks
/// folders; this API takes pictures).
fn picture_path(path: PathBuf) -> PyResult<PathBuf> {
    if path.is_dir() {
        return Err(PyValueError::new_err(format!(
            "{} is a folder: give the paths of its pictures, e.g. \
             sorted(pathlib.Path(folder).glob(\"*.png\"))",
            path.display()
        )));
    }
    Ok(path)
}

fn read_images(obj: &Bound<'_, PyAny>, cfg: &ModelConfig) -> PyResult<Images> {
    if let Some(path) = as_path(obj)? {
        return Ok(Images::Paths(vec![picture_path(path)?]));
    }
    if let Ok(array) = obj.cast::<PyUntypedArray>() {
        return read_array(array, cfg);
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let items: Vec<Bound<'_, PyAny>> = obj.try_iter()?.collect::<PyResult<_>>()?;
        if items.is_empty() {
            return Err(PyValueError::new_err("no images given: the list is empty"));
        }
        if items[0].cast::<PyUntypedArray>().is_ok() {
            let images = items
                .iter()
                .map(|item| match item.cast::<PyUntypedArray>() {
                    Ok(a) => pixels(a),
                    Err(_) => Err(PyValueError::new_err(format!(
                        "{IMAGES_HELP}: a list holds either paths or arrays, not both"
                    ))),
                })
                .collect::<PyResult<_>>()?;
            return Ok(Images::Pixels(images));
        }
        let paths = items
            .iter()
            .map(|item| {
                as_path(item)?
                    .map(picture_path)
                    .transpose()?
                    .ok_or_else(|| {
                        PyValueError::new_err(format!(
                            "{IMAGES_HELP}; the list holds a {}",
                            item.get_type()
                                .name()
                                .map_or_else(|_| "?".into(), |n| n.to_string())
                        ))
                    })
            })
            .collect::<PyResult<_>>()?;
        return Ok(Images::Paths(paths));
    }
    Err(PyValueError::new_err(format!(
        "{IMAGES_HELP}, not a {}",
        obj.get_type()
            .name()
            .map_or_else(|_| "?".into(), |n| n.to_string())
    )))
}

fn read_array(array: &Bound<'_, PyUntypedArray>, cfg: &ModelConfig) -> PyResult<Images> {
    let bad = || PyValueError::new_err(format!("{IMAGES_HELP}, not a {}", describe_array(array)));
    let shape = array.shape().to_vec();
    if let Ok(floats) = array.cast::<numpy::PyArray4<f32>>() {
        let (h, w) = cfg.image_size;
        if shape[0] == 0 || shape[1..] != [3, h, w] {
            return Err(PyValueError::new_err(format!(
                "a float32 batch must have shape [B, 3, {h}, {w}] (already resized and \
                 normalised for {}), not {shape:?}",
                cfg.name
            )));
        }
        let view = floats.readonly();
        let inputs: Vec<f32> = view.as_array().iter().copied().collect();
        if let Some(at) = inputs.iter().position(|v| !v.is_finite()) {
            let per_image = 3 * h * w;
            return Err(PyValueError::new_err(format!(
                "the float32 batch holds NaN or infinite values (the first in image {}): the \
                 model's output would be meaningless",
                at / per_image
            )));
        }
        return Ok(Images::Normalised {
            inputs,
            count: shape[0],
        });
    }
    match shape.len() {
        3 => Ok(Images::Pixels(vec![pixels(array)?])),
        4 => {
            let batch = array.cast::<numpy::PyArray4<u8>>().map_err(|_| bad())?;
            if shape[0] == 0 {
                return Err(PyValueError::new_err("no images given: the batch is empty"));
            }
            let view = batch.readonly();
            view.as_array()
                .outer_iter()
                .map(|one| rgb_image(one).ok_or_else(bad))
                .collect::<PyResult<_>>()
                .map(Images::Pixels)
        }
        _ => Err(bad()),
    }
}

/// Prepared images in order; the first file that cannot be read fails the whole call.
fn collect_prepared(prepared: Vec<agcam::Result<Prepared>>) -> agcam::Result<Vec<Prepared>> {
    prepared.into_iter().collect()
}

impl Images {
    fn count(&self) -> usize {
        match self {
            Images::Paths(p) => p.len(),
            Images::Pixels(p) => p.len(),
            Images::Normalised { count, .. } => *count,
        }
    }

    /// Runs `work` over chunks of at most `capacity` images, normalised for `cfg`, with the
    /// offset of each chunk's first image. Files are decoded the way the command line decodes
    /// them, on all cores, the next chunk while `work` runs on this one.
    fn for_each_chunk(
        self,
        cfg: &ModelConfig,
        capacity: usize,
        mut work: impl FnMut(usize, Batch) -> agcam::Result<()>,
    ) -> agcam::Result<()> {
        match self {
            Images::Paths(paths) => {
                let mut offset = 0;
                // As the command line reads files by default: EXIF orientation applied, and no
                // full-size picture kept (no overlay is drawn here).
                let read = ReadOptions {
                    orientation: Orientation::Apply,
                    keep_original_bytes: Some(0),
                };
                let each = |_: &[PathBuf], prepared: Vec<agcam::Result<Prepared>>| {
                    let prepared = collect_prepared(prepared)?;
                    let n = prepared.len();
                    let batch = Batch {
                        inputs: prepared.iter().flat_map(|p| p.input.clone()).collect(),
                        sources: prepared
                            .into_iter()
                            .map(|p| Source {
                                size: p.size,
                                exif_orientation: p.exif_orientation,
                                orientation_applied: p.oriented(),
                                saturated_16bit: p.saturated_16bit,
                                path: Some(p.path),
                                preprocess_ms: p.preprocess_ms,
                            })
                            .collect(),
                    };
                    work(offset, batch)?;
                    offset += n;
                    Ok(())
                };
                for_each_prepared_chunk_with(
                    &paths,
                    PathBuf::as_path,
                    cfg,
                    capacity,
                    &read,
                    None,
                    each,
                )
            }
            Images::Pixels(images) => {
                for (i, chunk) in images.chunks(capacity.max(1)).enumerate() {
                    work(i * capacity, preprocess_pixels(chunk, cfg)?)?;
                }
                Ok(())
            }
            Images::Normalised { inputs, count } => {
                let (h, w) = cfg.image_size;
                let source = Source {
                    path: None,
                    size: (w as u32, h as u32),
                    exif_orientation: None,
                    orientation_applied: false,
                    saturated_16bit: false,
                    preprocess_ms: 0.0,
                };
                work(
                    0,
                    Batch {
                        inputs,
                        sources: vec![source; count],
                    },
                )
            }
        }
    }
}

/// Resizes and normalises `images` for `cfg` as files are (agcam::image::preprocess_rgb), on
/// all cores: on a fast GPU this CPU work, not the GPU's, would otherwise bound images/s.
fn preprocess_pixels(images: &[RgbImage], cfg: &ModelConfig) -> agcam::Result<Batch> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = images.len().div_ceil(threads).max(1);
    let (h, w) = cfg.image_size;
    let prepare = |image: &RgbImage| -> agcam::Result<(Vec<f32>, Source)> {
        let start = Instant::now();
        let input = agcam::image::preprocess_rgb(image, h, w, cfg.mean, cfg.std)?;
        let source = Source {
            path: None,
            size: image.dimensions(),
            exif_orientation: None,
            orientation_applied: false,
            saturated_16bit: false,
            preprocess_ms: start.elapsed().as_secs_f64() * 1e3,
        };
        Ok((input, source))
    };
    let prepare = &prepare;
    let parts: Vec<agcam::Result<Vec<_>>> = std::thread::scope(|s| {
        let handles: Vec<_> = images
            .chunks(per_thread)
            .map(|part| s.spawn(move || part.iter().map(prepare).collect()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("preprocessing thread panicked"))
            .collect()
    });
    let mut batch = Batch {
        inputs: Vec::new(),
        sources: Vec::new(),
    };
    for part in parts {
        for (input, source) in part? {
            batch.inputs.extend(input);
            batch.sources.push(source);
        }
    }
    Ok(batch)
}

/// A ViT checkpoint loaded on a GPU, ready to explain and classify images.
///
/// Explainer(weights=None, config=None, backend=None, adapter=None, precision="f32",
///           batch=None, max_gpu_mem=None)
///
/// The arguments are the command line's flags: weights, a .safetensors file or a folder holding
/// one (timm or Hugging Face ViT; default: the bundled demo model, agcam.DEMO_WEIGHTS); config,
/// its JSON config (default: found beside the weights); backend, "vulkan", "metal", "dx12" or
/// "gl", and adapter, an index from `agcam devices` (default: the best adapter); precision,
/// "f32" or "f16" (weight matrices stored as f16); batch, most images per GPU chunk (default
/// 32); max_gpu_mem, the activation memory budget in MiB (default 2048, at most 2**24: 16 TiB).
///
/// Raises FileNotFoundError for a missing file, ValueError for a bad argument or checkpoint,
/// AgcamError when no adapter can run the model. Calls from several threads run one at a time.
#[pyclass(module = "agcam", frozen)]
struct Explainer {
    engine: Mutex<Engine>,
    config: ModelConfig,
    adapter: String,
}

/// Logits and maps of a batch of B images with K explained classes each: what
/// Explainer.explain returns. maps, classes, logits and predicted are numpy arrays; record()
/// gives the command line's JSON record of one image and class.
#[pyclass(module = "agcam", frozen)]
struct Explanation {
    maps: Py<numpy::PyArray4<f32>>,
    classes: Py<PyArray2<i64>>,
    logits: Py<PyArray2<f32>>,
    predicted: Py<PyArray1<i64>>,
    explanations: Vec<agcam::Explanation>,
    sources: Vec<Source>,
    info: RunInfo,
    gpu_ms_per_image: f64,
}

impl Explainer {
    fn lock(&self) -> agcam::Result<std::sync::MutexGuard<'_, Engine>> {
        self.engine.lock().map_err(|_| {
            Error::Gpu(
                "this Explainer is unusable after an internal error; create a new one".into(),
            )
        })
    }

    fn target(
        &self,
        target: Option<&Bound<'_, PyAny>>,
        top_k: usize,
        count: usize,
    ) -> PyResult<Target> {
        let Some(target) = target.filter(|t| !t.is_none()) else {
            return Ok(if top_k == 1 {
                Target::Predicted
            } else {
                Target::TopK(top_k)
            });
        };
        if top_k != 1 {
            return Err(PyValueError::new_err(
                "give either target or top_k, not both (as --class and --top-k)",
            ));
        }
        let class = |v: &Bound<'_, PyAny>| -> PyResult<usize> {
            // A bool is an int to Python; as a class it is almost surely a mistake.
            let not_bool = (!v.is_instance_of::<PyBool>()).then_some(v);
            not_bool
                .and_then(|v| v.extract::<usize>().ok())
                .ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "target classes must be non-negative integers, not {}",
                        v.repr().map_or_else(|_| "?".into(), |r| r.to_string())
                    ))
                })
        };
        if target.extract::<i64>().is_ok() {
            return Ok(Target::Class(class(target)?));
        }
        let classes: Vec<usize> = target
            .try_iter()
            .map_err(|_| {
                PyValueError::new_err("target must be None, an int or a sequence of ints")
            })?
            .map(|v| class(&v?))
            .collect::<PyResult<_>>()?;
        if classes.len() != count {
            return Err(PyValueError::new_err(format!(
                "{} target classes given for {count} images",
                classes.len()
            )));
        }
        Ok(Target::PerImage(classes))
    }
}

#[pymethods]
impl Explainer {
    #[new]
    #[pyo3(signature = (weights=None, config=None, backend=None, adapter=None, precision="f32", batch=None, max_gpu_mem=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        weights: Option<&Bound<'_, PyAny>>,
        config: Option<&Bound<'_, PyAny>>,
        backend: Option<&str>,
        adapter: Option<i64>,
        precision: &str,
        batch: Option<i64>,
        max_gpu_mem: Option<i64>,
    ) -> PyResult<Self> {
        let adapter = adapter.map(|a| non_negative(a, "adapter")).transpose()?;
        let batch = batch.map(|b| non_negative(b, "batch")).transpose()?;
        let max_gpu_mem = max_gpu_mem
            .map(|m| non_negative(m, "max_gpu_mem").map(|m| m as u64))
            .transpose()?;
        let path_arg = |obj: Option<&Bound<'_, PyAny>>, name: &str| -> PyResult<Option<PathBuf>> {
            match obj.filter(|o| !o.is_none()) {
                None => Ok(None),
                Some(o) => as_path(o)?.map(Some).ok_or_else(|| {
                    PyValueError::new_err(format!("{name} must be a path (str or os.PathLike)"))
                }),
            }
        };
        let weights = match path_arg(weights, "weights")? {
            Some(w) => w,
            None => {
                let demo: String = py.import("agcam")?.getattr("DEMO_WEIGHTS")?.extract()?;
                PathBuf::from(demo)
            }
        };
        let config = path_arg(config, "config")?;
        let backend = backend
            .map(|b| parse_choice::<Backend>(b, "backend"))
            .transpose()?;
        let precision = parse_choice::<Precision>(precision, "precision")?;
        let defaults = EngineOptions::default();
        if batch == Some(0) {
            return Err(PyValueError::new_err("batch must be at least 1"));
        }
        let max_gpu_mem = match max_gpu_mem {
            None => defaults.max_gpu_mem,
            Some(mib) => EngineOptions::gpu_mem_from_mib(mib).map_err(py_error)?,
        };
        let options = EngineOptions {
            max_batch: batch.unwrap_or(defaults.max_batch),
            max_gpu_mem,
            precision,
            ..defaults
        };
        let (engine, warnings) = without_gil(py, move || {
            let model = load_model(&weights, config.as_deref(), &ConfigOverrides::default())?;
            let gpu = Gpu::new(&GpuOptions { backend, adapter })?;
            let engine = Engine::with_options(gpu, &model, &options)?;
            Ok((engine, model.provenance.warnings))
        })?;
        let warn = py.import("warnings")?;
        for w in warnings {
            warn.call_method1("warn", (w,))?;
        }
        Ok(Explainer {
            config: engine.config().clone(),
            adapter: engine.gpu().describe(),
            engine: Mutex::new(engine),
        })
    }

    /// The model: image_size (H, W), patch_size, grid (gh, gw), num_classes, labels (a list,
    /// or None), mean, std (RGB) and model (its name).
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = &self.config;
        let d = PyDict::new(py);
        d.set_item("image_size", c.image_size)?;
        d.set_item("patch_size", c.patch_size)?;
        d.set_item("grid", c.grid())?;
        d.set_item("num_classes", c.num_classes)?;
        d.set_item("labels", c.labels.clone())?;
        d.set_item("mean", c.mean.to_vec())?;
        d.set_item("std", c.std.to_vec())?;
        d.set_item("model", c.name.clone())?;
        Ok(d)
    }

    /// The adapter the model runs on, e.g. "llvmpipe (Vulkan, Cpu)".
    #[getter]
    fn adapter(&self) -> String {
        self.adapter.clone()
    }

    /// explain(images, target=None, top_k=1, method="agcam") -> Explanation
    ///
    /// Logits and maps of images: a path (str or os.PathLike), a list of paths, a uint8 array
    /// [H, W, 3] or [B, H, W, 3] or a list of uint8 [H, W, 3] arrays (any sizes), preprocessed
    /// exactly as the command line preprocesses files, or a float32 array [B, 3, H, W] already
    /// resized and normalised. target: None explains the predicted class (or the top_k best
    /// classes, best first), an int the same class for every image, a sequence of ints one
    /// class per image. method: "agcam", "grad-cam" (class-token models only),
    /// "generic-attention" (Chefer et al. 2021, full backward; class-token models only),
    /// "transformer-attribution" (Chefer et al. CVPR 2021, LRP with attention gradients;
    /// class-token models only), or the class-agnostic baselines "attention-rollout" and
    /// "raw-attention". The GIL is released
    /// while images decode and the GPU works. Raises ValueError naming the image whose logits
    /// or map hold a NaN or an infinity.
    #[pyo3(signature = (images, target=None, top_k=1, method="agcam"))]
    fn explain(
        &self,
        py: Python<'_>,
        images: &Bound<'_, PyAny>,
        target: Option<&Bound<'_, PyAny>>,
        top_k: i64,
        method: &str,
    ) -> PyResult<Explanation> {
        let top_k = non_negative(top_k, "top_k")?;
        let method = parse_choice::<Method>(method, "method")?;
        let images = read_images(images, &self.config)?;
        let target = self.target(target, top_k, images.count())?;
        let cfg = &self.config;
        let (explanations, sources, gpu_ms) = without_gil(py, || {
            let mut engine = self.lock()?;
            let capacity = engine.capacity();
            let mut explanations = Vec::new();
            let mut sources = Vec::new();
            let mut gpu_ms = 0.0;
            images.for_each_chunk(cfg, capacity, |offset, batch| {
                let n = batch.sources.len();
                let chunk_target = match &target {
                    Target::PerImage(classes) => Target::PerImage(classes[offset..][..n].to_vec()),
                    other => other.clone(),
                };
                let start = Instant::now();
                explanations.extend(engine.explain_with(&batch.inputs, &chunk_target, method)?);
                gpu_ms += start.elapsed().as_secs_f64() * 1e3;
                sources.extend(batch.sources);
                Ok(())
            })?;
            Ok((explanations, sources, gpu_ms))
        })?;
        refuse_non_finite(&explanations, &sources)?;
        let b = explanations.len();
        let k = explanations.first().map_or(0, |e| e.maps.len());
        let (gh, gw) = cfg.grid();
        let maps: Vec<f32> = explanations
            .iter()
            .flat_map(|e| e.maps.iter().flat_map(|m| m.map.iter().copied()))
            .collect();
        let classes: Vec<i64> = explanations
            .iter()
            .flat_map(|e| e.maps.iter().map(|m| m.class as i64))
            .collect();
        let logits: Vec<f32> = explanations
            .iter()
            .flat_map(|e| e.logits.iter().copied())
            .collect();
        let predicted: Vec<i64> = explanations.iter().map(|e| e.predicted() as i64).collect();
        Ok(Explanation {
            maps: PyArray1::from_vec(py, maps)
                .reshape([b, k, gh, gw])?
                .unbind(),
            classes: PyArray1::from_vec(py, classes).reshape([b, k])?.unbind(),
            logits: PyArray1::from_vec(py, logits)
                .reshape([b, cfg.num_classes])?
                .unbind(),
            predicted: PyArray1::from_vec(py, predicted).unbind(),
            explanations,
            sources,
            info: RunInfo {
                config: cfg.clone(),
                adapter: self.adapter.clone(),
                alpha: agcam::image::DEFAULT_OVERLAY_ALPHA,
                method,
            },
            gpu_ms_per_image: gpu_ms / b.max(1) as f64,
        })
    }

    /// predict(images) -> float32 [B, num_classes]
    ///
    /// The logits of images (any form explain takes), from the forward pass only; ValueError
    /// naming the image whose logits hold a NaN or an infinity.
    fn predict<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let images = read_images(images, &self.config)?;
        let cfg = &self.config;
        let (rows, sources) = without_gil(py, || {
            let mut engine = self.lock()?;
            let capacity = engine.capacity();
            let mut rows = Vec::new();
            let mut sources = Vec::new();
            images.for_each_chunk(cfg, capacity, |_, batch| {
                for logits in engine.predict(&batch.inputs)? {
                    rows.push(agcam::Explanation {
                        logits,
                        maps: Vec::new(),
                    });
                }
                sources.extend(batch.sources);
                Ok(())
            })?;
            Ok((rows, sources))
        })?;
        refuse_non_finite(&rows, &sources)?;
        let logits: Vec<f32> = rows.into_iter().flat_map(|r| r.logits).collect();
        let b = logits.len() / cfg.num_classes;
        PyArray1::from_vec(py, logits).reshape([b, cfg.num_classes])
    }

    fn __repr__(&self) -> String {
        format!(
            "agcam.Explainer(model={:?}, adapter={:?})",
            self.config.name, self.adapter
        )
    }
}

#[pymethods]
impl Explanation {
    /// float32 [B, K, gh, gw]: the raw maps, what the command line writes to .npy.
    #[getter]
    fn maps(&self, py: Python<'_>) -> Py<numpy::PyArray4<f32>> {
        self.maps.clone_ref(py)
    }

    /// int64 [B, K]: the explained classes, best first for top-k.
    #[getter]
    fn classes(&self, py: Python<'_>) -> Py<PyArray2<i64>> {
        self.classes.clone_ref(py)
    }

    /// float32 [B, num_classes]: the raw logits.
    #[getter]
    fn logits(&self, py: Python<'_>) -> Py<PyArray2<f32>> {
        self.logits.clone_ref(py)
    }

    /// int64 [B]: the predicted class of each image.
    #[getter]
    fn predicted(&self, py: Python<'_>) -> Py<PyArray1<i64>> {
        self.predicted.clone_ref(py)
    }

    /// record(index, rank=0, image=None, map_file=None, overlay_file=None) -> dict
    ///
    /// The JSON record `agcam explain` writes as <stem>.json, for image index and its rank-th
    /// explained class (negative values count from the end, as in a list). image names the picture when it came as pixels (default: its path, or
    /// None); map_file and overlay_file name the files written beside it (default: None).
    #[pyo3(signature = (index, rank=0, image=None, map_file=None, overlay_file=None))]
    fn record<'py>(
        &self,
        py: Python<'py>,
        index: i64,
        rank: i64,
        image: Option<&Bound<'py, PyAny>>,
        map_file: Option<String>,
        overlay_file: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let index = sequence_index(index, self.explanations.len(), "image index")?;
        let explanation = &self.explanations[index];
        let rank = sequence_index(rank, explanation.maps.len(), "rank")?;
        let class_map = &explanation.maps[rank];
        let source = &self.sources[index];
        let image = match image.filter(|i| !i.is_none()) {
            Some(i) => Some(as_path(i)?.ok_or_else(|| {
                PyValueError::new_err("image must be a path (str or os.PathLike)")
            })?),
            None => source.path.clone(),
        };
        let record = class_record(
            RecordImage {
                path: image.as_deref().map(Path::new),
                size: source.size,
                exif_orientation: source.exif_orientation,
                orientation_applied: source.orientation_applied,
                saturated_16bit: source.saturated_16bit,
            },
            explanation,
            class_map,
            &self.info,
            RecordFiles {
                map: map_file.map(Into::into),
                overlay: overlay_file.map(Into::into),
            },
            serde_json::json!({
                "preprocess": source.preprocess_ms,
                "gpu_per_image": self.gpu_ms_per_image,
                "write": serde_json::Value::Null,
            }),
        );
        py.import("json")?
            .call_method1("loads", (record.to_string(),))
    }

    fn __len__(&self) -> usize {
        self.explanations.len()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let shape: Vec<usize> = self.maps.bind(py).shape().to_vec();
        Ok(format!(
            "agcam.Explanation(images={}, maps={shape:?}, method={:?})",
            self.explanations.len(),
            self.info.method.name()
        ))
    }
}

/// overlay(image, grid, alpha=0.5) -> uint8 [H, W, 3]
///
/// The command line's overlay PNG: grid (float32 [gh, gw], one map of Explanation.maps)
/// upsampled bilinearly to image (uint8 [H, W, 3]), min-max normalised, in jet colours,
/// blended over the image with weight alpha (0..1).
#[pyfunction]
#[pyo3(signature = (image, grid, alpha=agcam::image::DEFAULT_OVERLAY_ALPHA))]
fn overlay<'py>(
    py: Python<'py>,
    image: &Bound<'py, PyAny>,
    grid: &Bound<'py, PyAny>,
    alpha: f32,
) -> PyResult<Bound<'py, PyArray3<u8>>> {
    if !(0.0..=1.0).contains(&alpha) {
        return Err(PyValueError::new_err(format!(
            "alpha must be between 0 and 1, not {alpha}"
        )));
    }
    let image = image
        .cast::<PyUntypedArray>()
        .map_err(|_| PyValueError::new_err("image must be a uint8 array [H, W, 3]"))
        .and_then(pixels)?;
    let grid = grid.cast::<PyArray2<f32>>().map_err(|_| {
        PyValueError::new_err("grid must be a float32 array [gh, gw] (one map of Explanation.maps)")
    })?;
    let grid = grid.readonly();
    let (gh, gw) = grid.as_array().dim();
    if gh == 0 || gw == 0 {
        return Err(PyValueError::new_err("grid must not be empty"));
    }
    let values: Vec<f32> = grid.as_array().iter().copied().collect();
    if values.iter().any(|v| !v.is_finite()) {
        // Min-max normalisation of such a grid has no meaning: the colours would be arbitrary.
        return Err(PyValueError::new_err(
            "grid holds NaN or infinite values: no overlay can be drawn from it",
        ));
    }
    let (w, h) = image.dimensions();
    let out = without_gil(py, move || {
        Ok(agcam::image::overlay(&image, &values, gh, gw, alpha).into_raw())
    })?;
    PyArray1::from_vec(py, out).reshape([h as usize, w as usize, 3])
}

/// The compiled module; the `agcam` package re-exports it with its documentation.
#[pymodule]
fn _agcam(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Explainer>()?;
    m.add_class::<Explanation>()?;
    m.add_function(wrap_pyfunction!(overlay, m)?)?;
    m.add("AgcamError", m.py().get_type::<AgcamError>())?;
    Ok(())
}
