//! `sluice shadow report` over an audit log written with the library: the
//! binary reads it, keeps only AI usage, and reports it per app as JSON, CSV
//! and a table, for everyone or one team (issue 14, point 7).

mod support;

use std::path::Path;
use std::process::Output;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sluice::audit::{AccountNote, AiUsage, AuditLog, AuditRecord, ModelDownload};
use support::parse_csv;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn record(minutes_ago: u64, team: &str, user: &str, host: &str, ai: Option<AiUsage>) -> AuditRecord {
    AuditRecord {
        time_unix_ms: now_ms() - minutes_ago * 60_000,
        team: team.to_string(),
        user: user.to_string(),
        host: host.to_string(),
        ingress: "proxy".to_string(),
        decision: if ai.as_ref().is_some_and(|a| a.enforced == "block") { "block" } else { "cloud" }.to_string(),
        status: 200,
        ai,
        ..AuditRecord::default()
    }
}

fn usage(app: &str, category: &str, sanctioned: bool, inspected: bool, up: u64, down: u64) -> AiUsage {
    AiUsage {
        app: app.to_string(),
        category: category.to_string(),
        sanctioned,
        enforced: if sanctioned { String::new() } else { "monitor".to_string() },
        inspected,
        bytes_up: up,
        bytes_down: down,
        duration_ms: 1_200,
        ..AiUsage::default()
    }
}

/// The log: a ChatGPT tunnel (team a), an unsanctioned Claude refused under
/// `block` (team b), an OpenAI API call on a personal key (team a), a Hugging
/// Face download (team a), an unlisted LLM endpoint (team b), two requests
/// without AI usage, and one ChatGPT tunnel too old for `--since 30d`.
fn write_log(dir: &Path) {
    let log = AuditLog::open(dir).unwrap();
    let mut claude = usage("claude", "chat_assistant", false, false, 0, 0);
    claude.enforced = "block".to_string();
    let mut personal = usage("openai-api", "llm_api", true, true, 2_048, 8_192);
    personal.account = Some(AccountNote {
        key_fingerprint: "0123456789abcdef".to_string(),
        organization: "user-abc123".to_string(),
        project: String::new(),
        personal: true,
    });
    let mut download = usage("huggingface", "model_hub", true, true, 600, 5_000_000_000);
    download.download = Some(ModelDownload {
        hub: "huggingface".to_string(),
        repo: "Qwen/Qwen2.5-7B-Instruct".to_string(),
        file: "model-00001-of-00004.safetensors".to_string(),
        bytes: 5_000_000_000,
    });
    let mut unlisted = usage("unknown-llm-endpoint", "llm_api", false, true, 700, 1_500);
    unlisted.server = "ollama".to_string();
    let records = vec![
        record(60, "a", "u1", "chatgpt.com", Some(usage("chatgpt", "chat_assistant", true, false, 150_000, 900_000))),
        record(50, "b", "u2", "claude.ai", Some(claude)),
        record(40, "a", "u3", "api.openai.com", Some(personal)),
        record(30, "a", "u1", "huggingface.co", Some(download)),
        record(20, "b", "u2", "127.0.0.1:11434", Some(unlisted)),
        record(10, "a", "u1", "api.openai.com", None),
        record(5, "b", "u4", "api.anthropic.com", None),
        record(60 * 24 * 45, "a", "u9", "chatgpt.com", Some(usage("chatgpt", "chat_assistant", true, false, 1, 1))),
    ];
    for r in records {
        log.append(r).unwrap();
    }
    log.flush().unwrap();
    // Dropped here: sled holds a lock on the directory the binary must open.
}

