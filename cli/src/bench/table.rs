//! The one table model of `segpool bench`: every section measures cells (one contender's runs
//! in one row) into [`Cells`], and lays its results out as a [`Table`], which renders as aligned
//! text for the terminal or as Markdown for the docs. The number formats every table shares are
//! here too.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// One contender's numbers in one row: an allocator in the allocator tables, a way of reading
/// the file in the file table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cell {
    /// The contender, as its column is headed.
    #[serde(alias = "allocator", alias = "contender")]
    pub name: String,
    /// Median of `runs_ns`.
    pub median_ns: f64,
    /// ns per operation of every cell timed, in order (one per run, unless the row says
    /// otherwise).
    pub runs_ns: Vec<f64>,
}

/// The cells of one row, one per contender, in the order they were first timed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cells(pub Vec<Cell>);

impl Cells {
    /// The median of `name`'s cell, if it was measured.
    pub fn ns(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|c| c.name == name).map(|c| c.median_ns)
    }

    /// Adds one timed cell of `name`.
    pub fn record(&mut self, name: &str, ns: f64) {
        match self.0.iter_mut().find(|c| c.name == name) {
            Some(c) => c.runs_ns.push(ns),
            None => self.0.push(Cell {
                name: name.to_string(),
                median_ns: 0.0,
                runs_ns: vec![ns],
            }),
        }
    }

    /// Sets every cell's median from its runs, once the runs are done.
    pub fn settle(&mut self) {
        for cell in &mut self.0 {
            cell.median_ns = median(&cell.runs_ns);
        }
    }
}

pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// How a column's text is aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table laid out for rendering: a header, and rows of text under it.
#[derive(Debug, Clone)]
pub struct Table {
    /// Each column's header, its width in the terminal, and its alignment.
    columns: Vec<(String, usize, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these columns: (header, width in the terminal, alignment).
    pub fn new<S: ToString>(columns: impl IntoIterator<Item = (S, usize, Align)>) -> Self {
        Table {
            columns: columns
                .into_iter()
                .map(|(h, w, a)| (h.to_string(), w, a))
                .collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// Aligned text: every column padded to its width, one space between columns, no trailing
    /// spaces.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let header: Vec<String> = self.columns.iter().map(|c| c.0.clone()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (c, (_, w, align)) in row.iter().zip(&self.columns) {
                let _ = match align {
                    Align::Left => write!(line, "{c:<w$} "),
                    Align::Right => write!(line, "{c:>w$} "),
                };
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        out
    }

    /// A Markdown table: left-aligned columns as `---`, right-aligned ones as `---:`.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let header: Vec<&str> = self.columns.iter().map(|c| c.0.as_str()).collect();
        let _ = writeln!(out, "| {} |", header.join(" | "));
        out.push('|');
        for (_, _, align) in &self.columns {
            out.push_str(match align {
                Align::Left => "---|",
                Align::Right => "---:|",
            });
        }
        out.push('\n');
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        out
    }
}

pub fn size_text(bytes: usize) -> String {
    if bytes >= 1 << 30 && bytes % (1 << 30) == 0 {
        format!("{} GiB", bytes >> 30)
    } else if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

/// "12.3", "245": ns with one decimal below 100, none above.
pub fn num(ns: f64) -> String {
    if ns >= 100.0 {
        format!("{ns:.0}")
    } else {
        format!("{ns:.1}")
    }
}

pub fn ns_text(ns: f64) -> String {
    format!("{} ns", num(ns))
}

/// "+12.3 ns", "-245 ns": a difference, with its sign.
pub fn signed_ns(ns: f64) -> String {
    if ns.is_nan() {
        return "n/a".into();
    }
    format!("{}{} ns", if ns < 0.0 { "-" } else { "+" }, num(ns.abs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_table_renders_as_text_and_as_markdown() {
        let mut t = Table::new([
            ("pattern", 10, Align::Left),
            ("a", 6, Align::Right),
            ("b", 6, Align::Right),
        ]);
        t.push(vec!["one".into(), "1.0".into(), String::new()]);
        assert_eq!(
            t.text(),
            "pattern         a      b\none           1.0\n",
            "padded, one space between columns, no trailing spaces"
        );
        assert_eq!(
            t.markdown(),
            "| pattern | a | b |\n|---|---:|---:|\n| one | 1.0 |  |\n"
        );
    }

    #[test]
    fn cells_collect_runs_and_settle_on_the_median() {
        let mut c = Cells::default();
        for ns in [3.0, 1.0, 2.0] {
            c.record("x", ns);
        }
        c.record("y", 4.0);
        assert_eq!(c.ns("x"), Some(0.0), "no median before settling");
        c.settle();
        assert_eq!(
            (c.ns("x"), c.ns("y"), c.ns("z")),
            (Some(2.0), Some(4.0), None)
        );
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn cells_read_the_names_older_reports_wrote() {
        let c: Cells = serde_json::from_str(
            r#"[{"allocator":"glibc","median_ns":1.0,"runs_ns":[1.0]},
                {"contender":"read()","median_ns":2.0,"runs_ns":[2.0]}]"#,
        )
        .unwrap();
        assert_eq!((c.ns("glibc"), c.ns("read()")), (Some(1.0), Some(2.0)));
    }
}
