use super::*;
use crate::audit::{AccountNote, AuditRecord, ModelDownload};
use crate::export::csv::parse_csv;

fn builtin() -> Catalog {
    match Catalog::builtin() {
        Ok(catalog) => catalog,
        Err(e) => panic!("the builtin catalog does not load: {e}"),
    }
}

fn usage(app: &str, sanctioned: bool, inspected: bool, up: u64, down: u64) -> AiUsage {
    AiUsage {
        app: app.to_string(),
        category: "chat_assistant".to_string(),
        sanctioned,
        enforced: if sanctioned { String::new() } else { "monitor".to_string() },
        inspected,
        bytes_up: up,
        bytes_down: down,
        duration_ms: 10,
        ..AiUsage::default()
    }
}

fn stored(seq: u64, time: u64, team: &str, user: &str, host: &str, ai: Option<AiUsage>) -> StoredRecord {
    StoredRecord {
        seq,
        prev_hash: String::new(),
        hash: String::new(),
        record: AuditRecord {
            time_unix_ms: time,
            team: team.to_string(),
            user: user.to_string(),
            host: host.to_string(),
            decision: "proxy".to_string(),
            ai,
            ..AuditRecord::default()
        },
    }
}

/// A small log: ChatGPT from two teams (sanctioned for one), a blocked and a
/// coached Claude, a personal OpenAI key, two Hugging Face downloads, an
/// unlisted endpoint, and a record without `ai`.
fn sample() -> Vec<StoredRecord> {
    let mut blocked = usage("claude", false, false, 0, 0);
    blocked.enforced = "block".to_string();
    let mut coached = usage("claude", false, false, 0, 0);
    coached.enforced = "coach".to_string();
    let mut personal = usage("openai-api", true, true, 300, 900);
    personal.category = "llm_api".to_string();
    personal.account = Some(AccountNote {
        key_fingerprint: "aaaa".to_string(),
        organization: "user-xyz".to_string(),
        project: String::new(),
        personal: true,
    });
    let mut company = usage("openai-api", true, true, 100, 100);
    company.account = Some(AccountNote {
        key_fingerprint: "bbbb".to_string(),
        organization: "org-company".to_string(),
        project: String::new(),
        personal: false,
    });
    let download = |file: &str, bytes: u64| {
        let mut u = usage("huggingface", true, true, 10, bytes);
        u.download = Some(ModelDownload {
            hub: "huggingface".to_string(),
            repo: "meta-llama/Llama-3.1-8B".to_string(),
            file: file.to_string(),
            bytes,
        });
        u
    };
    let mut unlisted = usage(UNKNOWN_LLM_ENDPOINT, false, true, 50, 60);
    unlisted.server = "ollama".to_string();
    vec![
        stored(1, 1_000, "a", "u1", "chatgpt.com", Some(usage("chatgpt", true, false, 5_000, 20_000))),
        stored(2, 3_000, "a", "u2", "chatgpt.com", Some(usage("chatgpt", true, false, 1_000, 1_000))),
        stored(3, 2_000, "b", "u3", "ab.chatgpt.com", Some(usage("chatgpt", false, false, 1_000, 0))),
        stored(4, 4_000, "b", "u3", "claude.ai", Some(blocked)),
        stored(5, 5_000, "b", "u4", "claude.ai", Some(coached)),
        stored(6, 6_000, "a", "u1", "api.openai.com", Some(personal)),
        stored(7, 6_500, "a", "u2", "api.openai.com", Some(company)),
        stored(8, 7_000, "a", "u1", "huggingface.co", Some(download("model.safetensors", 4_000_000_000))),
        stored(9, 7_500, "a", "u1", "huggingface.co", Some(download("model.safetensors", 4_000_000_000))),
        stored(10, 8_000, "b", "u3", "10.0.0.5:11434", Some(unlisted)),
        stored(11, 9_000, "a", "u1", "api.openai.com", None),
    ]
}

fn find<'a>(rows: &'a [AppRow], app: &str) -> &'a AppRow {
    match rows.iter().find(|r| r.app == app) {
        Some(row) => row,
        None => panic!("no row for {app} in {:?}", rows.iter().map(|r| &r.app).collect::<Vec<_>>()),
    }
}

