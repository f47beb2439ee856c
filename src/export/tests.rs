use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::*;
use crate::audit::{AccountNote, AiUsage, AuditRecord, Latencies, ModelDownload};
use crate::export::csv::parse_csv;

const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn stored(seq: u64, record: AuditRecord) -> StoredRecord {
    StoredRecord { seq, prev_hash: "0".repeat(64), hash: HASH.to_string(), record }
}

/// A gateway request sent to OpenAI, with a finding redacted.
fn decision() -> AuditRecord {
    AuditRecord {
        time_unix_ms: 1_714_564_800_123,
        team: "payments".into(),
        user: "ana".into(),
        client_addr: "10.1.2.3:50123".into(),
        ingress: "gateway".into(),
        api: "openai.chat_completions".into(),
        model_requested: "gpt-4o-mini".into(),
        model_used: "gpt-4o-mini".into(),
        provider: "openai".into(),
        decision: "redact".into(),
        rule: "mask-email".into(),
        reason: "emails are masked".into(),
        findings: BTreeMap::from([("email".to_string(), 2), ("phone".to_string(), 1)]),
        prompt_sha256: "feedface".repeat(8),
        status: 200,
        latency_us: Latencies { inspect: 1_500, upstream: 200_000, total: 203_250 },
        redacted: BTreeMap::from([("email".to_string(), 2)]),
        signals: Some(json!({"task": "summarization", "prompt_tokens": 812, "estimated_cost_usd": 0.00042})),
        request_id: "req-42".into(),
        ..AuditRecord::default()
    }
}

fn blocked() -> AuditRecord {
    AuditRecord {
        api: "anthropic.messages".into(),
        provider: "anthropic".into(),
        decision: "block".into(),
        rule: "no-secrets".into(),
        status: 403,
        findings: BTreeMap::from([("aws_access_key".to_string(), 1)]),
        signals: Some(json!({"task": "code", "prompt_tokens": 90, "estimated_cost_usd": 0.001})),
        ..decision()
    }
}

fn tunnel() -> AuditRecord {
    AuditRecord {
        client_addr: "[::1]:41000".into(),
        ingress: "proxy".into(),
        api: "proxy.connect".into(),
        host: "example.org:8443".into(),
        provider: "example.org".into(),
        decision: "tunnel".into(),
        rule: String::new(),
        reason: "tunneled".into(),
        findings: BTreeMap::new(),
        redacted: BTreeMap::new(),
        model_requested: String::new(),
        model_used: String::new(),
        signals: Some(json!({"tunnel": {"connect_host": "example.org", "port": 8443, "bytes_up": 10}})),
        ..decision()
    }
}

fn shadow() -> AuditRecord {
    AuditRecord {
        api: "passthrough".into(),
        ingress: "proxy".into(),
        host: "huggingface.co".into(),
        provider: "huggingface.co".into(),
        decision: "forward".into(),
        signals: None,
        findings: BTreeMap::new(),
        redacted: BTreeMap::new(),
        ai: Some(AiUsage {
            app: "huggingface".into(),
            category: "model_hub".into(),
            sanctioned: false,
            enforced: "monitor".into(),
            inspected: true,
            bytes_up: 600,
            bytes_down: 5_000_000,
            duration_ms: 900,
            server: String::new(),
            download: Some(ModelDownload {
                hub: "huggingface".into(),
                repo: "Qwen/Qwen2.5-7B".into(),
                file: "model.safetensors".into(),
                bytes: 5_000_000,
            }),
            account: Some(AccountNote {
                key_fingerprint: "fedcba9876543210".into(),
                organization: "user-abc".into(),
                project: String::new(),
                personal: true,
            }),
        }),
        ..decision()
    }
}

/// The CIM Web fields every event carries, and its stable id.
fn cim_and_ids() -> impl Iterator<Item = &'static str> {
    CIM_WEB_FIELDS.into_iter().chain(["id", "chain_hash"])
}

#[test]
fn sourcetypes_follow_the_kind_of_record() {
    assert_eq!(sourcetype(&decision()), "sluice:decision");
    assert_eq!(sourcetype(&blocked()), "sluice:decision");
    assert_eq!(sourcetype(&tunnel()), "sluice:proxy");
    for api in ["passthrough", "websocket", "proxy.connect"] {
        assert_eq!(sourcetype(&AuditRecord { api: api.into(), ..decision() }), "sluice:proxy", "{api}");
    }
    assert_eq!(sourcetype(&shadow()), "sluice:shadow");
    // Shadow usage wins over the proxy's own kinds.
    assert_eq!(sourcetype(&AuditRecord { ai: shadow().ai, ..tunnel() }), "sluice:shadow");
}

