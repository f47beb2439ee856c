//! An audit log written by an older build must still verify and read with
//! this one (issue 12: "`sluice audit verify` passes on a log written by the
//! build before this change").
//!
//! `tests/fixtures/audit-v0.1-d781508/` is the sled directory (`conf`, `db`;
//! sled recreates the empty `blobs/`) exactly as `sluice serve` of commit
//! d781508, the build before the request-path restructuring, left it after
//! SIGTERM. It was made with `local: { backend: none }`, the repo's policies,
//! `identity: { anonymous_team: default }` and both providers pinned to a
//! closed loopback port, by these requests in this order:
//!
//! | seq | request                                                  | recorded as             |
//! |-----|----------------------------------------------------------|-------------------------|
//! | 1   | chat completion, clean prompt                            | cloud, 502 (upstream)   |
//! | 2   | chat completion with a card number                       | local, 503 (no model)   |
//! | 3   | chat completion with `AKIAIOSFODNN7EXAMPLE`              | block `no-secrets`, 403 |
//! | 4   | chat completion, malformed JSON body                     | error, 400              |
//! | 5   | Anthropic messages, clean prompt                         | cloud, 502 (upstream)   |
//! | 6   | `GET /v1/models`                                         | sluice, 200             |
//! | 7   | chat completion, clean prompt, `stream: true`            | cloud, 502 (upstream)   |
//! | 8   | OpenAI Responses, clean prompt                           | cloud, 502 (upstream)   |
//!
//! `verify` re-serialises every record and requires the stored bytes to be
//! that canonical form, so a change to the record's fields (a new member that
//! is not skipped when empty, a renamed or reordered one) fails here.
//!
//! Never rewrite the fixture with a newer build: its point is that an older
//! one wrote it. The tests work on a copy, because opening a sled directory
//! writes to it.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const RECORDS: usize = 8;
/// The hash of the fixture's last record (its chain head).
const LAST_HASH: &str = "fa399d5c9c1932dd4feb6287d1334c687d72fd40a3204449dec1fdfe73889e60";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audit-v0.1-d781508")
}

/// A writable copy of the fixture: `<tmp>/audit`.
fn fixture_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    std::fs::create_dir_all(&dir).unwrap();
    let mut copied = Vec::new();
    for entry in std::fs::read_dir(fixture()).expect("fixture directory") {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
            copied.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    copied.sort();
    assert_eq!(copied, ["conf", "db"], "the fixture is a sled directory");
    (tmp, dir)
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn query_json(dir: &Path, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["audit", "query", "--json"];
    args.extend_from_slice(extra);
    args.push("--dir");
    let out = cli(&args, Some(dir));
    assert!(out.status.success(), "audit query {extra:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    stdout(&out).lines().map(|l| serde_json::from_str(l).expect("query --json prints JSON lines")).collect()
}

#[test]
fn log_of_build_d781508_verifies() {
    let (_tmp, dir) = fixture_copy();
    let out = cli(&["audit", "verify", "--dir"], Some(&dir));
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "verify failed on the old log ({:?}):\n{text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!("audit log OK: {RECORDS} record(s), hash chain intact")), "{text}");
}

#[test]
fn log_of_build_d781508_reads_back() {
    let (_tmp, dir) = fixture_copy();
    let records = query_json(&dir, &[]);
    assert_eq!(records.len(), RECORDS, "{records:#?}");

    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=RECORDS as u64).collect::<Vec<_>>());
    let column = |key: &str| -> Vec<String> {
        records.iter().map(|r| r[key].as_str().unwrap_or_else(|| panic!("{key} in {r}")).to_string()).collect()
    };
    assert_eq!(column("decision"), ["cloud", "local", "block", "error", "cloud", "sluice", "cloud", "cloud"]);
    assert_eq!(
        column("api"),
        [
            "openai.chat_completions",
            "openai.chat_completions",
            "openai.chat_completions",
            "openai.chat_completions",
            "anthropic.messages",
            "models",
            "openai.chat_completions",
            "openai.responses"
        ]
    );
    assert_eq!(column("rule")[1], "regulated-pii-stays-local");
    assert_eq!(column("rule")[2], "no-secrets");
    let statuses: Vec<u64> = records.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [502, 503, 403, 400, 502, 200, 502, 502]);
    assert_eq!(records[1]["findings"]["credit_card"], 1);
    assert_eq!(records[2]["findings"]["aws_access_key"], 1);
    assert_eq!(records[6]["signals"]["stream"], true);
    assert!(records.iter().all(|r| r["team"] == "default" && r["user"] == "anonymous"));

    // The chain as read: genesis, each prev_hash the hash before it, the known head.
    assert_eq!(records[0]["prev_hash"], "0".repeat(64));
    for pair in records.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"], "chain broken at record {}", pair[1]["seq"]);
    }
    assert_eq!(records[RECORDS - 1]["hash"], LAST_HASH);
    // Written before records had attachments; the field stays absent when empty.
    assert!(records.iter().all(|r| r.get("attachments").is_none()));

    // Filters work on old records too.
    let blocked = query_json(&dir, &["--decision", "block"]);
    assert_eq!(blocked.len(), 1);
    assert_eq!(blocked[0]["seq"], 3);
    let newest = query_json(&dir, &["--team", "default", "--limit", "2"]);
    assert_eq!(newest.iter().map(|r| r["seq"].as_u64().unwrap()).collect::<Vec<_>>(), [7, 8]);
    assert!(query_json(&dir, &["--team", "nobody"]).is_empty());

    // And the table.
    let out = cli(&["audit", "query", "--dir"], Some(&dir));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout(&out).lines().count(), 1 + RECORDS, "{}", stdout(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("{RECORDS} record(s)")));
}

