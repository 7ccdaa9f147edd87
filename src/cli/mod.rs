//! The subcommands of the `agcam` binary, each a thin layer over the library: argument groups
//! shared by several commands live here, one file per command family beside it.

pub mod bench;
pub mod eval;
pub mod explain;
pub mod shaders;
pub mod synth;

use std::path::{Path, PathBuf};

use agcam::gpu::{Backend, Gpu, GpuOptions};
use agcam::model::{load_model, ConfigOverrides, Model, ModelConfig};
use agcam::{Engine, EngineOptions, Error, KernelSet, Precision};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

/// The bundled demo checkpoint and sample images, used when no other is given.
const DEMO_WEIGHTS: &str = "weights/demo.safetensors";
const DEMO_SAMPLES: &str = "weights/samples";

#[derive(Args)]
pub struct ModelArgs {
    /// Checkpoint: a .safetensors file or a folder holding one (timm or Hugging Face ViT).
    /// Default: the bundled demo model.
    #[arg(long, short = 'w')]
    pub weights: Option<PathBuf>,
    /// JSON config; default: <stem>.json, else config.json beside the weights (a
    /// preprocessor_config.json there is read too).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: OverrideArgs,
}

/// What a checkpoint and its configs may not say, for every command that loads one.
#[derive(Args)]
pub struct OverrideArgs {
    /// Number of attention heads, when neither the config nor the embedding width tells.
    #[arg(long, value_parser = positive)]
    pub heads: Option<usize>,
    /// Model input size HxW (e.g. 224x224), when the config does not say and the grid is
    /// not square.
    #[arg(long, value_parser = parse_size)]
    pub image_size: Option<(usize, usize)>,
    /// Normalisation mean, three comma-separated values (default: config, else 0.5,0.5,0.5).
    #[arg(long, value_parser = parse_triple)]
    pub mean: Option<[f32; 3]>,
    /// Normalisation std, three comma-separated values (default: config, else 0.5,0.5,0.5).
    #[arg(long, value_parser = parse_std)]
    pub std: Option<[f32; 3]>,
}

#[derive(Args)]
pub struct GpuArgs {
    /// Graphics API to use (default: the best adapter of any).
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    /// Adapter index from `agcam devices`.
    #[arg(long, value_parser = index)]
    pub adapter: Option<usize>,
    /// Most images per GPU chunk.
    #[arg(long, default_value_t = 32, value_parser = positive)]
    pub batch: usize,
    /// GPU memory budget for activations, in MiB (1 to 16777216, i.e. 16 TiB).
    #[arg(long, default_value_t = 2048, value_parser = mebibytes)]
    pub max_gpu_mem: u64,
    /// Kernel shapes: cpu (for llvmpipe/lavapipe), gpu, or auto by adapter class.
    #[arg(long, value_enum, default_value_t = KernelSet::Auto)]
    pub kernels: KernelSet,
    /// Weight storage on the GPU; f16 halves weight memory and, on adapters with SHADER_F16,
    /// also multiplies in f16 in the GPU kernel set's 64 × 64-tile GEMM (sums stay f32).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
}

pub fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let (h, w) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("expected HxW, e.g. 224x224, not `{s}`"))?;
    let num = |v: &str| {
        v.trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("`{v}` is not a positive integer"))
    };
    Ok((num(h)?, num(w)?))
}

/// A whole number ≥ 0 (a class or adapter index, a count); negative numbers get a range error
/// rather than clap's "unexpected argument".
pub fn index(s: &str) -> Result<usize, String> {
    whole_number(s, 0, usize::MAX as u128).map(|v| v as usize)
}

/// A whole number ≥ 1.
pub fn positive(s: &str) -> Result<usize, String> {
    whole_number(s, 1, usize::MAX as u128).map(|v| v as usize)
}

/// A memory size in MiB, 1 to [`EngineOptions::MAX_GPU_MEM_MIB`].
pub fn mebibytes(s: &str) -> Result<u64, String> {
    whole_number(s, 1, u128::from(EngineOptions::MAX_GPU_MEM_MIB)).map(|v| v as u64)
}

/// A whole number in `lo..=hi`, with the accepted range in the error.
pub fn whole_number(s: &str, lo: u128, hi: u128) -> Result<u128, String> {
    let range = if hi >= usize::MAX as u128 {
        format!("a whole number ≥ {lo}")
    } else {
        format!("a whole number from {lo} to {hi}")
    };
    match s.trim().parse::<i128>() {
        Ok(v) if v >= 0 && (lo..=hi).contains(&(v as u128)) => Ok(v as u128),
        Ok(v) => Err(format!("{v} is out of range: expected {range}")),
        Err(_) => Err(format!("`{s}` is not {range}")),
    }
}

