//! `sluice audit query`, `verify` and `export` while `sluice serve` holds
//! the audit log (issue 16, point 6): they read through the admin
//! listener with the token from the audit directory, and say exactly what
//! they said about the same log once the server has stopped.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};
use support::fake_provider::FakeProvider;
use support::*;

/// The CLI with the test server's config.
fn sluice(proc: &SluiceProc, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(sluice_bin())
        .arg("--config")
        .arg(&proc.config)
        .args(args)
        .env_remove("SLUICE_ADMIN_TOKEN")
        .envs(env.iter().copied())
        .output()
        .expect("run sluice")
}

/// stdout of a command that must succeed.
fn ok(proc: &SluiceProc, args: &[&str]) -> String {
    let out = sluice(proc, args, &[]);
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// What every reading command prints about the log.
fn readings(proc: &SluiceProc) -> Vec<(&'static str, String)> {
    vec![
        ("query --json", ok(proc, &["audit", "query", "--json"])),
        ("query table", ok(proc, &["audit", "query"])),
        ("query filtered", ok(proc, &["audit", "query", "--json", "--decision", "block", "--team", "default"])),
        ("query newest 3", ok(proc, &["audit", "query", "--json", "--limit", "3"])),
        ("verify", ok(proc, &["audit", "verify"])),
        ("export jsonl", ok(proc, &["audit", "export", "--format", "jsonl", "--host", "h"])),
        ("export csv", ok(proc, &["audit", "export", "--format", "csv", "--since", "1h"])),
        ("export hec", ok(proc, &["audit", "export", "--format", "hec", "--host", "h"])),
        ("shadow report", ok(proc, &["shadow", "report", "--format", "json"])),
    ]
}

async fn chat(proc: &SluiceProc, prompt: &str) -> u16 {
    thread_local! {
        static CLIENT: reqwest::Client = reqwest::Client::new();
    }
    let body = json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": prompt }] });
    let resp = CLIENT.with(Clone::clone).post(proc.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    resp.status().as_u16()
}

#[tokio::test]
async fn audit_commands_read_a_running_server_and_agree_with_its_files() {
    let fake = FakeProvider::start().await;
    let mut proc = SluiceProc::start(&fake, Setup::default()).await;
    // Enough records for the stream to cross its 64 KiB chunks several
    // times, and every kind of decision.
    for i in 0..300 {
        assert_eq!(chat(&proc, &format!("What is the capital of country number {i}?")).await, 200);
    }
    assert_eq!(chat(&proc, "My key is AKIAIOSFODNN7EXAMPLE, is it valid?").await, 403);
    assert_eq!(chat(&proc, "Refund card 4111 1111 1111 1111 please.").await, 503);
    assert_eq!(chat(&proc, "Write to jane.doe@northwind-mail.com about the refund.").await, 200);

    // The server holds the files: a direct open is refused.
    let locked = sled::Config::new().path(proc.audit_dir()).open();
    assert!(locked.is_err(), "sled let a second process open the log");

    let live = readings(&proc);
    let records: Vec<Value> = live[0].1.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 303);
    assert!(live[2].1.lines().count() == 1 && live[2].1.contains("no-secrets"), "{}", live[2].1);
    assert_eq!(live[3].1.lines().count(), 3);
    assert!(live[4].1.starts_with("audit log OK: 303 record(s)"), "{}", live[4].1);
    assert_eq!(live[5].1.lines().count(), 303);
    assert_eq!(live[6].1.lines().count(), 304, "a header and a row per record");
    assert!(proc.log().contains("audit log read through the admin endpoint"), "{}", proc.log());

    // The token file is the owner's alone, and nothing answers without it.
    let token_file = proc.audit_dir().join("admin.token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let token = std::fs::read_to_string(&token_file).unwrap();
    let client = reqwest::Client::new();
    // One admin token for every reader: the budget report too.
    for path in ["/audit/records", "/audit/verify", "/audit/checkpoints", "/audit/ends", "/budget", "/audit/nothing"] {
        let url = format!("http://{}{path}", proc.admin);
        for auth in [None, Some("Bearer not-the-token"), Some(token.as_str())] {
            let mut request = client.get(&url);
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let resp = request.send().await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap();
            assert_eq!(status, 401, "{path} with {auth:?}: {body}");
            assert!(!body.contains("seq"), "{body}");
        }
        let resp = client.get(&url).bearer_auth(token.trim()).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), if path == "/audit/nothing" { 404 } else { 200 });
    }
    let resp = client.post(format!("http://{}/audit/records", proc.admin)).bearer_auth(token.trim()).send().await;
    assert_eq!(resp.unwrap().status().as_u16(), 405);

    assert!(proc.stop().success(), "unclean exit:\n{}", proc.log());
    let stopped = readings(&proc);
    for ((what, live), (_, stopped)) in live.iter().zip(&stopped) {
        // A stopping server signs a last checkpoint, which the stopped
        // verify then also reports: the chain's verdict is the first line.
        let (live, stopped) = match *what {
            "verify" => (live.lines().next(), stopped.lines().next()),
            _ => (Some(live.as_str()), Some(stopped.as_str())),
        };
        assert_eq!(live, stopped, "`{what}` differs between the running and the stopped server");
    }
}