#[test]
fn one_row_per_app_most_data_out_first() {
    let rows = aggregate(&sample(), &builtin(), None);
    let apps: Vec<&str> = rows.iter().map(|r| r.app.as_str()).collect();
    // chatgpt 7000 up, openai-api 400, unknown 50, huggingface 20, claude 0.
    assert_eq!(apps, ["chatgpt", "openai-api", UNKNOWN_LLM_ENDPOINT, "huggingface", "claude"]);
}

#[test]
fn counts_users_teams_bytes_and_times() {
    let rows = aggregate(&sample(), &builtin(), None);
    let chatgpt = find(&rows, "chatgpt");
    assert_eq!(chatgpt.name, "ChatGPT");
    assert_eq!(chatgpt.vendor, "OpenAI");
    assert_eq!(chatgpt.category, "chat_assistant");
    assert_eq!(chatgpt.users, ["u1", "u2", "u3"]);
    assert_eq!(chatgpt.user_count, 3);
    assert_eq!(chatgpt.teams, ["a", "b"]);
    assert_eq!(chatgpt.team_count, 2);
    assert_eq!(chatgpt.requests, 3);
    assert_eq!((chatgpt.inspected, chatgpt.tunneled), (0, 3));
    assert_eq!((chatgpt.bytes_up, chatgpt.bytes_down), (7_000, 21_000));
    // Records need not arrive in time order.
    assert_eq!((chatgpt.first_seen_unix_ms, chatgpt.last_seen_unix_ms), (1_000, 3_000));
    assert_eq!(chatgpt.first_seen, "1970-01-01T00:00:01Z");
    assert_eq!(chatgpt.hosts, ["ab.chatgpt.com", "chatgpt.com"]);
    assert_eq!(chatgpt.trains_on_inputs, "opt_out");
}

#[test]
fn sanctioned_is_yes_no_or_mixed() {
    let rows = aggregate(&sample(), &builtin(), None);
    let chatgpt = find(&rows, "chatgpt");
    assert_eq!(chatgpt.sanctioned, Sanctioned::Mixed);
    assert_eq!(chatgpt.unsanctioned_teams, ["b"]);
    assert!(chatgpt.risks.contains(&"unsanctioned for b".to_string()), "{:?}", chatgpt.risks);
    let claude = find(&rows, "claude");
    assert_eq!(claude.sanctioned, Sanctioned::No);
    assert_eq!((claude.blocked, claude.coached), (1, 1));
    assert_eq!(claude.risks, ["unsanctioned", "trains on inputs by default"]);
    assert_eq!(find(&rows, "openai-api").sanctioned, Sanctioned::Yes);
}

#[test]
fn personal_accounts_and_their_risk() {
    let rows = aggregate(&sample(), &builtin(), None);
    let openai = find(&rows, "openai-api");
    assert_eq!(openai.personal_accounts.keys, 1);
    assert_eq!(openai.personal_accounts.organizations, ["user-xyz"]);
    assert_eq!(openai.personal_accounts.users, ["u1"]);
    // The API does not train on inputs by default; only the account is a risk.
    assert_eq!(openai.risks, ["personal accounts seen (1)"]);
    assert_eq!(openai.inspected, 2);
}

#[test]
fn downloads_are_summed_per_file() {
    let rows = aggregate(&sample(), &builtin(), None);
    let hub = find(&rows, "huggingface");
    assert_eq!(
        hub.downloads,
        [DownloadRow {
            hub: "huggingface".to_string(),
            repo: "meta-llama/Llama-3.1-8B".to_string(),
            file: "model.safetensors".to_string(),
            bytes: 8_000_000_000,
            count: 2,
        }]
    );
    assert!(hub.risks.contains(&"model downloads (2, 8.0 GB)".to_string()), "{:?}", hub.risks);
    assert_eq!(hub.category, "model_hub");
}

