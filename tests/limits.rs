//! Budgets and rate limits over real sockets: a team over its token budget
//! gets 429 with `retry-after` in its own wire format (or the local model,
//! as configured), and the counter survives a restart; per-minute rate
//! limits are exact under concurrency; two instances sharing one real
//! `redis-server` enforce one budget between them; a Redis outage fails
//! closed or open as configured. Usage is read back with `sluice budget
//! status` (a process) and the metrics.

mod support;

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{json, Value};
use support::redis::RedisServer;
use support::*;

fn policy(limits: &str) -> Vec<(&'static str, String)> {
    vec![("default.yaml", format!("default: cloud\nlimits: {limits}\n"))]
}

/// Poll `sluice budget status` until `budget` of `team` (or its `user`)
/// reaches `at_least`: usage is settled when the answer's record is
/// written, just after the client has the answer.
async fn wait_for_usage(proc: &SluiceProc, team: &str, user: Option<&str>, budget: &str, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let report = budget_status(proc, Some(team));
        if let Some(used) = budget_used(&report, team, user, budget).filter(|u| *u >= at_least) {
            return used;
        }
        assert!(Instant::now() < deadline, "{budget} of {team}/{user:?} never reached {at_least}: {report}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the one series of `name` with all of `labels`.
async fn metric(proc: &SluiceProc, name: &str, labels: &[&str]) -> Option<f64> {
    let text = reqwest::get(format!("http://{}/metrics", proc.admin)).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|want| l.contains(want)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

fn retry_after(resp: &reqwest::Response) -> u64 {
    resp.headers()["retry-after"].to_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn over_its_token_budget_a_team_gets_429_in_its_own_format_even_after_a_restart() {
    early_in_a_day().await;
    let fake = FakeProvider::start().await;
    let setup = Setup { policies: policy("{ team: { tokens_per_day: 10 } }"), ..Setup::default() };
    let mut proc = SluiceProc::start(&fake, setup).await;
    let client = reqwest::Client::new();

    // Below the budget: admitted; the answer's usage (prompt + 7) passes it.
    let resp = client.post(proc.url("/v1/chat/completions")).json(&chat_body("Say hello", false)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    let spent = answer["usage"]["total_tokens"].as_u64().unwrap();
    assert!(spent > 10, "{answer}");
    assert_eq!(wait_for_usage(&proc, "default", None, "tokens_per_day", spent).await, spent);
    assert_eq!(
        metric(&proc, "sluice_budget_used", &["team=\"default\"", "budget=\"tokens_per_day\""]).await,
        Some(spent as f64)
    );
    assert_eq!(metric(&proc, "sluice_budget_limit", &["budget=\"tokens_per_day\""]).await, Some(10.0));

    // OpenAI's format.
    let resp = client.post(proc.url("/v1/chat/completions")).json(&chat_body("Again", false)).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    let wait = retry_after(&resp);
    assert!((1..=86_400).contains(&wait), "retry-after {wait}: seconds to the next UTC midnight");
    assert_eq!(resp.headers()["x-sluice-route"], "block");
    assert_eq!(resp.headers()["x-sluice-rule"], "limits.tokens_per_day");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(body["error"]["code"], "sluice_limit_reached");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("has used {spent} of its 10 tokens per day")), "{message}");
    // Anthropic's format.
    let resp = client
        .post(proc.url("/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .json(&messages_body("Again", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(retry_after(&resp) >= 1);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(fake.requests().len(), 1, "nothing over the budget reached the provider");
    assert!(metric(
        &proc,
        "sluice_limit_reached_total",
        &["budget=\"tokens_per_day\"", "scope=\"team\"", "action=\"block\""]
    )
    .await
    .is_some_and(|n| n == 2.0));

    // Stopped, the store is read directly; restarted, the count holds.
    assert!(proc.stop().success());
    assert_eq!(budget_used(&budget_status(&proc, None), "default", None, "tokens_per_day"), Some(spent));
    proc.restart().await;
    let resp = client.post(proc.url("/v1/chat/completions")).json(&chat_body("Again", false)).send().await.unwrap();
    assert_eq!(resp.status(), 429, "the counter survived the restart");
    assert_eq!(budget_used(&budget_status(&proc, Some("default")), "default", None, "tokens_per_day"), Some(spent));
    assert_eq!(fake.requests().len(), 1);

    let records = proc.audit_records();
    let refused: Vec<&Value> = records.iter().filter(|r| r["status"] == 429).collect();
    assert_eq!(refused.len(), 3);
    for r in refused {
        assert_eq!((r["decision"].as_str(), r["rule"].as_str()), (Some("block"), Some("limits.tokens_per_day")));
        assert!(r["reason"].as_str().unwrap().contains("sluice_limit_reached"), "{r}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn over_a_users_budget_the_local_model_answers_when_the_policy_says_local() {
    early_in_a_day().await;
    let fake = FakeProvider::start().await;
    let setup = Setup {
        local: embedded_local(1, 4),
        policies: policy("{ per_user: { tokens_per_day: 1 }, on_limit: local }"),
        ..Setup::default()
    };
    let proc = SluiceProc::start(&fake, setup).await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
    let mut body = chat_body("Say hello in three words.", false);
    body["max_tokens"] = json!(8);

    let resp = client.post(proc.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(resp.headers()["x-sluice-route"], "cloud");
    wait_for_usage(&proc, "default", Some("anonymous"), "tokens_per_day", 1).await;

    let resp = client.post(proc.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-sluice-route"], "local");
    assert_eq!(resp.headers()["x-sluice-rule"], "limits.tokens_per_day");
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["model"], "SmolLM2-135M-Instruct.Q4_1");
    assert!(!answer["choices"][0]["message"]["content"].as_str().unwrap().trim().is_empty());
    assert_eq!(fake.requests().len(), 1, "over the budget, nothing went to the cloud");
    assert!(
        metric(&proc, "sluice_limit_reached_total", &["scope=\"user\"", "action=\"local\""]).await == Some(1.0),
        "the user's limit, answered locally"
    );
    // Per-user usage is in the report, never a metric label.
    let text = reqwest::get(format!("http://{}/metrics", proc.admin)).await.unwrap().text().await.unwrap();
    assert!(!text.lines().any(|l| l.starts_with("sluice_budget") && l.contains("anonymous")), "{text}");
}

/// Tokens for two users of the default team.
fn two_users() -> String {
    format!(
        "identity: {{ anonymous_team: null, tokens: [ {{ sha256: \"{}\", team: default, user: alice }}, {{ sha256: \"{}\", team: default, user: bob }} ] }}\n",
        sluice::identity::hash_token("slk-alice"),
        sluice::identity::hash_token("slk-bob")
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_per_minute_are_exact_under_64_concurrent_requests() {
    let fake = FakeProvider::start().await;
    let setup = Setup {
        identity: two_users(),
        policies: policy("{ team: { requests_per_minute: 15 }, per_user: { requests_per_minute: 10 } }"),
        ..Setup::default()
    };
    let proc = SluiceProc::start(&fake, setup).await;
    let client = reqwest::Client::new();
    early_in_a_minute().await;

    let sends = (0..64).map(|i| {
        let token = if i % 2 == 0 { "slk-alice" } else { "slk-bob" };
        let req = client.post(proc.url("/v1/chat/completions")).bearer_auth(token).json(&chat_body("Hi", false));
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let wait = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
            let body: Value = resp.json().await.unwrap();
            (token, status, wait, body)
        }
    });
    let results = join_all(sends).await;
    let passed = |who: &str| results.iter().filter(|(t, s, _, _)| *t == who && *s == 200).count();
    assert_eq!(passed("slk-alice") + passed("slk-bob"), 15, "exactly the team's 15 pass");
    assert!(passed("slk-alice") <= 10 && passed("slk-bob") <= 10, "and no user more than 10");
    for (_, status, wait, body) in results.iter().filter(|(_, s, _, _)| *s != 200) {
        assert_eq!(*status, 429, "{body}");
        assert!(wait.is_some_and(|w| (1..=60).contains(&w)), "retry-after {wait:?}");
        assert!(body["error"]["message"].as_str().unwrap().contains("requests per minute"), "{body}");
    }
    assert_eq!(fake.requests().len(), 15);
    let report = budget_status(&proc, None);
    assert_eq!(budget_used(&report, "default", None, "requests_per_minute"), Some(15));
    let alice = budget_used(&report, "default", Some("alice"), "requests_per_minute").unwrap();
    let bob = budget_used(&report, "default", Some("bob"), "requests_per_minute").unwrap();
    assert_eq!(alice + bob, 15, "{report}");
}

fn redis_limits(url: &str, on_store_error: &str) -> String {
    format!("limits: {{ store: \"{url}\", on_store_error: {on_store_error}, redis_timeout_ms: 500 }}\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_sharing_one_redis_enforce_one_budget_exactly() {
    let redis = RedisServer::start();
    let fake = FakeProvider::start().await;
    let setup = Setup {
        extra_config: redis_limits(&redis.url(), "closed"),
        policies: policy("{ team: { requests_per_minute: 10, tokens_per_day: 1000000 } }"),
        ..Setup::default()
    };
    let a = SluiceProc::start(&fake, setup.clone()).await;
    let b = SluiceProc::start(&fake, setup).await;
    let client = reqwest::Client::new();
    early_in_a_minute().await;

    let sends = (0..30).map(|i| {
        let proc = if i % 2 == 0 { &a } else { &b };
        let req = client.post(proc.url("/v1/chat/completions")).json(&chat_body("Hi", false));
        async move { req.send().await.unwrap().status().as_u16() }
    });
    let statuses = join_all(sends).await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 10, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 20, "{statuses:?}");
    assert_eq!(fake.requests().len(), 10);

    // Both instances see the one count; the counter expires with its window.
    for proc in [&a, &b] {
        assert_eq!(budget_used(&budget_status(proc, None), "default", None, "requests_per_minute"), Some(10));
    }
    let keys = redis.command("KEYS sluice:limits:rpm:*");
    let key = keys.lines().find(|l| l.starts_with("sluice:limits:rpm:")).expect("the minute's counter").to_string();
    let ttl: i64 = redis.command(&format!("TTL {key}")).trim().trim_start_matches(':').parse().unwrap();
    assert!((1..=60).contains(&ttl), "{key} expires at the end of its minute: {ttl}");
    // Usage is added in Redis too (off the request path).
    // Ten answers of at least 8 tokens (prompt + 7) each.
    wait_for_usage(&b, "default", None, "tokens_per_day", 10 * 8).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_outage_fails_closed_or_open_as_configured() {
    let mut redis = RedisServer::start();
    let fake = FakeProvider::start().await;
    let closed = Setup {
        extra_config: redis_limits(&redis.url(), "closed"),
        policies: policy("{ team: { requests_per_minute: 1000 } }"),
        ..Setup::default()
    };
    let proc = SluiceProc::start(&fake, closed).await;
    let client = reqwest::Client::new();
    let chat = || client.post(proc.url("/v1/chat/completions")).json(&chat_body("Hi", false)).send();
    assert_eq!(chat().await.unwrap().status(), 200);

    redis.kill();
    let resp = chat().await.unwrap();
    assert_eq!(resp.status(), 503, "closed: no counting, no forwarding");
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("limits store"), "{body}");
    assert_eq!(body["error"]["code"], "sluice_limits_unavailable");
    let ready = reqwest::get(format!("http://{}/readyz", proc.admin)).await.unwrap().text().await.unwrap();
    assert!(ready.contains("unreachable") && ready.contains("refusing requests of teams with limits"), "{ready}");
    assert_eq!(metric(&proc, "sluice_limits_store_up", &["store=\"redis\""]).await, Some(0.0));
    assert_eq!(fake.requests().len(), 1);

    // Back: within a moment requests are counted in Redis again.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    while chat().await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "sluice never used the restarted redis");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metric(&proc, "sluice_limits_store_up", &["store=\"redis\""]).await, Some(1.0));
    drop(proc);

    // Open, with nothing listening: each instance counts on its own.
    let nowhere = format!("redis://127.0.0.1:{}/0", free_port());
    let open = Setup {
        extra_config: redis_limits(&nowhere, "open"),
        policies: policy("{ team: { requests_per_minute: 2 } }"),
        ..Setup::default()
    };
    let proc = SluiceProc::start(&fake, open).await;
    early_in_a_minute().await;
    let chat = || client.post(proc.url("/v1/chat/completions")).json(&chat_body("Hi", false)).send();
    let statuses = [chat().await.unwrap().status(), chat().await.unwrap().status(), chat().await.unwrap().status()];
    assert_eq!(statuses, [200, 200, 429], "open: the local fallback still applies the limit");
    let ready = reqwest::get(format!("http://{}/readyz", proc.admin)).await.unwrap();
    assert_eq!(ready.status(), 200, "a Redis outage is a detail, not unreadiness");
    assert!(ready.text().await.unwrap().contains("counting in this instance's memory"));
}
