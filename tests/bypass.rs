//! Fail closed, over real sockets: every way a prompt could reach the
//! provider uninspected (an unparsed endpoint, a path spelled differently,
//! a field the parser skips, an attachment, a duplicate key) is inspected,
//! decided by policy and audited, through the gateway and through the
//! intercepting proxy. The fake provider must never see the values.

mod support;

use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use support::*;

const CARD: &str = "4111 1111 1111 1111";
const KEY: &str = "AKIAIOSFODNN7EXAMPLE";

fn gateway_client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

fn proxied_client(proc: &SluiceProc) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(proc.ca_pem().as_bytes()).unwrap();
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{}", proc.proxy)).unwrap())
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// No request the fake received carries the card or the key, in any
/// spelling a JSON encoder might use.
fn assert_never_received(fake: &FakeProvider) {
    for r in fake.requests() {
        let body = String::from_utf8_lossy(&r.body);
        for needle in ["4111", "AKIA", "QUtJQ"] {
            assert!(!body.contains(needle), "the provider received `{needle}` at {}: {body}", r.path);
        }
    }
}

fn secret_text() -> String {
    format!("card {CARD}, key {KEY}")
}

/// One request that must not reach the provider: (method, url, body,
/// content type, extra header).
struct Probe {
    what: &'static str,
    method: reqwest::Method,
    url: String,
    body: Vec<u8>,
    content_type: &'static str,
}

fn probe(what: &'static str, method: reqwest::Method, url: String, body: Value) -> Probe {
    Probe { what, method, url, body: body.to_string().into_bytes(), content_type: "application/json" }
}

/// The bypass classes of issue 11 that both ingresses share, on `base`
/// (the gateway's URL or `https://api.openai.com`).
fn probes(base: &str, proxy: bool) -> Vec<Probe> {
    let s = secret_text();
    let post = reqwest::Method::POST;
    let chat = |content: &str| json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]});
    let mut out = vec![
        // Endpoints other than chat.
        probe("legacy completions", post.clone(), format!("{base}/v1/completions"), json!({"model": "gpt-3.5-turbo-instruct", "prompt": s})),
        probe("embeddings", post.clone(), format!("{base}/v1/embeddings"), json!({"model": "text-embedding-3-small", "input": [s.clone()]})),
        probe("anthropic token counting", post.clone(), format!("{base}/v1/messages/count_tokens"),
            json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": s}]})),
        probe("anthropic batches", post.clone(), format!("{base}/v1/messages/batches"),
            json!({"requests": [{"custom_id": "1", "params": {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": s}]}}]})),
        // Harmless spellings of the chat path.
        probe("trailing slash", post.clone(), format!("{base}/v1/chat/completions/"), chat(&s)),
        probe("doubled slash", post.clone(), format!("{base}//v1//chat/completions"), chat(&s)),
        probe("percent-encoded", post.clone(), format!("{base}/v1/chat%2Fcompletions"), chat(&s)),
        probe("upper case", post.clone(), format!("{base}/V1/CHAT/COMPLETIONS"), chat(&s)),
        // Fields the chat parser does not lift.
        probe("message name", post.clone(), format!("{base}/v1/chat/completions"),
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "name": KEY, "content": "hi"}]})),
        probe("predicted output", post.clone(), format!("{base}/v1/chat/completions"),
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "prediction": {"type": "content", "content": s}})),
        probe("tool schema", post.clone(), format!("{base}/v1/chat/completions"),
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
                   "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "string", "description": s}}}}}]})),
        probe("response format schema", post.clone(), format!("{base}/v1/chat/completions"),
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
                   "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"enum": [s]}}}})),
        probe("metadata", post.clone(), format!("{base}/v1/chat/completions"),
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "metadata": {"note": s}})),
        probe("anthropic document", post.clone(), format!("{base}/v1/messages"),
            json!({"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": [
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": s}, "context": "c"},
                {"type": "text", "text": "summarise"}]}]})),
        probe("anthropic search result", post.clone(), format!("{base}/v1/messages"),
            json!({"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": [
                {"type": "search_result", "source": "s", "title": "t", "content": [{"type": "text", "text": s}]}]}]})),
        probe("responses prompt variables", post.clone(), format!("{base}/v1/responses"),
            json!({"model": "gpt-4o-mini", "input": "hi", "prompt": {"id": "pmpt_1", "variables": {"customer": s}}})),
        // One body, two meanings.
        Probe {
            what: "duplicate keys",
            method: post.clone(),
            url: format!("{base}/v1/chat/completions"),
            body: format!(r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{s}"}}],"messages":[{{"role":"user","content":"hi"}}]}}"#).into_bytes(),
            content_type: "application/json",
        },
    ];
    if proxy {
        // Only an intercepting proxy sees paths sluice does not know.
        out.push(probe(
            "unknown path",
            post.clone(),
            format!("{base}/v1/some/new/feature"),
            json!({"anything": {"deep": [s.clone()]}}),
        ));
        out.push(probe("another method", reqwest::Method::PUT, format!("{base}/v1/chat/completions"), chat(&s)));
        out.push(Probe {
            what: "plain-text body",
            method: post.clone(),
            url: format!("{base}/v1/uploads/part"),
            body: s.clone().into_bytes(),
            content_type: "text/plain",
        });
        out.push(probe("gemini snake_case system instruction", post.clone(),
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent".to_string(),
            json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "systemInstruction": {"parts": [{"text": "be brief"}]},
                   "system_instruction": {"parts": [{"text": s}]}})));
        out.push(probe(
            "gemini token counting",
            post.clone(),
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:countTokens".to_string(),
            json!({"contents": [{"parts": [{"text": s}]}]}),
        ));
        out.push(probe(
            "bedrock converse",
            post.clone(),
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
                .to_string(),
            json!({"messages": [{"role": "user", "content": [{"text": s}]}], "system": [{"text": "x"}]}),
        ));
        out.push(probe(
            "bedrock invoke",
            post.clone(),
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/meta.llama3-8b-instruct-v1%3A0/invoke".to_string(),
            json!({"prompt": s, "max_gen_len": 8}),
        ));
    }
    out
}

