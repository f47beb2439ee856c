//! `sluice shadow report`: the audit log's AI usage, one row per app, in a
//! form a security team reads (a table), files (CSV) or feeds to other tools
//! (JSON).
//!
//! [`aggregate`] folds the records that carry an [`AiUsage`] into
//! [`AppRow`]s, most data sent out first, and takes the app's name, vendor
//! and data-handling facts from the [`Catalog`]; the `render_*` functions
//! turn rows into text. Nothing here reads the log or the clock, so the
//! report is the same for the same records.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use crate::audit::{AiUsage, StoredRecord};
use crate::export::csv::{csv_line, csv_text};
use crate::shadow::catalog::{Catalog, Trains};
use crate::shadow::monitor::UNKNOWN_LLM_ENDPOINT;

/// Whether an app was sanctioned, over all the records of the report: the
/// same app can be sanctioned for one team and not for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sanctioned {
    Yes,
    No,
    /// Sanctioned on some records (teams), not on others.
    Mixed,
}

impl Sanctioned {
    pub fn as_str(self) -> &'static str {
        match self {
            Sanctioned::Yes => "yes",
            Sanctioned::No => "no",
            Sanctioned::Mixed => "mixed",
        }
    }
}

/// API keys of accounts the company does not own, seen on one app.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PersonalAccounts {
    /// Distinct key fingerprints flagged personal.
    pub keys: u64,
    /// The organisations the provider named for those keys (`user-...`).
    pub organizations: Vec<String>,
    /// Who used them.
    pub users: Vec<String>,
}

/// Model weights fetched from one app (a hub), per repo and file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DownloadRow {
    pub hub: String,
    pub repo: String,
    /// Empty when only the host was seen (a tunnel).
    pub file: String,
    /// Total over all downloads of this file.
    pub bytes: u64,
    /// How many times it was downloaded.
    pub count: u64,
}

/// One app's usage over the report's records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppRow {
    /// Catalog id, what policies name in `sanctioned:`.
    pub app: String,
    pub name: String,
    pub vendor: String,
    pub category: String,
    pub sanctioned: Sanctioned,
    pub user_count: u64,
    pub users: Vec<String>,
    pub team_count: u64,
    pub teams: Vec<String>,
    /// Teams whose policy did not sanction the app.
    pub unsanctioned_teams: Vec<String>,
    /// Usage events: one per inspected request, one per tunnel.
    pub requests: u64,
    /// Events whose requests sluice saw (intercepted or plain HTTP).
    pub inspected: u64,
    /// Events sluice only relayed encrypted.
    pub tunneled: u64,
    pub blocked: u64,
    pub coached: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub first_seen_unix_ms: u64,
    pub last_seen_unix_ms: u64,
    /// ISO-8601 UTC forms of the two above.
    pub first_seen: String,
    pub last_seen: String,
    /// The hosts the traffic went to; for unlisted LLM endpoints, the
    /// endpoints themselves.
    pub hosts: Vec<String>,
    /// Self-hosted server kinds identified (`vllm`, `ollama`, ...).
    pub servers: Vec<String>,
    /// The catalog's `trains_on_inputs` (`yes`, `no`, `opt_out`,
    /// `unknown`); `unknown` for apps not in the catalog.
    pub trains_on_inputs: String,
    pub retention: Option<String>,
    pub personal_accounts: PersonalAccounts,
    pub downloads: Vec<DownloadRow>,
    /// Why a reviewer should look at this app, most important first.
    pub risks: Vec<String>,
}

/// The output formats of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// Renders `rows` in `format`.
pub fn render(rows: &[AppRow], format: Format) -> Result<String, serde_json::Error> {
    match format {
        Format::Table => Ok(render_table(rows)),
        Format::Json => render_json(rows),
        Format::Csv => Ok(render_csv(rows)),
    }
}

/// Everything gathered for one app before it becomes a row.
#[derive(Default)]
struct Acc {
    users: BTreeSet<String>,
    teams: BTreeSet<String>,
    unsanctioned_teams: BTreeSet<String>,
    requests: u64,
    sanctioned: u64,
    inspected: u64,
    blocked: u64,
    coached: u64,
    bytes_up: u64,
    bytes_down: u64,
    first: u64,
    last: u64,
    hosts: BTreeSet<String>,
    servers: BTreeSet<String>,
    category: String,
    personal_keys: BTreeSet<String>,
    personal_orgs: BTreeSet<String>,
    personal_users: BTreeSet<String>,
    /// (hub, repo, file) -> (bytes, count)
    downloads: BTreeMap<(String, String, String), (u64, u64)>,
}

