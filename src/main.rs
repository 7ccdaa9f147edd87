//! The `agcam` command line: parses arguments, calls the library, prints.

mod cli_eval;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use agcam::gpu::{list_adapters, Backend, Gpu, GpuOptions};
use agcam::model::{load_model, ConfigOverrides, Model, ModelConfig};
use agcam::output::{write_class, RunInfo, Stems};
use agcam::pipeline::{collect_images, explain_files, Outcome};
use agcam::{Engine, EngineOptions, Error, KernelSet, Method, Precision, Target};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

/// The bundled demo checkpoint and sample images, used when no other is given.
const DEMO_WEIGHTS: &str = "weights/demo.safetensors";
const DEMO_SAMPLES: &str = "weights/samples";

#[derive(Parser)]
#[command(
    name = "agcam",
    version,
    about = "Attention-Guided CAM explanations of Vision Transformers, on any GPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Explain images: per image and class, an overlay PNG, the raw map (.npy) and a JSON record.
    Explain(ExplainArgs),
    /// Print the top-5 classes of each image.
    Predict(PredictArgs),
    /// List the GPU adapters agcam can use, best first.
    Devices {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print what agcam reads from a checkpoint: architecture, preprocessing, labels.
    Inspect {
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Time every GPU kernel of one explanation chunk (random inputs).
    Profile(ProfileArgs),
    /// Explanations per second and ms per image, forward-only next to explain, per batch size.
    Bench(BenchArgs),
    /// Run the paper's evaluation protocols (localization, perturbation) on a dataset folder.
    #[command(subcommand)]
    Eval(cli_eval::EvalCommand),
}

#[derive(Args)]
struct ModelArgs {
    /// Checkpoint: a .safetensors file or a folder holding one (timm or Hugging Face ViT).
    /// Default: the bundled demo model.
    #[arg(long, short = 'w')]
    weights: Option<PathBuf>,
    /// JSON config; default: <stem>.json, else config.json beside the weights (a
    /// preprocessor_config.json there is read too).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Number of attention heads, when neither the config nor the embedding width tells.
    #[arg(long)]
    heads: Option<usize>,
    /// Model input size HxW (e.g. 224x224), when the config does not say and the grid is
    /// not square.
    #[arg(long, value_parser = parse_size)]
    image_size: Option<(usize, usize)>,
    /// Normalisation mean, three comma-separated values (default: config, else 0.5,0.5,0.5).
    #[arg(long, value_parser = parse_triple)]
    mean: Option<[f32; 3]>,
    /// Normalisation std, three comma-separated values (default: config, else 0.5,0.5,0.5).
    #[arg(long, value_parser = parse_triple)]
    std: Option<[f32; 3]>,
}

#[derive(Args)]
struct GpuArgs {
    /// Graphics API to use (default: the best adapter of any).
    #[arg(long, value_enum)]
    backend: Option<Backend>,
    /// Adapter index from `agcam devices`.
    #[arg(long)]
    adapter: Option<usize>,
    /// Most images per GPU chunk.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// GPU memory budget for activations, in MiB.
    #[arg(long, default_value_t = 2048)]
    max_gpu_mem: u64,
    /// Kernel shapes: cpu (for llvmpipe/lavapipe), gpu, or auto by adapter class.
    #[arg(long, value_enum, default_value_t = KernelSet::Auto)]
    kernels: KernelSet,
    /// Weight storage on the GPU: f16 halves weight memory and bandwidth (arithmetic stays f32).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    precision: Precision,
}

#[derive(Args)]
struct ExplainArgs {
    /// Image files or folders (searched recursively). Default: the bundled samples.
    images: Vec<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    gpu: GpuArgs,
    /// Explain this class index for every image (default: the predicted class).
    #[arg(long, conflicts_with = "top_k")]
    class: Option<usize>,
    /// Explain the K best classes of each image; files get a `_c<class>` suffix when K > 1.
    #[arg(long)]
    top_k: Option<usize>,
    /// How maps are computed: AGCAM, or a class-agnostic baseline for comparison.
    #[arg(long, value_enum, default_value_t = Method::Agcam)]
    method: Method,
    /// Output folder.
    #[arg(long, short = 'o', default_value = "agcam-out")]
    out: PathBuf,
    /// Heatmap opacity in the overlay, 0..1.
    #[arg(long, default_value_t = agcam::image::DEFAULT_OVERLAY_ALPHA)]
    alpha: f32,
}

#[derive(Args)]
struct PredictArgs {
    /// Image files or folders (searched recursively). Default: the bundled samples.
    images: Vec<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Args)]