#[test]
fn hec_envelope_has_time_host_source_sourcetype_and_index_when_given() {
    let meta = HecMeta { host: "gw-1".into(), source: "sluice".into(), index: "sluice_audit".into() };
    let event = hec_event(&stored(7, decision()), &meta);
    assert_eq!(event["time"].as_f64(), Some(1_714_564_800.123));
    assert_eq!(event["time"].to_string(), "1714564800.123");
    assert_eq!(event["host"], "gw-1");
    assert_eq!(event["source"], "sluice");
    assert_eq!(event["sourcetype"], "sluice:decision");
    assert_eq!(event["index"], "sluice_audit");
    assert_eq!(event["event"], flat_event(&stored(7, decision())));

    let meta = HecMeta { host: "gw-1".into(), ..HecMeta::default() };
    let event = hec_event(&stored(7, decision()), &meta);
    assert!(event.get("index").is_none(), "{event}");
    assert_eq!(event["source"], SOURCE);
    let keys: Vec<&String> = event.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 5, "{keys:?}");
}

#[test]
fn gateway_decision_maps_to_cim_web() {
    let e = flat_event(&stored(7, decision()));
    for field in cim_and_ids() {
        assert!(e.get(field).is_some(), "{field} missing: {e}");
    }
    assert_eq!(e["id"], "7-0123456789abcdef");
    assert_eq!(e["seq"], 7);
    assert_eq!(e["chain_hash"], HASH);
    assert_eq!(e["request_id"], "req-42");
    assert_eq!(e["action"], "allowed");
    assert_eq!(e["app"], "openai");
    assert_eq!(e["dest"], "api.openai.com");
    assert_eq!(e["dest_port"], 443);
    assert_eq!(e["src"], "10.1.2.3");
    assert_eq!(e["src_port"], 50123);
    assert_eq!(e["user"], "ana");
    assert_eq!(e["status"], 200);
    assert_eq!(e["http_method"], "POST");
    assert_eq!(e["url"], "https://api.openai.com/v1/chat/completions");
    assert_eq!(e["url_domain"], "api.openai.com");
    assert_eq!(e["http_user_agent"], "");
    assert_eq!(e["bytes"], 0);
    assert_eq!(e["category"], "llm_api");
    assert_eq!(e["vendor_product"], "sluice");
    assert_eq!(e["tag"], json!(["web", "proxy"]));
    assert_eq!(e["team"], "payments");
    assert_eq!(e["decision"], "redact");
    assert_eq!(e["rule"], "mask-email");
    assert_eq!(e["findings"], json!({"email": 2, "phone": 1}));
    assert_eq!(e["finding_types"], json!(["email", "phone"]));
    assert_eq!(e["redacted"], json!({"email": 2}));
    assert_eq!(e["task"], "summarization");
    assert_eq!(e["tokens_in"], 812);
    assert_eq!(e["tokens_out"], 0);
    assert_eq!(e["cost_usd"], 0.00042);
    assert_eq!(e["latency_ms"], 203.25);
    assert_eq!(e["inspect_ms"], 1.5);
    // Shadow fields only on shadow events; no prompt digest anywhere.
    assert!(e.get("ai_app").is_none());
    assert!(!e.to_string().contains("feedface"), "{e}");
    assert!(e.get("prompt_sha256").is_none());
}

#[test]
fn usage_fields_are_numbers_read_top_level_or_under_usage() {
    // A record from a later version, with usage fields of its own: read
    // through the JSON form, so this is what a newer record looks like.
    let mut raw = serde_json::to_value(stored(3, decision())).unwrap();
    let map = raw.as_object_mut().unwrap();
    map.insert("tokens_in".into(), json!(800));
    map.insert("tokens_out".into(), json!(120));
    map.insert("cost_usd".into(), json!(0.0009));
    map.insert("ttft_ms".into(), json!(85.5));
    let newer: StoredRecord = serde_json::from_value(raw).unwrap();
    let e = flat_event(&newer);
    // Unknown keys are dropped by today's AuditRecord, so the fallback is
    // what shows; either way the fields exist and are numbers.
    for field in ["tokens_in", "tokens_out", "cost_usd", "ttft_ms"] {
        assert!(e[field].is_number(), "{field}: {e}");
    }
    assert_eq!(super::hec::usage_number(&json!({"usage": {"tokens_out": 5}}), "tokens_out"), Some(5.0));
    assert_eq!(super::hec::usage_number(&json!({"tokens_out": 7}), "tokens_out"), Some(7.0));
    assert_eq!(super::hec::usage_number(&json!({"tokens_out": "7"}), "tokens_out"), None);
}