/// A number from 0 to 1 inclusive (an opacity, a threshold, a share).
pub fn unit_interval(s: &str) -> Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        Ok(v) => Err(format!(
            "{v} is out of range: expected a number from 0 to 1"
        )),
        Err(_) => Err(format!("`{s}` is not a number from 0 to 1")),
    }
}

/// Three normalisation standard deviations: finite and positive.
pub fn parse_std(s: &str) -> Result<[f32; 3], String> {
    let std = parse_triple(s)?;
    if std.iter().any(|v| *v <= 0.0) {
        return Err(format!("{std:?}: each std must be greater than 0"));
    }
    Ok(std)
}

/// Three comma-separated finite numbers.
pub fn parse_triple(s: &str) -> Result<[f32; 3], String> {
    let values: Vec<f32> = s
        .split(',')
        .map(|v| {
            v.trim()
                .parse::<f32>()
                .map_err(|e| format!("`{v}`: {e}"))
                .and_then(|x| {
                    x.is_finite()
                        .then_some(x)
                        .ok_or_else(|| format!("`{v}` is not a finite number"))
                })
        })
        .collect::<Result<_, _>>()?;
    values
        .try_into()
        .map_err(|v: Vec<f32>| format!("expected 3 comma-separated values, got {}", v.len()))
}

/// A bundled file: relative to the working directory, else to the source tree the binary was
/// built from, so the quick start works from anywhere on the machine that built it.
pub fn bundled(relative: &str) -> PathBuf {
    let here = PathBuf::from(relative);
    if here.exists() {
        return here;
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    if built.exists() {
        built
    } else {
        here
    }
}

impl ModelArgs {
    pub fn load(&self) -> agcam::Result<Model> {
        let weights = self
            .weights
            .clone()
            .unwrap_or_else(|| bundled(DEMO_WEIGHTS));
        self.overrides.load(&weights, self.config.as_deref())
    }
}

impl OverrideArgs {
    /// Loads `weights` (with `config`) under these overrides, printing the loader's warnings.
    pub fn load(&self, weights: &Path, config: Option<&Path>) -> agcam::Result<Model> {
        let overrides = ConfigOverrides {
            num_heads: self.heads,
            image_size: self.image_size,
            mean: self.mean,
            std: self.std,
        };
        let model = load_model(weights, config, &overrides)?;
        for warning in &model.provenance.warnings {
            eprintln!("warning: {warning}");
        }
        Ok(model)
    }
}

impl GpuArgs {
    pub fn engine(&self, model: &Model) -> agcam::Result<Engine> {
        let gpu = Gpu::new(&GpuOptions {
            backend: self.backend,
            adapter: self.adapter,
        })?;
        if self.batch == 0 {
            return Err(Error::Invalid("--batch must be at least 1".into()));
        }
        let max_gpu_mem = EngineOptions::gpu_mem_from_mib(self.max_gpu_mem)?;
        let options = EngineOptions {
            max_batch: self.batch,
            max_gpu_mem,
            kernels: self.kernels,
            precision: self.precision,
        };
        Engine::with_options(gpu, model, &options)
    }
}

pub fn inputs_or_samples(images: &[PathBuf]) -> Vec<PathBuf> {
    if images.is_empty() {
        vec![bundled(DEMO_SAMPLES)]
    } else {
        images.to_vec()
    }
}

pub fn progress(len: usize) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} images  {per_sec}  eta {eta}")
            .expect("valid template"),
    );
    bar
}

/// Moves the bar to `done` of `total`; when it is hidden (stderr is not a terminal: a log file,
/// a pipe), prints a line every 10 % instead, so that long work still shows progress there.
pub fn tick(bar: &ProgressBar, done: usize, total: usize, last: &mut usize) {
    bar.set_position(done as u64);
    if bar.is_hidden() && total > 0 && (done * 10 / total > *last * 10 / total || done == total) {
        eprintln!("{done}/{total} images");
    }
    *last = done;
}

/// Prints a line above the progress bar, or plainly when the bar is hidden (not a terminal).
pub fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

pub fn class_name(model: &Model, class: usize) -> String {
    match model.config.label(class) {
        Some(label) => format!("{class} ({label})"),
        None => class.to_string(),
    }
}

/// Random weights for a standard architecture name.
pub fn random_model(name: &str) -> agcam::Result<Model> {
    let config = ModelConfig::standard(name).ok_or_else(|| {
        Error::Invalid(format!(
            "unknown architecture `{name}`: use one of {}",
            ModelConfig::STANDARD.join(", ")
        ))
    })?;
    Ok(Model::random(config, 0))
}
