//! The gateway end to end over real sockets: a `sluice serve` process in
//! front of the fake HTTPS provider, driven by a real HTTP client.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use support::*;

const CARD_PROMPT: &str = "Charge my card 4111 1111 1111 1111 for the order";
const SECRET_PROMPT: &str = "why does this fail? AKIAIOSFODNN7EXAMPLE is my key";

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn clean_openai_prompt_reaches_provider_with_sluice_key() {
    let fake = FakeProvider::start().await;
    let mut sluice = SluiceProc::start(&fake, Setup::default()).await;
    let body = chat_body("Write a haiku about rivers", false);
    let resp = client()
        .post(sluice.url("/v1/chat/completions"))
        .bearer_auth("whatever-the-sdk-sends")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-sluice-route"], "cloud");
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["choices"][0]["message"]["content"], "Hello from the fake provider.");

    let seen = fake.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/chat/completions");
    let forwarded: Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(forwarded, body, "the body is forwarded unchanged");
    assert_eq!(header(&seen[0], "authorization"), Some(format!("Bearer {OPENAI_UPSTREAM_KEY}").as_str()));

    let records = sluice.audit_records();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r["decision"], "cloud");
    assert_eq!(r["team"], "default");
    assert_eq!(r["api"], "openai.chat_completions");
    assert_eq!(r["model_requested"], "gpt-4o-mini");
    assert_eq!(r["provider"], "openai");
    assert_eq!(r["status"], 200);
    // Keyed by the deployment's secret; the unkeyed digest stays empty.
    assert_eq!(r["prompt_hmac"].as_str().unwrap().len(), 64);
    assert_eq!(r["prompt_sha256"], "");
    assert!(r["latency_us"]["total"].as_u64().unwrap() >= r["latency_us"]["upstream"].as_u64().unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn card_number_stays_local_and_secret_is_blocked_in_both_formats() {
    let fake = FakeProvider::start().await;
    let mut sluice = SluiceProc::start(&fake, Setup::default()).await;
    let c = client();

    // OpenAI: card → local rule → 503 (no engine yet), never the cloud.
    let resp = c.post(sluice.url("/v1/chat/completions")).json(&chat_body(CARD_PROMPT, false)).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["x-sluice-route"], "local");
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "local_engine_unavailable");
    assert!(err["error"]["message"].as_str().unwrap().contains("not sent to any cloud provider"));

    // Anthropic: card → same, Anthropic error shape.
    let resp = c
        .post(sluice.url("/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .json(&messages_body(CARD_PROMPT, true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["type"], "error");
    assert_eq!(err["error"]["type"], "overloaded_error");

    // Secrets → block, 403, naming the rule.
    for (path, body) in [
        ("/v1/chat/completions", chat_body(SECRET_PROMPT, false)),
        ("/v1/messages", messages_body(SECRET_PROMPT, false)),
    ] {
        let resp = c.post(sluice.url(path)).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 403, "{path}");
        let rule = resp.headers()["x-sluice-rule"].to_str().unwrap().to_string();
        let err: Value = resp.json().await.unwrap();
        let message = if path == "/v1/messages" {
            assert_eq!(err["error"]["type"], "permission_error");
            err["error"]["message"].as_str().unwrap().to_string()
        } else {
            assert_eq!(err["error"]["code"], "sluice_policy_block");
            err["error"]["message"].as_str().unwrap().to_string()
        };
        assert!(message.contains(&rule), "{message} names rule {rule}");
        assert!(!message.contains("AKIA"), "the refusal must not echo the secret");
    }

    assert!(fake.requests().is_empty(), "the provider must never see these prompts");
    let records = sluice.audit_records();
    assert_eq!(records.len(), 4);
    assert_eq!(records[0]["decision"], "local");
    assert_eq!(records[0]["findings"]["credit_card"], 1);
    assert_eq!(records[2]["decision"], "block");
    assert_eq!(records[2]["findings"]["aws_access_key"], 1);
    let raw = std::fs::read_dir(sluice.audit_dir()).unwrap().flatten().map(|e| e.path()).collect::<Vec<_>>();
    for path in raw {
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains("4111 1111"), "raw card number in {}", path.display());
            assert!(!text.contains("AKIAIOSFODNN7EXAMPLE"), "raw secret in {}", path.display());
        }
    }
    assert!(!sluice.log().contains("4111 1111"));
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_are_relayed_before_upstream_finishes() {
    // Over the default HTTP/1.1 pool and over HTTP/2 to the provider.
    for http2 in [false, true] {
        streams_relayed(http2).await;
    }
}

