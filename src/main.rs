use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "agcam", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// List the GPU adapters (the default when no command is given).
    Adapters,
    /// Generate a deterministic synthetic dataset of labelled pictures with exact boxes.
    Synth(SynthArgs),
}

#[derive(Args)]
struct SynthArgs {
    /// Dataset root (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Number of pictures.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Seed; the same seed gives byte-identical files.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Folder layout: `voc` or `imagenet`.
    #[arg(long, default_value = "voc")]
    layout: agcam::synth::Layout,
    /// Smallest picture side in pixels.
    #[arg(long, default_value_t = 160)]
    min_size: u32,
    /// Largest picture side in pixels.
    #[arg(long, default_value_t = 400)]
    max_size: u32,
    /// Share of pictures with a distractor object, in [0, 1].
    #[arg(long, default_value_t = 0.3)]
    distractor_share: f64,
    /// Smallest target size, as a fraction of the shorter picture side.
    #[arg(long, default_value_t = agcam::synth::DEFAULT_SCALE.0)]
    scale_min: f64,
    /// Largest target size, as a fraction of the shorter picture side.
    #[arg(long, default_value_t = agcam::synth::DEFAULT_SCALE.1)]
    scale_max: f64,
    /// Clutter density (1 = default, 0 = none).
    #[arg(long, default_value_t = 1.0)]
    clutter: f64,
    /// Worker threads (0 = one per core); does not change the output.
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

fn synth(a: SynthArgs) -> anyhow::Result<()> {
    let opts = agcam::synth::SynthOptions {
        out: a.out,
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
    };
    opts.validate()?;
    let bar = indicatif::ProgressBar::new(opts.count as u64);
    let summary = agcam::synth::generate(&opts, |done| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    println!("{summary}");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        None | Some(Command::Adapters) => {
            for a in agcam::gpu::list_adapters(None) {
                println!("{a}");
            }
        }
        Some(Command::Synth(a)) => synth(a)?,
    }
    Ok(())
}
