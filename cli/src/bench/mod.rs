//! `segpool bench`: segpool side by side with its peers, in five sections, each measured by a
//! module of its own: `alloc` (ns per allocate+release pair against glibc, mimalloc, jemalloc,
//! mmap, and at large sizes lgalloc), `growth` (allocation cost as one class grows),
//! `serializer` (records per second of a serializer pipeline against `Vec<u8>` and lgalloc
//! buffers), `files` (file I/O against pread/pwrite, read() and memmap2, and a page cache over
//! direct I/O) and `memory` (resident memory after a release, each allocator in a child process).
//!
//! The sections measure into one [`Report`] (`report`), whose tables share one model and one
//! renderer (`table`), text for the terminal, Markdown for the docs; each section judges its own
//! claims (`claim`), which the report lists after the tables; `docs` writes the generated
//! docs and README table from a report, `plot` its SVG. This module reads the options, runs the
//! sections and writes what was asked for.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::Error;
use report::{Machine, Report};

mod alloc;
mod claim;
mod docs;
mod files;
mod growth;
pub mod memory;
mod plot;
mod report;
mod serializer;
mod table;

/// Options of `segpool bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Runs per cell; the table shows the median.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=99))]
    runs: u32,
    /// Milliseconds each cell is timed for, per run.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    run_ms: u64,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also write the table as Markdown to this file.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Also plot ns per pair by size class (log scale) to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Regenerate docs/benchmarks.md, docs/benchmarks.json, docs/bench-alloc.svg and the table in
    /// README.md (between its bench markers).
    #[arg(long)]
    update_docs: bool,
    /// The docs folder `--update-docs` writes to (default: the repository's docs/).
    #[arg(long, value_name = "DIR")]
    docs_dir: Option<PathBuf>,
    /// Run only one section: `alloc` (allocate+release pairs, with the growth rows), `growth`
    /// (the growth rows alone), `serializer` (records per second of a serializer pipeline),
    /// `files` (file I/O against pread/pwrite, read() and memmap2) or `memory`. All run by
    /// default; `--update-docs` needs all.
    #[arg(long, value_name = "SECTION", conflicts_with = "update_docs")]
    only: Option<Section>,
    /// Milliseconds each file I/O cell is timed for, per run.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    files_run_ms: u64,
    /// Length of the file the file I/O section reads and writes (whole MiB, at least 2 MiB; a
    /// number with K, M, G or T: 256M, 1G).
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = crate::parse_size)]
    file_size: usize,
    /// Folder in which the file I/O section makes its temp folder (default: the current one).
    #[arg(long, value_name = "DIR", default_value = ".")]
    files_dir: PathBuf,
}

impl Args {
    /// Whether this run measures the C peers (the growth and serializer rows alone measure
    /// segpool against peers that need no C compiler).
    pub fn needs_peers(&self) -> bool {
        !matches!(self.only, Some(Section::Growth | Section::Serializer))
    }

    /// Fails on options that cannot work, before a minute of measuring, not after.
    fn check(&self, files: bool) -> Result<(), Error> {
        if self.only.is_some_and(|s| s != Section::Alloc) && self.plot.is_some() {
            return Err("--plot draws the allocator section: drop --only".into());
        }
        if files {
            if self.file_size % (1 << 20) != 0 || self.file_size < 2 << 20 {
                return Err(format!(
                    "--file-size {}: use whole MiB, at least 2M",
                    crate::bytes_text(self.file_size)
                )
                .into());
            }
            if !self.files_dir.is_dir() {
                return Err(
                    format!("--files-dir {}: not a folder", self.files_dir.display()).into(),
                );
            }
        }
        for p in [&self.json, &self.markdown, &self.plot]
            .into_iter()
            .flatten()
        {
            let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
            if dir.is_some_and(|d| !d.is_dir()) {
                return Err(
                    format!("cannot write {}: its folder does not exist", p.display()).into(),
                );
            }
        }
        Ok(())
    }
}

