//! `agcam eval localization|perturbation`: the paper's evaluation protocols (method.md §4) on a
//! dataset folder. Parses, calls `agcam::eval`, prints; the protocols live in the library.

use std::path::{Path, PathBuf};

use agcam::eval::{
    prepare_report_dir, run_localization, run_perturbation, write_report, Counts, Dataset,
    LocalizationOptions, PerturbationOptions, Runs, Status, Ties,
};
use agcam::{Error, Method};
use clap::{Args, Subcommand, ValueEnum};

use super::{progress, tick, GpuArgs, ModelArgs};

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
    /// How maps are computed; several methods (comma-separated, or --method repeated) are run
    /// one after the other on the same images, e.g. to compare them in one --report.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Method::Agcam])]
    method: Vec<Method>,
    /// Evaluate only the first N images (in id order), after --skip; at least 1.
    #[arg(long, value_parser = super::positive)]
    limit: Option<usize>,
    /// Leave out the first N images (in id order) before --limit applies: `--skip 500 --limit
    /// 250` evaluates images 500 to 749, one shard of a run split over several processes or
    /// machines (each report lists its images by id).
    #[arg(long, value_parser = super::index, default_value_t = 0)]
    skip: usize,
    /// Write the full report, with one row per image, to this JSON file (an array of reports,
    /// one per method, when several methods are run).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an HTML page to look at, DIR/index.html (self-contained: opens from disk): the
    /// summary per method, plots, per-image distributions, means by class, target size and
    /// distractor, and the worst, median and best overlays per method.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
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
    /// Order of pixels of equal heatmap value: `stable` removes the lower pixel index
    /// (row-major) first in MoRF and LeRF alike; `random` draws a pseudo-random order per image
    /// from --seed and the image id (reproducible; the same order for MoRF and LeRF).
    #[arg(long, value_enum, default_value_t = TieArg::Stable)]
    ties: TieArg,
    /// Seed of `--ties random` (default 0); meaningless with `--ties stable`, so refused there.
    #[arg(long)]
    seed: Option<u64>,
}

/// Most `--steps` of `eval perturbation`: every 1 % of the pixels. Memory grows with the steps
/// (2000 steps took 2.5 GB for one picture).
const MAX_PERTURBATION_STEPS: u128 = 101;

fn perturbation_steps(s: &str) -> Result<usize, String> {
    super::whole_number(s, 2, MAX_PERTURBATION_STEPS).map(|v| v as usize)
}

/// `--ties`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TieArg {
    Stable,
    Random,
}

/// Opens the model, the dataset and the engine, and says what was found.
fn open(args: &DataArgs) -> agcam::Result<(agcam::Engine, Dataset)> {
    if let Some(m) = args
        .method
        .iter()
        .enumerate()
        .find_map(|(i, m)| args.method[..i].contains(m).then_some(m))
    {
        return Err(Error::Invalid(format!(
            "--method {} is given twice",
            m.name()
        )));
    }
    // Before any work: a run that cannot write its outputs should not start.
    if let Some(path) = &args.json {
        agcam::files::ensure_writable_file(path)?;
    }
    if let Some(dir) = &args.report {
        prepare_report_dir(dir)?;
    }
    let model = args.model.load()?;
    let mut dataset = Dataset::open(&args.data, model.config.labels.as_deref())?;
    eprintln!("{}", dataset.describe());
    for w in dataset.skipped.warnings() {
        eprintln!("warning: {w}");
    }
    if args.skip > 0 {
        let usable = dataset.samples.len();
        if args.skip >= usable {
            return Err(Error::Invalid(format!(
                "--skip {} leaves no image: the data set has {usable} usable images",
                args.skip
            )));
        }
        dataset.skip(args.skip);
    }
    if let Some(n) = args.limit {
        dataset.truncate(n);
    }
    let engine = args.gpu.engine(&model)?;
    eprintln!(
        "model {}, method {}, on {} ({} images per GPU chunk)",
        model.config.name,
        args.method
            .iter()
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join(", "),
        engine.gpu().describe(),
        engine.capacity()
    );
    Ok((engine, dataset))
}