struct ProfileArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Profile random weights of a standard timm architecture instead of a checkpoint
    /// (vit_tiny_patch16_224, vit_small_patch16_224, vit_base_patch16_224,
    /// vit_large_patch16_224).
    #[arg(long, conflicts_with = "weights")]
    random: Option<String>,
    #[command(flatten)]
    gpu: GpuArgs,
    /// Classes explained per image.
    #[arg(long, default_value_t = 1)]
    top_k: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct BenchArgs {
    /// Checkpoint to measure (default: random weights of the --random architectures).
    #[arg(long, short = 'w')]
    weights: Option<PathBuf>,
    /// Config of --weights.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Standard architectures with random weights, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "vit_tiny_patch16_224,vit_small_patch16_224,vit_base_patch16_224"
    )]
    random: Vec<String>,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,64")]
    batches: Vec<usize>,
    /// Classes explained per image, comma-separated (each is one explain point).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    top_k: Vec<usize>,
    /// Timed repetitions per point, after one warm-up.
    #[arg(long, default_value_t = 3)]
    iters: usize,
    /// Write all points as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Graphics API to use (default: the best adapter of any).
    #[arg(long, value_enum)]
    backend: Option<Backend>,
    /// Adapter index from `agcam devices`.
    #[arg(long)]
    adapter: Option<usize>,
    /// GPU memory budget for activations, in MiB.
    #[arg(long, default_value_t = 4096)]
    max_gpu_mem: u64,
    /// Kernel shapes: cpu (for llvmpipe/lavapipe), gpu, or auto by adapter class.
    #[arg(long, value_enum, default_value_t = KernelSet::Auto)]
    kernels: KernelSet,
    /// Weight storage on the GPU: f16 halves weight memory and bandwidth (arithmetic stays f32).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    precision: Precision,
}

fn parse_size(s: &str) -> Result<(usize, usize), String> {
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

fn parse_triple(s: &str) -> Result<[f32; 3], String> {
    let values: Vec<f32> = s
        .split(',')
        .map(|v| v.trim().parse::<f32>().map_err(|e| format!("`{v}`: {e}")))
        .collect::<Result<_, _>>()?;
    values
        .try_into()
        .map_err(|v: Vec<f32>| format!("expected 3 comma-separated values, got {}", v.len()))
}

/// A bundled file: relative to the working directory, else to the source tree the binary was
/// built from, so the quick start works from anywhere on the machine that built it.
fn bundled(relative: &str) -> PathBuf {
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
    fn load(&self) -> agcam::Result<Model> {
        let weights = self
            .weights
            .clone()
            .unwrap_or_else(|| bundled(DEMO_WEIGHTS));
        let overrides = ConfigOverrides {
            num_heads: self.heads,
            image_size: self.image_size,
            mean: self.mean,
            std: self.std,
        };
        let model = load_model(&weights, self.config.as_deref(), &overrides)?;
        for warning in &model.provenance.warnings {
            eprintln!("warning: {warning}");
        }
        Ok(model)
    }
}

impl GpuArgs {
    fn engine(&self, model: &Model) -> agcam::Result<Engine> {
        let gpu = Gpu::new(&GpuOptions {
            backend: self.backend,
            adapter: self.adapter,
        })?;
        if self.batch == 0 {
            return Err(Error::Invalid("--batch must be at least 1".into()));
        }
        let options = EngineOptions {
            max_batch: self.batch,
            max_gpu_mem: self.max_gpu_mem << 20,
            kernels: self.kernels,
            precision: self.precision,
        };
        Engine::with_options(gpu, model, &options)
    }
}

fn inputs_or_samples(images: &[PathBuf]) -> Vec<PathBuf> {
    if images.is_empty() {
        vec![bundled(DEMO_SAMPLES)]
    } else {
        images.to_vec()
    }
}

fn progress(len: usize) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} images  {per_sec}  eta {eta}")
            .expect("valid template"),
    );
    bar
}

