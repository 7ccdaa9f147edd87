//! The `agcam` command line: parses arguments, calls the library, prints. The subcommands live
//! in src/cli/.

mod cli;

use std::process::ExitCode;

use agcam::gpu::list_adapters;
use clap::{Parser, Subcommand};

use cli::bench::{BenchArgs, ProfileArgs};
use cli::explain::{ExplainArgs, PredictArgs};
use cli::ModelArgs;

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
    Eval(cli::eval::EvalCommand),
    /// Write every shader variant the engine can build as complete WGSL files, with a manifest
    /// of the back ends that select each (for porting and profiling kernels).
    Shaders(cli::shaders::ShadersArgs),
    /// Generate a deterministic synthetic dataset of labelled pictures with exact boxes.
    Synth(cli::synth::SynthArgs),
}

fn run(cli: &Cli) -> agcam::Result<bool> {
    match &cli.command {
        Command::Bench(args) => cli::bench::bench(args),
        Command::Explain(args) => cli::explain::explain(args),
        Command::Predict(args) => cli::explain::predict(args),
        Command::Profile(args) => cli::bench::profile(args),
        Command::Eval(command) => cli::eval::run(command),
        Command::Synth(args) => cli::synth::synth(args),
        Command::Shaders(args) => cli::shaders::shaders(args),
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
