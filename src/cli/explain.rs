//! `agcam explain` and `agcam predict`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use agcam::image::Orientation;
use agcam::model::{Model, ModelConfig};
use agcam::output::{class_suffixes, is_written_overlay, write_image, RunInfo, Stems};
use agcam::pipeline::{
    explain_files_with, find_images, for_each_prepared_chunk_with, non_finite, FileRunOptions,
    Outcome, ReadOptions, ORIGINALS_PER_CHUNK_BYTES,
};
use agcam::{Engine, Method, Target};
use clap::Args;

use super::{
    class_name, index, inputs_or_samples, progress, say, unit_interval, GpuArgs, ModelArgs,
};

#[derive(Args)]
pub struct ExplainArgs {
    /// Image files or folders (searched recursively). Default: the bundled samples.
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub gpu: GpuArgs,
    /// Explain this class index (0 to the number of classes - 1) for every image (default: the
    /// predicted class).
    #[arg(long, conflicts_with = "top_k", value_parser = index)]
    pub class: Option<usize>,
    /// Explain the K best classes of each image (1 to the number of classes); files get a
    /// `_c<class>` suffix when K > 1.
    #[arg(long, value_parser = index)]
    pub top_k: Option<usize>,
    /// How maps are computed: AGCAM, a class-specific method it is compared with (Grad-CAM on
    /// the last block's norm1, generic attention, transformer attribution; class-token pooling
    /// only, docs/method.md §6), or a class-agnostic baseline.
    #[arg(long, value_enum, default_value_t = Method::Agcam)]
    pub method: Method,
    /// Output folder.
    #[arg(long, short = 'o', default_value = "agcam-out")]
    pub out: PathBuf,
    /// Heatmap opacity in the overlay, 0..1.
    #[arg(long, default_value_t = agcam::image::DEFAULT_OVERLAY_ALPHA, value_parser = unit_interval)]
    pub alpha: f32,
    /// Ignore the EXIF orientation of photos (explain the stored pixels, as a PIL pipeline
    /// without `ImageOps.exif_transpose` does); by default it is applied, as image viewers do.
    #[arg(long)]
    pub ignore_orientation: bool,
}

#[derive(Args)]
pub struct PredictArgs {
    /// Image files or folders (searched recursively). Default: the bundled samples.
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub gpu: GpuArgs,
    /// Ignore the EXIF orientation of photos (see `agcam explain --help`).
    #[arg(long)]
    pub ignore_orientation: bool,
}

fn orientation(ignore: bool) -> Orientation {
    if ignore {
        Orientation::Ignore
    } else {
        Orientation::Apply
    }
}

/// Stops the run cleanly on SIGINT or SIGTERM: the first signal sets the returned flag (the
/// image being written is finished, nothing further is started); a second one exits at once.
fn stop_on_signals() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // The shutdown goes first, so that it only fires once the flag is already set.
        // Registration fails only for forbidden signals, which these are not.
        let _ = signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop));
        let _ = signal_hook::flag::register(signal, Arc::clone(&stop));
    }
    stop
}

/// The pictures named or found in the folders of `images` (the bundled samples when none),
/// with a note for each thing passed over. Overlays an earlier `agcam explain` wrote are passed
/// over inside folders (one note for all of them), so that an output folder inside an input
/// folder, or equal to it, does not turn a run's overlays into the next run's inputs; a file
/// named on the command line is always taken.
fn input_pictures(images: &[PathBuf]) -> agcam::Result<Vec<PathBuf>> {
    let inputs = inputs_or_samples(images);
    let found = find_images(&inputs)?;
    for line in &found.skipped {
        eprintln!("note: {line}");
    }
    let named: Vec<&PathBuf> = inputs.iter().filter(|p| !p.is_dir()).collect();
    let (overlays, pictures): (Vec<PathBuf>, Vec<PathBuf>) = found
        .images
        .into_iter()
        .partition(|p| !named.contains(&p) && is_written_overlay(p));
    if let Some(first) = overlays.first() {
        eprintln!(
            "note: passed over {} overlays an earlier `agcam explain` wrote (e.g. {}, beside its \
             .json record); name one on the command line to explain it",
            overlays.len(),
            first.display()
        );
    }
    if pictures.is_empty() {
        return Err(agcam::Error::Invalid(
            "no pictures to explain: the folders hold only overlays an earlier `agcam explain` \
             wrote"
                .into(),
        ));
    }
    Ok(pictures)
}