/// Prints a line above the progress bar, or plainly when the bar is hidden (not a terminal).
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

fn class_name(model: &Model, class: usize) -> String {
    match model.config.label(class) {
        Some(label) => format!("{class} ({label})"),
        None => class.to_string(),
    }
}

fn explain(args: &ExplainArgs) -> agcam::Result<bool> {
    let model = args.model.load()?;
    let target = match (args.class, args.top_k) {
        (Some(c), _) => Target::Class(c),
        (None, Some(k)) => Target::TopK(k),
        (None, None) => Target::Predicted,
    };
    if !(0.0..=1.0).contains(&args.alpha) {
        return Err(Error::Invalid(format!(
            "--alpha must be between 0 and 1, not {}",
            args.alpha
        )));
    }
    let paths = collect_images(&inputs_or_samples(&args.images))?;
    let mut engine = args.gpu.engine(&model)?;
    std::fs::create_dir_all(&args.out).map_err(|e| Error::io(&args.out, e))?;
    let info = RunInfo {
        config: model.config.clone(),
        adapter: engine.gpu().describe(),
        alpha: args.alpha,
        method: args.method,
    };
    eprintln!(
        "{} images, model {}, on {}",
        paths.len(),
        model.config.name,
        info.adapter
    );
    let suffixed = matches!(target, Target::TopK(k) if k > 1);
    let bar = progress(paths.len());
    let mut stems = Stems::default();
    let mut failed = 0usize;
    let mut write_error = None;
    explain_files(&mut engine, &paths, &target, args.method, |outcome| {
        bar.inc(1);
        match outcome {
            Outcome::Failed { path: _, error } => {
                failed += 1;
                say(&bar, format!("error: {error}"));
            }
            Outcome::Done {
                prepared,
                explanation,
                gpu_ms,
            } => {
                let stem = stems.stem_for(&prepared.path);
                for m in &explanation.maps {
                    let suffix = if suffixed {
                        format!("_c{}", m.class)
                    } else {
                        String::new()
                    };
                    match write_class(
                        &args.out,
                        &stem,
                        &suffix,
                        &prepared,
                        &explanation,
                        m,
                        &info,
                        gpu_ms,
                    ) {
                        Ok(w) => say(
                            &bar,
                            format!(
                                "{}: predicted {}, explained {} -> {}",
                                prepared.path.display(),
                                class_name(&model, explanation.predicted()),
                                class_name(&model, m.class),
                                w.overlay.display()
                            ),
                        ),
                        Err(e) => {
                            write_error.get_or_insert(e);
                        }
                    }
                }
            }
        }
    })?;
    bar.finish_and_clear();
    if let Some(e) = write_error {
        return Err(e);
    }
    if failed > 0 {
        eprintln!("{failed} of {} images could not be read", paths.len());
    }
    eprintln!("wrote {}", args.out.display());
    Ok(failed == 0)
}

fn predict(args: &PredictArgs) -> agcam::Result<bool> {
    let model = args.model.load()?;
    let paths = collect_images(&inputs_or_samples(&args.images))?;
    let mut engine = args.gpu.engine(&model)?;
    let mut failed = 0usize;
    for chunk in paths.chunks(engine.capacity()) {
        let mut ok = Vec::new();
        let mut inputs = Vec::new();
        for path in chunk {
            match agcam::pipeline::prepare(path, &model.config) {
                Ok(p) => {
                    inputs.extend_from_slice(&p.input);
                    ok.push(p.path);
                }
                Err(e) => {
                    failed += 1;
                    eprintln!("error: {e}");
                }
            }
        }
        if ok.is_empty() {
            continue;
        }
        for (path, logits) in ok.iter().zip(engine.predict(&inputs)?) {
            println!("{}", path.display());
            for (rank, s) in agcam::explain::top_classes(&logits, 5).iter().enumerate() {
                println!(
                    "  {}. {:<30} logit {:>9.4}  p {:.4}",
                    rank + 1,
                    class_name(&model, s.class),
                    s.logit,
                    s.probability
                );
            }
        }
    }
    Ok(failed == 0)
}