/// Writes the reports of all methods: one report as an object (as with one method), several as
/// an array.
fn write_reports_json<T: serde::Serialize>(path: &Path, reports: &[T]) -> agcam::Result<()> {
    match reports {
        [one] => write_json(path, one),
        all => write_json(path, &all),
    }
}

/// Writes the HTML report of `runs` when --report was given.
fn write_page(args: &DataArgs, runs: Runs, dataset: &Dataset) -> agcam::Result<()> {
    if let Some(dir) = &args.report {
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        let page = write_report(dir, runs, dataset, &command)?;
        eprintln!("wrote {}", page.display());
    }
    Ok(())
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
    if c.non_finite > 0 {
        eprintln!(
            "error: the model gave NaN or infinite values for {} images (not scored): check the \
             weights and the normalisation (--mean, --std)",
            c.non_finite
        );
    }
}

/// Whether a run's counts make a successful exit: something was scored, and no picture was
/// unreadable or gave non-finite numbers (those are reported, skipped and exit with status 1,
/// as `agcam explain` does; images left out for missing annotations are not failures).
fn succeeded(c: &Counts) -> bool {
    c.scored > 0 && c.unreadable == 0 && c.non_finite == 0
}

/// Runs `work` with a progress callback that drives a bar over the dataset's images.
fn with_progress<T>(
    dataset: &Dataset,
    work: impl FnOnce(&mut dyn FnMut(usize, usize)) -> agcam::Result<T>,
) -> agcam::Result<T> {
    let bar = progress(dataset.samples.len());
    let mut last = 0;
    let result = work(&mut |done, total| tick(&bar, done, total, &mut last));
    bar.finish_and_clear();
    result
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
    let mut reports = Vec::with_capacity(a.method.len());
    for &method in &a.method {
        let report = with_progress(&dataset, |tick| {
            run_localization(&mut engine, &dataset, method, &options, tick)
        })?;
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
        reports.push(report);
    }
    if let Some(path) = &a.json {
        write_reports_json(path, &reports)?;
    }
    write_page(a, Runs::Localization(&reports), &dataset)?;
    Ok(reports.iter().all(|r| succeeded(&r.counts)))
}

fn perturbation(args: &PerturbationArgs) -> agcam::Result<bool> {
    let a = &args.common;
    let options = PerturbationOptions {
        steps: args.steps,
        limit: a.limit,
        ties: match (args.ties, args.seed) {
            (TieArg::Stable, None) => Ties::Stable,
            (TieArg::Stable, Some(_)) => {
                return Err(Error::Invalid(
                    "--seed sets the order of --ties random; add --ties random".into(),
                ))
            }
            (TieArg::Random, seed) => Ties::Random {
                seed: seed.unwrap_or(0),
            },
        },
    };
    let (mut engine, dataset) = open(a)?;
    let mut reports = Vec::with_capacity(a.method.len());
    for &method in &a.method {
        let report = with_progress(&dataset, |tick| {
            run_perturbation(&mut engine, &dataset, method, &options, tick)
        })?;
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
            "  {} of {scored} scored images are classified correctly (misclassified images are \
             kept in this protocol)",
            report.correctly_classified
        );
        print_notes(&report.notes);
        reports.push(report);
    }
    if let Some(path) = &a.json {
        write_reports_json(path, &reports)?;
    }
    write_page(a, Runs::Perturbation(&reports), &dataset)?;
    Ok(reports.iter().all(|r| succeeded(&r.counts)))
}

/// Runs one `agcam eval` command.
pub fn run(command: &EvalCommand) -> agcam::Result<bool> {
    match command {
        EvalCommand::Localization(args) => localization(args),
        EvalCommand::Perturbation(args) => perturbation(args),
    }
}
