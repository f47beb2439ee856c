//! The forward proxy over real sockets: reqwest, curl and the official
//! Python SDKs as clients, sluice's own CA, the fake provider behind it, a
//! plain TLS server for tunnels, and the refusals at the door.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::fake_provider::FakeProvider;
use support::*;

const CARD_PROMPT: &str = "Refund card 4111 1111 1111 1111 for the customer";
const SECRET_PROMPT: &str = "Why does AKIAIOSFODNN7EXAMPLE fail to authenticate?";

fn proxied_client(proc: &SluiceProc, http1_only: bool, token: Option<&str>) -> reqwest::Client {
    let mut proxy = reqwest::Proxy::all(format!("http://{}", proc.proxy)).unwrap();
    if let Some(token) = token {
        proxy = proxy.basic_auth("alice", token);
    }
    let ca = reqwest::Certificate::from_pem(proc.ca_pem().as_bytes()).unwrap();
    let mut builder = reqwest::Client::builder()
        .proxy(proxy)
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(30));
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

fn bodies(fake: &FakeProvider) -> Vec<String> {
    fake.requests().iter().map(|r| String::from_utf8_lossy(&r.body).into_owned()).collect()
}

/// Send a raw CONNECT and return the status code and the stream after the
/// response head.
async fn connect(proxy: std::net::SocketAddr, target: &str, auth: Option<&str>) -> (u16, String, TcpStream) {
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(auth) = auth {
        let encoded = base64::engine::general_purpose::STANDARD.encode(auth);
        head.push_str(&format!("Proxy-Authorization: Basic {encoded}\r\n"));
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        let n = tcp.read(&mut byte).await.unwrap();
        assert!(n > 0, "proxy closed before answering CONNECT: {}", String::from_utf8_lossy(&got));
        got.push(byte[0]);
    }
    let head = String::from_utf8(got).unwrap();
    let status = head[9..12].parse().unwrap();
    (status, head, tcp)
}

fn tls_client(ca_pem: &str, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
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
    let resp = client.post("https://api.openai.com/v1/chat/completions").json(&chat_body(CARD_PROMPT, false)).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["x-sluice-route"], "local");
    let err: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "local_engine_unavailable");
    let resp = client.post("https://api.openai.com/v1/chat/completions").json(&chat_body(SECRET_PROMPT, false)).send().await.unwrap();
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
    let proxied: Vec<_> = records.iter().filter(|r| r["ingress"] == "proxy").collect();
    assert_eq!(proxied.len(), 4, "{records:#?}");
    assert!(proxied.iter().all(|r| r["host"] == "api.openai.com" || r["host"] == "api.anthropic.com"));
    assert_eq!(proxied[2]["decision"], "local");
    assert_eq!(proxied[3]["decision"], "block");
    assert!(proxied[3]["findings"]["aws_access_key"].as_u64() == Some(1));
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
    assert!(out.status.success(), "curl failed: {} {}\n{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout), proc.log());
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
    let ok = |cmd: &str| Command::new("python3").args(["-c", cmd]).output().map(|o| o.status.success()).unwrap_or(false);
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
    assert_eq!(records.iter().filter(|r| r["ingress"] == "proxy").count(), 4);
}

/// A TLS echo server with its own CA, standing for any non-LLM site.
async fn echo_tls_server() -> (std::net::SocketAddr, String, Vec<u8>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["echo.internal.test".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, ca.pem(), leaf.der().to_vec())
}

#[tokio::test]
async fn other_hosts_are_tunneled_byte_for_byte_with_their_own_certificate() {
    let fake = FakeProvider::start().await;
    let (echo, echo_ca, echo_leaf) = echo_tls_server().await;
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
        assert!(String::from_utf8_lossy(&head).starts_with("GET /status?x=1 HTTP/1.1"), "{}", String::from_utf8_lossy(&head));
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
    let tls = tls_client(&ca, &[b"http/1.1"]).connect(ServerName::try_from("api.openai.com").unwrap(), tcp).await.unwrap();
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
    let tls = tls_client(&ca, &[b"http/1.1"]).connect(ServerName::try_from("api.anthropic.com").unwrap(), tcp).await.unwrap();
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
    let tls = tls_client(&ca, &[b"http/1.1"]).connect(ServerName::try_from("api.openai.com").unwrap(), tcp).await.unwrap();
    let req = http::Request::post("/v1/chat/completions")
        .header("host", "api.openai.com")
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(chat_body("hello there", false).to_string())))
        .unwrap();
    let (status, body) = http1_request(tls, req).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(fake.requests().len(), 1);

    let records = proc.audit_records();
    let statuses: Vec<u64> = records.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, vec![407, 407, 403, 403, 403, 403, 421, 421, 200], "{records:#?}");
    assert!(records[2]["reason"].as_str().unwrap().contains("port 22"));
    assert!(records[3]["reason"].as_str().unwrap().contains("private"));
    assert_eq!(records[6]["user"], "alice");
    assert_eq!(records[8]["user"], "alice");
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
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer sk-rt\r\n\r\n",
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
    let frame = b"\x81\x05hello and some more bytes";
    tls.write_all(frame).await.unwrap();
    let mut echoed = vec![0u8; frame.len()];
    tls.read_exact(&mut echoed).await.unwrap();
    assert_eq!(echoed, frame);
    drop(tls);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = fake.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(header(&seen[0], "authorization"), Some("Bearer sk-rt"));
    let records = proc.audit_records();
    let ws: Vec<_> = records.iter().filter(|r| r["api"] == "websocket").collect();
    assert_eq!(ws.len(), 1, "{records:#?}");
    assert_eq!(ws[0]["status"], 101);
    assert!(ws[0]["reason"].as_str().unwrap().contains(&format!("{} bytes up", frame.len())), "{}", ws[0]["reason"]);
}

#[test]
fn ca_init_writes_a_private_key_and_export_prints_a_constrained_ca() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.yaml");
    std::fs::write(&config, "ca: { dir: ca }\nproxy: { intercept: [api.openai.com, \"*.openai.azure.com\"] }\n").unwrap();
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