/// Random weights for a standard architecture name.
fn random_model(name: &str) -> agcam::Result<Model> {
    let config = ModelConfig::standard(name).ok_or_else(|| {
        Error::Invalid(format!(
            "unknown architecture `{name}`: use one of {}",
            ModelConfig::STANDARD.join(", ")
        ))
    })?;
    Ok(Model::random(config, 0))
}

fn profile(args: &ProfileArgs) -> agcam::Result<bool> {
    let model = match &args.random {
        Some(name) => random_model(name)?,
        None => args.model.load()?,
    };
    let mut engine = args.gpu.engine(&model)?;
    let batch = engine.capacity();
    let images: Vec<f32> = (0..batch * engine.image_len())
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    // Once to record pipelines and warm caches, then the measured run.
    engine.explain(&images, &Target::TopK(args.top_k))?;
    let profile = engine.profile(&images, args.top_k)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&profile).expect("JSON of plain values")
        );
        return Ok(true);
    }
    let total = profile.total_ms();
    println!(
        "{} on {}: batch {}, top-k {}, {} clock, total {:.2} ms ({:.2} ms per image)",
        model.config.name,
        profile.adapter,
        profile.batch,
        profile.top_k,
        profile.clock,
        total,
        total / profile.batch as f64
    );
    println!(
        "{:<34} {:<16} {:>10} {:>7} {:>9} {:>8}",
        "launch", "kernel", "ms", "share", "GFLOP/s", "GB/s"
    );
    for k in &profile.kernels {
        println!(
            "{:<34} {:<16} {:>10.3} {:>6.1}% {:>9.2} {:>8.2}",
            k.name,
            k.kernel,
            k.ms,
            100.0 * k.ms / total,
            k.gflop_per_s,
            k.gb_per_s
        );
    }
    Ok(true)
}

fn bench(args: &BenchArgs) -> agcam::Result<bool> {
    if args.iters == 0 || args.batches.contains(&0) || args.top_k.contains(&0) {
        return Err(Error::Invalid(
            "--iters, --batches and --top-k must be at least 1".into(),
        ));
    }
    let models: Vec<Model> = match &args.weights {
        Some(w) => vec![load_model(
            w,
            args.config.as_deref(),
            &ConfigOverrides::default(),
        )?],
        None => args
            .random
            .iter()
            .map(|n| random_model(n))
            .collect::<agcam::Result<_>>()?,
    };
    let gpu = Gpu::new(&GpuOptions {
        backend: args.backend,
        adapter: args.adapter,
    })?;
    eprintln!("adapter: {}", gpu.describe());
    let options = agcam::bench::BenchOptions {
        batches: args.batches.clone(),
        top_ks: args.top_k.clone(),
        iters: args.iters,
        max_gpu_mem: args.max_gpu_mem << 20,
        kernels: args.kernels,
        precision: args.precision,
    };
    println!(
        "{:<24} {:>6} {:>8} {:>6} {:>12} {:>10}",
        "model", "batch", "mode", "top-k", "ms/image", "images/s"
    );
    let mut all = Vec::new();
    for model in &models {
        all.extend(agcam::bench::run(&gpu, model, &options, |r| {
            println!(
                "{:<24} {:>6} {:>8} {:>6} {:>12.2} {:>10.2}",
                r.model, r.batch, r.mode, r.top_k, r.ms_per_image, r.images_per_s
            );
        })?);
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&all).expect("JSON of plain values");
        std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))?;
    }
    Ok(true)
}

fn run(cli: &Cli) -> agcam::Result<bool> {
    match &cli.command {
        Command::Bench(args) => bench(args),
        Command::Explain(args) => explain(args),
        Command::Predict(args) => predict(args),
        Command::Profile(args) => profile(args),
        Command::Eval(command) => cli_eval::run(command),
        Command::Devices { json } => {
            let adapters = list_adapters(None);
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&adapters).expect("JSON of plain values")
                );
            } else if adapters.is_empty() {
                println!("no adapter with compute shaders found");
            } else {
                for a in adapters {
                    println!("{a}");
                }
            }
            Ok(true)
        }
        Command::Inspect { model } => {
            print!("{}", model.load()?.summary());
            Ok(true)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