async fn streams_relayed(http2: bool) {
    let fake = FakeProvider::start().await;
    let setup = Setup { upstream_extra: format!("  http2: {http2}\n"), ..Setup::default() };
    let mut sluice = SluiceProc::start(&fake, setup).await;
    let c = client();
    for (path, body, first_marker, last_marker) in [
        ("/v1/chat/completions", chat_body("Stream me a story", true), "chat.completion.chunk", "[DONE]"),
        ("/v1/messages", messages_body("Stream me a story", true), "message_start", "message_stop"),
    ] {
        fake.hold_streams();
        let resp = c.post(sluice.url(path)).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        let mut stream = resp.bytes_stream();
        let mut got = String::new();
        // The upstream is held after its first event: whatever arrives now
        // was relayed before the upstream finished.
        while !got.contains(first_marker) {
            let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("first event must arrive while upstream is held")
                .unwrap()
                .unwrap();
            got.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(!got.contains(last_marker), "{path}: stream finished although upstream was held");
        fake.release_streams();
        while let Some(chunk) = stream.next().await {
            got.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
        assert!(got.contains(last_marker), "{path}: stream incomplete: {got}");
    }
    let records = sluice.audit_records();
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r["status"] == 200 && r["decision"] == "cloud"));
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_identify_teams_and_missing_tokens_get_401() {
    let fake = FakeProvider::start().await;
    let alice = "slk-alice-token";
    let ghost = "slk-ghost-token";
    let identity = format!(
        "identity:\n  anonymous_team: null\n  tokens:\n\
         \x20   - {{ sha256: \"{}\", team: payments, user: alice }}\n\
         \x20   - {{ sha256: \"{}\", team: ghosts, user: casper }}\n",
        sluice::identity::hash_token(alice),
        sluice::identity::hash_token(ghost)
    );
    let mut sluice = SluiceProc::start(&fake, Setup { identity, ..Setup::default() }).await;
    let c = client();

    let resp = c.post(sluice.url("/v1/chat/completions")).json(&chat_body("hi", false)).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["type"], "authentication_error");

    let resp = c
        .post(sluice.url("/v1/messages"))
        .header("x-api-key", "slk-wrong")
        .json(&messages_body("hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["type"], "authentication_error");

    // A valid token: the call goes out with sluice's provider key, not the token.
    let resp = c
        .post(sluice.url("/v1/messages"))
        .header("x-api-key", alice)
        .json(&messages_body("Summarise the meeting notes", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = fake.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(header(&seen[0], "x-api-key"), Some(ANTHROPIC_UPSTREAM_KEY));
    assert!(seen[0].headers.iter().all(|(_, v)| !v.contains(alice)), "sluice token leaked upstream");

    // A token whose team has no policy: refused, fail closed.
    let resp = c
        .post(sluice.url("/v1/chat/completions"))
        .bearer_auth(ghost)
        .json(&chat_body("hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let err: Value = resp.json().await.unwrap();
    assert!(err["error"]["message"].as_str().unwrap().contains("team `ghosts` has no policy"));

    let records = sluice.audit_records();
    assert_eq!(records.len(), 4);
    assert_eq!(records[0]["status"], 401);
    assert_eq!(records[0]["decision"], "error");
    assert_eq!(records[2]["team"], "payments");
    assert_eq!(records[2]["user"], "alice");
    assert_eq!(records[3]["team"], "ghosts");
    assert_eq!(records[3]["status"], 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_wire_format_errors_and_audit_records() {
    let fake = FakeProvider::start().await;
    let setup = Setup { extra_config: String::new(), ..Setup::default() };
    let mut sluice = SluiceProc::start(&fake, setup).await;
    let c = client();
    let openai = sluice.url("/v1/chat/completions");
    let anthropic = sluice.url("/v1/messages");
    let deep = format!("{{\"model\":\"m\",\"messages\":{}{}}}", "[".repeat(500), "]".repeat(500));
    let mut huge = b"{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"".to_vec();
    huge.resize(huge.len() + 11 * 1024 * 1024, b'a');
    huge.extend_from_slice(b"\"}]}");
    // (name, url, content type, body, expected status, expected message part)
    type Case<'a> = (&'a str, &'a String, &'a str, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("malformed json", &openai, "application/json", b"{\"model\": ".to_vec(), 400, "not valid JSON"),
        ("malformed json (anthropic)", &anthropic, "application/json", b"{nope".to_vec(), 400, "not valid JSON"),
        ("wrong content type", &openai, "text/plain", b"hello".to_vec(), 415, "application/json"),
        (
            "invalid utf-8",
            &openai,
            "application/json",
            b"{\"model\":\"m\",\"messages\":[\"\xff\xfe\"]}".to_vec(),
            400,
            "UTF-8",
        ),
        ("deep nesting", &anthropic, "application/json", deep.into_bytes(), 400, "nested too deeply"),
        (
            "missing model",
            &openai,
            "application/json",
            br#"{"messages":[{"role":"user","content":"hi"}]}"#.to_vec(),
            400,
            "`model`",
        ),
        (
            "missing model (anthropic)",
            &anthropic,
            "application/json",
            br#"{"max_tokens":5,"messages":[]}"#.to_vec(),
            400,
            "`model`",
        ),
        ("body over limit", &openai, "application/json", huge, 413, "exceeds the limit"),
    ];
    for (name, url, ctype, body, status, needle) in &cases {
        let resp = c.post(url.as_str()).header("content-type", *ctype).body(body.clone()).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), *status, "{name}");
        let err: Value = resp.json().await.unwrap_or_else(|e| panic!("{name}: error body is not JSON: {e}"));
        let message = if url.ends_with("/v1/messages") {
            assert_eq!(err["type"], "error", "{name}: Anthropic shape");
            err["error"]["message"].as_str().unwrap().to_string()
        } else {
            assert!(err["error"]["type"].is_string(), "{name}: OpenAI shape");
            err["error"]["message"].as_str().unwrap().to_string()
        };
        assert!(message.contains(needle), "{name}: `{message}` should mention `{needle}`");
    }
    let records = sluice.audit_records();
    assert_eq!(records.len(), cases.len(), "one audit record per bad request");
    for (record, (name, _, _, _, status, _)) in records.iter().zip(&cases) {
        assert_eq!(record["status"].as_u64().unwrap() as u16, *status, "{name}");
        assert_eq!(record["decision"], "error", "{name}");
    }
    assert!(fake.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_down_and_upstream_timeout() {
    let fake = FakeProvider::start().await;
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut down = SluiceProc::start(&fake, Setup { upstream_override: Some(closed), ..Setup::default() }).await;
    let c = client();
    let resp = c.post(down.url("/v1/chat/completions")).json(&chat_body("hello", false)).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "upstream_error");
    let resp = c.post(down.url("/v1/messages")).json(&messages_body("hello", false)).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["type"], "api_error");
    let records = down.audit_records();
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r["status"] == 502 && r["decision"] == "cloud"));

    let slow = Setup { upstream_extra: "  response_timeout_ms: 700\n".into(), ..Setup::default() };
    let mut sluice = SluiceProc::start(&fake, slow).await;
    let mut body = chat_body("hello", false);
    body["model"] = json!("fake-slow");
    let resp = c.post(sluice.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "upstream_timeout");
    let records = sluice.audit_records();
    assert_eq!(records[0]["status"], 504);
    assert!(records[0]["reason"].as_str().unwrap().contains("upstream_timeout"));
}

#[tokio::test(flavor = "multi_thread")]
async fn models_health_ready_and_metrics() {
    let fake = FakeProvider::start().await;
    let sluice = SluiceProc::start(&fake, Setup::default()).await;
    let c = client();
    let models: Value = c.get(sluice.url("/v1/models")).send().await.unwrap().json().await.unwrap();
    assert_eq!(models["object"], "list");
    assert!(models["data"].as_array().unwrap().iter().any(|m| m["id"] == "gpt-4o"));
    let models: Value = c
        .get(sluice.url("/v1/models"))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(models["data"].as_array().unwrap().iter().any(|m| m["type"] == "model"));
    assert_eq!(models["has_more"], false);

    let resp = c.get(sluice.url("/v1/nothing-here")).send().await.unwrap();
    assert_eq!(resp.status(), 404);

    assert_eq!(c.get(format!("http://{}/healthz", sluice.admin)).send().await.unwrap().status(), 200);
    assert_eq!(c.get(format!("http://{}/readyz", sluice.admin)).send().await.unwrap().status(), 200);

    c.post(sluice.url("/v1/chat/completions")).json(&chat_body("hello", false)).send().await.unwrap();
    c.post(sluice.url("/v1/chat/completions")).json(&chat_body(CARD_PROMPT, false)).send().await.unwrap();
    let metrics = c.get(format!("http://{}/metrics", sluice.admin)).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(
            "sluice_requests_total{team=\"default\",decision=\"cloud\",provider=\"openai\",status=\"200\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("sluice_findings_total{type=\"credit_card\"} 1"), "{metrics}");
    assert!(metrics.contains("sluice_request_duration_seconds_bucket"), "{metrics}");
    assert!(metrics.contains("sluice_inspection_duration_seconds_bucket"), "{metrics}");
    assert!(!metrics.contains("4111"), "no prompt content in metrics");
}

/// Issue 12, bug 2: the model list names the configured Gemini models too,
/// owned by `gemini`, next to the OpenAI and Anthropic ones. (The gateway
/// answers only `GET /v1/models`; it has no Gemini-format model list.)
#[tokio::test(flavor = "multi_thread")]
async fn models_list_includes_configured_gemini_models() {
    let fake = FakeProvider::start().await;
    let setup = Setup { gemini_models: vec!["gemini-sluice-test"], ..Setup::default() };
    let sluice = SluiceProc::start(&fake, setup).await;
    let resp = client().get(sluice.url("/v1/models")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let models: Value = resp.json().await.unwrap();
    assert_eq!(models["object"], "list");
    let data = models["data"].as_array().unwrap();
    let owner = |id: &str| data.iter().find(|m| m["id"] == id).map(|m| m["owned_by"].clone());
    assert_eq!(owner("gemini-sluice-test"), Some(json!("gemini")), "{models}");
    // The configured list replaces the default one, as for the other providers.
    assert_eq!(owner("gemini-2.5-pro"), None, "{models}");
    assert_eq!(owner("gpt-4o"), Some(json!("openai")), "{models}");
    assert_eq!(owner("claude-sonnet-4-5"), Some(json!("anthropic")), "{models}");
    assert!(fake.requests().is_empty(), "the model list is sluice's own answer");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_streams_in_flight_then_flushes_audit() {
    let fake = FakeProvider::start().await;
    let mut sluice = SluiceProc::start(&fake, Setup::default()).await;
    fake.hold_streams();
    let resp =
        client().post(sluice.url("/v1/chat/completions")).json(&chat_body("a long story", true)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    let _ = std::process::Command::new("kill").arg("-TERM").arg(sluice.pid().to_string()).status();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // New connections are refused while the old stream is still served.
    assert!(reqwest::Client::new().get(sluice.url("/v1/models")).send().await.is_err());
    fake.release_streams();
    let mut rest = String::new();
    while let Some(chunk) = stream.next().await {
        rest.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(rest.contains("[DONE]"), "in-flight stream completed after SIGTERM");
    let records = sluice.audit_records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["status"], 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_verify_catches_an_edited_record() {
    let fake = FakeProvider::start().await;
    let mut sluice = SluiceProc::start(&fake, Setup::default()).await;
    for prompt in ["one", "two", "three"] {
        client().post(sluice.url("/v1/chat/completions")).json(&chat_body(prompt, false)).send().await.unwrap();
    }
    assert!(sluice.stop().success());
    let dir = sluice.audit_dir();
    let ok = cli(&["audit", "verify", "--dir"], Some(&dir));
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("3 record(s)"));

    // Someone edits record 2 to hide which team sent it. Records are stored
    // in blocks (one per writer batch), one compact JSON record per line.
    edit_audit_record(&dir, 2, r#""team":"default""#, r#""team":"nobody""#);
    let bad = cli(&["audit", "verify", "--dir"], Some(&dir));
    assert_eq!(bad.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert!(stdout.contains("record 2"), "{stdout}");
}

#[test]
fn policy_check_reports_file_line_and_reason() {
    let ok = cli(&["policy", "check"], Some(&repo_policies()));
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));

    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo_policies().join("default.yaml"), dir.path().join("default.yaml")).unwrap();
    std::fs::write(
        dir.path().join("research.yaml"),
        "rules:\n  - name: cards\n    when:\n      pii: [credit_card, blood_type]\n    then: local\ndefault: cloud\n",
    )
    .unwrap();
    let out = cli(&["policy", "check"], Some(dir.path()));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("research.yaml:4:"), "{stderr}");
    assert!(stderr.contains("blood_type"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_policy_refuses_start_up_with_file_and_line() {
    let fake = FakeProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("default.yaml"),
        "rules:\n  - name: x\n    when: { pii: any }\n    then: teleport\ndefault: cloud\n",
    )
    .unwrap();
    let config = dir.path().join("sluice.yaml");
    std::fs::write(&config, "gateway: { listen: \"127.0.0.1:0\" }\nadmin: { listen: \"127.0.0.1:0\" }\npolicies_dir: policies\naudit: { dir: data/audit }\n").unwrap();
    let out = std::process::Command::new(sluice_bin()).args(["serve", "--config"]).arg(&config).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("default.yaml:4:"), "{stderr}");
    drop(fake);
}

#[test]
fn policy_test_prints_decision_rule_and_findings() {
    let out = std::process::Command::new(sluice_bin())
        .args(["policy", "test", "--team", "default", "--prompt", CARD_PROMPT, "--dir"])
        .arg(repo_policies())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("decision: local"), "{stdout}");
    assert!(stdout.contains("credit_card"), "{stdout}");
    assert!(stdout.contains("rule:"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn full_audit_disk_stops_cloud_forwarding() {
    if !is_root() {
        eprintln!("SKIPPED: needs root to mount a small tmpfs for the audit log");
        return;
    }
    let fake = FakeProvider::start().await;
    let sluice = SluiceProc::start(&fake, Setup { audit_tmpfs: Some("4m"), ..Setup::default() }).await;
    // Fill the audit log's filesystem to the last byte.
    let filler = sluice.dir.path().join("data/filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 64 * 1024];
    while std::io::Write::write_all(&mut f, &block).is_ok() {}
    while std::io::Write::write_all(&mut f, &block[..512]).is_ok() {}
    drop(f);

    let c = client();
    let mut refused_at = None;
    // With strict durability the answer whose record hit the full disk is
    // cut (the client never gets it whole); the ones after it are refused.
    let mut withheld = 0;
    for i in 0..400 {
        let sent = c.post(sluice.url("/v1/chat/completions")).json(&chat_body("hello", false)).send().await;
        let Ok(resp) = sent else {
            withheld += 1;
            continue;
        };
        if resp.status() == 503 {
            let err: Value = resp.json().await.unwrap();
            assert!(err["error"]["message"].as_str().unwrap().contains("audit log"), "{err}");
            refused_at = Some(i);
            break;
        }
        assert_eq!(resp.status(), 200);
        if resp.bytes().await.is_err() {
            withheld += 1;
            continue;
        }
        // Give the writer thread time to hit the full disk.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused_at.is_some(), "sluice kept forwarding with a full audit disk:\n{}", sluice.log());
    assert!(withheld <= 1, "only answers already past the gate can be cut: {withheld}");
    if withheld == 1 {
        let metrics = c.get(format!("http://{}/metrics", sluice.admin)).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains("sluice_audit_withheld_answers_total 1"), "{metrics}");
    }
    let forwarded = fake.requests().len();
    for _ in 0..5 {
        let resp = c.post(sluice.url("/v1/chat/completions")).json(&chat_body("hello", false)).send().await.unwrap();
        assert_eq!(resp.status(), 503, "fail closed stays closed");
    }
    assert_eq!(fake.requests().len(), forwarded, "nothing reached the provider after the audit log broke");
    let ready = c.get(format!("http://{}/readyz", sluice.admin)).send().await.unwrap();
    assert_eq!(ready.status(), 503);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_own_key_passes_through_when_enabled() {
    let fake = FakeProvider::start().await;
    let alice = "slk-alice-token";
    let identity = format!(
        "identity:\n  anonymous_team: null\n  tokens:\n    - {{ sha256: \"{}\", team: payments, user: alice }}\n",
        sluice::identity::hash_token(alice)
    );
    let mut sluice = SluiceProc::start(&fake, Setup { identity, pass_client_key: true, ..Setup::default() }).await;
    let c = client();
    // Own provider key + sluice token in its own header: identified, own key forwarded.
    let resp = c
        .post(sluice.url("/v1/chat/completions"))
        .bearer_auth("sk-client-own-key")
        .header("x-sluice-token", alice)
        .json(&chat_body("hello", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = fake.requests();
    assert_eq!(header(&seen[0], "authorization"), Some("Bearer sk-client-own-key"));
    assert!(seen[0].headers.iter().all(|(k, v)| k != "x-sluice-token" && !v.contains(alice)));
    // Own key without a sluice token: no anonymous team, so 401.
    let resp = c
        .post(sluice.url("/v1/chat/completions"))
        .bearer_auth("sk-client-own-key")
        .json(&chat_body("hello", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let records = sluice.audit_records();
    assert_eq!(records[0]["user"], "alice");
    assert_eq!(records[1]["status"], 401);
}

/// Issue 15: every record carries the tokens the answer used (from the
/// provider's `usage`, whole or streamed), the cost from the price table,
/// the time to first token and the bytes each way; metrics count the same.
#[tokio::test]
async fn records_carry_tokens_cost_ttft_and_bytes() {
    let fake = FakeProvider::start().await;
    let mut sluice = SluiceProc::start(&fake, Setup::default()).await;
    let c = client();
    let whole = c.post(sluice.url("/v1/chat/completions")).json(&chat_body("hello there", false)).send().await.unwrap();
    assert_eq!(whole.status(), 200);
    whole.bytes().await.unwrap();
    let mut streamed = chat_body("hello stream", true);
    streamed["stream_options"] = json!({"include_usage": true});
    let sse = c.post(sluice.url("/v1/chat/completions")).json(&streamed).send().await.unwrap().text().await.unwrap();
    assert!(sse.contains("[DONE]"));
    let anthropic = c
        .post(sluice.url("/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .json(&messages_body("hello claude", true))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(anthropic.contains("message_stop"));
    let metrics = c.get(format!("http://{}/metrics", sluice.admin)).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("sluice_tokens_total{team=\"default\",model=\"gpt-4o-mini\",type=\"output\"} 14"),
        "{metrics}"
    );
    assert!(metrics.contains("gen_ai_client_token_usage_bucket{"), "{metrics}");

    let records = sluice.audit_records();
    assert_eq!(records.len(), 3, "{records:#?}");
    for r in &records {
        let u = &r["usage"];
        assert!(u["tokens_in"].as_u64().unwrap() > 0, "{r:#}");
        assert_eq!(u["tokens_out"], 7, "the fake always answers 7 tokens: {r:#}");
        assert!(u["bytes_in"].as_u64().unwrap() > 50, "{r:#}");
        assert!(u["bytes_out"].as_u64().unwrap() > 50, "{r:#}");
        assert!(u["ttft_ms"].is_u64(), "{r:#}");
    }
    let openai = &records[0]["usage"];
    let expected = (openai["tokens_in"].as_u64().unwrap() as f64 * 0.15 + 7.0 * 0.6) / 1e6;
    assert!((openai["cost_usd"].as_f64().unwrap() - expected).abs() < 1e-12, "{openai}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_carries_a_request_id_that_names_its_record() {
    let fake = FakeProvider::start().await;
    let mut sluice = SluiceProc::start(&fake, Setup::default()).await;
    let c = client();
    let chat = |id: Option<&str>, prompt: &str, stream: bool| {
        let mut req = c.post(sluice.url("/v1/chat/completions")).json(&chat_body(prompt, stream));
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        req
    };
    // A well-formed id is adopted, on relayed, streamed and refused answers.
    let mut seen = Vec::new();
    for (id, prompt, stream, status) in [
        ("client-id:1.a_b-c", "hello", false, 200),
        ("client-id:2", "hello", true, 200),
        ("client-id:3", SECRET_PROMPT, false, 403),
    ] {
        let resp = chat(Some(id), prompt, stream).send().await.unwrap();
        assert_eq!(resp.status(), status);
        assert_eq!(resp.headers()["x-request-id"], id);
        resp.bytes().await.unwrap();
        seen.push(id.to_string());
    }
    // Anything else, or none, gets an id of sluice's own.
    for sent in [Some("has space"), Some(&*"x".repeat(65)), None] {
        let resp = chat(sent, "hello", false).send().await.unwrap();
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        assert!(Some(id.as_str()) != sent && !id.is_empty() && id.len() <= 64, "{id}");
        resp.bytes().await.unwrap();
        seen.push(id);
    }
    // Also on answers sluice gives itself.
    let resp = c.get(sluice.url("/v1/models")).header("x-request-id", "models-1").send().await.unwrap();
    assert_eq!(resp.headers()["x-request-id"], "models-1");
    resp.bytes().await.unwrap();
    seen.push("models-1".into());
    let resp = c.head(sluice.url("/nowhere")).header("x-request-id", "head-1").send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["x-request-id"], "head-1");
    seen.push("head-1".into());

    let records = sluice.audit_records();
    let recorded: Vec<String> = records.iter().map(|r| r["request_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(recorded, seen);
}