/// The size line of a signed checkpoint note.
fn checkpoint_size(note: &str) -> u64 {
    note.lines().nth(1).and_then(|l| l.parse().ok()).unwrap_or_else(|| panic!("not a checkpoint: {note}"))
}

#[tokio::test]
async fn signed_checkpoints_are_checked_against_a_running_servers_log() {
    let fake = FakeProvider::start().await;
    let setup = Setup { audit: "checkpoint_every_records: 100".into(), ..Setup::default() };
    let proc = SluiceProc::start(&fake, setup).await;
    for i in 0..250 {
        assert_eq!(chat(&proc, &format!("What is the capital of country number {i}?")).await, 200);
    }
    // The checkpoint thread signs behind the writer; wait for one of at
    // least record 200.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let latest = loop {
        let out = sluice(&proc, &["audit", "checkpoint"], &[]);
        let note = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && checkpoint_size(&note) >= 200 {
            break note;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint of record 200: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    // Signed at whatever the head was when the thread looked; nothing moves
    // it now.
    let size = checkpoint_size(&latest);
    let key = ok(&proc, &["audit", "checkpoint", "--public-key"]);
    let out = sluice(&proc, &["audit", "verify", "--key", key.trim()], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("audit log OK: 250 record(s)"), "{stdout}");
    assert!(
        stdout.contains("signed checkpoint(s) match the log") && stdout.contains(&format!("(newest: record {size},")),
        "{stdout}"
    );

    // A checkpoint signed by another key proves nothing about this log.
    let file = proc.audit_dir().parent().unwrap().join("foreign-checkpoints.txt");
    std::fs::write(&file, latest.replace("sluice/", "other/")).unwrap();
    let out = sluice(&proc, &["audit", "verify", "--key", key.trim(), "--checkpoints", file.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("foreign-checkpoints.txt:1"));
}

#[tokio::test]
async fn a_reader_that_can_use_neither_the_files_nor_the_server_says_why() {
    let fake = FakeProvider::start().await;
    let proc = SluiceProc::start(&fake, Setup::default()).await;
    assert_eq!(chat(&proc, "What is the capital of France?").await, 200);
    let dir = proc.audit_dir();
    let dir = dir.display().to_string();

    // Someone else's token.
    let out = sluice(&proc, &["audit", "verify"], &[("SLUICE_ADMIN_TOKEN", &"x".repeat(40))]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("the audit log at {dir} is locked by a running sluice")), "{err}");
    assert!(
        err.contains(&proc.admin.to_string()) && err.contains("refused the admin token from SLUICE_ADMIN_TOKEN"),
        "{err}"
    );

    // No token to be read at all.
    std::fs::remove_file(Path::new(&dir).join("admin.token")).unwrap();
    let out = sluice(&proc, &["audit", "query", "--json"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("is locked by a running sluice") && err.contains("admin.token"), "{err}");
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn a_token_from_the_environment_replaces_the_file() {
    let fake = FakeProvider::start().await;
    let token = "an-operator-chosen-token-of-forty-chars!!";
    let setup = Setup { env: vec![("SLUICE_ADMIN_TOKEN".into(), token.into())], ..Setup::default() };
    let proc = SluiceProc::start(&fake, setup).await;
    assert_eq!(chat(&proc, "What is the capital of France?").await, 200);
    assert!(!proc.audit_dir().join("admin.token").exists());
    let out = sluice(&proc, &["audit", "verify"], &[("SLUICE_ADMIN_TOKEN", token)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("audit log OK: 1 record(s)"));
    let out = sluice(&proc, &["audit", "verify"], &[]);
    assert_eq!(out.status.code(), Some(2));
}
