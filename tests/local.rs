//! `local` decisions end to end: the embedded mistral.rs engine running the
//! real SmolLM2 GGUF, and an external OpenAI-compatible server, answering in
//! the client's own wire format through a `sluice serve` process.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use support::*;

const CARD_PROMPT: &str = "My card is 4111 1111 1111 1111. Say hello in three words.";
const MODEL_NAME: &str = "SmolLM2-135M-Instruct.Q4_1";

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap()
}

/// A policy that keeps PII and `local*` models local, with the given `local:` options.
fn policy(local_options: &str) -> Vec<(&'static str, String)> {
    vec![(
        "default.yaml",
        format!(
            "rules:\n\
             \x20 - name: no-secrets\n    when: {{ secrets: any }}\n    then: block\n\
             \x20 - name: pii-local\n    when: {{ pii: any }}\n    then: local\n\
             \x20 - name: local-models\n    when: {{ model: [\"local*\"] }}\n    then: local\n\
             default: cloud\n\
             local: {local_options}\n"
        ),
    )]
}

/// Split an SSE body into (event name, data) pairs.
fn sse_events(body: &str) -> Vec<(Option<String>, String)> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = None;
            let mut data = String::new();
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = d.to_string();
                }
            }
            (name, data)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn smollm2_answers_locally_in_both_formats_streaming_and_not() {
    let cloud = FakeProvider::start().await;
    let setup = Setup { local: embedded_local(2, 4), policies: policy("{ overflow: wait }"), ..Setup::default() };
    let mut sluice = SluiceProc::start(&cloud, setup).await;
    let c = client();

    // OpenAI, whole answer.
    let mut body = chat_body(CARD_PROMPT, false);
    body["max_tokens"] = json!(16);
    let resp = c.post(sluice.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-sluice-route"], "local");
    assert_eq!(resp.headers()["x-sluice-rule"], "pii-local");
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["model"], MODEL_NAME);
    let text = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!text.trim().is_empty(), "SmolLM2 said something");
    let finish = answer["choices"][0]["finish_reason"].as_str().unwrap();
    assert!(finish == "stop" || finish == "length", "{finish}");
    let usage = &answer["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 10, "{usage}");
    let completion = usage["completion_tokens"].as_u64().unwrap();
    assert!(completion > 0 && completion <= 16, "{usage}");
    assert_eq!(usage["total_tokens"], usage["prompt_tokens"].as_u64().unwrap() + completion);

    // OpenAI, streamed, with a usage chunk.
    let mut body = chat_body(CARD_PROMPT, true);
    body["max_tokens"] = json!(16);
    body["stream_options"] = json!({"include_usage": true});
    let resp = c.post(sluice.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let events = sse_events(&resp.text().await.unwrap());
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|(_, d)| serde_json::from_str(d).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["model"] == MODEL_NAME));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert!(!streamed.trim().is_empty());
    let finish_chunk = &chunks[chunks.len() - 2];
    assert!(finish_chunk["choices"][0]["finish_reason"].is_string(), "{finish_chunk}");
    let usage_chunk = &chunks[chunks.len() - 1];
    assert_eq!(usage_chunk["choices"], json!([]));
    assert!(usage_chunk["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    // Anthropic, whole answer.
    let mut body = messages_body(CARD_PROMPT, false);
    body["max_tokens"] = json!(16);
    let resp =
        c.post(sluice.url("/v1/messages")).header("anthropic-version", "2023-06-01").json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["type"], "message");
    assert_eq!(answer["role"], "assistant");
    assert_eq!(answer["model"], MODEL_NAME);
    assert_eq!(answer["content"][0]["type"], "text");
    assert!(!answer["content"][0]["text"].as_str().unwrap().trim().is_empty());
    let stop = answer["stop_reason"].as_str().unwrap();
    assert!(stop == "end_turn" || stop == "max_tokens", "{stop}");
    assert!(answer["usage"]["input_tokens"].as_u64().unwrap() > 10);
    assert!(answer["usage"]["output_tokens"].as_u64().unwrap() > 0);

    // Anthropic, streamed: the event order the Messages API specifies.
    let mut body = messages_body(CARD_PROMPT, true);
    body["max_tokens"] = json!(16);
    let resp = c.post(sluice.url("/v1/messages")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let events = sse_events(&resp.text().await.unwrap());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
    assert_eq!(names[0], "message_start");
    assert_eq!(names[1], "ping");
    assert_eq!(names[2], "content_block_start");
    let deltas = names.iter().filter(|n| **n == "content_block_delta").count();
    assert!(deltas >= 1);
    assert_eq!(&names[3..3 + deltas], vec!["content_block_delta"; deltas].as_slice());
    assert_eq!(&names[3 + deltas..], ["content_block_stop", "message_delta", "message_stop"]);
    for (name, data) in &events {
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["type"], name.as_deref().unwrap(), "each data names its event");
    }
    let start: Value = serde_json::from_str(&events[0].1).unwrap();
    assert_eq!(start["message"]["model"], MODEL_NAME);
    assert!(start["message"]["usage"]["input_tokens"].as_u64().unwrap() > 10);
    let delta: Value = serde_json::from_str(&events[events.len() - 2].1).unwrap();
    assert!(delta["usage"]["output_tokens"].as_u64().unwrap() > 0);

    assert!(cloud.requests().is_empty(), "nothing went to the cloud");
    let records = sluice.audit_records();
    assert_eq!(records.len(), 4);
    for r in &records {
        assert_eq!(r["decision"], "local");
        assert_eq!(r["provider"], "local");
        assert_eq!(r["model_used"], MODEL_NAME);
        assert_eq!(r["status"], 200);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn too_long_prompts_get_413_or_go_to_cloud_only_when_clean() {
    let cloud = FakeProvider::start().await;
    // SmolLM2 has an 8192-token context; this is far beyond it.
    let long = "lorem ipsum dolor sit amet ".repeat(4000);
    let setup = Setup { local: embedded_local(1, 1), policies: policy("{ too_long: cloud }"), ..Setup::default() };
    let mut sluice = SluiceProc::start(&cloud, setup).await;
    let c = client();
    // Clean but routed local by model: too long, so the policy sends it to the cloud.
    let mut body = chat_body(&long, false);
    body["model"] = json!("local-small");
    let resp = c.post(sluice.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-sluice-route"], "cloud");
    // With a card number it must never go to the cloud: 413.
    let body = chat_body(&format!("{long} {CARD_PROMPT}"), false);
    let resp = c.post(sluice.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 413);
    let err: Value = resp.json().await.unwrap();
    assert!(err["error"]["message"].as_str().unwrap().contains("cannot go to the cloud"), "{err}");
    assert_eq!(cloud.requests().len(), 1);
    let records = sluice.audit_records();
    assert_eq!(records[1]["status"], 413);
    assert_eq!(records[1]["decision"], "local");

    // Default too_long: a clear 413 in the client's format, never silent truncation.
    let setup = Setup { local: embedded_local(1, 1), policies: policy("{}"), ..Setup::default() };
    let sluice = SluiceProc::start(&cloud, setup).await;
    let resp = c
        .post(sluice.url("/v1/messages"))
        .json(&messages_body(&format!("{long} {CARD_PROMPT}"), false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["type"], "request_too_large");
    assert!(err["error"]["message"].as_str().unwrap().contains("takes at most 8192"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_model_file_stops_serve_naming_the_fetch_command() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::copy(repo_policies().join("default.yaml"), dir.path().join("policies/default.yaml")).unwrap();
    let config = dir.path().join("sluice.yaml");
    std::fs::write(
        &config,
        "gateway: { listen: \"127.0.0.1:0\" }\nadmin: { listen: \"127.0.0.1:0\" }\n\
         local: { backend: embedded, model: models/nope.gguf }\n",
    )
    .unwrap();
    let out = std::process::Command::new(sluice_bin()).args(["serve", "--config"]).arg(&config).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nope.gguf"), "{stderr}");
    assert!(stderr.contains("scripts/fetch-model"), "{stderr}");
}

/// `local.device: cuda` in a build without the `cuda` feature: `serve`
/// stops before listening, with exit code 2 and a message naming the build
/// (not the GPU) as the reason, even though the model file is fine.
#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_device_in_a_cpu_build_stops_serve_naming_the_build() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::copy(repo_policies().join("default.yaml"), dir.path().join("policies/default.yaml")).unwrap();
    let config = dir.path().join("sluice.yaml");
    std::fs::write(
        &config,
        format!(
            "gateway: {{ listen: \"127.0.0.1:0\" }}\nadmin: {{ listen: \"127.0.0.1:0\" }}\n\
             local: {{ backend: embedded, model: \"{}\", device: cuda }}\n",
            smollm2().display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(sluice_bin()).args(["serve", "--config"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("local.device is cuda, but this sluice was built without the cuda feature"), "{stderr}");
    assert!(stderr.contains("scripts/build-cuda"), "{stderr}");
    assert!(!stderr.contains("no usable GPU"), "{stderr}");
    assert!(!stderr.contains("sluice is serving"), "{stderr}");
}

/// `local.device: auto` in a build without CUDA runs the engine on the CPU,
/// logs that choice and why, and answers local decisions.
#[cfg(not(feature = "cuda"))]
#[tokio::test(flavor = "multi_thread")]
async fn auto_device_in_a_cpu_build_answers_on_the_cpu_and_logs_why() {
    let cloud = FakeProvider::start().await;
    let local = format!(
        "local: {{ backend: embedded, model: \"{}\", device: auto, max_concurrent: 1, queue: 2, max_tokens_cap: 8 }}\n",
        smollm2().display()
    );
    let setup = Setup { local, policies: policy("{ overflow: wait }"), ..Setup::default() };
    let sluice = SluiceProc::start(&cloud, setup).await;
    let resp =
        client().post(sluice.url("/v1/chat/completions")).json(&chat_body(CARD_PROMPT, false)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-sluice-route"], "local");
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["model"], MODEL_NAME);
    assert!(answer["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{answer}");
    let log = sluice.log();
    let line = log
        .lines()
        .find(|l| l.contains("local.device auto: the embedded engine runs on the CPU"))
        .unwrap_or_else(|| panic!("no device line in the log:\n{log}"));
    assert!(line.contains("built without the cuda feature"), "{line}");
    assert!(cloud.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_model_file_leaves_sluice_unready_and_local_decisions_503() {
    let cloud = FakeProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.gguf");
    std::fs::write(&bad, b"GGUF but not really a model").unwrap();
    let local = format!("local: {{ backend: embedded, model: \"{}\" }}\n", bad.display());
    let fake = FakeProvider::start().await;
    let setup = Setup { local, ..Setup::default() };
    // Not ready: start() would wait forever, so drive the process by hand.
    let sluice = SluiceProc::start_unready(&fake, setup).await;
    let c = client();
    let mut ready = None;
    for _ in 0..100 {
        let r = c.get(format!("http://{}/readyz", sluice.admin)).send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        if text.contains("unavailable") {
            ready = Some((status, text));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, text) = ready.expect("readyz should report the failed load");
    assert_eq!(status, 503, "{text}");
    let resp = c.post(sluice.url("/v1/chat/completions")).json(&chat_body(CARD_PROMPT, false)).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    let err: Value = resp.json().await.unwrap();
    assert!(err["error"]["message"].as_str().unwrap().contains("not sent to any cloud provider"), "{err}");
    assert!(fake.requests().is_empty());
    drop(cloud);
}

/// Overflow modes, made deterministic with an external backend that holds
/// its streams: the single engine slot stays busy until released.
async fn saturated(overflow: &str) -> (FakeProvider, FakeProvider, SluiceProc) {
    let cloud = FakeProvider::start().await;
    let backend = FakeProvider::start().await;
    let local = format!(
        "local: {{ backend: external, max_concurrent: 1, queue: 1, \
         external: {{ base_url: \"https://127.0.0.1:{}/v1\", model: fake-stream-held }} }}\n",
        backend.addr().port()
    );
    let setup = Setup { local, policies: policy(overflow), ..Setup::default() };
    let sluice = SluiceProc::start_with_extra_ca(&cloud, setup, backend.ca_pem()).await;
    (cloud, backend, sluice)
}

/// Fill the slot and the queue with two held streams.
async fn fill(sluice: &SluiceProc) -> Vec<reqwest::Response> {
    let c = client();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut body = chat_body("hello there", true);
        body["model"] = json!("local-small");
        let sent = c.post(sluice.url("/v1/chat/completions")).json(&body).send();
        held.push(tokio::spawn(sent));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut out = Vec::new();
    // The first is admitted and streaming; the second waits in the queue.
    out.push(held.remove(0).await.unwrap().unwrap());
    drop(held);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn overflow_reject_answers_429_in_wire_format() {
    let (cloud, backend, sluice) = saturated("{ overflow: reject }").await;
    let _held = fill(&sluice).await;
    let c = client();
    let mut body = messages_body(CARD_PROMPT, false);
    body["model"] = json!("local-small");
    let resp = c.post(sluice.url("/v1/messages")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["type"], "rate_limit_error");
    assert!(cloud.requests().is_empty());
    backend.release_streams();
}

#[tokio::test(flavor = "multi_thread")]
async fn overflow_wait_times_out_then_succeeds_once_released() {
    let (cloud, backend, sluice) = saturated("{ overflow: wait, overflow_wait_ms: 300 }").await;
    let held = fill(&sluice).await;
    let c = client();
    let mut body = chat_body("hi", false);
    body["model"] = json!("local-small");
    let started = std::time::Instant::now();
    let resp = c.post(sluice.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    assert!(started.elapsed() >= Duration::from_millis(300), "it waited before giving up");
    let err: Value = resp.json().await.unwrap();
    assert!(err["error"]["message"].as_str().unwrap().contains("300 ms"), "{err}");
    // Release the held streams: a waiting request now gets its turn.
    backend.release_streams();
    drop(held);
    let resp = releasing(&backend, c.post(sluice.url("/v1/chat/completions")).json(&body).send()).await.unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "Hello from the fake provider.");
    assert!(cloud.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn overflow_cloud_sends_clean_prompts_out_but_never_sensitive_ones() {
    let (cloud, backend, sluice) = saturated("{ overflow: cloud }").await;
    let _held = fill(&sluice).await;
    let c = client();
    let mut clean = chat_body("What is the capital of France?", false);
    clean["model"] = json!("local-small");
    let resp = c.post(sluice.url("/v1/chat/completions")).json(&clean).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-sluice-route"], "cloud");
    assert_eq!(cloud.requests().len(), 1);
    // A card number never overflows to the cloud, whatever the policy says.
    let resp = c.post(sluice.url("/v1/chat/completions")).json(&chat_body(CARD_PROMPT, false)).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(cloud.requests().len(), 1);
    backend.release_streams();
}

#[tokio::test(flavor = "multi_thread")]
async fn external_backend_answers_both_formats_and_disconnect_frees_the_slot() {
    let (cloud, backend, mut sluice) = saturated("{ overflow: reject }").await;
    let c = client();
    // Anthropic client, OpenAI-compatible backend: translated both ways.
    let mut body = messages_body(CARD_PROMPT, false);
    body["system"] = json!("be brief");
    let resp = releasing(&backend, c.post(sluice.url("/v1/messages")).json(&body).send()).await.unwrap();
    let status = resp.status();
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["type"], "message");
    assert_eq!(answer["model"], "fake-stream-held");
    assert_eq!(answer["content"][0]["text"], "Hello from the fake provider.");
    assert_eq!(answer["usage"]["output_tokens"], 7);
    let seen = backend.requests();
    let sent: Value = serde_json::from_slice(&seen.last().unwrap().body).unwrap();
    assert_eq!(sent["model"], "fake-stream-held");
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["messages"][0], json!({"role": "system", "content": "be brief"}));
    assert_eq!(seen.last().unwrap().path, "/v1/chat/completions");

    // A client that disconnects mid-stream gives its slot back.
    let mut body = chat_body(CARD_PROMPT, true);
    body["model"] = json!("local-small");
    let resp = c.post(sluice.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("chat.completion.chunk"));
    drop(stream);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Slot and queue are free again: two held streams fit, a third is refused.
    let held = fill(&sluice).await;
    let resp = c.post(sluice.url("/v1/chat/completions")).json(&chat_body(CARD_PROMPT, false)).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    backend.release_streams();
    drop(held);
    assert!(cloud.requests().is_empty());
    let records = sluice.audit_records();
    assert!(records.iter().any(|r| r["reason"].as_str().unwrap().contains("client disconnected")), "{records:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn required_tool_calls_come_back_in_each_clients_format() {
    let cloud = FakeProvider::start().await;
    let setup = Setup { local: embedded_local(2, 4), policies: policy("{ overflow: wait }"), ..Setup::default() };
    let mut sluice = SluiceProc::start(&cloud, setup).await;
    let c = client();
    let params = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
    let prompt = "My card is 4111 1111 1111 1111. What is the weather in Paris?";

    let mut body = chat_body(prompt, false);
    body["tools"] = json!([{"type": "function", "function": {"name": "get_weather", "description": "Current weather for a city.", "parameters": params}}]);
    body["tool_choice"] = json!({"type": "function", "function": {"name": "get_weather"}});
    let resp = c.post(sluice.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    let status = resp.status();
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{answer}");
    let choice = &answer["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{answer}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].is_string(), "{args}");

    let mut body = messages_body(prompt, false);
    body["tools"] =
        json!([{"name": "get_weather", "description": "Current weather for a city.", "input_schema": params}]);
    body["tool_choice"] = json!({"type": "tool", "name": "get_weather"});
    let resp = c.post(sluice.url("/v1/messages")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["stop_reason"], "tool_use", "{answer}");
    let block = answer["content"].as_array().unwrap().iter().find(|b| b["type"] == "tool_use").unwrap().clone();
    assert_eq!(block["name"], "get_weather");
    assert!(block["input"]["city"].is_string(), "{block}");

    // Streamed: the call arrives as tool_use content block events.
    body["stream"] = json!(true);
    let resp = c.post(sluice.url("/v1/messages")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let events = sse_events(&resp.text().await.unwrap());
    let datas: Vec<Value> = events.iter().map(|(_, d)| serde_json::from_str(d).unwrap()).collect();
    let start = datas.iter().find(|d| d["type"] == "content_block_start" && d["content_block"]["type"] == "tool_use");
    assert_eq!(start.expect("a tool_use block")["content_block"]["name"], "get_weather");
    let json_text: String = datas.iter().filter_map(|d| d["delta"]["partial_json"].as_str()).collect();
    let input: Value = serde_json::from_str(&json_text).unwrap();
    assert!(input["city"].is_string(), "{input}");
    let last_delta = datas.iter().rev().find(|d| d["type"] == "message_delta").unwrap();
    assert_eq!(last_delta["delta"]["stop_reason"], "tool_use");
    assert!(cloud.requests().is_empty());
    assert_eq!(sluice.audit_records().len(), 3);
}