/// The records of requests, without those of the CONNECTs that carried them.
fn requests_only(records: Vec<Value>) -> Vec<Value> {
    records
        .into_iter()
        .filter(|r| {
            let api = r["api"].as_str().unwrap_or("");
            !api.contains("connect") && !api.contains("tunnel")
        })
        .collect()
}

async fn send(client: &reqwest::Client, p: &Probe) -> (u16, Value) {
    let resp = client
        .request(p.method.clone(), &p.url)
        .header("content-type", p.content_type)
        .header("authorization", "Bearer sk-client")
        .body(p.body.clone())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", p.what));
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Every probe is refused (by policy or as a bad request), answered in a
/// JSON error body, recorded with what it carried, and never forwarded.
async fn check_all(proc: &mut SluiceProc, fake: &FakeProvider, client: &reqwest::Client, base: &str, proxy: bool) {
    let probes = probes(base, proxy);
    for p in &probes {
        let (status, body) = send(client, p).await;
        assert!(matches!(status, 400 | 403), "{}: status {status} {body}\n{}", p.what, proc.log());
        assert!(body.get("error").is_some(), "{}: error body in the client's format: {body}", p.what);
        assert_never_received(fake);
    }
    let records = requests_only(proc.audit_records());
    assert_eq!(records.len(), probes.len(), "one record per request: {records:#?}");
    for (p, r) in probes.iter().zip(&records) {
        if p.what == "duplicate keys" {
            assert_eq!(r["status"], 400, "{r}");
            assert!(r["reason"].as_str().unwrap().contains("repeats a key"), "{r}");
            continue;
        }
        assert_eq!(r["decision"], "block", "{}: {r}", p.what);
        assert!(r["findings"]["aws_access_key"].as_u64().unwrap_or(0) >= 1, "{}: {r}", p.what);
        if p.what != "message name" {
            assert!(r["findings"]["credit_card"].as_u64().unwrap_or(0) >= 1, "{}: {r}", p.what);
        }
        let reason = r["reason"].as_str().unwrap();
        assert!(!reason.contains("4111") && !reason.contains("AKIA"), "{}: {reason}", p.what);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_inspects_every_shape_field_and_spelling() {
    let fake = FakeProvider::start().await;
    let mut proc = SluiceProc::start(&fake, Setup::default()).await;
    let base = format!("http://{}", proc.gateway);
    check_all(&mut proc, &fake, &gateway_client(), &base, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intercepted_proxy_inspects_every_shape_field_and_spelling() {
    let fake = FakeProvider::start().await;
    let mut proc = SluiceProc::start(&fake, Setup::default()).await;
    let client = proxied_client(&proc);
    check_all(&mut proc, &fake, &client, "https://api.openai.com", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_requests_of_other_shapes_still_reach_the_provider() {
    let fake = FakeProvider::start().await;
    let setup = Setup { policies: vec![("default.yaml", "default: cloud\n".to_string())], ..Setup::default() };
    let mut proc = SluiceProc::start(&fake, setup).await;
    let client = proxied_client(&proc);
    // The fake answers 404 to these paths; what matters is that the request
    // was inspected, sent exactly as inspected, and recorded.
    let body = json!({"model": "text-embedding-3-small", "input": "rivers and deltas"}).to_string();
    let resp = client
        .post("https://api.openai.com//v1/embeddings/")
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // Read to the end: the record is written as the answer completes, and
    // the order of the records below is the order the answers completed.
    resp.bytes().await.unwrap();
    let seen = fake.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, body.as_bytes(), "forwarded byte for byte");

    // A clean body of a shape nobody knows goes by the rules.
    let resp = client
        .post("https://api.openai.com/v1/some/new/feature")
        .header("content-type", "application/json")
        .body(r#"{"note":"hello"}"#)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proc.log()));
    assert_eq!(resp.status(), 404);
    resp.bytes().await.unwrap();

    // Compressed bodies cannot be read, so they are not forwarded.
    let resp = client
        .post("https://api.openai.com/v1/chat/completions")
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    assert_eq!(fake.requests().len(), 2);

    let records = requests_only(proc.audit_records());
    assert_eq!(records[0]["api"], "openai.embeddings");
    assert_eq!(records[0]["decision"], "cloud");
    assert_eq!(records[1]["api"], "unknown");
    assert_eq!(records[1]["decision"], "cloud");
    assert_eq!(records[1]["signals"]["unparsed"], true);
    assert_eq!(records[2]["status"], 415);
    assert_eq!(records[2]["reason"], "unsupported_media_type: compressed request body refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_are_findings_in_every_dialect() {
    let fake = FakeProvider::start().await;
    // payments.yaml blocks every attachment (by its profile's rule).
    let setup = Setup { identity: "identity: { anonymous_team: payments }\n".into(), ..Setup::default() };
    let mut proc = SluiceProc::start(&fake, setup).await;
    let png = base64::engine::general_purpose::STANDARD
        .encode([0x89u8, b'P', b'N', b'G', 13, 10, 26, 10, 0, 0, 0, 13, 73, 72, 68, 82]);
    let pdf = base64::engine::general_purpose::STANDARD.encode(b"%PDF-1.4 a small document body");
    let c = gateway_client();
    let cases = [
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}")}}]}]}),
            "image/png",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [
            {"type": "file", "file": {"filename": "a.pdf", "file_data": format!("data:application/pdf;base64,{pdf}")}}]}]}),
            "application/pdf",
        ),
        (
            "/v1/messages",
            json!({"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": pdf}}]}]}),
            "application/pdf",
        ),
        (
            "/v1/responses",
            json!({"model": "gpt-4o-mini", "input": [{"role": "user", "content": [
            {"type": "input_image", "image_url": "https://example.com/cat.png"}]}]}),
            "image/*",
        ),
        (
            "/v1beta/models/gemini-2.0-flash:generateContent",
            json!({"contents": [{"role": "user", "parts": [
            {"inline_data": {"mime_type": "image/png", "data": png}}]}]}),
            "image/png",
        ),
    ];
    for (path, body, media_type) in &cases {
        let resp = c.post(proc.url(path)).header("anthropic-version", "2023-06-01").json(body).send().await.unwrap();
        assert_eq!(resp.status(), 403, "{path} {media_type}: {}", resp.text().await.unwrap());
    }
    assert!(fake.requests().is_empty());

    // A text file is read: the card inside it is a finding of its own.
    let text = base64::engine::general_purpose::STANDARD.encode(format!("refund {CARD}"));
    let body = json!({"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "text/plain", "data": text}}]}]});
    let resp =
        c.post(proc.url("/v1/messages")).header("anthropic-version", "2023-06-01").json(&body).send().await.unwrap();
    // Card numbers stay local for payments (no local model here: 503).
    assert_eq!(resp.status(), 503);
    assert!(fake.requests().is_empty());
    let records = proc.audit_records();
    for (r, (_, _, media_type)) in records.iter().zip(&cases) {
        assert_eq!(r["rule"], "regulated:no-attachments", "{r}");
        assert_eq!(r["findings"]["opaque_attachment"], 1, "{r}");
        assert_eq!(r["attachments"][0]["media_type"], *media_type, "{r}");
    }
    assert!(records[0]["attachments"][0]["bytes"].as_u64().unwrap() == 16);
    let last = records.last().unwrap();
    assert_eq!(last["findings"]["credit_card"], 1, "{last}");
    assert_eq!(last["rule"], "regulated:any-pii-stays-local");
}