/// A section of `segpool bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    /// ns per allocate+release pair against glibc, mimalloc, jemalloc and mmap; large sizes
    /// against lgalloc, mimalloc and jemalloc.
    Alloc,
    /// ns per file operation against pread/pwrite, read() and memmap2.
    Files,
    /// Resident memory over time after 90% of 100 MiB of 4 KiB buffers is released, against
    /// glibc, mimalloc and jemalloc.
    Memory,
    /// ns per allocation while one class grows (part of `alloc`, alone).
    Growth,
    /// Records per second of a serializer pipeline, segpool's buffers against `Vec<u8>` (glibc)
    /// and lgalloc.
    Serializer,
}

/// Runs the benchmark and writes what `args` asks for.
pub fn run(args: Args) -> Result<(), Error> {
    let docs = args.docs_dir.clone().unwrap_or_else(docs::default_dir);
    if args.update_docs && !docs.is_dir() {
        return Err(format!("docs folder {} does not exist", docs.display()).into());
    }
    let readme = docs::readme_beside(&docs);
    if args.update_docs {
        if let Some(r) = &readme {
            docs::check_readme(r)?;
        }
    }
    let (alloc, files, memory) = match args.only {
        None => (true, true, true),
        Some(Section::Alloc) => (true, false, false),
        Some(Section::Files) => (false, true, false),
        Some(Section::Memory) => (false, false, true),
        Some(Section::Growth | Section::Serializer) => (false, false, false),
    };
    let serializer = args.only.is_none() || args.only == Some(Section::Serializer);
    let growth = alloc || args.only == Some(Section::Growth);
    args.check(files)?;
    let machine = Machine::this();
    println!("machine: {}\n", machine.text());

    let started = Instant::now();
    let per_cell = Duration::from_millis(args.run_ms);
    let (rows, large_rows) = if alloc {
        (
            alloc::measure(args.runs, per_cell)?,
            alloc::measure_large(args.runs, per_cell)?,
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let growth_points = if growth {
        growth::measure()?
    } else {
        Vec::new()
    };
    let serializer_rows = if serializer {
        serializer::measure(args.runs, per_cell * serializer::CELL_RUN_MS_FACTOR)?
    } else {
        Vec::new()
    };
    let files_report = if files {
        Some(files::measure(
            &args.files_dir,
            args.file_size as u64,
            args.runs,
            Duration::from_millis(args.files_run_ms),
        )?)
    } else {
        None
    };
    let above_largest_calls = if alloc {
        Some(alloc::count_above_largest()?)
    } else {
        None
    };
    let mut claims = Vec::new();
    if alloc {
        claims = alloc::claims(&rows, above_largest_calls.as_ref());
        claims.extend(alloc::large_claims(&large_rows));
    }
    if growth {
        claims.push(growth::claim(&growth_points));
    }
    if serializer {
        claims.extend(serializer::claims(&serializer_rows));
    }
    let report = Report {
        machine,
        command: report::command_line(),
        runs: args.runs,
        run_ms: args.run_ms,
        pc_pairs_per_run: alloc::PC_PAIRS,
        channel_bound: alloc::CHANNEL_BOUND_TEXT.to_string(),
        seconds: started.elapsed().as_secs_f64(),
        allocators: alloc::COLUMNS.iter().map(|s| s.to_string()).collect(),
        rows,
        large_rows,
        growth: growth_points,
        serializer: serializer_rows,
        above_largest_calls,
        claims,
        files: files_report,
    };
    print!("{}", report::text(&report));
    if memory {
        if alloc || files {
            println!();
        }
        memory::run()?;
    }
    println!("measured in {:.1} s", started.elapsed().as_secs_f64());

    if let Some(p) = &args.json {
        write(p, &serde_json::to_string_pretty(&report)?)?;
    }
    if let Some(p) = &args.markdown {
        write(p, &report::markdown(&report))?;
    }
    if let Some(p) = &args.plot {
        plot::svg(&report, p)?;
    }
    if args.update_docs {
        docs::write_all(&report, &docs, readme.as_deref())?;
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()).into())
}