pub fn explain(args: &ExplainArgs) -> agcam::Result<bool> {
    let paths = input_pictures(&args.images)?;
    // Before any work: a run that cannot write its results should not start.
    agcam::files::ensure_writable_dir(&args.out)?;
    let target = match (args.class, args.top_k) {
        (Some(c), _) => Target::Class(c),
        (None, Some(k)) => Target::TopK(k),
        (None, None) => Target::Predicted,
    };
    let (model, mut engine) = load_and_upload(&args.model, &args.gpu, |config| {
        agcam::check_request(config, &target, args.method)
    })?;
    let info = RunInfo {
        config: model.config.clone(),
        adapter: engine.gpu().describe(),
        alpha: args.alpha,
        method: args.method,
    };
    eprintln!("{} images", paths.len());
    let suffixed = matches!(target, Target::TopK(k) if k > 1);
    let bar = progress(paths.len());
    let mut stems = Stems::plan(&paths, &args.out);
    let mut failed = 0usize;
    let mut written = 0usize;
    let mut write_error = None;
    let stop = stop_on_signals();
    let options = FileRunOptions {
        read: Some(ReadOptions {
            orientation: orientation(args.ignore_orientation),
            keep_original_bytes: Some(ORIGINALS_PER_CHUNK_BYTES / engine.capacity().max(1)),
        }),
        stop: Some(&stop),
    };
    explain_files_with(
        &mut engine,
        &paths,
        &target,
        args.method,
        &options,
        |outcome| {
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
                    if prepared.saturated_16bit {
                        say(&bar, saturation_note(&prepared.path, "explained"));
                    }
                    let suffixes = class_suffixes(&explanation, suffixed);
                    let stem = stems.stem_for(&prepared.path, &suffixes);
                    let natural = prepared.path.file_stem().map(|s| s.to_string_lossy());
                    if natural.as_deref() != Some(stem.as_str()) {
                        say(
                            &bar,
                            format!(
                                "note: {}: outputs named {stem} (the name is taken by another \
                                 input, or by a file in {} that agcam did not write)",
                                prepared.path.display(),
                                args.out.display()
                            ),
                        );
                    }
                    match write_image(
                        &args.out,
                        &stem,
                        suffixed,
                        &prepared,
                        &explanation,
                        &info,
                        gpu_ms,
                    ) {
                        Ok(files) => {
                            written += 1;
                            for (m, w) in explanation.maps.iter().zip(files) {
                                say(
                                    &bar,
                                    format!(
                                        "{}: predicted {}, explained {} -> {}",
                                        prepared.path.display(),
                                        class_name(&model, explanation.predicted()),
                                        class_name(&model, m.class),
                                        w.overlay.display()
                                    ),
                                );
                            }
                        }
                        Err(e) => {
                            failed += 1;
                            say(&bar, format!("error: {e}"));
                            write_error.get_or_insert(e);
                        }
                    }
                }
            }
        },
    )?;
    bar.finish_and_clear();
    if stop.load(Ordering::SeqCst) {
        eprintln!(
            "interrupted: {written} of {} images written to {} (each one complete); run again \
             to do the rest",
            paths.len(),
            args.out.display()
        );
        std::process::exit(130);
    }
    if let Some(e) = write_error {
        return Err(e);
    }
    if failed > 0 {
        eprintln!("{failed} of {} images could not be explained", paths.len());
    }
    eprintln!("wrote {}", args.out.display());
    Ok(failed == 0)
}

/// Says that the 16-bit grayscale picture at `path` saturated (what a user should know about
/// a picture that is `done`, e.g. "explained").
fn saturation_note(path: &std::path::Path, done: &str) -> String {
    format!(
        "note: {}: a 16-bit grayscale picture with values above 255; they saturate to white as \
         in PIL's convert(\"RGB\"), so a mostly white picture is {done} (convert it to 8 bits \
         first)",
        path.display()
    )
}

pub fn predict(args: &PredictArgs) -> agcam::Result<bool> {
    let paths = input_pictures(&args.images)?;
    let (model, mut engine) = load_and_upload(&args.model, &args.gpu, |_| Ok(()))?;
    let mut failed = 0usize;
    let capacity = engine.capacity();
    let read = ReadOptions {
        orientation: orientation(args.ignore_orientation),
        // Predictions need no full-size picture.
        keep_original_bytes: Some(0),
    };
    for_each_prepared_chunk_with(
        &paths,
        |p| p.as_path(),
        &model.config,
        capacity,
        &read,
        None,
        |_, prepared| {
            let mut ok = Vec::new();
            let mut inputs = Vec::new();
            for p in prepared {
                match p {
                    Ok(p) => {
                        inputs.extend_from_slice(&p.input);
                        if p.saturated_16bit {
                            eprintln!("{}", saturation_note(&p.path, "classified"));
                        }
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
                let check = agcam::explain::Explanation {
                    logits,
                    maps: Vec::new(),
                };
                if let Some(why) = non_finite(&check) {
                    failed += 1;
                    eprintln!("error: {}: {why}", path.display());
                    continue;
                }
                let logits = check.logits;
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

/// Reads the checkpoint, refuses what `check` refuses for its config, then uploads it, saying
/// how long each step took (model load time is what users of large checkpoints wait for
/// first, so a request the model cannot serve is refused before the upload).
fn load_and_upload(
    model: &ModelArgs,
    gpu: &GpuArgs,
    check: impl FnOnce(&ModelConfig) -> agcam::Result<()>,
) -> agcam::Result<(Model, Engine)> {
    let start = Instant::now();
    let loaded = model.load()?;
    let read = start.elapsed().as_secs_f64();
    check(&loaded.config)?;
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