#[test]
fn blocked_request_is_blocked_and_costs_nothing() {
    let e = flat_event(&stored(8, blocked()));
    assert_eq!(e["action"], "blocked");
    assert_eq!(e["status"], 403);
    assert_eq!(e["dest"], "api.anthropic.com");
    assert_eq!(e["url"], "https://api.anthropic.com/v1/messages");
    assert_eq!(e["finding_types"], json!(["aws_access_key"]));
    assert_eq!(e["cost_usd"], 0.0);
    assert_eq!(e["tokens_in"], 90);
    // An upstream failure is blocked to CIM, whatever the decision.
    let failed = flat_event(&stored(9, AuditRecord { decision: "cloud".into(), status: 502, ..decision() }));
    assert_eq!(failed["action"], "blocked");
    let errored = flat_event(&stored(9, AuditRecord { decision: "error".into(), status: 200, ..decision() }));
    assert_eq!(errored["action"], "blocked");
}

#[test]
fn local_answers_have_no_url() {
    let e = flat_event(&stored(10, AuditRecord { decision: "local".into(), provider: "local".into(), ..decision() }));
    assert_eq!(e["dest"], "local");
    assert_eq!(e["url"], "");
    assert_eq!(e["url_domain"], "");
    assert_eq!(e["app"], "local");
    assert_eq!(e["cost_usd"], 0.0);
}

#[test]
fn proxy_tunnel_maps_port_ipv6_client_and_connect() {
    let e = flat_event(&stored(11, tunnel()));
    for field in cim_and_ids() {
        assert!(e.get(field).is_some(), "{field} missing: {e}");
    }
    assert_eq!(e["src"], "::1");
    assert_eq!(e["src_port"], 41000);
    assert_eq!(e["dest"], "example.org");
    assert_eq!(e["dest_port"], 8443);
    assert_eq!(e["http_method"], "CONNECT");
    assert_eq!(e["url"], "https://example.org:8443");
    assert_eq!(e["url_domain"], "example.org");
    assert_eq!(e["category"], "proxy");
    assert_eq!(e["action"], "allowed");
    assert_eq!(e["task"], "");
    assert_eq!(e["app"], "example.org");
    // A host without a tunnel port keeps its own, or 443.
    let plain = AuditRecord { signals: None, host: "[2001:db8::1]:9000".into(), ..tunnel() };
    let e = flat_event(&stored(12, plain));
    assert_eq!(e["dest"], "2001:db8::1");
    assert_eq!(e["dest_port"], 9000);
    assert_eq!(e["url"], "https://[2001:db8::1]:9000");
    let bare = AuditRecord { signals: None, host: "api.openai.com".into(), ..tunnel() };
    assert_eq!(flat_event(&stored(13, bare))["dest_port"], 443);
}

#[test]
fn shadow_event_carries_app_download_and_account() {
    let meta = HecMeta { host: "gw-1".into(), ..HecMeta::default() };
    let hec = hec_event(&stored(14, shadow()), &meta);
    assert_eq!(hec["sourcetype"], "sluice:shadow");
    let e = &hec["event"];
    for field in cim_and_ids() {
        assert!(e.get(field).is_some(), "{field} missing: {e}");
    }
    assert_eq!(e["app"], "huggingface");
    assert_eq!(e["category"], "model_hub");
    assert_eq!(e["dest"], "huggingface.co");
    assert_eq!(e["bytes_out"], 600);
    assert_eq!(e["bytes_in"], 5_000_000);
    assert_eq!(e["bytes"], 5_000_600);
    assert_eq!(e["http_method"], "");
    assert_eq!(e["ai_app"], "huggingface");
    assert_eq!(e["ai_category"], "model_hub");
    assert_eq!(e["sanctioned"], false);
    assert_eq!(e["enforced"], "monitor");
    assert_eq!(e["inspected"], true);
    assert_eq!(e["server"], "");
    assert_eq!(e["download_repo"], "Qwen/Qwen2.5-7B");
    assert_eq!(e["download_file"], "model.safetensors");
    assert_eq!(e["download_bytes"], 5_000_000);
    assert_eq!(e["personal_account"], true);
    assert_eq!(e["account_organization"], "user-abc");
    assert_eq!(e["key_fingerprint"], "fedcba9876543210");
    // Without a download or an account the fields are still there.
    let mut bare = shadow();
    if let Some(ai) = bare.ai.as_mut() {
        ai.download = None;
        ai.account = None;
    }
    let e = flat_event(&stored(15, bare));
    assert_eq!(e["download_repo"], "");
    assert_eq!(e["download_bytes"], 0);
    assert_eq!(e["personal_account"], false);
    assert_eq!(e["key_fingerprint"], "");
}

