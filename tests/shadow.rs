//! The shadow-AI monitor over real sockets: tunnels to catalogued apps
//! attributed, unsanctioned apps blocked or coached, LLM-shaped traffic on
//! unlisted hosts and self-hosted servers reported, personal accounts
//! flagged and blocked, model downloads recorded, and `sluice shadow
//! report` summarising all of it.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use support::fake_provider::{FAKE_MODEL_FILE_BYTES, FAKE_OPENAI_ORGANIZATION};
use support::tls::{connect, echo_tls_server, tls_client};
use support::*;

const TOKEN: &str = "sluice-test-token-alice";

/// Alice (team `default`) authenticates to the proxy with [`TOKEN`].
fn identity() -> String {
    format!(
        "identity: {{ anonymous_team: null, tokens: [ {{ sha256: \"{}\", team: default, user: alice }} ] }}\n",
        sluice::identity::hash_token(TOKEN)
    )
}

fn policy(ai_apps: &str) -> Vec<(&'static str, String)> {
    vec![("default.yaml", format!("default: cloud\nai_apps: {ai_apps}\n"))]
}

/// Echo `bytes` bytes through a TLS session for `name` on a tunnel.
async fn tunnel_echo(proc: &SluiceProc, echo: SocketAddr, echo_ca: &str, name: &str, bytes: usize) {
    let (status, head, tcp) = connect(proc.proxy, &echo.to_string(), Some(&format!("alice:{TOKEN}"))).await;
    assert_eq!(status, 200, "{head}");
    let mut tls = tls_client(echo_ca, &[]).connect(ServerName::try_from(name.to_string()).unwrap(), tcp).await.unwrap();
    let payload = vec![0x42u8; bytes];
    tls.write_all(&payload).await.unwrap();
    let mut echoed = vec![0u8; bytes];
    tls.read_exact(&mut echoed).await.unwrap();
    tls.shutdown().await.unwrap();
    let _ = tls.read_to_end(&mut Vec::new()).await;
}

async fn metrics(proc: &SluiceProc) -> String {
    reqwest::get(format!("http://{}/metrics", proc.admin)).await.unwrap().text().await.unwrap()
}

fn ai_records(records: &[Value]) -> Vec<&Value> {
    records.iter().filter(|r| !r["ai"].is_null()).collect()
}

#[tokio::test]
async fn tunnels_to_ai_apps_are_attributed_and_other_tunnels_only_counted() {
    let fake = FakeProvider::start().await;
    let (chat, chat_ca, _) = echo_tls_server("chatgpt.com").await;
    let (other, other_ca, _) = echo_tls_server("intranet.example.org").await;
    let setup = Setup {
        identity: identity(),
        proxy: format!("allowed_ports: [{}, {}], allow_private: [\"127.0.0.0/8\"]", chat.port(), other.port()),
        policies: policy("{ sanctioned: [openai-api], unsanctioned: monitor }"),
        ..Setup::default()
    };
    let mut proc = SluiceProc::start(&fake, setup).await;
    // CONNECT to an address: the app is known by the TLS server name.
    tunnel_echo(&proc, chat, &chat_ca, "chatgpt.com", 20_000).await;
    tunnel_echo(&proc, other, &other_ca, "intranet.example.org", 5_000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let m = metrics(&proc).await;
    assert!(m.contains("sluice_proxy_traffic_connections_total{app=\"chatgpt\",category=\"chat_assistant\"} 1"), "{m}");
    assert!(m.contains("sluice_proxy_traffic_connections_total{app=\"other\",category=\"none\"} 1"), "{m}");
    let records = proc.audit_records();
    // The non-AI tunnel is counted, not recorded.
    assert_eq!(records.len(), 1, "{records:#?}");
    let ai = &records[0]["ai"];
    assert_eq!(records[0]["api"], "proxy.connect");
    assert_eq!(records[0]["user"], "alice");
    assert_eq!(records[0]["team"], "default");
    assert_eq!(ai["app"], "chatgpt");
    assert_eq!(ai["category"], "chat_assistant");
    assert_eq!(ai["inspected"], false);
    assert_eq!(ai["sanctioned"], false);
    assert_eq!(ai["enforced"], "monitor");
    assert!(ai["bytes_up"].as_u64().unwrap() > 20_000, "{ai}");
    assert!(ai["bytes_down"].as_u64().unwrap() > 20_000, "{ai}");
}

#[tokio::test]
async fn a_teams_own_catalog_entries_are_attributed_and_sanctioned() {
    let fake = FakeProvider::start().await;
    let (own, own_ca, _) = echo_tls_server("llm.acme-internal.test").await;
    let setup = Setup {
        identity: identity(),
        proxy: format!("allowed_ports: [{}], allow_private: [\"127.0.0.0/8\"]", own.port()),
        policies: policy(
            "{ sanctioned: [acme-llm], unsanctioned: block, catalog: [{ id: acme-llm, name: \"Acme LLM\", \
             vendor: Acme, category: llm_api, domains: [llm.acme-internal.test], source: \"https://wiki.acme.test/llm\" }] }",
        ),
        ..Setup::default()
    };
    let mut proc = SluiceProc::start(&fake, setup).await;
    tunnel_echo(&proc, own, &own_ca, "llm.acme-internal.test", 1_000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let records = proc.audit_records();
    assert_eq!(records.len(), 1, "{records:#?}");
    let ai = &records[0]["ai"];
    assert_eq!(ai["app"], "acme-llm");
    assert_eq!(ai["sanctioned"], true);
    assert!(ai["enforced"].is_null(), "a sanctioned app is not enforced: {ai}");

    // An entry the catalog cannot take is refused with its file.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("default.yaml"),
        "default: cloud\nai_apps:\n  catalog:\n    - { id: Not_Kebab, name: x, vendor: x, category: llm_api, domains: [x.test], source: \"https://x.test\" }\n",
    )
    .unwrap();
    let out = cli(&["policy", "check"], Some(dir.path()));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("default.yaml:3") && stderr.contains("ai_apps.catalog"), "{stderr}");
}