#[test]
fn edited_record_in_log_of_build_d781508_is_caught() {
    let (_tmp, dir) = fixture_copy();
    // Record 3 was a block; someone rewrites it as a cloud decision.
    edit_audit_record(&dir, 3, r#""decision":"block""#, r#""decision":"cloud""#);
    let out = cli(&["audit", "verify", "--dir"], Some(&dir));
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("record 3"), "{text}");
    assert!(text.contains("(2 record(s) before it verified)"), "{text}");
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// This build continues the old chain: the next record links to the old head.
#[test]
fn this_build_appends_to_log_of_build_d781508() {
    let (tmp, dir) = fixture_copy();
    let (gateway, admin, proxy) = (free_addr(), free_addr(), free_addr());
    let config = tmp.path().join("sluice.yaml");
    std::fs::write(
        &config,
        format!(
            "gateway: {{ listen: \"{gateway}\" }}\n\
             admin: {{ listen: \"{admin}\" }}\n\
             proxy: {{ listen: \"{proxy}\" }}\n\
             ca: {{ dir: data/ca }}\n\
             policies_dir: \"{policies}\"\n\
             audit: {{ dir: audit }}\n\
             identity: {{ anonymous_team: default }}\n\
             local: {{ backend: none }}\n",
            policies = repo_policies().display(),
        ),
    )
    .unwrap();
    let log = tmp.path().join("sluice.log");
    let mut child = Command::new(sluice_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn sluice");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("sluice exited early ({status}) on the old log:\n{}", read_log());
        }
        if http_get(admin, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sluice not ready in time on the old log:\n{}", read_log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let models = http_get(gateway, "/v1/models").unwrap_or_default();
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sluice did not stop after SIGTERM:\n{}", read_log());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(models.starts_with("HTTP/1.1 200"), "{models}\n{}", read_log());
    assert!(status.success(), "unclean exit ({status}):\n{}", read_log());

    let out = cli(&["audit", "verify", "--dir"], Some(&dir));
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("audit log OK: {} record(s), hash chain intact", RECORDS + 1)), "{text}");
    let records = query_json(&dir, &[]);
    assert_eq!(records.len(), RECORDS + 1);
    let new = &records[RECORDS];
    assert_eq!(new["seq"], RECORDS as u64 + 1);
    assert_eq!(new["prev_hash"], LAST_HASH);
    assert_eq!(new["api"], "models");
    assert_eq!(new["decision"], "sluice");
}
