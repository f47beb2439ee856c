//! The forward proxy over real sockets: reqwest, curl and the official
//! Python SDKs as clients, sluice's own CA, the fake provider behind it, a
//! plain TLS server for tunnels, and the refusals at the door.

mod support;

use std::process::Command;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::fake_provider::FakeProvider;
use support::tls::{connect, echo_tls_server, tls_client};
use support::*;

const CARD_PROMPT: &str = "Refund card 4111 1111 1111 1111 for the customer";
const SECRET_PROMPT: &str = "Why does AKIAIOSFODNN7EXAMPLE fail to authenticate?";

fn bodies(fake: &FakeProvider) -> Vec<String> {
    fake.requests().iter().map(|r| String::from_utf8_lossy(&r.body).into_owned()).collect()
}

/// The records of CONNECTs that were answered 200, one per tunnel, written
/// when the tunnel ended.
fn tunnel_records(records: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    records.iter().filter(|r| r["api"] == "proxy.connect" && r["status"] == 200).collect()
}

/// The records of requests (and refusals at the door), without the tunnels'.
fn request_records(records: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    records.iter().filter(|r| !(r["api"] == "proxy.connect" && r["status"] == 200)).collect()
}

/// One HTTP/1.1 request over an established (TLS) stream.
async fn http1_request<S>(io: S, req: http::Request<Full<bytes::Bytes>>) -> (u16, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.unwrap();
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn reqwest_clean_prompt_reaches_provider_and_sensitive_ones_do_not() {
    let fake = FakeProvider::start().await;
    let mut proc = SluiceProc::start(&fake, Setup::default()).await;
    let client = proxied_client(&proc, false, None);

    // Clean prompt, HTTP/2 by ALPN on both sides, the client's own key passes through.
    let resp = client
        .post("https://api.openai.com/v1/chat/completions")
        .bearer_auth("sk-client-own-key")
        .json(&chat_body("Say hello in French", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.headers()["x-sluice-route"], "cloud");
    let json: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(json["object"], "chat.completion");
    let seen = fake.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].version, "HTTP/2.0", "origin speaks what the client chose");
    assert_eq!(header(&seen[0], "authorization"), Some("Bearer sk-client-own-key"));
    assert!(bodies(&fake)[0].contains("Say hello in French"));

    // HTTP/1.1-only client: the origin connection follows.
    let client1 = proxied_client(&proc, true, None);
    let resp = client1
        .post("https://api.anthropic.com/v1/messages")
        .header("x-api-key", "sk-ant-client")
        .header("anthropic-version", "2023-06-01")
        .json(&messages_body("Name three rivers", true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_11);
    let text = resp.text().await.unwrap();
    assert!(text.contains("event: message_stop"), "{text}");
    assert_eq!(fake.requests()[1].version, "HTTP/1.1");

    // A card number is kept local (no local model here: 503), a secret blocked.
    let resp = client
        .post("https://api.openai.com/v1/chat/completions")
        .json(&chat_body(CARD_PROMPT, false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["x-sluice-route"], "local");
    let err: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "local_engine_unavailable");
    let resp = client
        .post("https://api.openai.com/v1/chat/completions")
        .json(&chat_body(SECRET_PROMPT, false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let err: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "sluice_policy_block");
    let all = bodies(&fake).join("\n");
    assert!(!all.contains("4111") && !all.contains("AKIA"), "sensitive prompt reached the provider");
    assert_eq!(fake.requests().len(), 2);

    // Idle keep-alive connections would be shut down gracefully (an HTTP/2
    // GOAWAY the client must answer); this test's runtime is about to block.
    drop((client, client1));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let records = proc.audit_records();
    let proxied: Vec<_> = request_records(&records).into_iter().filter(|r| r["ingress"] == "proxy").collect();
    assert_eq!(proxied.len(), 4, "{records:#?}");
    assert!(proxied.iter().all(|r| r["host"] == "api.openai.com" || r["host"] == "api.anthropic.com"));
    assert_eq!(proxied[2]["decision"], "local");
    assert_eq!(proxied[3]["decision"], "block");
    assert!(proxied[3]["findings"]["aws_access_key"].as_u64() == Some(1));
    // One connection per client, each audited as intercepted by its name.
    let tunnels = tunnel_records(&records);
    assert_eq!(tunnels.len(), 2, "{records:#?}");
    assert!(
        tunnels.iter().all(|t| t["decision"] == "intercept" && t["signals"]["tunnel"]["sni"] == t["host"]),
        "{tunnels:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_the_proxy_and_non_llm_paths_pass_unchanged() {
    let fake = FakeProvider::start().await;
    let mut proc = SluiceProc::start(&fake, Setup::default()).await;
    let ca = proc.ca_path();
    let body = chat_body("What is a river delta?", false).to_string();
    let mut out = Command::new("curl");
    out.args(["-sS", "--fail-with-body", "--proxy"])
        .arg(format!("http://{}", proc.proxy))
        .arg("--cacert")
        .arg(&ca)
        .args(["-H", "content-type: application/json", "-H", "authorization: Bearer sk-curl", "-d", &body])
        .arg("https://api.openai.com/v1/chat/completions");
    let out = tokio::task::block_in_place(|| out.output().unwrap());
    assert!(
        out.status.success(),
        "curl failed: {} {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
        proc.log()
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["choices"][0]["message"]["role"], "assistant");

    // GET /v1/models is not a prompt: forwarded as is, still audited.
    let mut out = Command::new("curl");
    out.args(["-sS", "--fail-with-body", "--proxy"])
        .arg(format!("http://{}", proc.proxy))
        .arg("--cacert")
        .arg(&ca)
        .arg("https://api.openai.com/v1/models?limit=5");
    let out = tokio::task::block_in_place(|| out.output().unwrap());
    assert!(out.status.success(), "curl failed: {}", String::from_utf8_lossy(&out.stderr));
    let models: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(models["object"], "list");
    let seen = fake.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].path, "/v1/models?limit=5");

    let records = proc.audit_records();
    let passthrough: Vec<_> = records.iter().filter(|r| r["api"] == "passthrough").collect();
    assert_eq!(passthrough.len(), 1, "{records:#?}");
    assert_eq!(passthrough[0]["decision"], "forward");
    assert_eq!(passthrough[0]["status"], 200);
}

/// Import the official SDKs, installing them from the package registry the
/// first time (CI has it; the test fails loudly if it cannot).
fn python_with_sdks() -> &'static str {
    let ok =
        |cmd: &str| Command::new("python3").args(["-c", cmd]).output().map(|o| o.status.success()).unwrap_or(false);
    if !ok("import openai, anthropic") {
        let status = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "openai", "anthropic"])
            .status()
            .expect("run pip");
        assert!(status.success(), "pip install openai anthropic failed");
    }
    "python3"
}