#[tokio::test]
async fn unsanctioned_apps_are_blocked_or_coached() {
    let fake = FakeProvider::start().await;
    for (mode, expect) in [("block", "is not sanctioned for your team"), ("coach", "please use OpenAI API instead")] {
        let setup = Setup {
            identity: identity(),
            policies: policy(&format!("{{ sanctioned: [openai-api], unsanctioned: {mode} }}")),
            ..Setup::default()
        };
        let mut proc = SluiceProc::start(&fake, setup).await;
        // A browser's CONNECT to the chat app: 403 with a readable reason,
        // before the name is even resolved.
        let (status, head, mut tcp) = connect(proc.proxy, "claude.ai:443", Some(&format!("alice:{TOKEN}"))).await;
        assert_eq!(status, 403, "{mode}: {head}");
        let mut body = vec![0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut body)).await.unwrap().unwrap();
        let body = String::from_utf8_lossy(&body[..n]).to_string();
        assert!(body.contains("Claude") && body.contains(expect), "{mode}: {body}");
        // An SDK's call to an unsanctioned API, intercepted: refused in
        // Anthropic's own wire format.
        let client = proxied_client(&proc, true, Some(TOKEN));
        let resp = client
            .post("https://api.anthropic.com/v1/messages")
            .header("x-api-key", "sk-ant-client")
            .header("anthropic-version", "2023-06-01")
            .json(&messages_body("Say hi", false))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{mode}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["type"], "error", "{err}");
        assert_eq!(err["error"]["type"], "permission_error", "{err}");
        assert!(err["error"]["message"].as_str().unwrap().contains(expect), "{mode}: {err}");
        let records = proc.audit_records();
        let refused: Vec<_> = ai_records(&records).into_iter().filter(|r| r["status"] == 403).collect();
        assert_eq!(refused.len(), 2, "{records:#?}");
        assert!(refused.iter().all(|r| r["ai"]["enforced"] == mode && r["ai"]["sanctioned"] == false));
    }
    assert!(fake.requests().is_empty(), "nothing reached the provider");
}

/// A plain-HTTP server on loopback that answers like Ollama.
async fn fake_ollama() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                let body = match req.uri().path() {
                    "/api/tags" => {
                        json!({"models": [{"name": "llama3:latest", "digest": "ab12", "details": {"family": "llama"}}]})
                    }
                    _ => json!({"model": "llama3", "message": {"role": "assistant", "content": "hi"}, "done": true}),
                };
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(bytes::Bytes::from(body.to_string()))))
            });
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service));
        }
    });
    addr
}

