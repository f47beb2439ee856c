//! `sluice policy replay` (issue 16, point 7): traffic recorded under the
//! shipped policies, decided again under copies of them with one thing
//! changed, gives exactly the differences that change makes, and nothing
//! else; under an unchanged copy, nothing at all. While the server runs the
//! records come through its admin listener, after it stops from the files,
//! with the same report.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};
use support::fake_provider::FakeProvider;
use support::*;

const ENG_TOKEN: &str = "slk-engineering-test-token";

const COMPLETION_PROMPT: &str = "def running_mean(values: list[float], window: int) -> list[float]:\n    \"\"\"Return the running mean of `values` over `window` items.\n    >>> running_mean([1, 2, 3, 4], 2)\n    [1.5, 2.5, 3.5]\n    \"\"\"\n";
const CARD: &str = "Refund card 4111 1111 1111 1111, the customer was charged twice.";

fn sluice(config: &Path, args: &[&str]) -> Output {
    Command::new(sluice_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("SLUICE_ADMIN_TOKEN")
        .output()
        .expect("run sluice")
}

/// `policy replay --json` of the last hour under `dir`.
fn replay(config: &Path, dir: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["policy", "replay", "--since", "1h", "--json", "--dir"];
    let dir = dir.to_str().expect("UTF-8 path");
    args.push(dir);
    args.extend_from_slice(extra);
    let out = sluice(config, &args);
    assert!(out.status.success(), "replay failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON report")
}

/// A copy of the shipped policies with `from` replaced by `to` in
/// default.yaml (exactly once).
fn candidate(from: &str, to: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&repo_policies(), dir.path());
    let path = dir.path().join("default.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.matches(from).count(), 1, "`{from}` is not in default.yaml exactly once");
    std::fs::write(&path, text.replace(from, to)).unwrap();
    dir
}

/// The policy directory with its `profiles/`.
fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A request (sluice token, messages) and the (status, route, rule) it gets.
type Sent = (Option<&'static str>, Value, (u16, &'static str, &'static str));

/// A chat request; returns (status, route, rule) from sluice's headers.
async fn send(proc: &SluiceProc, token: Option<&str>, messages: Value) -> (u16, String, String) {
    let body = json!({ "model": "gpt-4o-mini", "messages": messages });
    let mut request = reqwest::Client::new().post(proc.url("/v1/chat/completions")).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let resp = request.send().await.unwrap();
    let header = |name: &str| resp.headers().get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (resp.status().as_u16(), header("x-sluice-route"), header("x-sluice-rule"))
}

fn user(text: &str) -> Value {
    json!({ "role": "user", "content": text })
}

fn agent_chain() -> Value {
    let mut messages = vec![user("Find why the nightly job fails.")];
    for step in 0..5 {
        messages.push(json!({ "role": "assistant", "content": null, "tool_calls": [{
            "id": format!("call_{step}"), "type": "function",
            "function": { "name": "shell", "arguments": format!("{{\"cmd\":\"step {step}\"}}") }
        }]}));
        messages.push(json!({ "role": "tool", "tool_call_id": format!("call_{step}"), "content": "exit 0" }));
    }
    messages.push(user("Extract the job name and the exit code from the log above as JSON."));
    Value::Array(messages)
}

/// The `(from, to, count)` triples of a report's `routes` or `rules`.
fn moved(list: &Value) -> Vec<(String, String, u64)> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|m| (m["from"].as_str().unwrap().into(), m["to"].as_str().unwrap().into(), m["count"].as_u64().unwrap()))
        .collect()
}

fn triple(from: &str, to: &str, count: u64) -> (String, String, u64) {
    (from.to_string(), to.to_string(), count)
}

/// Only `team` changed, by one request, from `from` to `to` (action,
/// rule); every other team replayed unchanged.
fn assert_one_change(report: &Value, team: &str, from: (&str, &str), to: (&str, &str)) {
    assert_eq!(report["changed"], 1, "{report:#}");
    assert_eq!(report["not_replayable"], 0);
    for (name, t) in report["teams"].as_object().unwrap() {
        if name != team {
            assert_eq!(t["changed"], 0, "team {name}: {report:#}");
            continue;
        }
        assert_eq!(t["changed"], 1, "{report:#}");
        let routes = if from.0 == to.0 { vec![] } else { vec![triple(from.0, to.0, 1)] };
        assert_eq!(moved(&t["routes"]), routes, "{report:#}");
        assert_eq!(moved(&t["rules"]), [triple(from.1, to.1, 1)], "{report:#}");
    }
    assert_eq!(report["sample"].as_array().unwrap().len(), 1, "{report:#}");
    let change = &report["sample"][0];
    assert_eq!((change["from"]["action"].as_str(), change["from"]["rule"].as_str()), (Some(from.0), Some(from.1)));
    assert_eq!((change["to"]["action"].as_str(), change["to"]["rule"].as_str()), (Some(to.0), Some(to.1)));
    assert_eq!(change["team"], team);
}