const SDK_SCRIPT: &str = r#"
import json, sys, openai, anthropic
which, prompt = sys.argv[1], sys.argv[2]
try:
    if which == "openai":
        c = openai.OpenAI(api_key="sk-python-openai", max_retries=0)
        r = c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}])
        print(json.dumps({"status": 200, "text": r.choices[0].message.content}))
    else:
        c = anthropic.Anthropic(api_key="sk-ant-python", max_retries=0)
        r = c.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": prompt}])
        print(json.dumps({"status": 200, "text": r.content[0].text}))
except (openai.APIStatusError, anthropic.APIStatusError) as e:
    print(json.dumps({"status": e.status_code, "text": str(e)}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdks_through_https_proxy() {
    let python = python_with_sdks();
    let fake = FakeProvider::start().await;
    let mut proc = SluiceProc::start(&fake, Setup::default()).await;
    let run = |which: &str, prompt: &str| -> serde_json::Value {
        let out = Command::new(python)
            .args(["-c", SDK_SCRIPT, which, prompt])
            .env("HTTPS_PROXY", format!("http://{}", proc.proxy))
            .env("SSL_CERT_FILE", proc.ca_path())
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .output()
            .unwrap();
        assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    };
    let r = tokio::task::block_in_place(|| run("openai", "Give me a haiku about rain"));
    assert_eq!(r["status"], 200, "{r}");
    let r = tokio::task::block_in_place(|| run("anthropic", "Give me a limerick about snow"));
    assert_eq!(r["status"], 200, "{r}");
    let r = tokio::task::block_in_place(|| run("openai", CARD_PROMPT));
    assert_eq!(r["status"], 503, "{r}");
    let r = tokio::task::block_in_place(|| run("anthropic", SECRET_PROMPT));
    assert_eq!(r["status"], 403, "{r}");

    let seen = fake.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(header(&seen[0], "authorization"), Some("Bearer sk-python-openai"));
    // Newer SDKs send the key as a bearer token, older ones as x-api-key.
    let key = header(&seen[1], "x-api-key").or(header(&seen[1], "authorization"));
    assert!(key.is_some_and(|k| k.ends_with("sk-ant-python")), "{:?}", seen[1].headers);
    let all = bodies(&fake).join("\n");
    assert!(all.contains("haiku about rain") && all.contains("limerick about snow"));
    assert!(!all.contains("4111") && !all.contains("AKIA"));
    let records = proc.audit_records();
    assert_eq!(request_records(&records).iter().filter(|r| r["ingress"] == "proxy").count(), 4);
}

#[tokio::test]
async fn other_hosts_are_tunneled_byte_for_byte_with_their_own_certificate() {
    let fake = FakeProvider::start().await;
    let (echo, echo_ca, echo_leaf) = echo_tls_server("echo.internal.test").await;
    let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_addr = plain.local_addr().unwrap();
    let setup = Setup {
        proxy: format!(
            "allowed_ports: [443, {}, {}], allow_private: [\"127.0.0.0/8\"]",
            echo.port(),
            plain_addr.port()
        ),
        ..Setup::default()
    };
    let proc = SluiceProc::start(&fake, setup).await;
    let (status, head, tcp) = connect(proc.proxy, &echo.to_string(), None).await;
    assert_eq!(status, 200, "{head}");
    // The client trusts only the echo server's CA: sluice must not touch TLS.
    let tls = tls_client(&echo_ca, &[])
        .connect(ServerName::try_from("echo.internal.test").unwrap(), tcp)
        .await
        .expect("client sees the origin's own certificate");
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].as_ref().to_vec();
    assert_eq!(presented, echo_leaf);
    let (mut read, mut write) = tokio::io::split(tls);
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        write.write_all(&sent).await.unwrap();
        write
    });
    let mut echoed = vec![0u8; payload.len()];
    read.read_exact(&mut echoed).await.unwrap();
    assert_eq!(echoed, payload);
    drop(writer.await.unwrap());
    assert!(fake.requests().is_empty());

    // Plain HTTP in absolute form is forwarded to the (allowed) origin too.
    tokio::spawn(async move {
        let (mut tcp, _) = plain.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && tcp.read(&mut byte).await.unwrap() == 1 {
            head.push(byte[0]);
        }
        assert!(
            String::from_utf8_lossy(&head).starts_with("GET /status?x=1 HTTP/1.1"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nplain").await.unwrap();
    });
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://{}", proc.proxy)).unwrap())
        .build()
        .unwrap();
    let resp = client.get(format!("http://{plain_addr}/status?x=1")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "plain");
}

#[tokio::test]
async fn refusals_at_the_door_and_inside_the_connection_are_answered_and_audited() {
    let fake = FakeProvider::start().await;
    let token = "slk-proxy-alice";
    let setup = Setup {
        identity: format!(
            "identity: {{ anonymous_team: null, tokens: [ {{ sha256: \"{}\", team: default, user: alice }} ] }}\n",
            sluice::identity::hash_token(token)
        ),
        ..Setup::default()
    };
    let mut proc = SluiceProc::start(&fake, setup).await;
    let good = format!("alice:{token}");

    // No credentials, wrong credentials: 407 with a challenge.
    let (status, head, _) = connect(proc.proxy, "api.openai.com:443", None).await;
    assert_eq!(status, 407);
    assert!(head.to_ascii_lowercase().contains("proxy-authenticate: basic realm=\"sluice\""), "{head}");
    let (status, _, _) = connect(proc.proxy, "api.openai.com:443", Some("alice:wrong")).await;
    assert_eq!(status, 407);
    // A forbidden port and internal addresses: 403, nothing is dialled.
    let (status, head, _) = connect(proc.proxy, "api.openai.com:22", Some(&good)).await;
    assert_eq!(status, 403, "{head}");
    for target in ["10.20.30.40:443", "169.254.169.254:443", "127.0.0.1:443"] {
        let (status, head, _) = connect(proc.proxy, target, Some(&good)).await;
        assert_eq!(status, 403, "{target}: {head}");
    }

    let ca = proc.ca_pem();
    // Host header names another host than SNI: 421.
    let (status, _, tcp) = connect(proc.proxy, "api.openai.com:443", Some(&good)).await;
    assert_eq!(status, 200);
    let tls =
        tls_client(&ca, &[b"http/1.1"]).connect(ServerName::try_from("api.openai.com").unwrap(), tcp).await.unwrap();
    let req = http::Request::post("/v1/chat/completions")
        .header("host", "api.anthropic.com")
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(chat_body("hello", false).to_string())))
        .unwrap();
    let (status, body) = http1_request(tls, req).await;
    assert_eq!(status, 421, "{body}");
    assert!(body.contains("misdirected_request"), "{body}");
    // SNI names another host than CONNECT: 421 too.
    let (_, _, tcp) = connect(proc.proxy, "api.openai.com:443", Some(&good)).await;
    let tls =
        tls_client(&ca, &[b"http/1.1"]).connect(ServerName::try_from("api.anthropic.com").unwrap(), tcp).await.unwrap();
    let req = http::Request::post("/v1/messages")
        .header("host", "api.anthropic.com")
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(messages_body("hello", false).to_string())))
        .unwrap();
    let (status, body) = http1_request(tls, req).await;
    assert_eq!(status, 421, "{body}");
    assert!(body.contains("\"type\":\"error\""), "Anthropic clients get Anthropic errors: {body}");

    // The right token goes through, as alice.
    let (status, _, tcp) = connect(proc.proxy, "api.openai.com:443", Some(&good)).await;
    assert_eq!(status, 200);
    let tls =
        tls_client(&ca, &[b"http/1.1"]).connect(ServerName::try_from("api.openai.com").unwrap(), tcp).await.unwrap();
    let req = http::Request::post("/v1/chat/completions")
        .header("host", "api.openai.com")
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(chat_body("hello there", false).to_string())))
        .unwrap();
    let (status, body) = http1_request(tls, req).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(fake.requests().len(), 1);

    let all = proc.audit_records();
    let records = request_records(&all);
    let statuses: Vec<u64> = records.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, vec![407, 407, 403, 403, 403, 403, 421, 421, 200], "{records:#?}");
    assert!(records[2]["reason"].as_str().unwrap().contains("port 22"));
    assert!(records[3]["reason"].as_str().unwrap().contains("10.20.30.40"), "{:#?}", records[3]);
    assert_eq!(records[6]["user"], "alice");
    assert_eq!(records[8]["user"], "alice");
    // The three connections let in: two intercepted, and the one whose SNI
    // named another host refused (every request on it got 421).
    let tunnels = tunnel_records(&all);
    let mut decisions: Vec<&str> = tunnels.iter().map(|t| t["decision"].as_str().unwrap()).collect();
    decisions.sort();
    assert_eq!(decisions, vec!["block", "intercept", "intercept"], "{tunnels:#?}");
    assert!(tunnels.iter().all(|t| t["user"] == "alice"));
}

