//! RFC 4180 CSV cells and lines, shared by every CSV sluice writes (the
//! audit export and `sluice shadow report`), so that quoting and the
//! spreadsheet-formula guard are the same everywhere.

/// A text cell that spreadsheets will not run as a formula: user names,
/// hosts and repo names come from clients, and a cell starting with `=`,
/// `+`, `-` or `@` is a formula to Excel and LibreOffice (OWASP's "CSV
/// injection"). A leading `'` keeps it text.
pub(crate) fn csv_text(value: &str) -> String {
    match value.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{value}"),
        _ => value.to_string(),
    }
}

/// Appends one line of cells to `out`, each quoted only when it must be
/// (a comma, quote or line break inside), ended with CRLF as RFC 4180 says.
pub(crate) fn csv_line(out: &mut String, fields: impl Iterator<Item = String>) {
    for (i, field) in fields.enumerate() {
        if i > 0 {
            out.push(',');
        }
        if field.contains([',', '"', '\r', '\n']) {
            out.push('"');
            out.push_str(&field.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&field);
        }
    }
    out.push_str("\r\n");
}
