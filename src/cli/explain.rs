//! `agcam explain` and `agcam predict`.

use std::path::PathBuf;
use std::time::Instant;

use agcam::model::Model;
use agcam::output::{write_class, RunInfo, Stems};
use agcam::pipeline::{collect_images, explain_files, for_each_prepared_chunk, Outcome};
use agcam::{Engine, Error, Method, Target};
use clap::Args;

use super::{class_name, inputs_or_samples, progress, say, GpuArgs, ModelArgs};

#[derive(Args)]
pub struct ExplainArgs {
    /// Image files or folders (searched recursively). Default: the bundled samples.
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub gpu: GpuArgs,
    /// Explain this class index for every image (default: the predicted class).
    #[arg(long, conflicts_with = "top_k")]
    pub class: Option<usize>,
    /// Explain the K best classes of each image; files get a `_c<class>` suffix when K > 1.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// How maps are computed: AGCAM, or a class-agnostic baseline for comparison.
    #[arg(long, value_enum, default_value_t = Method::Agcam)]
    pub method: Method,
    /// Output folder.
    #[arg(long, short = 'o', default_value = "agcam-out")]
    pub out: PathBuf,
    /// Heatmap opacity in the overlay, 0..1.
    #[arg(long, default_value_t = agcam::image::DEFAULT_OVERLAY_ALPHA)]
    pub alpha: f32,
}

#[derive(Args)]
pub struct PredictArgs {
    /// Image files or folders (searched recursively). Default: the bundled samples.
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub gpu: GpuArgs,
}

pub fn explain(args: &ExplainArgs) -> agcam::Result<bool> {
    if !(0.0..=1.0).contains(&args.alpha) {
        return Err(Error::Invalid(format!(
            "--alpha must be between 0 and 1, not {}",
            args.alpha
        )));
    }
    let paths = collect_images(&inputs_or_samples(&args.images))?;
    let (model, mut engine) = load_and_upload(&args.model, &args.gpu)?;
    let target = match (args.class, args.top_k) {
        (Some(c), _) => Target::Class(c),
        (None, Some(k)) => Target::TopK(k),
        (None, None) => Target::Predicted,
    };
    std::fs::create_dir_all(&args.out).map_err(|e| Error::io(&args.out, e))?;
    let info = RunInfo {
        config: model.config.clone(),
        adapter: engine.gpu().describe(),
        alpha: args.alpha,
        method: args.method,
    };
    eprintln!("{} images", paths.len());
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

pub fn predict(args: &PredictArgs) -> agcam::Result<bool> {
    let paths = collect_images(&inputs_or_samples(&args.images))?;
    let (model, mut engine) = load_and_upload(&args.model, &args.gpu)?;
    let mut failed = 0usize;
    let capacity = engine.capacity();
    for_each_prepared_chunk(
        &paths,
        |p| p.as_path(),
        &model.config,
        capacity,
        |_, prepared| {
            let mut ok = Vec::new();
            let mut inputs = Vec::new();
            for p in prepared {
                match p {
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
                return Ok(());
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
            Ok(())
        },
    )?;
    Ok(failed == 0)
}

/// Reads the checkpoint and uploads it, saying how long each took (model load time is what
/// users of large checkpoints wait for first).
fn load_and_upload(model: &ModelArgs, gpu: &GpuArgs) -> agcam::Result<(Model, Engine)> {
    let start = Instant::now();
    let loaded = model.load()?;
    let read = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let engine = gpu.engine(&loaded)?;
    eprintln!(
        "model {}: read in {read:.2} s, on {} in {:.2} s",
        loaded.config.name,
        engine.gpu().describe(),
        start.elapsed().as_secs_f64()
    );
    Ok((loaded, engine))
}
