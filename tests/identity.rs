//! Identity from the network, over real sockets: callers mapped to teams by
//! their source address (clients bound to 127.0.0.x), a trusted proxy's
//! user header honoured only from its address and never forwarded, and the
//! order of precedence (token, trusted header, network, then the anonymous
//! team or a refusal) at the gateway and at the forward proxy.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ENG_TOKEN: &str = "slk-eng-erin";

/// `payments` blocks gpt models by a named rule; `eng` and `default` send
/// everything to the cloud.
fn policies() -> Vec<(&'static str, String)> {
    vec![
        ("default.yaml", "default: cloud\n".into()),
        ("eng.yaml", "default: cloud\n".into()),
        (
            "payments.yaml",
            "rules:\n  - name: payments-no-gpt\n    when: { model: [\"gpt-*\"] }\n    then: block\ndefault: cloud\n"
                .into(),
        ),
    ]
}

/// 127.0.0.0/30 is eng, except 127.0.0.2/32 (payments): listed after the
/// wider block, it still wins by its longer prefix. Erin's token is eng's.
fn network_setup(anonymous_team: &str, extra: &str) -> Setup {
    Setup {
        identity: format!(
            "identity:\n  anonymous_team: {anonymous_team}\n  tokens: [ {{ sha256: \"{}\", team: eng, user: erin }} ]\n  networks:\n    - {{ cidr: 127.0.0.0/30, team: eng }}\n    - {{ cidr: 127.0.0.2/32, team: payments }}\n{extra}",
            sluice::identity::hash_token(ENG_TOKEN)
        ),
        policies: policies(),
        ..Setup::default()
    }
}

async fn chat_from(proc: &SluiceProc, ip: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client_from(ip).post(proc.url("/v1/chat/completions")).json(&chat_body("Say hello", false));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap()
}

/// (team, user, status) of every audit record, in order.
fn callers(records: &[Value]) -> Vec<(String, String, u64)> {
    records
        .iter()
        .map(|r| {
            (r["team"].as_str().unwrap().into(), r["user"].as_str().unwrap().into(), r["status"].as_u64().unwrap())
        })
        .collect()
}

fn triple(team: &str, user: &str, status: u64) -> (String, String, u64) {
    (team.into(), user.into(), status)
}

#[tokio::test(flavor = "multi_thread")]
async fn cidr_mapped_callers_get_their_teams_policy_and_strangers_are_refused() {
    let fake = FakeProvider::start().await;
    let mut proc = SluiceProc::start(&fake, network_setup("null", "")).await;

    let resp = chat_from(&proc, "127.0.0.2", &[]).await;
    assert_eq!(resp.status(), 403, "payments' policy decides for 127.0.0.2");
    assert_eq!(resp.headers()["x-sluice-rule"], "payments-no-gpt");
    let resp = chat_from(&proc, "127.0.0.3", &[]).await;
    assert_eq!(resp.status(), 200, "127.0.0.3 is eng's");
    assert_eq!(resp.headers()["x-sluice-route"], "cloud");
    // A token wins over the network.
    let resp = chat_from(&proc, "127.0.0.2", &[("authorization", &format!("Bearer {ENG_TOKEN}"))]).await;
    assert_eq!(resp.status(), 200);
    // Outside every network, without a token, with no anonymous team: refused.
    let resp = chat_from(&proc, "127.0.0.9", &[]).await;
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("Missing sluice token"), "{body}");
    assert_eq!(fake.requests().len(), 2, "only eng's two requests reached the provider");

    let records = proc.audit_records();
    assert_eq!(
        callers(&records),
        [
            triple("payments", "127.0.0.2", 403),
            triple("eng", "127.0.0.3", 200),
            triple("eng", "erin", 200),
            triple("", "", 401)
        ]
    );
    assert!(records[3]["client_addr"].as_str().unwrap().starts_with("127.0.0.9:"));
}

