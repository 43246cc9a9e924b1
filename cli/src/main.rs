//! `segpool`: the project's command. `segpool bench` compares segpool with glibc, mimalloc and
//! jemalloc side by side.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod peers;
mod plot;

#[derive(Debug, Parser)]
#[command(
    name = "segpool",
    version,
    about = "Off-heap segment pools: benchmarks and tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// ns per allocate+release pair for segpool and its peers, side by side (under a minute).
    Bench(bench::Args),
}

fn main() -> ExitCode {
    // A bug must still end in one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("segpool: internal error: {info}");
    }));
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("segpool: error: {e}");
            ExitCode::FAILURE
        }
    }
}