#[test]
fn unlisted_endpoints_are_named_and_flagged() {
    let rows = aggregate(&sample(), &builtin(), None);
    let unknown = find(&rows, UNKNOWN_LLM_ENDPOINT);
    assert_eq!(unknown.name, "Unlisted LLM endpoint");
    assert_eq!(unknown.category, "chat_assistant", "the record's category when the catalog has none");
    assert_eq!(unknown.hosts, ["10.0.0.5:11434"]);
    assert_eq!(unknown.servers, ["ollama"]);
    assert_eq!(unknown.trains_on_inputs, "unknown");
    assert_eq!(unknown.risks, ["unlisted LLM endpoint", "unsanctioned"]);
}

#[test]
fn team_filter_and_records_without_ai() {
    let rows = aggregate(&sample(), &builtin(), Some("a"));
    let apps: Vec<&str> = rows.iter().map(|r| r.app.as_str()).collect();
    assert_eq!(apps, ["chatgpt", "openai-api", "huggingface"]);
    let chatgpt = find(&rows, "chatgpt");
    assert_eq!(chatgpt.sanctioned, Sanctioned::Yes);
    assert_eq!(chatgpt.teams, ["a"]);
    assert_eq!(chatgpt.requests, 2);
    // The record without `ai` (seq 11) is not counted anywhere.
    assert_eq!(find(&rows, "openai-api").requests, 2);
    assert!(aggregate(&sample(), &builtin(), Some("nobody")).is_empty());
    assert!(aggregate(&[], &builtin(), None).is_empty());
}

#[test]
fn apps_outside_the_catalog_keep_their_id() {
    let records = vec![stored(1, 1, "a", "u1", "chat.internal", Some(usage("internal-chat", true, true, 1, 1)))];
    let rows = aggregate(&records, &builtin(), None);
    assert_eq!(rows[0].name, "internal-chat");
    assert_eq!(rows[0].vendor, "");
    assert_eq!(rows[0].risks, ["not in the catalog"]);
}

#[test]
fn human_units() {
    assert_eq!(human_bytes(0), "0 B");
    assert_eq!(human_bytes(999), "999 B");
    assert_eq!(human_bytes(1_000), "1.0 kB");
    assert_eq!(human_bytes(1_234_567), "1.2 MB");
    // Rounds up into the next unit rather than printing `1000.0 kB`.
    assert_eq!(human_bytes(999_999), "1.0 MB");
    assert_eq!(human_bytes(4_000_000_000), "4.0 GB");
    assert_eq!(human_bytes(u64::MAX), "18.4 EB");
}

#[test]
fn json_is_an_array_with_raw_numbers() {
    let rows = aggregate(&sample(), &builtin(), None);
    let text = match render(&rows, Format::Json) {
        Ok(text) => text,
        Err(e) => panic!("json: {e}"),
    };
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let array = value.as_array().unwrap();
    assert_eq!(array.len(), 5);
    let first = &array[0];
    assert_eq!(first["app"], "chatgpt");
    assert_eq!(first["sanctioned"], "mixed");
    assert_eq!(first["bytes_up"], 7_000);
    assert_eq!(first["user_count"], 3);
    assert_eq!(first["teams"], serde_json::json!(["a", "b"]));
    assert_eq!(first["first_seen_unix_ms"], 1_000);
    assert_eq!(first["first_seen"], "1970-01-01T00:00:01Z");
    let openai = &array[1];
    assert_eq!(openai["personal_accounts"]["organizations"], serde_json::json!(["user-xyz"]));
    let hub = &array[3];
    assert_eq!(hub["downloads"][0]["bytes"], 8_000_000_000u64);
    assert_eq!(hub["downloads"][0]["repo"], "meta-llama/Llama-3.1-8B");
    assert_eq!(render_json(&[]).unwrap(), "[]\n");
}

