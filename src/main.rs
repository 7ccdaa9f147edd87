//! The `agcam` command line: parses arguments, calls the library, prints. The subcommands live
//! in src/cli/.

mod cli;

use std::process::ExitCode;

use agcam::gpu::list_adapters;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

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

/// Lets every option value start with `-` when it is a number, so that `--class -1` reaches the
/// value's parser and gets a range error, instead of clap's "unexpected argument '-1'".
fn negative_numbers_as_values(command: clap::Command) -> clap::Command {
    command
        .mut_args(|arg| {
            if arg.get_action().takes_values() {
                arg.allow_negative_numbers(true)
            } else {
                arg
            }
        })
        .mut_subcommands(negative_numbers_as_values)
}

/// Points `XDG_RUNTIME_DIR` at a private folder when it is unset or not a folder: Mesa's EGL
/// (probed for the OpenGL adapter) otherwise prints "error: XDG_RUNTIME_DIR is invalid or not
/// set in the environment." on every run, which reads as if agcam had failed. Called first in
/// `main`, before any thread exists, as changing the environment requires.
fn ensure_runtime_dir() {
    let valid = std::env::var_os("XDG_RUNTIME_DIR")
        .map(std::path::PathBuf::from)
        .is_some_and(|d| d.is_absolute() && d.is_dir());
    if valid {
        return;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        // One folder per user, as XDG asks: owned by the user, mode 0700.
        let uid = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
        let dir = std::env::temp_dir().join(format!("agcam-runtime-{uid}"));
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
        let ours = std::fs::symlink_metadata(&dir)
            .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.permissions().mode() & 0o077 == 0);
        if ours {
            std::env::set_var("XDG_RUNTIME_DIR", &dir);
        }
    }
}

fn main() -> ExitCode {
    ensure_runtime_dir();
    let matches = negative_numbers_as_values(Cli::command()).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
