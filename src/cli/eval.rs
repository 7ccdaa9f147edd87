//! `agcam eval localization|perturbation`: the paper's evaluation protocols (method.md §4) on a
//! dataset folder. Parses, calls `agcam::eval`, prints; the protocols live in the library.

use std::path::{Path, PathBuf};

use agcam::eval::{
    run_localization, run_perturbation, Counts, Dataset, LocalizationOptions, PerturbationOptions,
    Status,
};
use agcam::{Error, Method};
use clap::{Args, Subcommand};
use indicatif::ProgressBar;

use super::{progress, GpuArgs, ModelArgs};

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Box localization, as in the AGCAM paper: boxes from the thresholded map of the predicted class
    /// against the ground-truth boxes, on correctly classified images. Prints pixel accuracy,
    /// IoU, Dice, precision and recall.
    Localization(LocalizationArgs),
    /// Pixel perturbation, as in the AGCAM paper: the ground-truth class's probability as the most (MoRF)
    /// or least (LeRF) relevant pixels are removed. Prints the AUCs, ABPC and the mean curves.
    Perturbation(PerturbationArgs),
}

#[derive(Args)]
pub struct DataArgs {
    /// Dataset folder: Pascal VOC (JPEGImages/, Annotations/, labels.txt) or ImageNet
    /// validation (Annotations/CLS-LOC/val/, Data/CLS-LOC/val/ flat or in class folders,
    /// LOC_synset_mapping.txt); detected automatically.
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    gpu: GpuArgs,
    /// How maps are computed.
    #[arg(long, value_enum, default_value_t = Method::Agcam)]
    method: Method,
    /// Evaluate only the first N images (in id order).
    #[arg(long, value_parser = super::index)]
    limit: Option<usize>,
    /// Write the full report, with one row per image, to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
pub struct LocalizationArgs {
    #[command(flatten)]
    common: DataArgs,
    /// Mask = normalised map value > threshold, in [0, 1].
    #[arg(long, default_value_t = 0.5, value_parser = super::unit_interval)]
    threshold: f32,
}

#[derive(Args)]
pub struct PerturbationArgs {
    #[command(flatten)]
    common: DataArgs,
    /// Fractions of pixels removed, evenly from 0 to 1 inclusive (11: 0.0, 0.1, …, 1.0); 2 to
    /// 101 (each step holds a perturbed copy of the picture per image).
    #[arg(long, default_value_t = 11, value_parser = perturbation_steps)]
    steps: usize,
}

/// Most `--steps` of `eval perturbation`: every 1 % of the pixels. Memory grows with the steps
/// (2000 steps took 2.5 GB for one picture).
const MAX_PERTURBATION_STEPS: u128 = 101;

fn perturbation_steps(s: &str) -> Result<usize, String> {
    super::whole_number(s, 2, MAX_PERTURBATION_STEPS).map(|v| v as usize)
}

/// Opens the model, the dataset and the engine, and says what was found.
fn open(args: &DataArgs) -> agcam::Result<(agcam::Engine, Dataset)> {
    // Before any work: a run that cannot write its report should not start.
    if let Some(path) = &args.json {
        agcam::files::check_writable_file(path)?;
    }
    let model = args.model.load()?;
    let mut dataset = Dataset::open(&args.data, model.config.labels.as_deref())?;
    eprintln!("{}", dataset.describe());
    for w in dataset.skipped.warnings() {
        eprintln!("warning: {w}");
    }
    if let Some(n) = args.limit {
        dataset.truncate(n);
    }
    let engine = args.gpu.engine(&model)?;
    eprintln!(
        "model {}, method {}, on {} ({} images per GPU chunk)",
        model.config.name,
        args.method.name(),
        engine.gpu().describe(),
        engine.capacity()
    );
    Ok((engine, dataset))
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> agcam::Result<()> {
    let mut set = agcam::files::AtomicSet::new();
    set.write_with(path, |w| {
        serde_json::to_writer_pretty(w, value).map_err(|e| Error::io(path, e.into()))
    })?;
    set.commit()?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn print_counts(c: &Counts, dataset: &Dataset, what_misclassified: bool) {
    let s = &dataset.skipped;
    let mut parts = Vec::new();
    for (n, what) in [
        (s.images_without_annotation.len(), "without annotation"),
        (
            s.annotations_without_image.len(),
            "annotations without image",
        ),
        (s.duplicate_images.len(), "duplicate ids"),
        (s.without_objects.len(), "without objects"),
        (s.unknown_class.len(), "unknown class"),
        (c.unreadable, "unreadable"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    let detail = if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    };
    let misclassified = if what_misclassified {
        format!(", {} skipped as misclassified", c.misclassified)
    } else {
        String::new()
    };
    println!(
        "images: {} total, {} scored{misclassified}, {} skipped for missing data{detail}",
        c.total, c.scored, c.missing_data
    );
}

/// Moves the bar; when it is hidden (stderr is not a terminal), prints a line every 10 %.
fn tick(bar: &ProgressBar, done: usize, total: usize, last: &mut usize) {
    bar.set_position(done as u64);
    if bar.is_hidden() && total > 0 && (done * 10 / total > *last * 10 / total || done == total) {
        eprintln!("{done}/{total} images");
    }
    *last = done;
}

fn print_notes(notes: &[String]) {
    for n in notes {
        if n.starts_with("warning:") {
            println!("{n}");
        } else {
            println!("note: {n}");
        }
    }
}

fn print_errors<'a>(errors: impl Iterator<Item = &'a String>) {
    for e in errors.take(5) {
        eprintln!("error: {e}");
    }
}

fn localization(args: &LocalizationArgs) -> agcam::Result<bool> {
    let a = &args.common;
    let (mut engine, dataset) = open(a)?;
    let options = LocalizationOptions {
        threshold: args.threshold,
        limit: a.limit,
    };
    let bar = progress(dataset.samples.len());
    let mut last = 0;
    let report = run_localization(&mut engine, &dataset, a.method, &options, |done, total| {
        tick(&bar, done, total, &mut last)
    })?;
    bar.finish_and_clear();
    print_errors(report.images.iter().filter_map(|r| r.error.as_ref()));
    println!(
        "localization: {} maps, threshold {}, {}×{} masks",
        report.method.name(),
        report.threshold,
        report.mask_size.0,
        report.mask_size.1
    );
    if let Some(m) = &report.mean {
        println!("  {:<10} {:>8}", "metric", "mean");
        for (name, v) in [
            ("accuracy", m.accuracy),
            ("IoU", m.iou),
            ("Dice", m.dice),
            ("precision", m.precision),
            ("recall", m.recall),
        ] {
            println!("  {name:<10} {v:>8.4}");
        }
    } else {
        println!("  no image was scored");
    }
    print_counts(&report.counts, &dataset, true);
    print_notes(&report.notes);
    if let Some(path) = &a.json {
        write_json(path, &report)?;
    }
    Ok(report.counts.scored > 0)
}

fn perturbation(args: &PerturbationArgs) -> agcam::Result<bool> {
    let a = &args.common;
    let (mut engine, dataset) = open(a)?;
    let options = PerturbationOptions {
        steps: args.steps,
        limit: a.limit,
    };
    let bar = progress(dataset.samples.len());
    let mut last = 0;
    let report = run_perturbation(&mut engine, &dataset, a.method, &options, |done, total| {
        tick(&bar, done, total, &mut last)
    })?;
    bar.finish_and_clear();
    print_errors(report.images.iter().filter_map(|r| r.error.as_ref()));
    println!(
        "perturbation: {} maps of the ground-truth class, {} steps, {}×{} heatmaps",
        report.method.name(),
        report.fractions.len(),
        report.heatmap_size.0,
        report.heatmap_size.1
    );
    match (report.morf_auc, report.lerf_auc, report.abpc) {
        (Some(morf), Some(lerf), Some(abpc)) => {
            println!("  MoRF AUC {morf:.4}  (lower is more faithful)");
            println!("  LeRF AUC {lerf:.4}  (higher is more faithful)");
            println!("  ABPC     {abpc:.4}  (LeRF − MoRF; higher is more faithful)");
            println!("  {:>6} {:>8} {:>8} {:>8}", "p", "removed", "MoRF", "LeRF");
            for i in 0..report.fractions.len() {
                println!(
                    "  {:>6.3} {:>8} {:>8.4} {:>8.4}",
                    report.fractions[i],
                    report.removed_pixels[i],
                    report.morf_curve[i],
                    report.lerf_curve[i]
                );
            }
        }
        _ => println!("  no image was scored"),
    }
    print_counts(&report.counts, &dataset, false);
    let scored = report
        .images
        .iter()
        .filter(|r| r.status == Status::Scored)
        .count();
    println!(
        "  {} of {scored} scored images are classified correctly (misclassified images are kept \
         in this protocol)",
        report.correctly_classified
    );
    print_notes(&report.notes);
    if let Some(path) = &a.json {
        write_json(path, &report)?;
    }
    Ok(report.counts.scored > 0)
}

/// Runs one `agcam eval` command.
pub fn run(command: &EvalCommand) -> agcam::Result<bool> {
    match command {
        EvalCommand::Localization(args) => localization(args),
        EvalCommand::Perturbation(args) => perturbation(args),
    }
}
