//! What one `segpool bench` produced, as it is saved (`--json`, docs/benchmarks.json) and read
//! back: the machine and command, every section's rows, and the claims judged on them; and the
//! report rendered for the terminal and as Markdown (`--markdown`).

use serde::{Deserialize, Serialize};

use super::alloc::{self, CallsPerPair, Row};
use super::claim::{claim_lines, Claim};
use super::files::FileReport;
use super::growth::{self, GrowthPoint};
use super::serializer::{self, SerializerRow};

/// Everything one `segpool bench` produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub machine: Machine,
    pub command: String,
    pub runs: u32,
    pub run_ms: u64,
    /// Back-to-back (segpool, channel) pairs per run in each producer/consumer row, each cell
    /// timed for `run_ms / 2`.
    #[serde(default)]
    pub pc_pairs_per_run: u32,
    /// Capacity of the producer/consumer channel.
    pub channel_bound: String,
    pub seconds: f64,
    /// Allocator names in column order.
    pub allocators: Vec<String>,
    pub rows: Vec<Row>,
    /// The large section: segpool against lgalloc, mimalloc and jemalloc at large sizes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub large_rows: Vec<Row>,
    /// The growth rows: (regions when the window started, ns per allocation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub growth: Vec<GrowthPoint>,
    /// The serializer rows: records per second with segpool's buffers and its peers'.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub serializer: Vec<SerializerRow>,
    /// Memory-mapping system calls per allocate+release pair above the largest class, counted
    /// by `segpool::diagnostics::mapping_calls` over a loop of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above_largest_calls: Option<CallsPerPair>,
    /// The allocator, growth and serializer claims.
    #[serde(alias = "targets")]
    pub claims: Vec<Claim>,
    /// The file I/O section, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<FileReport>,
}

/// Where the numbers were measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cpus: usize,
    pub kernel: String,
    pub transparent_hugepage: String,
}

impl Machine {
    /// This machine, from /proc and /sys.
    pub fn this() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        Machine {
            cpu,
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel,
            transparent_hugepage: thp,
        }
    }

    /// "AMD EPYC (2 CPUs), Linux 6.1.0, transparent huge pages: always [madvise] never": the
    /// line the terminal output starts with, so that every claim under it names its machine.
    pub fn text(&self) -> String {
        format!(
            "{} ({} CPUs), Linux {}, transparent huge pages: {}",
            self.cpu, self.cpus, self.kernel, self.transparent_hugepage
        )
    }
}

/// The command that reproduces this run, as the docs show it.
pub fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let features = if crate::peers::C_PEERS {
        " --features peers"
    } else {
        ""
    };
    format!("cargo run --release{features} -- {}", args.join(" "))
}

/// The report's sections as the terminal shows them (the memory section, which is not saved,
/// prints itself after them): each section's tables, then its claims; an empty line between
/// sections.
pub fn text(r: &Report) -> String {
    let mut sections = Vec::new();
    let mut tables = Vec::new();
    if !r.rows.is_empty() {
        tables.push(alloc::text(r.runs, &r.rows, &r.large_rows));
    }
    if !r.growth.is_empty() {
        tables.push(growth::text(&r.growth));
    }
    if !r.serializer.is_empty() {
        tables.push(serializer::text(&r.serializer));
    }
    if !tables.is_empty() {
        sections.push(format!("{}\n{}", tables.join("\n"), claim_lines(&r.claims)));
    }
    if let Some(f) = &r.files {
        sections.push(format!("{}\n{}", f.text(), claim_lines(&f.claims)));
    }
    sections.join("\n")
}

/// The tables as Markdown (`--markdown`): the allocator tables, the serializer table and the
/// file table.
pub fn markdown(r: &Report) -> String {
    let mut parts = Vec::new();
    if !r.rows.is_empty() {
        parts.push(format!(
            "{}\n{}",
            alloc::table(&r.rows).markdown(),
            alloc::large_table(&r.large_rows).markdown()
        ));
    }
    if !r.serializer.is_empty() {
        parts.push(serializer::table(&r.serializer).markdown());
    }
    if let Some(f) = &r.files {
        parts.push(f.markdown());
    }
    parts.join("\n")
}