#[test]
fn unparsable_client_address_is_kept_whole() {
    let e = flat_event(&stored(16, AuditRecord { client_addr: "unix:/run/x".into(), ..decision() }));
    assert_eq!(e["src"], "unix:/run/x");
    assert_eq!(e["src_port"], 0);
    let e = flat_event(&stored(16, AuditRecord { client_addr: "[2001:db8::7]:443".into(), ..decision() }));
    assert_eq!(e["src"], "2001:db8::7");
    assert_eq!(e["src_port"], 443);
}

#[test]
fn short_hash_still_makes_an_id() {
    let mut s = stored(17, decision());
    s.hash = "abc".into();
    assert_eq!(flat_event(&s)["id"], "17-abc");
}

fn export(records: &[StoredRecord], format: Format) -> String {
    let mut out = Vec::new();
    let mut seen = 0;
    let n = write(records, format, &HecMeta::default(), &mut out, &mut |n| seen = n).unwrap();
    assert_eq!(n, records.len() as u64);
    assert_eq!(seen, n);
    String::from_utf8(out).unwrap()
}

#[test]
fn csv_has_fixed_columns_quoting_and_formula_guard() {
    let tricky = AuditRecord {
        team: "team, with comma".into(),
        user: "=HYPERLINK(\"x\")".into(),
        rule: "say \"hi\"\nnow".into(),
        ..decision()
    };
    let records = vec![stored(1, tricky), stored(2, shadow())];
    let table = parse_csv(&export(&records, Format::Csv));
    assert_eq!(table.len(), 3);
    assert_eq!(table[0], csv_header());
    assert!(table.iter().all(|row| row.len() == csv_header().len()));
    let col = |name: &str| csv_header().iter().position(|h| *h == name).unwrap();
    let row = &table[1];
    assert_eq!(row[col("time")], "2024-05-01T12:00:00.123Z");
    assert_eq!(row[col("seq")], "1");
    assert_eq!(row[col("id")], "1-0123456789abcdef");
    assert_eq!(row[col("request_id")], "req-42");
    assert_eq!(row[col("sourcetype")], "sluice:decision");
    assert_eq!(row[col("action")], "allowed");
    assert_eq!(row[col("team")], "team, with comma");
    assert_eq!(row[col("user")], "'=HYPERLINK(\"x\")");
    assert_eq!(row[col("rule")], "say \"hi\"\nnow");
    assert_eq!(row[col("finding_types")], "email;phone");
    assert_eq!(row[col("redacted")], "2");
    assert_eq!(row[col("task")], "summarization");
    assert_eq!(row[col("tokens_in")], "812");
    assert_eq!(row[col("cost_usd")], "0.00042");
    assert_eq!(row[col("latency_ms")], "203.25");
    assert_eq!(row[col("src")], "10.1.2.3");
    assert_eq!(row[col("dest")], "api.openai.com");
    assert_eq!(row[col("ai_app")], "");
    assert_eq!(row[col("sanctioned")], "");
    let row = &table[2];
    assert_eq!(row[col("sourcetype")], "sluice:shadow");
    assert_eq!(row[col("ai_app")], "huggingface");
    assert_eq!(row[col("sanctioned")], "false");
    assert_eq!(row[col("bytes_in")], "5000000");
    assert_eq!(row[col("bytes_out")], "600");
    assert_eq!(parse_csv(&export(&[], Format::Csv)).len(), 1);
}

#[test]
fn json_lines_and_hec_are_one_object_per_line() {
    let records = vec![stored(1, decision()), stored(2, blocked()), stored(3, tunnel()), stored(4, shadow())];
    let text = export(&records, Format::JsonLines);
    let events: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), 4);
    assert_eq!(events[2], flat_event(&records[2]));
    let text = export(&records, Format::Hec);
    let events: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let types: Vec<&str> = events.iter().map(|e| e["sourcetype"].as_str().unwrap()).collect();
    assert_eq!(types, ["sluice:decision", "sluice:decision", "sluice:proxy", "sluice:shadow"]);
    assert!(events.iter().all(|e| e["source"] == SOURCE && e.get("index").is_none()));
}