/// One row per app seen in `records` (those with `ai` set, and of `team`
/// when given), sorted by bytes sent out, most first.
pub fn aggregate(records: &[StoredRecord], catalog: &Catalog, team: Option<&str>) -> Vec<AppRow> {
    let mut apps: BTreeMap<&str, Acc> = BTreeMap::new();
    for stored in records {
        let r = &stored.record;
        let Some(ai) = r.ai.as_ref() else { continue };
        if team.is_some_and(|t| t != r.team) {
            continue;
        }
        let acc = apps.entry(ai.app.as_str()).or_insert_with(|| Acc { first: u64::MAX, ..Acc::default() });
        add(acc, r, ai);
    }
    let mut rows: Vec<AppRow> = apps.into_iter().map(|(app, acc)| row(app, acc, catalog)).collect();
    // Ties (apps that sent nothing up) fall back to the app id, so the
    // order is the same on every run.
    rows.sort_by(|a, b| b.bytes_up.cmp(&a.bytes_up).then_with(|| a.app.cmp(&b.app)));
    rows
}

fn add(acc: &mut Acc, r: &crate::audit::AuditRecord, ai: &AiUsage) {
    if !r.user.is_empty() {
        acc.users.insert(r.user.clone());
    }
    if !r.team.is_empty() {
        acc.teams.insert(r.team.clone());
    }
    acc.requests += 1;
    if ai.sanctioned {
        acc.sanctioned += 1;
    } else if !r.team.is_empty() {
        acc.unsanctioned_teams.insert(r.team.clone());
    }
    if ai.inspected {
        acc.inspected += 1;
    }
    match ai.enforced.as_str() {
        "block" => acc.blocked += 1,
        "coach" => acc.coached += 1,
        _ => {}
    }
    acc.bytes_up = acc.bytes_up.saturating_add(ai.bytes_up);
    acc.bytes_down = acc.bytes_down.saturating_add(ai.bytes_down);
    acc.first = acc.first.min(r.time_unix_ms);
    acc.last = acc.last.max(r.time_unix_ms);
    if !r.host.is_empty() {
        acc.hosts.insert(r.host.clone());
    }
    if !ai.server.is_empty() {
        acc.servers.insert(ai.server.clone());
    }
    if acc.category.is_empty() {
        acc.category = ai.category.clone();
    }
    if let Some(account) = ai.account.as_ref().filter(|a| a.personal) {
        acc.personal_keys.insert(account.key_fingerprint.clone());
        if !account.organization.is_empty() {
            acc.personal_orgs.insert(account.organization.clone());
        }
        if !r.user.is_empty() {
            acc.personal_users.insert(r.user.clone());
        }
    }
    if let Some(d) = &ai.download {
        let slot = acc.downloads.entry((d.hub.clone(), d.repo.clone(), d.file.clone())).or_default();
        slot.0 = slot.0.saturating_add(d.bytes);
        slot.1 += 1;
    }
}

