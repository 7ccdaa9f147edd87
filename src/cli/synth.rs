//! `agcam synth`.

use std::path::PathBuf;

use agcam::synth::{generate, Layout, SynthOptions, DEFAULT_SCALE};
use clap::Args;

use super::{progress, tick};

#[derive(Args)]
pub struct SynthArgs {
    /// Dataset root (created if missing; must be empty unless --replace).
    #[arg(long)]
    pub out: PathBuf,
    /// Write into a non-empty folder, deleting the pictures, annotations and label files of a
    /// previous set there first (other files are kept).
    #[arg(long)]
    pub replace: bool,
    /// Number of pictures.
    #[arg(long, default_value_t = 1000, value_parser = super::positive)]
    pub count: usize,
    /// Seed; the same seed gives byte-identical files.
    #[arg(long, default_value_t = 0, value_parser = seed)]
    pub seed: u64,
    /// Folder layout: `voc` or `imagenet`.
    #[arg(long, default_value = "voc")]
    pub layout: Layout,
    /// Smallest picture side in pixels, 32 to 4096.
    #[arg(long, default_value_t = 160, value_parser = side)]
    pub min_size: u32,
    /// Largest picture side in pixels, --min-size to 4096.
    #[arg(long, default_value_t = 400, value_parser = side)]
    pub max_size: u32,
    /// Share of pictures with a distractor object, in [0, 1].
    #[arg(long, default_value_t = 0.3)]
    pub distractor_share: f64,
    /// Smallest target size, as a fraction of the shorter picture side (0.05 to 0.9).
    #[arg(long, default_value_t = DEFAULT_SCALE.0)]
    pub scale_min: f64,
    /// Largest target size, as a fraction of the shorter picture side (--scale-min to 0.9).
    #[arg(long, default_value_t = DEFAULT_SCALE.1)]
    pub scale_max: f64,
    /// Clutter density, 0 (none) to 10.
    #[arg(long, default_value_t = 1.0)]
    pub clutter: f64,
    /// Worker threads (0 = one per core); does not change the output.
    #[arg(long, default_value_t = 0, value_parser = super::index)]
    pub threads: usize,
}

fn seed(s: &str) -> Result<u64, String> {
    super::whole_number(s, 0, u128::from(u64::MAX)).map(|v| v as u64)
}

fn side(s: &str) -> Result<u32, String> {
    super::whole_number(s, 1, u128::from(u32::MAX)).map(|v| v as u32)
}

pub fn synth(a: &SynthArgs) -> agcam::Result<bool> {
    let opts = SynthOptions {
        out: a.out.clone(),
        count: a.count,
        seed: a.seed,
        layout: a.layout,
        min_size: a.min_size,
        max_size: a.max_size,
        distractor_share: a.distractor_share,
        scale_min: a.scale_min,
        scale_max: a.scale_max,
        clutter: a.clutter,
        threads: a.threads,
        replace: a.replace,
    };
    opts.validate()?;
    let bar = progress(opts.count);
    let mut last = 0;
    let summary = generate(&opts, |done| tick(&bar, done, opts.count, &mut last))?;
    bar.finish_and_clear();
    println!("{summary}");
    Ok(true)
}