#[tokio::test]
async fn llm_shaped_requests_and_local_servers_on_unlisted_hosts_are_reported() {
    let fake = FakeProvider::start().await;
    let ollama = fake_ollama().await;
    let setup = Setup {
        identity: identity(),
        proxy: format!("allowed_ports: [{}], allow_private: [\"127.0.0.0/8\"]", ollama.port()),
        ..Setup::default()
    };
    let mut proc = SluiceProc::start(&fake, setup).await;
    let client = proxied_client(&proc, true, Some(TOKEN));
    let chat = client
        .post(format!("http://{ollama}/api/chat"))
        .json(&json!({"model": "llama3", "messages": [{"role": "user", "content": "Say hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    assert_eq!(chat.json::<Value>().await.unwrap()["message"]["content"], "hi");
    let tags = client.get(format!("http://{ollama}/api/tags")).send().await.unwrap();
    assert_eq!(tags.status(), 200);
    assert!(tags.text().await.unwrap().contains("llama3:latest"), "the answer passes through whole");
    // An ordinary form post to the same host is not an LLM call.
    let form = client.post(format!("http://{ollama}/upload")).body("name=value").send().await.unwrap();
    assert_eq!(form.status(), 200);

    let records = proc.audit_records();
    let ai = ai_records(&records);
    assert_eq!(ai.len(), 2, "{records:#?}");
    let chat = ai.iter().find(|r| r["ai"]["server"].is_null()).unwrap();
    assert_eq!(chat["ai"]["app"], "unknown-llm-endpoint");
    assert_eq!(chat["ai"]["inspected"], true);
    assert!(chat["ai"]["bytes_up"].as_u64().unwrap() > 0);
    let tags = ai.iter().find(|r| r["ai"]["server"] == "ollama").unwrap();
    assert_eq!(tags["ai"]["app"], "unknown-llm-endpoint");
}

#[tokio::test]
async fn personal_accounts_are_flagged_then_blocked_and_downloads_recorded_then_reported() {
    let fake = FakeProvider::start().await;
    let setup = Setup {
        identity: identity(),
        policies: policy("{ sanctioned: [openai-api, huggingface], personal_accounts: block }"),
        proxy: "intercept: [api.openai.com, huggingface.co]".into(),
        resolve: vec![("huggingface.co:443".into(), fake.addr())],
        extra_config: "shadow: { company_accounts: { openai: [org-acme] } }\n".into(),
        ..Setup::default()
    };
    let mut proc = SluiceProc::start(&fake, setup).await;
    let client = proxied_client(&proc, true, Some(TOKEN));
    let call = || {
        client
            .post("https://api.openai.com/v1/chat/completions")
            .bearer_auth("sk-personal-key")
            .json(&chat_body("Say hi", false))
            .send()
    };
    // The first call goes out; the answer names a personal account.
    assert_eq!(call().await.unwrap().status(), 200);
    // The same key again: refused before it leaves, in OpenAI's format.
    let again = call().await.unwrap();
    assert_eq!(again.status(), 403);
    let err: Value = again.json().await.unwrap();
    assert!(err["error"]["message"].as_str().unwrap().contains("outside the company"), "{err}");
    let download = client
        .get("https://huggingface.co/TheBloke/Llama-2-7B-GGUF/resolve/main/llama-2-7b.Q4_K_M.gguf")
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    assert_eq!(download.bytes().await.unwrap().len(), FAKE_MODEL_FILE_BYTES);
    assert_eq!(fake.requests().len(), 2, "the refused call never reached the provider");

    let records = proc.audit_records();
    let calls: Vec<_> =
        records.iter().filter(|r| r["api"] == "openai.chat_completions" && !r["ai"].is_null()).collect();
    assert_eq!(calls.len(), 2, "{records:#?}");
    let account = &calls[0]["ai"]["account"];
    assert_eq!(account["organization"], FAKE_OPENAI_ORGANIZATION);
    assert_eq!(account["personal"], true);
    let fingerprint = account["key_fingerprint"].as_str().unwrap();
    assert_eq!(fingerprint.len(), 16);
    assert!(!records.iter().any(|r| r.to_string().contains("sk-personal-key")), "the key itself is never stored");
    assert_eq!(calls[1]["status"], 403);
    assert_eq!(calls[1]["ai"]["account"]["key_fingerprint"], fingerprint);
    let dl = records.iter().find(|r| !r["ai"]["download"].is_null()).expect("a download record");
    assert_eq!(dl["ai"]["app"], "huggingface");
    assert_eq!(dl["ai"]["download"]["repo"], "TheBloke/Llama-2-7B-GGUF");
    assert_eq!(dl["ai"]["download"]["file"], "llama-2-7b.Q4_K_M.gguf");
    assert_eq!(dl["ai"]["download"]["bytes"], FAKE_MODEL_FILE_BYTES as u64);

    // The report reads the same log.
    let out = cli(&["shadow", "report", "--since", "1d", "--format", "json", "--dir"], Some(&proc.audit_dir()));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = report.to_string();
    assert!(text.contains("openai-api") && text.contains("huggingface"), "{report:#}");
    assert!(text.contains("llama-2-7b.Q4_K_M.gguf"), "{report:#}");
    assert!(text.contains(FAKE_OPENAI_ORGANIZATION), "{report:#}");
}

#[tokio::test]
async fn policy_check_refuses_apps_not_in_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("default.yaml"),
        "default: cloud\nai_apps:\n  sanctioned:\n    - openai-api\n    - chatgtp\n  unsanctioned: coach\n",
    )
    .unwrap();
    let out = cli(&["policy", "check"], Some(dir.path()));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("default.yaml:5") && stderr.contains("`chatgtp` is not an app in the catalog"), "{stderr}");
}