fn row(app: &str, acc: Acc, catalog: &Catalog) -> AppRow {
    let entry = catalog.get(app);
    let sanctioned = if acc.sanctioned == acc.requests {
        Sanctioned::Yes
    } else if acc.sanctioned == 0 {
        Sanctioned::No
    } else {
        Sanctioned::Mixed
    };
    let name = match entry {
        Some(e) => e.name.clone(),
        None if app == UNKNOWN_LLM_ENDPOINT => "Unlisted LLM endpoint".to_string(),
        None => app.to_string(),
    };
    // The catalog's category is authoritative; the record's is what the
    // monitor knew when it wrote it (the only one for apps not catalogued).
    let category = entry.map(|e| e.category.as_str().to_string()).unwrap_or(acc.category);
    let trains = entry.map(|e| e.trains_on_inputs.value).unwrap_or(Trains::Unknown);
    let downloads: Vec<DownloadRow> = acc
        .downloads
        .into_iter()
        .map(|((hub, repo, file), (bytes, count))| DownloadRow { hub, repo, file, bytes, count })
        .collect();
    let personal = PersonalAccounts {
        keys: acc.personal_keys.len() as u64,
        organizations: acc.personal_orgs.into_iter().collect(),
        users: acc.personal_users.into_iter().collect(),
    };

    let mut risks = Vec::new();
    if app == UNKNOWN_LLM_ENDPOINT {
        risks.push("unlisted LLM endpoint".to_string());
    } else if entry.is_none() {
        risks.push("not in the catalog".to_string());
    }
    match sanctioned {
        Sanctioned::No => risks.push("unsanctioned".to_string()),
        Sanctioned::Mixed => risks.push(format!(
            "unsanctioned for {}",
            acc.unsanctioned_teams.iter().map(String::as_str).collect::<Vec<_>>().join(", ")
        )),
        Sanctioned::Yes => {}
    }
    if personal.keys > 0 {
        risks.push(format!("personal accounts seen ({})", personal.keys));
    }
    if matches!(trains, Trains::Yes | Trains::OptOut) {
        risks.push("trains on inputs by default".to_string());
    }
    if !downloads.is_empty() {
        let count: u64 = downloads.iter().map(|d| d.count).sum();
        let bytes: u64 = downloads.iter().fold(0, |sum, d| sum.saturating_add(d.bytes));
        risks.push(format!("model downloads ({count}, {})", human_bytes(bytes)));
    }

    let (first, last) = if acc.requests == 0 { (0, 0) } else { (acc.first, acc.last) };
    AppRow {
        app: app.to_string(),
        name,
        vendor: entry.map(|e| e.vendor.clone()).unwrap_or_default(),
        category,
        sanctioned,
        user_count: acc.users.len() as u64,
        users: acc.users.into_iter().collect(),
        team_count: acc.teams.len() as u64,
        teams: acc.teams.into_iter().collect(),
        unsanctioned_teams: acc.unsanctioned_teams.into_iter().collect(),
        requests: acc.requests,
        inspected: acc.inspected,
        tunneled: acc.requests - acc.inspected,
        blocked: acc.blocked,
        coached: acc.coached,
        bytes_up: acc.bytes_up,
        bytes_down: acc.bytes_down,
        first_seen_unix_ms: first,
        last_seen_unix_ms: last,
        first_seen: iso_time(first),
        last_seen: iso_time(last),
        hosts: acc.hosts.into_iter().collect(),
        servers: acc.servers.into_iter().collect(),
        trains_on_inputs: trains.as_str().to_string(),
        retention: entry.and_then(|e| e.retention.value.clone()),
        personal_accounts: personal,
        downloads,
        risks,
    }
}

/// `2024-05-01T12:00:00Z`: ISO-8601 in UTC, to the second.
pub fn iso_time(unix_ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(unix_ms)).to_string()
}

/// Decimal units (`1.2 MB` is 1,200,000 bytes), as disks and network
/// counters are quoted.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["kB", "MB", "GB", "TB", "PB", "EB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 999.95 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The rows as a JSON array, two-space indented, one object per app with
/// the [`AppRow`] field names and byte counts and times as raw numbers.
pub fn render_json(rows: &[AppRow]) -> Result<String, serde_json::Error> {
    let mut out = serde_json::to_string_pretty(rows)?;
    out.push('\n');
    Ok(out)
}

const CSV_HEADER: [&str; 25] = [
    "app",
    "name",
    "vendor",
    "category",
    "sanctioned",
    "user_count",
    "users",
    "team_count",
    "teams",
    "unsanctioned_teams",
    "requests",
    "inspected",
    "tunneled",
    "blocked",
    "coached",
    "bytes_up",
    "bytes_down",
    "first_seen",
    "last_seen",
    "hosts",
    "trains_on_inputs",
    "personal_keys",
    "personal_organizations",
    "downloads",
    "risks",
];

/// RFC 4180 CSV: a header, one row per app, CRLF line ends. Lists are
/// joined with `;`; a download is `repo/file=bytes` (`repo=bytes` when the
/// file is unknown).
pub fn render_csv(rows: &[AppRow]) -> String {
    let mut out = String::new();
    csv_line(&mut out, CSV_HEADER.iter().map(|h| h.to_string()));
    for r in rows {
        let downloads: Vec<String> = r
            .downloads
            .iter()
            .map(|d| {
                if d.file.is_empty() {
                    format!("{}={}", d.repo, d.bytes)
                } else {
                    format!("{}/{}={}", d.repo, d.file, d.bytes)
                }
            })
            .collect();
        let fields = [
            csv_text(&r.app),
            csv_text(&r.name),
            csv_text(&r.vendor),
            csv_text(&r.category),
            r.sanctioned.as_str().to_string(),
            r.user_count.to_string(),
            csv_text(&r.users.join(";")),
            r.team_count.to_string(),
            csv_text(&r.teams.join(";")),
            csv_text(&r.unsanctioned_teams.join(";")),
            r.requests.to_string(),
            r.inspected.to_string(),
            r.tunneled.to_string(),
            r.blocked.to_string(),
            r.coached.to_string(),
            r.bytes_up.to_string(),
            r.bytes_down.to_string(),
            r.first_seen.clone(),
            r.last_seen.clone(),
            csv_text(&r.hosts.join(";")),
            r.trains_on_inputs.clone(),
            r.personal_accounts.keys.to_string(),
            csv_text(&r.personal_accounts.organizations.join(";")),
            csv_text(&downloads.join(";")),
            csv_text(&r.risks.join(";")),
        ];
        csv_line(&mut out, fields.into_iter());
    }
    out
}

