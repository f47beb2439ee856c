//! Redaction and routing signals end to end: the real binary, the fake
//! provider recording what it was sent, and the shipped default policy.

mod support;

use serde_json::{json, Value};

use support::fake_provider::FakeProvider;
use support::*;

// Not a reserved example domain: those are documentation, not findings.
const EMAIL: &str = "jane.doe@northwind-mail.com";
const PHONE: &str = "+1 415 555 0134";

fn redacting_policy() -> Vec<(&'static str, String)> {
    vec![(
        "default.yaml",
        "description: redaction test\n\
         rules:\n\
         \x20 - name: no-secrets\n\
         \x20   when: { secrets: any }\n\
         \x20   then: block\n\
         \x20 - name: contacts-redacted\n\
         \x20   when: { pii: [email, phone] }\n\
         \x20   then: redact\n\
         default: cloud\n"
            .to_string(),
    )]
}

fn prompt() -> String {
    format!("Write to {EMAIL} or call {PHONE} about the refund; cc {EMAIL}.")
}

#[tokio::test]
async fn redacted_values_never_reach_the_provider_and_come_back_restored() {
    let fake = FakeProvider::start().await;
    let setup = Setup { policies: redacting_policy(), ..Setup::default() };
    let mut proc = SluiceProc::start(&fake, setup).await;
    let client = reqwest::Client::new();

    // Non-streamed OpenAI: the echo comes back with the real values.
    let mut body = chat_body(&prompt(), false);
    body["model"] = json!("fake-echo");
    let resp = client.post(proc.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-sluice-route"], "redact");
    let json: Value = resp.json().await.unwrap();
    let text = json["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(text, format!("Echo: {}", prompt()));

    // Streamed OpenAI and Anthropic: the echo arrives three characters per
    // event, so every placeholder is split across events.
    let mut body = chat_body(&prompt(), true);
    body["model"] = json!("fake-echo");
    let sse = client.post(proc.url("/v1/chat/completions")).json(&body).send().await.unwrap().text().await.unwrap();
    let mut streamed = String::new();
    for line in sse.lines().filter_map(|l| l.strip_prefix("data: ")).filter(|l| *l != "[DONE]") {
        let event: Value = serde_json::from_str(line).unwrap();
        if let Some(piece) = event["choices"][0]["delta"]["content"].as_str() {
            streamed.push_str(piece);
        }
    }
    assert_eq!(streamed, format!("Echo: {}", prompt()));
    assert!(sse.trim_end().ends_with("data: [DONE]"));

    let mut body = messages_body(&prompt(), true);
    body["model"] = json!("fake-echo");
    let sse = client
        .post(proc.url("/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut streamed = String::new();
    for line in sse.lines().filter_map(|l| l.strip_prefix("data: ")) {
        let event: Value = serde_json::from_str(line).unwrap();
        if let Some(piece) = event["delta"]["text"].as_str() {
            streamed.push_str(piece);
        }
    }
    assert_eq!(streamed, format!("Echo: {}", prompt()));
    assert!(sse.contains("event: message_stop"));

    // The provider saw placeholders only, the same one for the same value.
    let seen = fake.requests();
    assert_eq!(seen.len(), 3);
    for r in &seen {
        let sent = String::from_utf8_lossy(&r.body);
        assert!(!sent.contains("jane.doe") && !sent.contains("555"), "value leaked: {sent}");
        assert!(sent.contains("Write to <EMAIL_1> or call <PHONE_1> about the refund; cc <EMAIL_1>."), "{sent}");
    }

    let records = proc.audit_records();
    assert_eq!(records.len(), 3);
    for r in &records {
        assert_eq!(r["decision"], "redact");
        assert_eq!(r["redacted"]["email"], 1);
        assert_eq!(r["redacted"]["phone"], 1);
        let stored = r.to_string();
        assert!(!stored.contains("jane.doe") && !stored.contains("555 0134"), "value in the audit log: {stored}");
    }
}

/// A chat request with the given messages, via the gateway.
async fn route_of(proc: &SluiceProc, messages: Value) -> (u16, String, String) {
    let body = json!({ "model": "gpt-4o-mini", "messages": messages });
    let resp = reqwest::Client::new().post(proc.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    let header = |name: &str| resp.headers().get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let (route, rule) = (header("x-sluice-route"), header("x-sluice-rule"));
    (resp.status().as_u16(), route, rule)
}

const COMPLETION_PROMPT: &str = "def running_mean(values: list[float], window: int) -> list[float]:\n    \"\"\"Return the running mean of `values` over `window` items.\n    >>> running_mean([1, 2, 3, 4], 2)\n    [1.5, 2.5, 3.5]\n    \"\"\"\n";

#[tokio::test]
async fn shipped_policy_routes_by_task_length_and_agent_depth() {
    let fake = FakeProvider::start().await;
    let mut proc = SluiceProc::start(&fake, Setup::default()).await;

    // Code completion stays local (no local model here, hence 503 — but
    // routed local, never to the provider).
    let (status, route, rule) = route_of(&proc, json!([{ "role": "user", "content": COMPLETION_PROMPT }])).await;
    assert_eq!((status, route.as_str(), rule.as_str()), (503, "local", "simple-tasks-stay-local"));

    // The same task with a context far beyond the local model's comfort goes to the cloud.
    let long =
        format!("{COMPLETION_PROMPT}{}", "    # keep the previous window's sum and slide it along\n".repeat(600));
    let (status, route, rule) = route_of(&proc, json!([{ "role": "user", "content": long }])).await;
    assert_eq!((status, route.as_str(), rule.as_str()), (200, "cloud", "long-prompts-to-cloud"));

    // Five tool steps into an agent chain: cloud, whatever the last ask.
    let mut messages = vec![json!({ "role": "system", "content": "You are an agent with a shell." })];
    messages.push(json!({ "role": "user", "content": "Find why the nightly job fails." }));
    for step in 0..5 {
        messages.push(json!({ "role": "assistant", "content": null, "tool_calls": [{
            "id": format!("call_{step}"), "type": "function",
            "function": { "name": "shell", "arguments": format!("{{\"cmd\":\"step {step}\"}}") }
        }]}));
        messages.push(json!({ "role": "tool", "tool_call_id": format!("call_{step}"), "content": "exit 0" }));
    }
    messages.push(
        json!({ "role": "user", "content": "Extract the job name and the exit code from the log above as JSON." }),
    );
    let (status, route, rule) = route_of(&proc, Value::Array(messages)).await;
    assert_eq!((status, route.as_str(), rule.as_str()), (200, "cloud", "agent-loops-to-cloud"));

    let seen = fake.requests();
    assert_eq!(seen.len(), 2, "only the two cloud decisions reached the provider");
    let records = proc.audit_records();
    assert_eq!(records.len(), 3);
    assert_eq!(records[0]["signals"]["task"], "code_completion");
    assert!(records[1]["signals"]["prompt_tokens"].as_u64().unwrap() > 6000);
    assert_eq!(records[2]["signals"]["tool_steps"], 5);
    assert_eq!(records[2]["signals"]["turns"], 12);
    assert!(records.iter().all(|r| r["signals"]["because"].as_array().is_some_and(|b| !b.is_empty())), "{records:#?}");
}

#[tokio::test]
async fn a_sensitive_conversation_stays_local_for_its_later_turns() {
    let fake = FakeProvider::start().await;
    let mut proc = SluiceProc::start(&fake, Setup::default()).await;
    let first =
        json!({ "role": "user", "content": "Refund card 4111 1111 1111 1111, the customer was charged twice." });
    let (_, route, rule) = route_of(&proc, json!([first])).await;
    assert_eq!((route.as_str(), rule.as_str()), ("local", "regulated-pii-stays-local"));

    // Turns two and three look clean on their own, but belong to that conversation.
    let mut turns = vec![first.clone(), json!({ "role": "assistant", "content": "Done, the refund is on its way." })];
    turns.push(json!({ "role": "user", "content": "What is the capital of France?" }));
    let (_, route, rule) = route_of(&proc, Value::Array(turns.clone())).await;
    assert_eq!((route.as_str(), rule.as_str()), ("local", "sticky_local"));
    turns.push(json!({ "role": "assistant", "content": "Paris." }));
    turns.push(json!({ "role": "user", "content": "And the capital of Italy?" }));
    let (_, route, rule) = route_of(&proc, Value::Array(turns)).await;
    assert_eq!((route.as_str(), rule.as_str()), ("local", "sticky_local"));

    // The same clean question in a fresh conversation goes to the cloud.
    let (status, route, _) =
        route_of(&proc, json!([{ "role": "user", "content": "What is the capital of France?" }])).await;
    assert_eq!((status, route.as_str()), (200, "cloud"));
    assert_eq!(fake.requests().len(), 1);
    let all: String = fake.requests().iter().map(|r| String::from_utf8_lossy(&r.body).into_owned()).collect();
    assert!(!all.contains("4111"));
    let records = proc.audit_records();
    assert_eq!(records[1]["signals"]["sticky_local"], true);
    assert_eq!(records[3]["signals"]["sticky_local"], false);
}

#[test]
fn policy_test_explains_the_signals_behind_a_decision() {
    let out = std::process::Command::new(sluice_bin())
        .args(["policy", "test", "--team", "default", "--tool-steps", "6", "--json", "--dir"])
        .arg(repo_policies())
        .args(["--prompt", "Summarise the build log and tell me which step failed."])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["decision"], "cloud");
    assert_eq!(v["rule"], "agent-loops-to-cloud");
    assert_eq!(v["signals"]["tool_steps"], 6);
    assert!(v["signals"]["task"].is_string());
    assert!(v["signals"]["because"].to_string().contains("tool_steps"), "{v}");

    let out = std::process::Command::new(sluice_bin())
        .args(["policy", "test", "--team", "default", "--dir"])
        .arg(repo_policies())
        .args(["--prompt", COMPLETION_PROMPT])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("decision: local") && text.contains("task:     code_completion"), "{text}");
}

/// With the embedded model loaded, prompts are tokenized only where the exact
/// count can change the decision; there the model's count decides, not the
/// four-bytes-a-token estimate.
#[tokio::test]
async fn the_tokenizer_counts_only_where_the_count_can_decide() {
    let fake = FakeProvider::start().await;
    let policy = "rules:\n\
                  \x20 - name: huge\n\
                  \x20   when: { prompt_tokens: { gt: 6000 } }\n\
                  \x20   then: block\n\
                  default: cloud\n";
    let setup =
        Setup { policies: vec![("default.yaml", policy.to_string())], local: embedded_local(1, 0), ..Setup::default() };
    let mut proc = SluiceProc::start(&fake, setup).await;

    // Far below 6000 tokens even at one token per byte: no count needed.
    let (status, route, _) =
        route_of(&proc, json!([{ "role": "user", "content": "Summarise our Q3 plan in one line." }])).await;
    assert_eq!((status, route.as_str()), (200, "cloud"));

    // 28,000 bytes of long common words: the estimate says ~7,000 tokens
    // (over the limit), the model's tokenizer about a third of that.
    let long = " international development information".repeat(700);
    assert!(long.len() / 4 > 6000);
    let (status, route, rule) = route_of(&proc, json!([{ "role": "user", "content": long }])).await;
    assert_eq!((status, route.as_str(), rule.as_str()), (200, "cloud", "default"));

    let records = proc.audit_records();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["signals"]["prompt_tokens_exact"], false, "{:#}", records[0]);
    assert_eq!(records[1]["signals"]["prompt_tokens_exact"], true, "{:#}", records[1]);
    let counted = records[1]["signals"]["prompt_tokens"].as_u64().unwrap();
    assert!(counted < 6000 && counted > 700, "tokenizer count {counted}");
    assert_eq!(fake.requests().len(), 2);
}
