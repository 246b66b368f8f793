//! How commands print: list formats and tables, sizes as Docker shows
//! them. Shared by every command group, so that none imports another's.

use std::io::Write;

use clap::{Args, ValueEnum};

use super::template::Template;

/// How a `list` command prints: a table, JSON, or names only. One struct
/// for every command group's `list`.
#[derive(Args)]
pub struct ListArgs {
    /// Print names only (references for images, IDs for containers).
    #[arg(short, long)]
    pub quiet: bool,
    /// table, json, or a Go template such as 'table {{.Name}}\t{{.Size}}'; '{{json .}}'
    /// shows every field a template can name.
    #[arg(long, default_value = "table")]
    pub format: ListFormat,
}

/// `--format` where records can go through a template: `table`, `json`, or
/// a Go template (`{{.ID}}`, `table {{.ID}}\t{{.Names}}`).
#[derive(Clone)]
pub enum ListFormat {
    Table,
    Json,
    Template(Template),
}

impl std::str::FromStr for ListFormat {
    type Err = String;

    fn from_str(format: &str) -> Result<ListFormat, String> {
        match format {
            "table" => Ok(ListFormat::Table),
            "json" => Ok(ListFormat::Json),
            _ if format.contains("{{") => format.parse().map(ListFormat::Template),
            _ => Err(format!(
                "unknown format {format:?}: use table, json or a Go template such as '{{{{.ID}}}}'"
            )),
        }
    }
}

/// Records as one pretty JSON array.
pub fn print_json(records: &impl serde::Serialize) -> Result<(), serde_json::Error> {
    println!("{}", serde_json::to_string_pretty(records)?);
    Ok(())
}

/// Records through a template. With `fields`, a field the records do not
/// have is refused before anything prints, even when there are none;
/// `headers` titles `table` columns (others show the field's name in
/// capitals).
pub fn print_template(
    template: &Template,
    records: &[serde_json::Value],
    fields: Option<&[&str]>,
    headers: &[(&str, &str)],
) -> Result<(), String> {
    if let Some(fields) = fields {
        template.check(fields)?;
    }
    let text = template.render(records, headers)?;
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(|e| format!("write to stdout: {e}"))
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// Left-aligned columns, two spaces apart, as `docker` prints them. Rows
/// are arrays or vectors of cells.
pub fn print_table<R: AsRef<[String]>>(rows: impl Iterator<Item = R>) {
    let rows: Vec<R> = rows.collect();
    let mut widths: Vec<usize> = Vec::new();
    for row in &rows {
        for (i, cell) in row.as_ref().iter().enumerate() {
            match widths.get_mut(i) {
                Some(width) => *width = (*width).max(cell.len()),
                None => widths.push(cell.len()),
            }
        }
    }
    let mut out = std::io::stdout().lock();
    for row in &rows {
        let row = row.as_ref();
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:width$}  "));
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

/// How long ago a time (Unix seconds) was, as Docker says it.
pub fn ago(then: u64) -> String {
    let seconds = crate::runtime::container::now().saturating_sub(then);
    match seconds {
        0..60 => format!("{seconds} seconds ago"),
        60..3600 => format!("{} minutes ago", seconds / 60),
        3600..86400 => format!("{} hours ago", seconds / 3600),
        _ => format!("{} days ago", seconds / 86400),
    }
}

/// Sizes as Docker prints them: decimal units, three significant digits.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    let decimals = match value {
        v if v >= 100.0 || unit == 0 => 0,
        v if v >= 10.0 => 1,
        _ => 2,
    };
    let mut number = format!("{value:.decimals$}");
    if number.contains('.') {
        number = number
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string();
    }
    number + UNITS[unit]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_000), "1kB");
        assert_eq!(human_size(1_234_567), "1.23MB");
        assert_eq!(human_size(12_345_678), "12.3MB");
        assert_eq!(human_size(123_456_789), "123MB");
        assert_eq!(human_size(4_200_000_000), "4.2GB");
    }
}
