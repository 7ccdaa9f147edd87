//! `agcam profile` and `agcam bench`.

use std::path::PathBuf;

use agcam::gpu::{Backend, Gpu, GpuOptions};
use agcam::model::Model;
use agcam::{EngineOptions, Error, KernelSet, Method, Precision, Target};
use clap::Args;

use super::{random_model, GpuArgs, ModelArgs, OverrideArgs};

#[derive(Args)]
pub struct ProfileArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Profile random weights of a standard timm architecture instead of a checkpoint
    /// (vit_tiny_patch16_224, vit_small_patch16_224, vit_base_patch16_224,
    /// vit_large_patch16_224).
    #[arg(long, conflicts_with = "weights")]
    pub random: Option<String>,
    #[command(flatten)]
    pub gpu: GpuArgs,
    /// Classes explained per image.
    #[arg(long, default_value_t = 1)]
    pub top_k: usize,
    /// The explanation method profiled.
    #[arg(long, value_enum, default_value_t = Method::Agcam)]
    pub method: Method,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The architectures `agcam bench` measures when neither --weights nor --random is given.
const BENCH_DEFAULT_RANDOM: [&str; 3] = [
    "vit_tiny_patch16_224",
    "vit_small_patch16_224",
    "vit_base_patch16_224",
];

#[derive(Args)]
pub struct BenchArgs {
    /// Checkpoint to measure (default: random weights of the --random architectures).
    #[arg(long, short = 'w')]
    pub weights: Option<PathBuf>,
    /// Config of --weights.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// Standard architectures with random weights, comma-separated (default:
    /// vit_tiny_patch16_224,vit_small_patch16_224,vit_base_patch16_224).
    #[arg(long, value_delimiter = ',', conflicts_with = "weights")]
    pub random: Vec<String>,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,64")]
    pub batches: Vec<usize>,
    /// Classes explained per image, comma-separated (each is one explain point).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub top_k: Vec<usize>,
    /// Explanation methods, comma-separated (each is measured at every batch and top-k).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Method::Agcam])]
    pub method: Vec<Method>,
    /// Timed repetitions per point, after one warm-up.
    #[arg(long, default_value_t = 3)]
    pub iters: usize,
    /// Write all points as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Graphics API to use (default: the best adapter of any).
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    /// Adapter index from `agcam devices`.
    #[arg(long, value_parser = super::index)]
    pub adapter: Option<usize>,
    /// GPU memory budget for activations, in MiB (1 to 16777216).
    #[arg(long, default_value_t = 4096, value_parser = super::mebibytes)]
    pub max_gpu_mem: u64,
    /// Kernel shapes: cpu (for llvmpipe/lavapipe), gpu, or auto by adapter class.
    #[arg(long, value_enum, default_value_t = KernelSet::Auto)]
    pub kernels: KernelSet,
    /// Weight storage on the GPU; f16 halves weight memory and, on adapters with SHADER_F16,
    /// also multiplies in f16 in the GPU kernel set's 64 × 64-tile GEMM (sums stay f32).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
}

pub fn profile(args: &ProfileArgs) -> agcam::Result<bool> {
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
    engine.explain_with(&images, &Target::TopK(args.top_k), args.method)?;
    let profile = engine.profile_with(&images, args.top_k, args.method)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&profile).expect("JSON of plain values")
        );
        return Ok(true);
    }
    let total = profile.total_ms();
    println!(
        "{} {} on {}: batch {}, top-k {}, {} clock, total {:.2} ms ({:.2} ms per image)",
        model.config.name,
        profile.method.name(),
        profile.adapter,
        profile.batch,
        profile.top_k,
        profile.clock,
        total,
        total / profile.batch as f64
    );
    println!(
        "{:<34} {:<20} {:>10} {:>7} {:>9} {:>8}",
        "launch", "kernel", "ms", "share", "GFLOP/s", "GB/s"
    );
    for k in &profile.kernels {
        println!(
            "{:<34} {:<20} {:>10.3} {:>6.1}% {:>9.2} {:>8.2}",
            k.name,
            k.kernel,
            k.ms,
            100.0 * k.ms / total,
            k.gflop_per_s,
            k.gb_per_s
        );
    }
    let sum = |ks: &[agcam::explain::KernelTiming]| ks.iter().map(|k| k.ms).sum::<f64>();
    let (forward, explanation) = (profile.forward(), profile.explanation());
    let (forward_ms, explanation_ms) = (sum(forward), sum(explanation));
    println!(
        "forward {forward_ms:.3} ms in {} launches; explanation {explanation_ms:.3} ms in {} \
         launches; explain / forward {:.4}",
        forward.len(),
        explanation.len(),
        (forward_ms + explanation_ms) / forward_ms
    );
    Ok(true)
}

pub fn bench(args: &BenchArgs) -> agcam::Result<bool> {
    if args.iters == 0 || args.batches.contains(&0) || args.top_k.contains(&0) {
        return Err(Error::Invalid(
            "--iters, --batches and --top-k must be at least 1".into(),
        ));
    }
    // Before the (long) measurements.
    if let Some(path) = &args.json {
        agcam::files::ensure_writable_file(path)?;
    }
    let models: Vec<Model> = match &args.weights {
        Some(w) => vec![args.overrides.load(w, args.config.as_deref())?],
        None => {
            let names: Vec<&str> = if args.random.is_empty() {
                BENCH_DEFAULT_RANDOM.to_vec()
            } else {
                args.random.iter().map(String::as_str).collect()
            };
            names
                .into_iter()
                .map(random_model)
                .collect::<agcam::Result<_>>()?
        }
    };
    // Before the measurements, not after a model's forward points.
    let most_k = args.top_k.iter().copied().max().unwrap_or(1);
    if let Some(m) = models.iter().find(|m| m.config.num_classes < most_k) {
        return Err(Error::Invalid(format!(
            "--top-k {most_k}: {} has only {} classes",
            m.config.name, m.config.num_classes
        )));
    }
    let gpu = Gpu::new(&GpuOptions {
        backend: args.backend,
        adapter: args.adapter,
    })?;
    eprintln!("adapter: {}", gpu.describe());
    let options = agcam::bench::BenchOptions {
        batches: args.batches.clone(),
        top_ks: args.top_k.clone(),
        methods: args.method.clone(),
        iters: args.iters,
        max_gpu_mem: EngineOptions::gpu_mem_from_mib(args.max_gpu_mem)?,
        kernels: args.kernels,
        precision: args.precision,
    };
    println!(
        "{:<24} {:>6} {:>17} {:>6} {:>12} {:>10} {:>10}",
        "model", "batch", "mode", "top-k", "ms/image", "images/s", "GPU MiB"
    );
    let mut all = Vec::new();
    for model in &models {
        all.extend(agcam::bench::run(&gpu, model, &options, |r| {
            let mem = r.gpu_mem_mib.map_or("-".into(), |m| format!("{m:.1}"));
            let mode = r.method.map_or(r.mode.clone(), |m| m.name().to_string());
            println!(
                "{:<24} {:>6} {:>17} {:>6} {:>12.2} {:>10.2} {:>10}",
                r.model, r.batch, mode, r.top_k, r.ms_per_image, r.images_per_s, mem
            );
        })?);
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&all).expect("JSON of plain values");
        agcam::files::write_atomic(path, (text + "\n").as_bytes())?;
    }
    Ok(true)
}