fn report(dir: &Path, extra: &[&str]) -> String {
    let mut args = vec!["shadow", "report", "--dir"];
    let dir = dir.to_str().unwrap();
    args.push(dir);
    args.extend_from_slice(&["--since", "30d"]);
    args.extend_from_slice(extra);
    let out: Output = support::cli(&args, None);
    assert!(out.status.success(), "sluice {args:?} failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn row<'a>(rows: &'a [Value], app: &str) -> &'a Value {
    rows.iter().find(|r| r["app"] == app).unwrap_or_else(|| panic!("no row for {app}: {rows:#?}"))
}

#[test]
fn json_report_per_app() {
    let tmp = tempfile::tempdir().unwrap();
    write_log(tmp.path());
    let text = report(tmp.path(), &["--format", "json"]);
    let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let rows = value.as_array().unwrap();
    let apps: Vec<&str> = rows.iter().map(|r| r["app"].as_str().unwrap()).collect();
    // Most data out first; records without `ai` and the old tunnel are absent.
    assert_eq!(apps, ["chatgpt", "openai-api", "unknown-llm-endpoint", "huggingface", "claude"]);

    let chatgpt = row(rows, "chatgpt");
    assert_eq!(chatgpt["name"], "ChatGPT");
    assert_eq!(chatgpt["teams"], serde_json::json!(["a"]));
    assert_eq!(chatgpt["users"], serde_json::json!(["u1"]));
    assert_eq!(chatgpt["requests"], 1, "the 45-day-old tunnel is outside --since 30d");
    assert_eq!(chatgpt["tunneled"], 1);
    assert_eq!(chatgpt["inspected"], 0);
    assert_eq!(chatgpt["bytes_up"], 150_000);
    assert_eq!(chatgpt["bytes_down"], 900_000);
    assert_eq!(chatgpt["sanctioned"], "yes");
    assert!(chatgpt["first_seen"].as_str().unwrap().ends_with('Z'));
    assert!(chatgpt["risks"].as_array().unwrap().contains(&Value::from("trains on inputs by default")));

    let claude = row(rows, "claude");
    assert_eq!(claude["sanctioned"], "no");
    assert_eq!(claude["blocked"], 1);
    assert_eq!(claude["teams"], serde_json::json!(["b"]));
    assert!(claude["risks"].as_array().unwrap().contains(&Value::from("unsanctioned")));

    let openai = row(rows, "openai-api");
    assert_eq!(openai["personal_accounts"]["keys"], 1);
    assert_eq!(openai["personal_accounts"]["organizations"], serde_json::json!(["user-abc123"]));
    assert_eq!(openai["personal_accounts"]["users"], serde_json::json!(["u3"]));
    assert!(openai["risks"].as_array().unwrap().contains(&Value::from("personal accounts seen (1)")));

    let hub = row(rows, "huggingface");
    assert_eq!(hub["category"], "model_hub");
    assert_eq!(hub["downloads"][0]["repo"], "Qwen/Qwen2.5-7B-Instruct");
    assert_eq!(hub["downloads"][0]["file"], "model-00001-of-00004.safetensors");
    assert_eq!(hub["downloads"][0]["bytes"], 5_000_000_000u64);

    let unlisted = row(rows, "unknown-llm-endpoint");
    assert_eq!(unlisted["hosts"], serde_json::json!(["127.0.0.1:11434"]));
    assert_eq!(unlisted["servers"], serde_json::json!(["ollama"]));
    assert!(unlisted["risks"].as_array().unwrap().contains(&Value::from("unlisted LLM endpoint")));
}

#[test]
fn csv_report_and_team_filter() {
    let tmp = tempfile::tempdir().unwrap();
    write_log(tmp.path());
    let text = report(tmp.path(), &["--format", "csv"]);
    let table = parse_csv(&text);
    let header = &table[0];
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(table.len(), 6, "{text}");
    let rows = &table[1..];
    assert!(rows.iter().all(|r| r.len() == header.len()), "{text}");
    assert_eq!(rows[0][col("app")], "chatgpt");
    assert_eq!(rows[0][col("bytes_up")], "150000");
    let hub = rows.iter().find(|r| r[col("app")] == "huggingface").unwrap();
    assert_eq!(hub[col("downloads")], "Qwen/Qwen2.5-7B-Instruct/model-00001-of-00004.safetensors=5000000000");
    let openai = rows.iter().find(|r| r[col("app")] == "openai-api").unwrap();
    assert_eq!(openai[col("personal_organizations")], "user-abc123");
    // A list cell with a comma in it is quoted.
    assert_eq!(hub[col("risks")], "model downloads (1, 5.0 GB)");
    assert!(text.contains(",\"model downloads (1, 5.0 GB)\"\r\n"), "{text}");

    let text = report(tmp.path(), &["--format", "json", "--team", "a"]);
    let value: Value = serde_json::from_str(&text).unwrap();
    let apps: Vec<&str> = value.as_array().unwrap().iter().map(|r| r["app"].as_str().unwrap()).collect();
    assert_eq!(apps, ["chatgpt", "openai-api", "huggingface"]);
}

#[test]
fn table_is_the_default() {
    let tmp = tempfile::tempdir().unwrap();
    write_log(tmp.path());
    let text = report(tmp.path(), &[]);
    assert!(text.starts_with("AI apps seen "), "{text}");
    let header = text.lines().find(|l| l.starts_with("APP ")).unwrap_or_else(|| panic!("{text}"));
    assert!(header.contains("SANCTIONED") && header.contains("RISKS"), "{text}");
    assert!(text.contains("150.0 kB"), "{text}");
    assert!(text.contains("Qwen/Qwen2.5-7B-Instruct/model-00001-of-00004.safetensors  5.0 GB"), "{text}");
    assert!(text.contains("127.0.0.1:11434 (ollama)"), "{text}");
}

#[test]
fn since_excludes_older_usage() {
    let tmp = tempfile::tempdir().unwrap();
    write_log(tmp.path());
    let dir = tmp.path().to_str().unwrap();
    let out = support::cli(&["shadow", "report", "--dir", dir, "--since", "35m", "--format", "json"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let value: Value = serde_json::from_slice(&out.stdout).unwrap();
    let apps: Vec<&str> = value.as_array().unwrap().iter().map(|r| r["app"].as_str().unwrap()).collect();
    assert_eq!(apps, ["unknown-llm-endpoint", "huggingface"]);
}
