//! `segpool`: the project's command.
//!
//! * `segpool demo` (the default with no subcommand): a parallel serializer writing pooled 64 KiB
//!   segments to a mapped file under a memory budget, then verifying every record.
//! * `segpool stress`: allocate/write/verify/release from many threads under a tight budget, and
//!   optionally readers of mapped files that another thread truncates.
//! * `segpool bench`: segpool against glibc, mimalloc and jemalloc, side by side (time per pair,
//!   and resident memory after a release); and the file layer against pread/pwrite, read() and
//!   a raw memmap2 copy. Needs the `peers` feature, which builds mimalloc and jemalloc from C:
//!   `cargo run --release --features peers -- bench`.
//!
//! Every failure ends in one line on stderr and a non-zero exit, never a backtrace.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod demo;
mod peers;
mod stress;

#[derive(Debug, Parser)]
#[command(
    name = "segpool",
    version,
    about = "Off-heap segment pools: the parallel-serializer demo, a stress run, and benchmarks",
    long_about = "Off-heap segment pools: the parallel-serializer demo, a stress run, and \
                  benchmarks.\n\nWith no subcommand, runs `segpool demo` (its options may be \
                  given without the word `demo`).",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// The demo's options, for `segpool` with no subcommand.
    #[command(flatten)]
    demo: demo::Args,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parallel serializer: threads fill pooled 64 KiB segments under a budget, a writer appends
    /// them to a mapped file, then every record is read back and verified (the default).
    Demo(demo::Args),
    /// Allocate/write/verify/release from many threads with trims and a tight budget;
    /// `--faults` adds readers of mapped files that another thread truncates.
    Stress(stress::Args),
    /// ns per allocate+release pair for segpool and its peers, ns per file read/write against
    /// pread/pwrite, read() and memmap2, and resident memory over time after 90% of 100 MiB is
    /// released, side by side (about a minute; needs the `peers` feature:
    /// `cargo run --release --features peers -- bench`).
    Bench(bench::Args),
    /// One allocator's run of the memory section of `segpool bench` (it starts these itself).
    #[command(hide = true, name = "bench-memory-child")]
    BenchMemoryChild(bench::memory::ChildArgs),
}

/// What `segpool bench` says in a build without its C peers.
const NO_PEERS: &str = "segpool bench compares segpool with mimalloc and jemalloc, which are \
                        built from C and left out of this build: run it with the `peers` \
                        feature, `cargo run --release --features peers -- bench` (needs a C \
                        compiler and make)";

/// The error every subcommand returns: printed as one line.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    // A bug must still end in one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("segpool: internal error: {info}");
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let result = match cli.command {
        None => demo::run(cli.demo),
        Some(Command::Demo(args)) => demo::run(args),
        Some(Command::Stress(args)) => stress::run(args),
        Some(Command::Bench(args)) if !peers::C_PEERS && args.needs_peers() => Err(NO_PEERS.into()),
        Some(Command::Bench(args)) => bench::run(args),
        Some(Command::BenchMemoryChild(args)) => bench::memory::child(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("segpool: error: {}", one_line(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}

/// `--help` and `--version` print as clap renders them; a bad argument is one line (clap's
/// first line: what was wrong and with which option) and exit code 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let text = e.to_string();
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    eprintln!("segpool: error: {first} (see `segpool --help`)");
    ExitCode::from(2)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Parses a size in bytes: `65536`, `64K`, `64KiB`, `16M`, `1G`, `1.5G`, `1T` (powers of 1024,
/// case-insensitive, optional `B`/`iB`). Every size option's help names these units.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "'{s}' is not a size: use bytes or a number with K, M, G or T (e.g. 64M, 1G)"
            ))
        }
    };
    let value: f64 = num
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
        .ok_or_else(|| {
            format!("'{s}' is not a size: use bytes or a number with K, M, G or T (e.g. 64M, 1G)")
        })?;
    let bytes = value * (1u64 << shift) as f64;
    if bytes < 1.0 || bytes >= usize::MAX as f64 {
        return Err(format!("'{s}' is out of range: a size is at least 1 byte"));
    }
    Ok(bytes as usize)
}

/// Parses a seed: decimal, or hexadecimal with `0x` as the demo prints it (`0x5e69001`).
pub fn parse_seed(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
        None => t.parse::<u64>(),
    };
    parsed.map_err(|_| {
        format!("'{s}' is not a seed: give a number, decimal or hex with 0x (e.g. 0x5e69001)")
    })
}

/// Parses a thread count: 1 to 1024.
pub fn parse_threads(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("zero threads: at least 1 is needed".into()),
        Ok(n) if n <= 1024 => Ok(n),
        Ok(n) => Err(format!("{n} threads is more than the 1024 allowed")),
        Err(_) => Err(format!("'{s}' is not a number of threads")),
    }
}

/// A progress bar of `len` steps in the style of `template`, drawn only when stdout is a
/// terminal (piped output stays free of escape sequences).
pub fn progress_bar(len: u64, template: &str) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    use std::io::IsTerminal as _;
    let target = if std::io::stdout().is_terminal() {
        ProgressDrawTarget::stdout()
    } else {
        ProgressDrawTarget::hidden()
    };
    let pb = ProgressBar::with_draw_target(Some(len), target);
    pb.set_style(
        ProgressStyle::with_template(template)
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    pb
}

/// Human-readable bytes: `64.0 MiB`.
pub fn bytes_text(bytes: usize) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("16m"), Ok(16 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("-5M").is_err());
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
        assert!(parse_size("1P").is_err());
    }

    #[test]
    fn seeds() {
        assert_eq!(parse_seed("0x5e69001"), Ok(0x5E6_9001));
        assert_eq!(parse_seed("0X5E69001"), Ok(0x5E6_9001));
        assert_eq!(parse_seed("99000321"), Ok(99_000_321));
        assert_eq!(parse_seed("0xffffffffffffffff"), Ok(u64::MAX));
        assert!(parse_seed("0x").is_err());
        assert!(parse_seed("0x1g").is_err());
        assert!(parse_seed("-1").is_err());
        assert!(parse_seed("0x10000000000000000").is_err());
    }

    #[test]
    fn threads() {
        assert_eq!(parse_threads("4"), Ok(4));
        assert!(parse_threads("0").is_err());
        assert!(parse_threads("x").is_err());
        assert!(parse_threads("5000").is_err());
    }

    #[test]
    fn byte_text() {
        assert_eq!(bytes_text(512), "512 B");
        assert_eq!(bytes_text(64 << 20), "64.0 MiB");
    }
}