#[tokio::test]
async fn replay_reports_exactly_what_one_changed_rule_changes() {
    let fake = FakeProvider::start().await;
    let identity = format!(
        "identity: {{ anonymous_team: default, tokens: [ {{ sha256: \"{}\", team: engineering, user: bob }} ] }}\n",
        sluice::identity::hash_token(ENG_TOKEN)
    );
    let mut proc = SluiceProc::start(&fake, Setup { identity, ..Setup::default() }).await;

    // Traffic that reaches most of the shipped default policy, and one
    // engineering request. Checked as it happens, so the expectations
    // below rest on what was recorded.
    let card = user(CARD);
    let traffic: Vec<Sent> = vec![
        (None, json!([user("What is the capital of France?")]), (200, "cloud", "default")),
        (None, json!([user(COMPLETION_PROMPT)]), (503, "local", "simple-tasks-stay-local")),
        (None, agent_chain(), (200, "cloud", "agent-loops-to-cloud")),
        (None, json!([user("My key is AKIAIOSFODNN7EXAMPLE, is it valid?")]), (403, "block", "org:no-secrets")),
        (None, json!([card.clone()]), (503, "local", "regulated-pii-stays-local")),
        (
            None,
            json!([card, { "role": "assistant", "content": "Done." }, user("What is the capital of Italy?")]),
            (503, "local", "sticky_local"),
        ),
        (
            None,
            json!([user("The service listens on 127.0.0.1 port 8080; why is it slow?")]),
            (200, "cloud", "hard-tasks-to-cloud"),
        ),
        (
            None,
            json!([user("Write to jane.doe@northwind-mail.com about the refund.")]),
            (200, "redact", "other-pii-redacted"),
        ),
        (Some(ENG_TOKEN), json!([user("What is the capital of Spain?")]), (200, "cloud", "default")),
    ];
    for (token, messages, (status, route, rule)) in &traffic {
        let got = send(&proc, *token, messages.clone()).await;
        assert_eq!(got, (*status, route.to_string(), rule.to_string()), "{messages}");
    }
    let config = proc.config.clone();
    let records: Vec<Value> = {
        let out = sluice(&config, &["audit", "query", "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    assert_eq!(records.len(), traffic.len());

    // Unchanged policies: every decision replays to itself. The strongest
    // check that the records hold every input.
    let same = replay(&config, &repo_policies(), &["--show", "5"]);
    assert_eq!(same["records"], 9);
    assert_eq!(same["replayed"], 9, "{same:#}");
    assert_eq!((same["changed"].as_u64(), same["not_replayable"].as_u64()), (Some(0), Some(0)), "{same:#}");
    assert_eq!(same["teams"]["default"]["replayed"], 8);
    assert_eq!(same["teams"]["engineering"]["replayed"], 1);
    assert_eq!(same["cost_delta_usd"], 0.0);

    // One rule's action changed: the agent chain is now refused, saving
    // what it cost.
    let blocked =
        candidate("      tool_steps: { min: 5 }\n    then: cloud", "      tool_steps: { min: 5 }\n    then: block");
    let report = replay(&config, blocked.path(), &["--show", "5"]);
    assert_one_change(&report, "default", ("cloud", "agent-loops-to-cloud"), ("block", "agent-loops-to-cloud"));
    let agent = &records[2];
    assert_eq!(report["sample"][0]["seq"], agent["seq"]);
    let saved = agent["usage"]["cost_usd"].as_f64().unwrap();
    assert!(saved > 0.0, "{agent:#}");
    assert_eq!(report["cost_delta_usd"].as_f64(), Some(-saved));
    assert_eq!(report["teams"]["default"]["cost_delta_usd"].as_f64(), Some(-saved));

    // One rule's action changed the other way: the completion now goes
    // out, at the cost estimate recorded for it.
    let out = candidate(
        "      local_queue_depth: { lt: 8 }\n    then: local",
        "      local_queue_depth: { lt: 8 }\n    then: cloud",
    );
    let report = replay(&config, out.path(), &["--show", "5"]);
    assert_one_change(&report, "default", ("local", "simple-tasks-stay-local"), ("cloud", "simple-tasks-stay-local"));
    let completion = &records[1];
    let estimate = completion["signals"]["estimated_cost_usd"].as_f64().unwrap();
    assert!(estimate > 0.0);
    assert_eq!(report["cost_delta_usd"].as_f64(), Some(estimate));

    // A threshold the shipped policy set above a finding's confidence,
    // lowered: the loopback address (confidence 0.4, ignored at 0.5) now
    // counts as personal data. Only the stored, unfiltered findings can
    // tell a replay this.
    let lower = candidate("  ip_address: 0.5\n", "  ip_address: 0.3\n");
    let report = replay(&config, lower.path(), &["--show", "5"]);
    assert_one_change(&report, "default", ("cloud", "hard-tasks-to-cloud"), ("redact", "other-pii-redacted"));
    assert_eq!(report["sample"][0]["seq"], records[6]["seq"]);
    assert_eq!(report["cost_delta_usd"].as_f64(), Some(0.0), "still the cloud");

    // The same replays from the files once the server has stopped.
    let live_same = same;
    let live_blocked = replay(&config, blocked.path(), &["--show", "5"]);
    assert!(proc.log().contains("audit log read through the admin endpoint"));
    assert!(proc.stop().success());
    assert_eq!(replay(&config, &repo_policies(), &["--show", "5"]), live_same);
    assert_eq!(replay(&config, blocked.path(), &["--show", "5"]), live_blocked);
    // A team filter narrows the records read.
    let eng = replay(&config, blocked.path(), &["--team", "engineering"]);
    assert_eq!((eng["records"].as_u64(), eng["changed"].as_u64()), (Some(1), Some(0)));

    // For a person: the move, the rule, the request's number; no content.
    let text = sluice(
        &config,
        &["policy", "replay", "--since", "1h", "--show", "3", "--dir", blocked.path().to_str().unwrap()],
    );
    assert!(text.status.success());
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("Replayed 9 decision(s) from 9 record(s)") && text.contains("1 would change"), "{text}");
    assert!(text.contains("cloud → block") && text.contains("agent-loops-to-cloud → agent-loops-to-cloud"), "{text}");
    assert!(text.contains(&format!("seq {}", agent["seq"])), "{text}");
    for secret in ["nightly", "4111", "AKIA", "jane.doe", "capital"] {
        assert!(!text.contains(secret), "`{secret}` in the replay output:\n{text}");
    }
}

#[test]
fn candidates_that_do_not_load_are_reported_as_policy_check_does() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.yaml");
    // No audit log either: the candidate is checked first.
    std::fs::write(&config, "audit: { dir: audit }\n").unwrap();
    let bad = tempfile::tempdir().unwrap();
    std::fs::write(
        bad.path().join("default.yaml"),
        "rules:\n  - { name: x, when: { tool_stepz: 3 }, then: cloud }\ndefault: cloud\n",
    )
    .unwrap();
    let out = sluice(&config, &["policy", "replay", "--dir", bad.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("default.yaml:2:") && err.contains("tool_stepz"), "{err}");
    assert!(out.stdout.is_empty());
}

/// The log an older build wrote (see tests/audit_compat.rs): its decisions
/// lack the inputs a replay needs, and are counted, not guessed at.
#[test]
fn records_from_before_replay_are_counted_as_not_replayable() {
    let tmp = tempfile::tempdir().unwrap();
    let audit = tmp.path().join("audit");
    std::fs::create_dir(&audit).unwrap();
    let fixture: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audit-v0.1-d781508");
    for name in ["conf", "db"] {
        std::fs::copy(fixture.join(name), audit.join(name)).unwrap();
    }
    let config = tmp.path().join("sluice.yaml");
    std::fs::write(&config, "audit: { dir: audit }\n").unwrap();
    let out = sluice(
        &config,
        &["policy", "replay", "--json", "--since", "2000-01-01T00:00:00Z", "--dir", repo_policies().to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Six policy decisions, a malformed request and a model list.
    assert_eq!(report["records"], 8);
    assert_eq!(report["not_replayable"], 6);
    assert_eq!(report["no_decision"], 2);
    assert_eq!((report["replayed"].as_u64(), report["changed"].as_u64()), (Some(0), Some(0)));
    assert_eq!(report["teams"]["default"]["not_replayable"], 6);
}
