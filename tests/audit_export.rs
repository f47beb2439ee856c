//! `sluice audit export` over an audit log written with the library: the
//! binary writes every record, or a time range or one team's, as JSON
//! lines, CSV or Splunk HEC events carrying the CIM Web fields and the
//! `seq-hash` ids (issue 15, points 3 and 7).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sluice::audit::{AccountNote, AiUsage, AuditFilter, AuditLog, AuditRecord, Latencies, ModelDownload};

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn base(minutes_ago: u64, team: &str) -> AuditRecord {
    AuditRecord {
        time_unix_ms: now_ms() - minutes_ago * 60_000,
        team: team.to_string(),
        user: "ana".to_string(),
        client_addr: "10.0.0.5:40000".to_string(),
        ingress: "gateway".to_string(),
        api: "openai.chat_completions".to_string(),
        model_requested: "gpt-4o-mini".to_string(),
        model_used: "gpt-4o-mini".to_string(),
        provider: "openai".to_string(),
        decision: "cloud".to_string(),
        rule: "default".to_string(),
        prompt_sha256: "ab".repeat(32),
        status: 200,
        latency_us: Latencies { inspect: 800, upstream: 90_000, total: 91_000 },
        signals: Some(json!({"task": "code", "prompt_tokens": 120})),
        ..AuditRecord::default()
    }
}

/// A cloud decision, a block, a proxy tunnel and a shadow-AI download on a
/// personal account, oldest first; the first is three days old. Returns
/// each record's `<seq>-<first 16 hex of hash>`, in order.
fn write_log(dir: &Path) -> Vec<String> {
    let log = AuditLog::open(dir).unwrap();
    let decision = base(3 * 24 * 60, "payments");
    let block = AuditRecord {
        api: "anthropic.messages".to_string(),
        provider: "anthropic".to_string(),
        decision: "block".to_string(),
        rule: "no-secrets".to_string(),
        status: 403,
        findings: BTreeMap::from([("aws_access_key".to_string(), 1)]),
        ..base(30, "payments")
    };
    let tunnel = AuditRecord {
        ingress: "proxy".to_string(),
        client_addr: "[::1]:50000".to_string(),
        api: "proxy.connect".to_string(),
        host: "example.org".to_string(),
        provider: "example.org".to_string(),
        decision: "tunnel".to_string(),
        signals: Some(json!({"tunnel": {"connect_host": "example.org", "port": 8443}})),
        ..base(20, "eng")
    };
    let shadow = AuditRecord {
        ingress: "proxy".to_string(),
        api: "passthrough".to_string(),
        host: "huggingface.co".to_string(),
        provider: "huggingface.co".to_string(),
        decision: "forward".to_string(),
        signals: None,
        ai: Some(AiUsage {
            app: "huggingface".to_string(),
            category: "model_hub".to_string(),
            sanctioned: false,
            enforced: "monitor".to_string(),
            inspected: true,
            bytes_up: 500,
            bytes_down: 4_000_000,
            duration_ms: 700,
            download: Some(ModelDownload {
                hub: "huggingface".to_string(),
                repo: "Qwen/Qwen2.5-7B".to_string(),
                file: "model.safetensors".to_string(),
                bytes: 4_000_000,
            }),
            account: Some(AccountNote {
                key_fingerprint: "0123456789abcdef".to_string(),
                organization: "user-xyz".to_string(),
                project: String::new(),
                personal: true,
            }),
            ..AiUsage::default()
        }),
        ..base(10, "eng")
    };
    for r in [decision, block, tunnel, shadow] {
        log.append(r).unwrap();
    }
    log.flush().unwrap();
    log.query(&AuditFilter::default()).unwrap().iter().map(|s| format!("{}-{}", s.seq, &s.hash[..16])).collect()
}

