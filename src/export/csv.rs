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

/// A minimal RFC 4180 reader, to check the writer against.
#[cfg(test)]
pub(crate) fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {
                assert_eq!(chars.next(), Some('\n'), "CR without LF");
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(row.is_empty() && field.is_empty(), "last line without CRLF");
    rows
}
