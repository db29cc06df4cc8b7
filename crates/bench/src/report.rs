//! What a scenario hands back: a JSON result (written to `<out>/<name>.json`) and a
//! human table, plus any integrity failures, which fail the whole run.

use std::path::Path;

use serde_json::{Value, json};

use crate::BenchError;
use crate::stats::Ratio;

/// One scenario's outcome.
#[derive(Debug)]
pub struct ScenarioReport {
    /// `s1`, `s2`, … (the file name).
    pub name: &'static str,
    /// The result document.
    pub json: Value,
    /// The human table.
    pub table: Table,
    /// Lost, doubled or misordered events, and other reasons the figures are void.
    pub failures: Vec<String>,
}

impl ScenarioReport {
    /// Writes `<out>/<name>.json`.
    pub fn write(&self, out: &Path) -> Result<(), BenchError> {
        std::fs::create_dir_all(out).map_err(|source| BenchError::Io {
            context: "creating the result directory",
            path: out.to_owned(),
            source,
        })?;
        let path = out.join(format!("{}.json", self.name));
        let mut text = serde_json::to_string_pretty(&self.json).expect("a Value serializes");
        text.push('\n');
        std::fs::write(&path, text).map_err(|source| BenchError::Io {
            context: "writing a result file",
            path,
            source,
        })
    }
}

/// A plain text table, columns padded to their widest cell.
#[derive(Debug, Default)]
pub struct Table {
    /// The title line.
    pub title: String,
    /// Column names.
    pub header: Vec<String>,
    /// Rows of cells.
    pub rows: Vec<Vec<String>>,
    /// Lines printed under the table.
    pub notes: Vec<String>,
}

impl Table {
    /// A table with a title and column names.
    pub fn new(title: impl Into<String>, header: &[&str]) -> Table {
        Table {
            title: title.into(),
            header: header.iter().map(|s| s.to_string()).collect(),
            ..Table::default()
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Renders it as Markdown-compatible pipes, readable as plain text too.
    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(cols) {
                widths[i] = widths[i].max(cell.len());
            }
        }
        let line = |cells: &[String]| {
            let padded: Vec<String> = (0..cols)
                .map(|i| {
                    let cell = cells.get(i).map_or("", String::as_str);
                    format!("{cell:<w$}", w = widths[i])
                })
                .collect();
            format!("| {} |\n", padded.join(" | "))
        };
        let mut out = format!("{}\n\n", self.title);
        out.push_str(&line(&self.header));
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out.push_str(&format!("|-{}-|\n", rule.join("-|-")));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        for note in &self.notes {
            out.push_str(&format!("\n{note}"));
        }
        out.push('\n');
        out
    }
}

/// A ratio as JSON, with its goal and whether the median met it.
pub fn ratio_json(name: &str, ratio: Option<Ratio>, goal: Option<Goal>) -> Value {
    let met = match (ratio, goal) {
        (Some(r), Some(g)) => Some(g.met(r.median)),
        _ => None,
    };
    json!({
        "name": name,
        "median": ratio.map(|r| r.median),
        "min": ratio.map(|r| r.min),
        "max": ratio.map(|r| r.max),
        "rounds": ratio.map_or(0, |r| r.rounds),
        "goal": goal.map(|g| g.describe()),
        "met": met,
    })
}

/// A ratio as a table cell: `1.23 (1.10–1.40)`, with the goal's verdict.
pub fn ratio_cell(ratio: Option<Ratio>, goal: Option<Goal>) -> String {
    match ratio {
        None => "n/a".into(),
        Some(r) => {
            let verdict = match goal {
                Some(g) if g.met(r.median) => format!(" met ({})", g.describe()),
                Some(g) => format!(" MISSED ({})", g.describe()),
                None => String::new(),
            };
            format!("{:.2} ({:.2}–{:.2}){verdict}", r.median, r.min, r.max)
        }
    }
}

/// A goal on a ratio.
#[derive(Clone, Copy, Debug)]
pub enum Goal {
    /// The ratio must be at least this.
    AtLeast(f64),
    /// The ratio must be at most this.
    AtMost(f64),
}

impl Goal {
    /// Whether `value` meets it.
    pub fn met(self, value: f64) -> bool {
        match self {
            Goal::AtLeast(g) => value >= g,
            Goal::AtMost(g) => value <= g,
        }
    }

    /// `≥ 1.5`, `≤ 1.0`.
    pub fn describe(self) -> String {
        match self {
            Goal::AtLeast(g) => format!(">= {g}"),
            Goal::AtMost(g) => format!("<= {g}"),
        }
    }
}

/// The machine, as the result files record it.
pub fn machine(pinned: bool) -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .ok();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
    });
    json!({
        "cpu_model": model,
        "cores_online": std::fs::read_to_string("/sys/devices/system/cpu/online").map(|s| s.trim().to_owned()).ok(),
        "nproc_of_load_generator": nproc,
        "mem_gib": mem_kib.map(|k| (k as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0),
        "kernel": kernel,
        "pinned": pinned,
    })
}

/// `12345.6` → `12346`, `12.345` → `12.3`: figures for a table.
pub fn fmt_num(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_columns() {
        let mut t = Table::new("T", &["a", "bb"]);
        t.row(vec!["xxx".into(), "y".into()]);
        let s = t.render();
        assert!(s.contains("| a   | bb |"), "{s}");
        assert!(s.contains("| xxx | y  |"), "{s}");
    }

    #[test]
    fn goals() {
        assert!(Goal::AtLeast(1.5).met(1.5));
        assert!(!Goal::AtMost(1.0).met(1.01));
        let r = Ratio::of(&[1.0, 2.0, 3.0]);
        assert!(ratio_cell(r, Some(Goal::AtLeast(2.5))).contains("MISSED"));
        assert_eq!(ratio_json("x", r, Some(Goal::AtLeast(1.0)))["met"], true);
    }
}