/// Runs `sluice audit export ... --dir DIR`. sled lets go of its lock on
/// the store a moment after the writer's handle is dropped (its flusher
/// thread ends on its next tick), so a run that finds the log locked is
/// tried again.
fn export(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["audit", "export"];
    args.extend_from_slice(extra);
    args.push("--dir");
    for _ in 0..50 {
        let out = support::cli(&args, Some(dir));
        if !String::from_utf8_lossy(&out.stderr).contains("is locked") {
            return out;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the audit log at {} stayed locked", dir.display());
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "exit {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

const CIM: [&str; 18] = sluice::export::CIM_WEB_FIELDS;

#[test]
fn json_lines_carry_cim_fields_and_stable_ids() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit");
    let expected = write_log(&audit);
    let events = json_lines(&stdout(&export(&audit, &[])));
    assert_eq!(events.len(), 4);
    for (event, id) in events.iter().zip(&expected) {
        assert_eq!(event["id"], id.as_str());
        for field in CIM {
            assert!(event.get(field).is_some(), "{field} missing: {event}");
        }
        assert!(event.get("prompt_sha256").is_none(), "{event}");
        assert!(!event.to_string().contains(&"ab".repeat(32)), "{event}");
    }
    assert_eq!(events[0]["action"], "allowed");
    assert_eq!(events[0]["url"], "https://api.openai.com/v1/chat/completions");
    assert_eq!(events[0]["task"], "code");
    assert_eq!(events[1]["action"], "blocked");
    assert_eq!(events[1]["finding_types"], json!(["aws_access_key"]));
    assert_eq!(events[2]["http_method"], "CONNECT");
    assert_eq!(events[2]["src"], "::1");
    assert_eq!(events[2]["dest_port"], 8443);
    assert_eq!(events[3]["ai_app"], "huggingface");
    assert_eq!(events[3]["personal_account"], true);
    assert_eq!(events[3]["download_repo"], "Qwen/Qwen2.5-7B");

    // A time range and a team.
    let recent = json_lines(&stdout(&export(&audit, &["--since", "1h"])));
    assert_eq!(recent.len(), 3);
    assert_eq!(recent[0]["id"], expected[1].as_str());
    let eng = json_lines(&stdout(&export(&audit, &["--team", "eng"])));
    assert_eq!(eng.iter().map(|e| e["seq"].as_u64().unwrap()).collect::<Vec<_>>(), [3, 4]);
    let old = json_lines(&stdout(&export(&audit, &["--until", "1d"])));
    assert_eq!(old.len(), 1);
}

#[test]
fn hec_events_have_envelope_and_sourcetypes() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit");
    let expected = write_log(&audit);
    let out = export(&audit, &["--format", "hec", "--host", "gw-7", "--index", "sluice_audit"]);
    let events = json_lines(&stdout(&out));
    assert_eq!(events.len(), 4);
    let types: Vec<&str> = events.iter().map(|e| e["sourcetype"].as_str().unwrap()).collect();
    assert_eq!(types, ["sluice:decision", "sluice:decision", "sluice:proxy", "sluice:shadow"]);
    for (event, id) in events.iter().zip(&expected) {
        assert_eq!(event["host"], "gw-7");
        assert_eq!(event["source"], "sluice");
        assert_eq!(event["index"], "sluice_audit");
        assert!(event["time"].as_f64().unwrap() > 1.0e9, "{event}");
        assert_eq!(event["event"]["id"], id.as_str());
        assert_eq!(event["event"]["vendor_product"], "sluice");
    }
    // Without --index the field is left out, so the token's index applies.
    let events = json_lines(&stdout(&export(&audit, &["--format", "hec"])));
    assert!(events.iter().all(|e| e.get("index").is_none() && e["host"].as_str().is_some_and(|h| !h.is_empty())));
}

#[test]
fn csv_has_a_header_and_a_row_per_record_and_output_goes_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit");
    let expected = write_log(&audit);
    let text = stdout(&export(&audit, &["--format", "csv"]));
    let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 5, "{text}");
    let header: Vec<&str> = lines[0].split(',').collect();
    assert_eq!(header, sluice::export::csv_header());
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    for (line, id) in lines[1..].iter().zip(&expected) {
        // No cell here needs quoting, so a plain split reads the row.
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells.len(), header.len(), "{line}");
        assert_eq!(cells[col("id")], id.as_str());
    }
    let block: Vec<&str> = lines[2].split(',').collect();
    assert_eq!(block[col("action")], "blocked");
    assert_eq!(block[col("finding_types")], "aws_access_key");
    let shadow: Vec<&str> = lines[4].split(',').collect();
    assert_eq!(shadow[col("sourcetype")], "sluice:shadow");
    assert_eq!(shadow[col("sanctioned")], "false");

    let file = dir.path().join("out.csv");
    let out = export(&audit, &["--format", "csv", "--output", file.to_str().unwrap()]);
    assert!(stdout(&out).is_empty());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    }
}

#[test]
fn a_missing_log_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = export(&dir.path().join("nope"), &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no audit log"));
}