/// A client of the forward proxy whose connections come from `ip`.
fn proxied_from(proc: &SluiceProc, ip: &str) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(proc.ca_pem().as_bytes()).unwrap();
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{}", proc.proxy)).unwrap())
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .local_address(ip.parse::<std::net::IpAddr>().unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The status of a bare CONNECT from `ip` without credentials.
async fn connect_status(proc: &SluiceProc, ip: &str) -> u16 {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    let mut tcp = socket.connect(proc.proxy).await.unwrap();
    tcp.write_all(b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tcp.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    head.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_forward_proxy_names_callers_by_network_too() {
    let fake = FakeProvider::start().await;
    let mut proc = SluiceProc::start(&fake, network_setup("null", "")).await;

    let url = "https://api.openai.com/v1/chat/completions";
    let body = chat_body("Say hello", false);
    let resp = proxied_from(&proc, "127.0.0.2").post(url).bearer_auth("sk-own").json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 403, "payments' policy on an intercepted request");
    assert_eq!(resp.headers()["x-sluice-rule"], "payments-no-gpt");
    let resp = proxied_from(&proc, "127.0.0.3").post(url).bearer_auth("sk-own").json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(connect_status(&proc, "127.0.0.9").await, 407, "a stranger without credentials");
    assert_eq!(connect_status(&proc, "127.0.0.1").await, 200, "127.0.0.1 is in eng's network");

    let records = proc.audit_records();
    let teams: Vec<(&str, &str, &str)> = records
        .iter()
        .map(|r| (r["api"].as_str().unwrap(), r["team"].as_str().unwrap(), r["user"].as_str().unwrap()))
        .filter(|(api, _, _)| *api == "openai.chat_completions")
        .collect();
    assert_eq!(
        teams,
        [("openai.chat_completions", "payments", "127.0.0.2"), ("openai.chat_completions", "eng", "127.0.0.3")]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_proxys_user_header_counts_only_from_its_address_and_is_never_forwarded() {
    let fake = FakeProvider::start().await;
    let trusted =
        "  trusted_proxies: { from: [127.0.0.5/32], user_header: x-forwarded-user, team_header: x-forwarded-team }\n";
    // Outside the networks (127.0.0.5 and .6 are not in 127.0.0.0/30).
    let mut proc = SluiceProc::start(&fake, network_setup("default", trusted)).await;
    let as_user = |team: &'static str| [("x-forwarded-user", "carol"), ("x-forwarded-team", team)];

    let resp = chat_from(&proc, "127.0.0.5", &as_user("payments")).await;
    assert_eq!(resp.status(), 403, "the trusted proxy named a payments user");
    assert_eq!(resp.headers()["x-sluice-rule"], "payments-no-gpt");
    let resp = chat_from(&proc, "127.0.0.5", &as_user("eng")).await;
    assert_eq!(resp.status(), 200);
    // The same headers from anyone else are ignored: the anonymous team.
    let resp = chat_from(&proc, "127.0.0.6", &as_user("payments")).await;
    assert_eq!(resp.status(), 200);
    // A token still wins over the header.
    let mut with_token = as_user("payments").to_vec();
    let bearer = format!("Bearer {ENG_TOKEN}");
    with_token.push(("authorization", &bearer));
    assert_eq!(chat_from(&proc, "127.0.0.5", &with_token).await.status(), 200);
    // A team name sluice cannot use is refused, not guessed.
    let resp = chat_from(&proc, "127.0.0.5", &as_user("Payments Team")).await;
    assert_eq!(resp.status(), 401);

    let forwarded = fake.requests();
    assert_eq!(forwarded.len(), 3);
    for rec in &forwarded {
        assert_eq!(header(rec, "x-forwarded-user"), None, "identity headers stay in sluice");
        assert_eq!(header(rec, "x-forwarded-team"), None);
    }
    let records = proc.audit_records();
    assert_eq!(
        callers(&records),
        [
            triple("payments", "carol", 403),
            triple("eng", "carol", 200),
            triple("default", "anonymous", 200),
            triple("eng", "erin", 200),
            triple("", "", 401)
        ]
    );
    assert!(records[4]["reason"].as_str().unwrap().contains("x-forwarded-team"), "{}", records[4]["reason"]);
}