/// At most `max` items, then `+N` for the rest, so a popular app's team
/// list does not push the table off the screen.
fn short_list(items: &[String], max: usize) -> String {
    if items.is_empty() {
        return "-".to_string();
    }
    let mut shown: Vec<&str> = items.iter().take(max).map(String::as_str).collect();
    let more;
    if items.len() > max {
        more = format!("+{}", items.len() - max);
        shown.push(&more);
    }
    shown.join(",")
}

/// Aligned columns, one line per app, then the personal accounts and model
/// downloads of the apps that have them. Byte counts in decimal units,
/// times in ISO-8601 UTC.
pub fn render_table(rows: &[AppRow]) -> String {
    const HEADER: [&str; 15] = [
        "APP",
        "NAME",
        "CATEGORY",
        "SANCTIONED",
        "USERS",
        "TEAMS",
        "REQUESTS",
        "TUNNELED",
        "BLOCKED",
        "COACHED",
        "UP",
        "DOWN",
        "FIRST SEEN",
        "LAST SEEN",
        "RISKS",
    ];
    // Numeric columns are right-aligned.
    const RIGHT: [bool; 15] =
        [false, false, false, false, true, false, true, true, true, true, true, true, false, false, false];
    let mut cells: Vec<Vec<String>> = vec![HEADER.iter().map(|h| h.to_string()).collect()];
    for r in rows {
        cells.push(vec![
            r.app.clone(),
            r.name.clone(),
            r.category.clone(),
            r.sanctioned.as_str().to_string(),
            r.user_count.to_string(),
            short_list(&r.teams, 3),
            r.requests.to_string(),
            r.tunneled.to_string(),
            r.blocked.to_string(),
            r.coached.to_string(),
            human_bytes(r.bytes_up),
            human_bytes(r.bytes_down),
            r.first_seen.clone(),
            r.last_seen.clone(),
            if r.risks.is_empty() { "-".to_string() } else { r.risks.join("; ") },
        ]);
    }
    let mut widths = [0usize; 15];
    for line in &cells {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in &cells {
        let mut text = String::new();
        for (i, cell) in line.iter().enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            let pad = widths[i].saturating_sub(cell.chars().count());
            if RIGHT[i] {
                text.push_str(&" ".repeat(pad));
                text.push_str(cell);
            } else {
                text.push_str(cell);
                // The last column is not padded: no trailing spaces.
                if i + 1 < line.len() {
                    text.push_str(&" ".repeat(pad));
                }
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }

    let personal: Vec<&AppRow> = rows.iter().filter(|r| r.personal_accounts.keys > 0).collect();
    if !personal.is_empty() {
        out.push_str("\nPersonal accounts:\n");
        for r in personal {
            let p = &r.personal_accounts;
            let _ = writeln!(
                out,
                "  {}: {} key(s), organization(s) {}, user(s) {}",
                r.app,
                p.keys,
                if p.organizations.is_empty() { "unknown".to_string() } else { p.organizations.join(", ") },
                if p.users.is_empty() { "unknown".to_string() } else { p.users.join(", ") },
            );
        }
    }
    let downloads: Vec<&AppRow> = rows.iter().filter(|r| !r.downloads.is_empty()).collect();
    if !downloads.is_empty() {
        out.push_str("\nModel downloads:\n");
        for r in downloads {
            for d in &r.downloads {
                let what = if d.file.is_empty() { d.repo.clone() } else { format!("{}/{}", d.repo, d.file) };
                let times = if d.count == 1 { String::new() } else { format!(" ({} times)", d.count) };
                let _ = writeln!(out, "  {}: {what}  {}{times}", r.app, human_bytes(d.bytes));
            }
        }
    }
    let unlisted: Vec<&AppRow> = rows.iter().filter(|r| r.app == UNKNOWN_LLM_ENDPOINT).collect();
    if !unlisted.is_empty() {
        out.push_str("\nUnlisted LLM endpoints:\n");
        for r in unlisted {
            let servers = if r.servers.is_empty() { String::new() } else { format!(" ({})", r.servers.join(", ")) };
            let _ =
                writeln!(out, "  {}{servers}", if r.hosts.is_empty() { "-".to_string() } else { r.hosts.join(", ") });
        }
    }
    out
}

#[cfg(test)]
mod tests;
