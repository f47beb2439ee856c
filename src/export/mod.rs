//! The audit log for other tools: each stored record as a Splunk HTTP Event
//! Collector event whose fields follow Splunk's Common Information Model
//! (Web data model), as a flat JSON object, or as a CSV row.
//!
//! - `hec`: the mapping itself ([`hec_event`], [`flat_event`]), a pure
//!   function of one [`StoredRecord`]. The field names are a contract with
//!   the Splunk app in `dashboards/splunk/`: rename nothing without it.
//! - `csv`: RFC 4180 lines and the spreadsheet-formula guard, shared with
//!   `sluice shadow report`; [`csv_header`] and [`csv_row`] are the export's
//!   fixed columns.
//! - [`write`]: records out as JSON lines, CSV or HEC-ready JSON, one line
//!   each, for `sluice audit export`.
//!
//! No prompt text reaches an event: records hold none, and the prompt's
//! unkeyed digest (`prompt_sha256`, in records written before the keyed
//! one) is left out too, since a guessed prompt could be confirmed against
//! it. The keyed digest (`prompt_hmac`, HMAC-SHA-256 under the
//! deployment's secret prompt key) is exported: it lets a SIEM correlate
//! equal prompts, but without the key nobody can check a guess against it.
//!
//! The Splunk exporter also sends the log's signed checkpoints, as
//! `sluice:checkpoint` events, so a copy of them lives outside sluice.

pub(crate) mod csv;
mod hec;
pub mod splunk;

use std::io::Write;

use crate::audit::StoredRecord;

pub use hec::{
    checkpoint_event, flat_event, hec_event, sourcetype, HecMeta, CHECKPOINT_SOURCETYPE, CIM_WEB_FIELDS, SOURCE,
};

/// The export's CSV columns, in order.
const CSV_COLUMNS: [&str; 28] = [
    "time",
    "seq",
    "id",
    "request_id",
    "sourcetype",
    "action",
    "app",
    "team",
    "user",
    "src",
    "dest",
    "status",
    "decision",
    "rule",
    "provider",
    "model_requested",
    "model_used",
    "finding_types",
    "redacted",
    "task",
    "tokens_in",
    "tokens_out",
    "cost_usd",
    "latency_ms",
    "bytes_in",
    "bytes_out",
    "ai_app",
    "sanctioned",
];

/// The header of [`csv_row`]'s columns.
pub fn csv_header() -> &'static [&'static str] {
    &CSV_COLUMNS
}

/// One record as cells under [`csv_header`]: the event's values, with the
/// time as ISO-8601 UTC (milliseconds), the finding types joined by `;`,
/// `redacted` as the number of values replaced and `sanctioned` empty for
/// records that are not shadow-AI usage. Text cells carry the formula
/// guard; quoting is [`csv_line`]'s, when the line is written.
pub fn csv_row(stored: &StoredRecord) -> Vec<String> {
    let event = flat_event(stored);
    let text = |key: &str| csv::csv_text(event.get(key).and_then(|v| v.as_str()).unwrap_or(""));
    let number = |key: &str| event.get(key).map(|v| v.to_string()).unwrap_or_else(|| "0".to_string());
    let finding_types: Vec<&str> = stored.record.findings.keys().map(String::as_str).collect();
    let redacted: u64 = stored.record.redacted.values().map(|n| u64::from(*n)).sum();
    let time = humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(stored.record.time_unix_ms),
    );
    let ai = stored.record.ai.as_ref();
    CSV_COLUMNS
        .iter()
        .map(|column| match *column {
            "time" => time.to_string(),
            "sourcetype" => sourcetype(&stored.record).to_string(),
            "finding_types" => csv::csv_text(&finding_types.join(";")),
            "redacted" => redacted.to_string(),
            "ai_app" => csv::csv_text(ai.map_or("", |a| a.app.as_str())),
            "sanctioned" => ai.map(|a| a.sanctioned.to_string()).unwrap_or_default(),
            "seq" | "status" | "tokens_in" | "tokens_out" | "cost_usd" | "latency_ms" | "bytes_in" | "bytes_out" => {
                number(column)
            }
            other => text(other),
        })
        .collect()
}

/// Appends `cells` to `out` as one RFC 4180 line (CRLF).
pub fn csv_line(out: &mut String, cells: Vec<String>) {
    csv::csv_line(out, cells.into_iter());
}

/// What `sluice audit export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One [`flat_event`] per line.
    JsonLines,
    /// [`csv_header`], then one [`csv_row`] per record.
    Csv,
    /// One [`hec_event`] per line: a file HEC's `/services/collector`
    /// endpoint takes as it is (it reads concatenated events).
    Hec,
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot write the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot encode a record: {0}")]
    Json(#[from] serde_json::Error),
}

/// Writes `records` to `out` in `format`, in the order given, and returns
/// how many were written. `progress` is called with the running count
/// after every record, so a caller can report as it likes.
pub fn write<'a>(
    records: impl IntoIterator<Item = &'a StoredRecord>,
    format: Format,
    meta: &HecMeta,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, ExportError> {
    let mut line = String::new();
    if format == Format::Csv {
        csv::csv_line(&mut line, CSV_COLUMNS.iter().map(|c| c.to_string()));
        out.write_all(line.as_bytes())?;
    }
    let mut count = 0u64;
    for stored in records {
        line.clear();
        match format {
            Format::JsonLines => {
                line.push_str(&serde_json::to_string(&flat_event(stored))?);
                line.push('\n');
            }
            Format::Hec => {
                line.push_str(&serde_json::to_string(&hec_event(stored, meta))?);
                line.push('\n');
            }
            Format::Csv => csv_line(&mut line, csv_row(stored)),
        }
        out.write_all(line.as_bytes())?;
        count += 1;
        progress(count);
    }
    out.flush()?;
    Ok(count)
}

#[cfg(test)]
mod tests;