#[tokio::test]
async fn websocket_upgrades_on_intercepted_hosts_are_relayed_and_audited() {
    let fake = FakeProvider::start().await;
    let mut proc = SluiceProc::start(&fake, Setup::default()).await;
    let (status, _, tcp) = connect(proc.proxy, "api.openai.com:443", None).await;
    assert_eq!(status, 200);
    let mut tls = tls_client(&proc.ca_pem(), &[b"http/1.1"])
        .connect(ServerName::try_from("api.openai.com").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(
        b"GET /v1/realtime?model=gpt-realtime HTTP/1.1\r\nHost: api.openai.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate\r\nAuthorization: Bearer sk-rt\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(tls.read(&mut byte).await.unwrap(), 1);
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // A masked text message passes inspection and is relayed byte for byte.
    let frame =
        masked_text(r#"{"type":"conversation.item.create","item":{"content":[{"type":"input_text","text":"hello"}]}}"#);
    tls.write_all(&frame).await.unwrap();
    let mut echoed = vec![0u8; frame.len()];
    tls.read_exact(&mut echoed).await.unwrap();
    assert_eq!(echoed, frame);
    // One carrying a key is refused: the client gets a 1008 close, the
    // origin never gets the message (the fake would echo it back).
    let secret = masked_text(&format!(
        r#"{{"type":"conversation.item.create","item":{{"content":[{{"type":"input_text","text":"{SECRET_PROMPT}"}}]}}}}"#
    ));
    tls.write_all(&secret).await.unwrap();
    let mut close = vec![0u8; 4];
    tls.read_exact(&mut close).await.unwrap();
    assert_eq!(close[0], 0x88, "a close frame, not an echo: {close:?}");
    assert_eq!(u16::from_be_bytes([close[2], close[3]]), 1008);
    drop(tls);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = fake.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(header(&seen[0], "authorization"), Some("Bearer sk-rt"));
    assert!(!seen[0].headers.iter().any(|(n, _)| n == "sec-websocket-extensions"), "compression is never offered");
    let records = proc.audit_records();
    let ws: Vec<_> = records.iter().filter(|r| r["api"] == "websocket").collect();
    assert_eq!(ws.len(), 1, "{records:#?}");
    assert_eq!(ws[0]["status"], 101);
    assert_eq!(ws[0]["decision"], "block", "{}", ws[0]);
    assert_eq!(ws[0]["rule"], "org:no-secrets");
    assert_eq!(ws[0]["findings"]["aws_access_key"], 1);
    let reason = ws[0]["reason"].as_str().unwrap();
    assert!(reason.contains("1 messages inspected and forwarded") && !reason.contains("AKIA"), "{reason}");
}

/// A client's WebSocket text frame (FIN, masked), as RFC 6455 requires.
fn masked_text(text: &str) -> Vec<u8> {
    let key = [0x37u8, 0xfa, 0x21, 0x3d];
    let payload = text.as_bytes();
    let mut frame = vec![0x81];
    if payload.len() < 126 {
        frame.push(0x80 | payload.len() as u8);
    } else {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

#[test]
fn ca_init_writes_a_private_key_and_export_prints_a_constrained_ca() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.yaml");
    std::fs::write(&config, "ca: { dir: ca }\nproxy: { intercept: [api.openai.com, \"*.openai.azure.com\"] }\n")
        .unwrap();
    let run = |args: &[&str]| Command::new(sluice_bin()).arg("--config").arg(&config).args(args).output().unwrap();
    let out = run(&["ca", "init"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mode = std::fs::metadata(dir.path().join("ca/ca.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let again = run(&["ca", "init"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let out = run(&["ca", "export"]);
    assert!(out.status.success());
    let pem = String::from_utf8(out.stdout).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    // A standard tool reads the constraints back.
    let pem_path = dir.path().join("exported.pem");
    std::fs::write(&pem_path, &pem).unwrap();
    if let Ok(text) = Command::new("openssl").args(["x509", "-noout", "-text", "-in"]).arg(&pem_path).output() {
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(text.contains("Name Constraints"), "{text}");
        assert!(text.contains("DNS:api.openai.com") && text.contains("DNS:openai.azure.com"), "{text}");
    }
}

#[tokio::test]
async fn connections_beyond_the_limit_get_503_and_slots_come_back() {
    let fake = FakeProvider::start().await;
    let setup = Setup { proxy: "max_connections: 2".into(), ..Setup::default() };
    let proc = SluiceProc::start(&fake, setup).await;
    let first = TcpStream::connect(proc.proxy).await.unwrap();
    let second = TcpStream::connect(proc.proxy).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(proc.proxy).await.unwrap();
    let mut answer = String::new();
    third.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    // Closing a connection frees its slot for the next client.
    drop((first, second));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, head, _) = connect(proc.proxy, "api.openai.com:443", None).await;
    assert_eq!(status, 200, "{head}");
}

const LEAK_PROMPT: &str = "Refund card 4111 1111 1111 1111; the job fails with key AKIAIOSFODNN7EXAMPLE";

fn chat_request(host: &str, prompt: &str) -> http::Request<Full<bytes::Bytes>> {
    http::Request::post("/v1/chat/completions")
        .header("host", host)
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-client-own-key")
        .body(Full::new(bytes::Bytes::from(chat_body(prompt, false).to_string())))
        .unwrap()
}

/// Issue 11: `CONNECT <address>` with a ClientHello naming an intercepted
/// host used to be tunneled byte for byte, uninspected and unaudited. The
/// address here is the fake provider's own, so a tunnel would deliver.
#[tokio::test]
async fn a_connect_to_an_address_with_an_intercepted_sni_is_intercepted_and_inspected() {
    let fake = FakeProvider::start().await;
    let port = fake.addr().port();
    let setup = Setup {
        proxy: format!("allowed_ports: [443, {port}], allow_private: [\"127.0.0.0/8\"]"),
        resolve: vec![(format!("api.openai.com:{port}"), fake.addr())],
        ..Setup::default()
    };
    let mut proc = SluiceProc::start(&fake, setup).await;
    let ca = proc.ca_pem();
    let target = format!("127.0.0.1:{port}");

    // The client trusts sluice's CA only: a completed handshake means sluice
    // terminated TLS instead of tunneling to the provider.
    let (status, head, tcp) = connect(proc.proxy, &target, None).await;
    assert_eq!(status, 200, "{head}");
    let tls = tls_client(&ca, &[b"http/1.1"])
        .connect(ServerName::try_from("api.openai.com").unwrap(), tcp)
        .await
        .expect("sluice presents its own certificate for the SNI host");
    let (status, body) = http1_request(tls, chat_request("api.openai.com", LEAK_PROMPT)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("sluice_policy_block"), "{body}");

    // A clean prompt the same way reaches the provider, through sluice.
    let (_, _, tcp) = connect(proc.proxy, &target, None).await;
    let tls =
        tls_client(&ca, &[b"http/1.1"]).connect(ServerName::try_from("api.openai.com").unwrap(), tcp).await.unwrap();
    let (status, body) = http1_request(tls, chat_request("api.openai.com", "Say hello in French")).await;
    assert_eq!(status, 200, "{body}");
    let seen = bodies(&fake);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].contains("Say hello in French"));
    assert!(!seen[0].contains("4111") && !seen[0].contains("AKIA"));

    tokio::time::sleep(Duration::from_millis(200)).await;
    let records = proc.audit_records();
    let requests = request_records(&records);
    assert_eq!(requests.len(), 2, "{records:#?}");
    let blocked = requests[0];
    assert_eq!(blocked["ingress"], "proxy");
    assert_eq!(blocked["host"], "api.openai.com");
    assert_eq!(blocked["decision"], "block");
    assert_eq!(blocked["rule"], "org:no-secrets");
    assert_eq!(blocked["findings"]["credit_card"], 1, "{blocked:#?}");
    assert_eq!(blocked["findings"]["aws_access_key"], 1, "{blocked:#?}");
    assert_eq!(requests[1]["decision"], "cloud");
    let tunnels = tunnel_records(&records);
    assert_eq!(tunnels.len(), 2, "{records:#?}");
    for t in tunnels {
        assert_eq!(t["decision"], "intercept", "{t:#?}");
        assert_eq!(t["host"], "127.0.0.1");
        assert_eq!(t["provider"], "openai");
        assert_eq!(t["signals"]["tunnel"]["sni"], "api.openai.com");
        assert_eq!(t["signals"]["tunnel"]["outcome"], "intercept_by_sni");
        assert!(t["signals"]["tunnel"]["bytes_up"].as_u64().unwrap() > 0);
        assert!(t["signals"]["tunnel"]["bytes_down"].as_u64().unwrap() > 0);
        let reason = t["reason"].as_str().unwrap();
        assert!(reason.starts_with("intercepted") && !reason.contains("openai"), "{reason}");
    }
}

#[tokio::test]
async fn a_plain_tunnel_leaves_a_record_with_bytes_and_duration() {
    let fake = FakeProvider::start().await;
    let (echo, echo_ca, _) = echo_tls_server("echo.internal.test").await;
    let setup = Setup {
        proxy: format!("allowed_ports: [{}], allow_private: [\"127.0.0.0/8\"]", echo.port()),
        // Tunnels outside the AI catalog are only counted unless asked for.
        extra_config: "shadow: { record_other_tunnels: true }\n".into(),
        ..Setup::default()
    };
    let mut proc = SluiceProc::start(&fake, setup).await;
    let (status, head, tcp) = connect(proc.proxy, &echo.to_string(), None).await;
    assert_eq!(status, 200, "{head}");
    let mut tls = tls_client(&echo_ca, &[])
        .connect(ServerName::try_from("echo.internal.test").unwrap(), tcp)
        .await
        .expect("the ClientHello read by sluice reaches the origin intact");
    let payload = vec![0x5au8; 50_000];
    {
        let (mut read, mut write) = tokio::io::split(&mut tls);
        let (written, echoed) = tokio::join!(write.write_all(&payload), async {
            let mut echoed = vec![0u8; payload.len()];
            read.read_exact(&mut echoed).await.map(|_| echoed)
        });
        written.unwrap();
        assert_eq!(echoed.unwrap(), payload);
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    tls.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = tls.read_to_end(&mut rest).await;
    drop(tls);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let records = proc.audit_records();
    assert_eq!(records.len(), 1, "{records:#?}");
    let t = &records[0];
    assert_eq!(t["api"], "proxy.connect");
    assert_eq!(t["decision"], "tunnel");
    assert_eq!(t["status"], 200);
    assert_eq!(t["host"], "127.0.0.1");
    let tunnel = &t["signals"]["tunnel"];
    assert_eq!(tunnel["sni"], "echo.internal.test");
    assert_eq!(tunnel["port"], echo.port());
    assert_eq!(tunnel["outcome"], "tunnel");
    assert!(tunnel["bytes_up"].as_u64().unwrap() > 50_000, "{tunnel}");
    assert!(tunnel["bytes_down"].as_u64().unwrap() > 50_000, "{tunnel}");
    assert!(tunnel["duration_ms"].as_u64().unwrap() >= 150, "{tunnel}");
    assert!(t["latency_us"]["total"].as_u64().unwrap() >= 150_000, "{t:#?}");
    let reason = t["reason"].as_str().unwrap();
    assert!(reason.starts_with("tunneled; ") && reason.contains(" bytes up, "), "{reason}");
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn connect_ports_outside_1_to_65535_get_400_and_a_record() {
    let fake = FakeProvider::start().await;
    let mut proc = SluiceProc::start(&fake, Setup::default()).await;
    let targets = ["api.openai.com:0", "api.openai.com:70000", "api.openai.com:", "api.openai.com"];
    for target in targets {
        let (status, head, _) = connect(proc.proxy, target, None).await;
        assert_eq!(status, 400, "{target}: {head}");
    }
    let records = proc.audit_records();
    assert_eq!(records.len(), targets.len(), "{records:#?}");
    for r in &records {
        assert_eq!(r["api"], "proxy.connect");
        assert_eq!(r["status"], 400);
        assert_eq!(r["decision"], "block");
        assert_eq!(r["host"], "api.openai.com");
        assert_eq!(r["reason"], "CONNECT port missing or outside 1..65535");
    }
    assert!(fake.requests().is_empty());
}

/// Read until the proxy closes the connection (or 5 s pass).
async fn closed_by_proxy<S: tokio::io::AsyncRead + Unpin>(io: &mut S) -> Vec<u8> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), io.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the proxy kept the tunnel open");
    got
}

#[tokio::test]
async fn tunnels_sluice_cannot_judge_are_closed_and_audited() {
    let fake = FakeProvider::start().await;
    let (echo, _, _) = echo_tls_server("echo.internal.test").await;
    let setup = Setup {
        proxy: format!(
            "allowed_ports: [443, {}], allow_private: [\"127.0.0.0/8\"], handshake_timeout_ms: 300",
            echo.port()
        ),
        ..Setup::default()
    };
    let mut proc = SluiceProc::start(&fake, setup).await;

    // An intercepted CONNECT host with a ClientHello for another,
    // non-intercepted host: neither intercepted nor tunneled.
    let (status, _, tcp) = connect(proc.proxy, "api.openai.com:443", None).await;
    assert_eq!(status, 200);
    let refused =
        tls_client(&proc.ca_pem(), &[b"http/1.1"]).connect(ServerName::try_from("example.com").unwrap(), tcp).await;
    assert!(refused.is_err(), "the handshake must not complete");

    // Not TLS at all, to a host that would be tunneled: closed, nothing relayed.
    let (status, _, mut tcp) = connect(proc.proxy, &echo.to_string(), None).await;
    assert_eq!(status, 200);
    tcp.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\n\r\n").await.unwrap();
    assert!(closed_by_proxy(&mut tcp).await.is_empty());

    // Silence: closed after the handshake timeout.
    let (status, _, mut tcp) = connect(proc.proxy, &echo.to_string(), None).await;
    assert_eq!(status, 200);
    assert!(closed_by_proxy(&mut tcp).await.is_empty());

    tokio::time::sleep(Duration::from_millis(200)).await;
    let records = proc.audit_records();
    let tunnels = tunnel_records(&records);
    assert_eq!(tunnels.len(), 3, "{records:#?}");
    let outcomes: Vec<&str> = tunnels.iter().map(|t| t["signals"]["tunnel"]["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, vec!["sni_mismatch", "not_tls", "hello_timeout"], "{tunnels:#?}");
    assert!(tunnels.iter().all(|t| t["decision"] == "block"));
    assert_eq!(tunnels[0]["signals"]["tunnel"]["sni"], "example.com");
    assert_eq!(tunnels[1]["signals"]["tunnel"]["sni"], serde_json::Value::Null);
    for t in &tunnels {
        // What the client sent is never quoted back.
        let reason = t["reason"].as_str().unwrap();
        assert!(reason.starts_with("refused: "), "{reason}");
        assert!(!reason.contains("example.com") && !reason.contains("POST") && !reason.contains("openai"), "{reason}");
    }
    assert!(fake.requests().is_empty());
}
