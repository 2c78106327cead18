//! Text output of the API commands: aligned tables, times, durations and money, and the JSON
//! printer behind `--json`.
//!
//! Everything here is a pure function of its input (the current time is a parameter), so the
//! tests can pin exact output.

use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flowgate_shared::model::Millis;
use serde::Serialize;

/// Now, in the API's unit (ms since the Unix epoch).
pub fn now_millis() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX))
        .unwrap_or(0)
}

/// Prints `value` as pretty JSON: the API's answer, field for field (the wire types are the
/// ones the API serializes), for scripts.
pub fn print_json<T: Serialize>(out: &mut dyn Write, value: &T) -> io::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(io::Error::other)?;
    writeln!(out, "{text}")
}

/// `2024-05-01T12:00:00Z`.
pub fn time(ms: Millis) -> String {
    let Ok(ms) = u64::try_from(ms) else {
        return "-".to_string();
    };
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// `850ms`, `45s`, `3m 05s`, `2h 07m`: two units at most, enough to read progress at a glance.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = ms / 1000;
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

/// `$0.42`.
pub fn cost(usd: f64) -> String {
    // A spend that rounds to zero reads as zero, not `$-0.00`.
    if usd.abs() < 0.005 {
        return "$0.00".to_string();
    }
    format!("${usd:.2}")
}

/// Cuts `text` to `max` characters (with `…`) and onto one line, so a long error cannot break
/// a table or a redrawn progress display.
pub fn clip(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut out: String = one_line.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Columns padded to their widest cell, two spaces apart; the last column is not padded.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    /// A table without a header row (for progress displays).
    pub fn headless() -> Self {
        Table::default()
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The rendered lines, each with `indent` in front.
    pub fn lines(&self, indent: &str) -> Vec<String> {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        self.rows
            .iter()
            .map(|row| {
                let mut line = indent.to_string();
                for (i, cell) in row.iter().enumerate() {
                    if i + 1 == row.len() {
                        line.push_str(cell);
                    } else {
                        line.push_str(cell);
                        let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                }
                line.trim_end().to_string()
            })
            .collect()
    }

    pub fn write(&self, out: &mut dyn Write, indent: &str) -> io::Result<()> {
        for line in self.lines(indent) {
            writeln!(out, "{line}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_durations_costs_and_times() {
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(45_000), "45s");
        assert_eq!(duration(185_000), "3m 05s");
        assert_eq!(duration(7_620_000), "2h 07m");
        assert_eq!(duration(-5), "0ms");
        assert_eq!(cost(0.4249), "$0.42");
        assert_eq!(cost(-0.0), "$0.00");
        assert_eq!(cost(-0.001), "$0.00");
        assert_eq!(time(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(clip("a\nlong   error message", 12), "a long erro…");
        assert_eq!(clip("short", 12), "short");
    }

    #[test]
    fn aligns_columns() {
        let mut table = Table::new(&["ID", "STATUS", "NOTE"]);
        table.row(vec!["r-1".into(), "running".into(), "x".into()]);
        table.row(vec!["run-22".into(), "ok".into(), String::new()]);
        assert_eq!(
            table.lines(""),
            vec!["ID      STATUS   NOTE", "r-1     running  x", "run-22  ok",]
        );
    }
}