#[test]
fn csv_has_a_header_and_one_row_per_app() {
    let rows = aggregate(&sample(), &builtin(), None);
    let text = render_csv(&rows);
    let table = parse_csv(&text);
    assert_eq!(table.len(), 6);
    assert_eq!(table[0], CSV_HEADER);
    let col = |name: &str| CSV_HEADER.iter().position(|h| *h == name).unwrap();
    let chatgpt = &table[1];
    assert!(table.iter().all(|r| r.len() == CSV_HEADER.len()));
    assert_eq!(chatgpt[col("app")], "chatgpt");
    assert_eq!(chatgpt[col("users")], "u1;u2;u3");
    assert_eq!(chatgpt[col("teams")], "a;b");
    assert_eq!(chatgpt[col("bytes_up")], "7000");
    assert_eq!(chatgpt[col("sanctioned")], "mixed");
    let hub = &table[4];
    assert_eq!(hub[col("downloads")], "meta-llama/Llama-3.1-8B/model.safetensors=8000000000");
    assert_eq!(render_csv(&[]).lines().count(), 1);
}

#[test]
fn csv_quotes_commas_quotes_and_line_breaks() {
    let records =
        vec![stored(1, 1, "team, with comma", "say \"hi\"", "h", Some(usage("line\nbreak", true, true, 1, 1)))];
    let rows = aggregate(&records, &builtin(), None);
    let text = render_csv(&rows);
    assert!(text.contains("\"team, with comma\""), "{text}");
    assert!(text.contains("\"say \"\"hi\"\"\""), "{text}");
    assert!(text.contains("\"line\nbreak\""), "{text}");
    let table = parse_csv(&text);
    assert_eq!(table.len(), 2);
    let col = |name: &str| CSV_HEADER.iter().position(|h| *h == name).unwrap();
    assert_eq!(table[1][col("teams")], "team, with comma");
    assert_eq!(table[1][col("users")], "say \"hi\"");
    assert_eq!(table[1][col("app")], "line\nbreak");
}

#[test]
fn csv_cells_never_start_a_formula() {
    let records = vec![stored(1, 1, "a", "=HYPERLINK(\"x\")", "h", Some(usage("chatgpt", true, false, 1, 1)))];
    let table = parse_csv(&render_csv(&aggregate(&records, &builtin(), None)));
    let col = CSV_HEADER.iter().position(|h| *h == "users").unwrap();
    assert_eq!(table[1][col], "'=HYPERLINK(\"x\")");
}

#[test]
fn table_is_aligned_with_human_units() {
    let rows = aggregate(&sample(), &builtin(), None);
    let text = render_table(&rows);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("APP "), "{text}");
    // Header plus five apps, then the detail sections.
    let up_end = lines[0].find("  UP").unwrap() + 4;
    for line in &lines[1..6] {
        // Right-aligned numbers end under the end of their header.
        assert_ne!(line.as_bytes()[up_end - 1], b' ', "{text}");
        assert_eq!(line.as_bytes()[up_end], b' ', "{text}");
    }
    assert!(lines[1].starts_with("chatgpt "), "{text}");
    assert!(lines[1].contains("7.0 kB"), "{text}");
    assert!(lines[1].contains("1970-01-01T00:00:01Z"), "{text}");
    assert!(lines[1].contains("a,b"), "{text}");
    assert!(
        text.contains("\nPersonal accounts:\n  openai-api: 1 key(s), organization(s) user-xyz, user(s) u1\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "\nModel downloads:\n  huggingface: meta-llama/Llama-3.1-8B/model.safetensors  8.0 GB (2 times)\n"
        ),
        "{text}"
    );
    assert!(text.contains("\nUnlisted LLM endpoints:\n  10.0.0.5:11434 (ollama)\n"), "{text}");
    assert!(lines.iter().all(|l| !l.ends_with(' ')), "no trailing spaces");
    // Every row's columns start where the header's do.
    let first_seen = lines[0].find("FIRST SEEN").unwrap();
    for line in &lines[1..6] {
        assert_eq!(&line[first_seen..first_seen + 5], "1970-", "{text}");
    }
}

#[test]
fn table_shortens_long_team_lists() {
    let teams: Vec<String> = ["a", "b", "c", "d", "e"].iter().map(|t| t.to_string()).collect();
    assert_eq!(short_list(&teams, 3), "a,b,c,+2");
    assert_eq!(short_list(&teams[..2], 3), "a,b");
    assert_eq!(short_list(&[], 3), "-");
}
