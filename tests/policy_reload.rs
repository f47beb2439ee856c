//! Policies change while sluice serves (issue 17): an edited file takes
//! effect without a restart and without dropping a request, a broken edit
//! is refused and the old set keeps deciding (with the error in `/readyz`,
//! the log and the metrics), SIGHUP reloads, org.yaml's rules win over a
//! team's, a `mode: monitor` rule records what it would have done and lets
//! the request through, and `sluice policy check` / `policy test` explain
//! org and profile layouts.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

const SECRET_PROMPT: &str = "why does this fail? AKIAIOSFODNN7EXAMPLE is my key";

/// How long a test waits for a change to show before giving up. The
/// watcher needs well under a second; this only bounds a broken build.
const PATIENCE: Duration = Duration::from_secs(20);

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// Replace a file the way editors save: write a temporary file, rename it over.
fn save(path: &Path, text: &str) {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn policies_dir(proc: &SluiceProc) -> std::path::PathBuf {
    proc.dir.path().join("policies")
}

/// (status, x-sluice-rule) of one chat request.
async fn ask(c: &reqwest::Client, proc: &SluiceProc, prompt: &str) -> Result<(u16, String), reqwest::Error> {
    let resp = c.post(proc.url("/v1/chat/completions")).json(&chat_body(prompt, false)).send().await?;
    let rule = resp.headers().get("x-sluice-rule").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let status = resp.status().as_u16();
    resp.bytes().await?;
    Ok((status, rule))
}

/// Ask until `done` holds for the answer; how long that took.
async fn until(c: &reqwest::Client, proc: &SluiceProc, prompt: &str, done: impl Fn(u16, &str) -> bool) -> Duration {
    let started = Instant::now();
    loop {
        let (status, rule) = ask(c, proc, prompt).await.unwrap();
        if done(status, &rule) {
            return started.elapsed();
        }
        assert!(started.elapsed() < PATIENCE, "still {status} {rule} after {PATIENCE:?}:\n{}", proc.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn readyz(proc: &SluiceProc) -> (u16, String) {
    let resp = reqwest::get(format!("http://{}/readyz", proc.admin)).await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// The value of one series (`name{labels}` as Prometheus prints it).
async fn metric(proc: &SluiceProc, series: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{}/metrics", proc.admin)).await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

const OPEN: &str = "rules:\n\
                    \x20 - name: keys-blocked\n\
                    \x20   when: { secrets: any }\n\
                    \x20   then: block\n\
                    default: cloud\n";

/// OPEN plus a rule that blocks the model every test request names.
const GATED: &str = "rules:\n\
                     \x20 - name: keys-blocked\n\
                     \x20   when: { secrets: any }\n\
                     \x20   then: block\n\
                     \x20 - name: gate\n\
                     \x20   when: { model: [\"gpt-4o-mini\"] }\n\
                     \x20   then: block\n\
                     default: cloud\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_edit_takes_effect_while_serving_and_every_request_gets_an_answer() {
    let fake = FakeProvider::start().await;
    let setup = Setup { policies: vec![("default.yaml", OPEN.to_string())], ..Setup::default() };
    let mut proc = SluiceProc::start(&fake, setup).await;
    let proc_ref = &proc;
    let c = client();

    // A streamed request the provider holds open across the reload.
    fake.hold_streams();
    let mut held = chat_body("Tell me a story", true);
    held["model"] = json!("fake-stream-held");
    let held = c.post(proc.url("/v1/chat/completions")).json(&held).send().await.unwrap();
    assert_eq!(held.status(), 200);
    assert_eq!(held.headers()["x-sluice-rule"], "default");

    // Clients asking all the time, before, during and after the edit.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (c, stop, url) = (c.clone(), stop.clone(), proc.url("/v1/chat/completions"));
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let sent = c.post(&url).json(&chat_body("What is a monad?", false)).send().await;
                    let answer = match sent {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            let rule = resp.headers().get("x-sluice-rule").map(|v| v.to_str().unwrap().to_string());
                            resp.bytes().await.map(|_| (status, rule.unwrap_or_default())).map_err(|e| e.to_string())
                        }
                        Err(e) => Err(e.to_string()),
                    };
                    seen.push(answer);
                }
                seen
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    save(&policies_dir(proc_ref).join("default.yaml"), GATED);
    let took = until(&c, proc_ref, "What is a monad?", |status, rule| status == 403 && rule == "gate").await;
    eprintln!("the edit decided requests {took:?} after the file was saved");
    // Some more of every client's requests under the new policy.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);

    let mut answered = 0;
    for client in clients {
        let seen = client.await.unwrap();
        let mut gated = false;
        for answer in &seen {
            let (status, rule) = answer.as_ref().unwrap_or_else(|e| panic!("a request failed: {e}"));
            match (*status, rule.as_str()) {
                (200, "default") => assert!(!gated, "a client went back to the old policy: {seen:?}"),
                (403, "gate") => gated = true,
                other => panic!("not an answer of either policy: {other:?}"),
            }
        }
        assert!(gated, "every client ends under the new policy: {seen:?}");
        answered += seen.len();
    }

    // The held stream started under the old policy and finishes under it.
    fake.release_streams();
    let body = held.text().await.unwrap();
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");

    let records = proc.audit_records();
    let chats: Vec<&Value> = records.iter().filter(|r| r["model_requested"] == "gpt-4o-mini").collect();
    assert!(chats.len() > answered, "{} records for {answered} client answers", chats.len());
    for r in &chats {
        match r["status"].as_u64() {
            Some(200) => assert_eq!((r["decision"].as_str(), r["rule"].as_str()), (Some("cloud"), Some("default"))),
            Some(403) => assert_eq!((r["decision"].as_str(), r["rule"].as_str()), (Some("block"), Some("gate"))),
            other => panic!("unexpected status {other:?}: {r}"),
        }
    }
    let streamed = records.iter().find(|r| r["model_requested"] == "fake-stream-held").expect("the held stream");
    assert_eq!((streamed["status"].as_u64(), streamed["rule"].as_str()), (Some(200), Some("default")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_edit_is_refused_reported_and_the_old_policy_keeps_deciding() {
    let fake = FakeProvider::start().await;
    let setup = Setup { policies: vec![("default.yaml", OPEN.to_string())], ..Setup::default() };
    let proc = SluiceProc::start(&fake, setup).await;
    let c = client();
    assert_eq!(metric(&proc, "sluice_policy_last_reload_successful").await, Some(1.0));
    assert_eq!(metric(&proc, "sluice_policy_loads_total{result=\"error\"}").await, Some(0.0));
    let loaded_at = metric(&proc, "sluice_policy_last_reload_success_timestamp_seconds").await.unwrap();
    assert!(loaded_at > 1.6e9, "a Unix time: {loaded_at}");

    // Written in place, not renamed: the reader must wait for it to settle.
    let broken = "rules:\n  - name: keys-blocked\n    when: { secrets: any }\n    then: teleport\ndefault: cloud\n";
    std::fs::write(policies_dir(&proc).join("default.yaml"), broken).unwrap();
    let started = Instant::now();
    let text = loop {
        let (status, text) = readyz(&proc).await;
        assert_eq!(status, 200, "serving the old policy is still ready: {text}");
        if text.contains("failed") {
            break text;
        }
        assert!(started.elapsed() < PATIENCE, "no reload error in /readyz:\n{text}\n{}", proc.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(text.contains("still deciding under the policies loaded before"), "{text}");
    assert!(text.contains("default.yaml:4:") && text.contains("teleport"), "file, line, reason: {text}");
    assert_eq!(metric(&proc, "sluice_policy_loads_total{result=\"error\"}").await, Some(1.0));
    assert_eq!(metric(&proc, "sluice_policy_last_reload_successful").await, Some(0.0));
    let log = proc.log();
    assert!(log.contains("policy reload refused") && log.contains("line=4") && log.contains("teleport"), "{log}");

    // The old policy decides: the key is still blocked by its rule.
    assert_eq!(ask(&c, &proc, SECRET_PROMPT).await.unwrap(), (403, "keys-blocked".to_string()));
    assert_eq!(ask(&c, &proc, "hello").await.unwrap(), (200, "default".to_string()));

    // Deleting default.yaml is refused the same way.
    std::fs::remove_file(policies_dir(&proc).join("default.yaml")).unwrap();
    let started = Instant::now();
    while metric(&proc, "sluice_policy_loads_total{result=\"error\"}").await != Some(2.0) {
        assert!(started.elapsed() < PATIENCE, "{}", proc.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = readyz(&proc).await.1;
    assert!(text.contains("no policy files (*.yaml) in directory; default.yaml is required"), "{text}");
    assert_eq!(ask(&c, &proc, SECRET_PROMPT).await.unwrap(), (403, "keys-blocked".to_string()));

    // A good edit clears the error.
    save(&policies_dir(&proc).join("default.yaml"), GATED);
    until(&c, &proc, "hello", |status, rule| status == 403 && rule == "gate").await;
    let (status, text) = readyz(&proc).await;
    assert_eq!(status, 200);
    assert!(!text.contains("failed"), "{text}");
    assert_eq!(metric(&proc, "sluice_policy_last_reload_successful").await, Some(1.0));
    let sent = fake.requests();
    assert!(!sent.is_empty());
    assert!(sent.iter().all(|r| !String::from_utf8_lossy(&r.body).contains("AKIA")), "no key went out");
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_what_the_watcher_cannot_see() {
    let fake = FakeProvider::start().await;
    let setup = Setup { policies: vec![("default.yaml", OPEN.to_string())], ..Setup::default() };
    let proc = SluiceProc::start(&fake, setup).await;
    let c = client();
    let path = policies_dir(&proc).join("default.yaml");

    // Same length, same inode, the old modification time: the watcher's
    // stamp of the file does not move, so only SIGHUP can load it.
    let edited = OPEN.replace("then: block", "then: local");
    assert_eq!(edited.len(), OPEN.len());
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::io::Write::write_all(&mut &file, edited.as_bytes()).unwrap();
    file.set_modified(modified).unwrap();
    drop(file);
    // Several polls later the old policy still decides.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(ask(&c, &proc, SECRET_PROMPT).await.unwrap(), (403, "keys-blocked".to_string()));

    let killed = std::process::Command::new("kill").arg("-HUP").arg(proc.pid().to_string()).status().unwrap();
    assert!(killed.success());
    // `local` with no local model here: 503, routed local.
    until(&c, &proc, SECRET_PROMPT, |status, rule| status == 503 && rule == "keys-blocked").await;
    assert!(proc.log().contains("SIGHUP: reloading policies"), "{}", proc.log());
    assert_eq!(readyz(&proc).await.0, 200, "SIGHUP does not stop sluice");
    assert_eq!(metric(&proc, "sluice_policy_loads_total{result=\"ok\"}").await, Some(2.0));
    assert!(fake.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_org_rule_wins_over_a_team_rule_that_allows_the_same_thing() {
    let fake = FakeProvider::start().await;
    let org = "rules:\n  - name: no-secrets\n    when: { secrets: any }\n    then: block\n";
    // The team would send credentials to the cloud.
    let team = "rules:\n  - name: keys-are-fine\n    when: { secrets: any }\n    then: cloud\ndefault: cloud\n";
    let setup = Setup {
        policies: vec![("default.yaml", "default: cloud\n".to_string())],
        identity: format!(
            "identity:\n  anonymous_team: default\n  tokens:\n    - {{ sha256: \"{}\", team: ops, user: bob }}\n",
            sluice::identity::hash_token("slk-bob")
        ),
        ..Setup::default()
    };
    let mut proc = SluiceProc::start(&fake, setup).await;
    let c = client();
    let ops =
        |prompt: &str| c.post(proc.url("/v1/chat/completions")).bearer_auth("slk-bob").json(&chat_body(prompt, false));

    // Added while serving: the team's file, then the organisation's.
    save(&policies_dir(&proc).join("ops.yaml"), team);
    let started = Instant::now();
    while ops(SECRET_PROMPT).send().await.unwrap().status() != 200 {
        assert!(started.elapsed() < PATIENCE, "{}", proc.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let allowed = fake.requests().len();
    assert!(allowed >= 1);
    save(&policies_dir(&proc).join("org.yaml"), org);
    let started = Instant::now();
    let resp = loop {
        let resp = ops(SECRET_PROMPT).send().await.unwrap();
        if resp.status() == 403 {
            break resp;
        }
        assert!(started.elapsed() < PATIENCE, "{}", proc.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(resp.headers()["x-sluice-rule"], "org:no-secrets");
    let err: Value = resp.json().await.unwrap();
    assert!(err["error"]["message"].as_str().unwrap().contains("`org:no-secrets`"), "{err}");
    // Every team gets it, the default team too.
    assert_eq!(ask(&c, &proc, SECRET_PROMPT).await.unwrap(), (403, "org:no-secrets".to_string()));
    let after = fake.requests().len();

    // The team cannot take the rule over by naming one of its own the same.
    let hijack = "rules:\n  - name: no-secrets\n    when: { secrets: any }\n    then: cloud\ndefault: cloud\n";
    save(&policies_dir(&proc).join("ops.yaml"), hijack);
    let started = Instant::now();
    let text = loop {
        let text = readyz(&proc).await.1;
        if text.contains("failed") {
            break text;
        }
        assert!(started.elapsed() < PATIENCE, "{text}\n{}", proc.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(text.contains("ops.yaml:2:") && text.contains("is an organisation rule (org.yaml, line 2)"), "{text}");
    assert_eq!(ops(SECRET_PROMPT).send().await.unwrap().status(), 403);
    assert_eq!(fake.requests().len(), after, "no credential went out once org.yaml was in place");

    let records = proc.audit_records();
    let last = records.last().unwrap();
    assert_eq!((last["team"].as_str(), last["rule"].as_str()), (Some("ops"), Some("org:no-secrets")));
    assert!(!last.to_string().contains("AKIAIOSFODNN7EXAMPLE"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_monitor_rule_records_its_would_be_decision_and_lets_the_request_through() {
    let fake = FakeProvider::start().await;
    let policy = "rules:\n\
                  \x20 - name: new-email-rule\n\
                  \x20   when: { pii: [email] }\n\
                  \x20   then: block\n\
                  \x20   mode: monitor\n\
                  default: cloud\n";
    let setup = Setup { policies: vec![("default.yaml", policy.to_string())], ..Setup::default() };
    let mut proc = SluiceProc::start(&fake, setup).await;
    let c = client();
    let prompt = "Please reply to jane.doe@northwind-mail.com about the invoice";
    assert_eq!(ask(&c, &proc, prompt).await.unwrap(), (200, "default".to_string()));
    assert_eq!(ask(&c, &proc, "hello").await.unwrap(), (200, "default".to_string()));
    assert_eq!(fake.requests().len(), 2, "both went through");
    let series = "sluice_policy_monitor_matches_total{team=\"default\",rule=\"new-email-rule\",action=\"block\"}";
    assert_eq!(metric(&proc, series).await, Some(1.0));

    let records = proc.audit_records();
    assert_eq!(records.len(), 2);
    assert_eq!((records[0]["decision"].as_str(), records[0]["rule"].as_str()), (Some("cloud"), Some("default")));
    assert_eq!(records[0]["monitor"], json!([{ "rule": "new-email-rule", "action": "block" }]));
    assert!(records[1].get("monitor").is_none(), "absent when no monitor rule matched: {}", records[1]);
}

/// `sluice policy check DIR`: stderr lines and the exit code.
fn check(dir: &Path) -> (Option<i32>, String) {
    let out = cli(&["policy", "check"], Some(dir));
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn write_all(dir: &Path, files: &[(&str, &str)]) {
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

#[test]
fn policy_check_names_file_line_and_reason_in_org_and_extends_layouts() {
    let dir = tempfile::tempdir().unwrap();
    write_all(
        dir.path(),
        &[
            ("org.yaml", "rules:\n  - name: no-secrets\n    when: { secrets: any }\n    then: block\n"),
            ("default.yaml", "description: d\nextends: strcit\n"),
            ("ops.yaml", "default: cloud\nrules:\n  - name: no-secrets\n    when: { secrets: any }\n    then: cloud\n"),
            ("profiles/a.yaml", "extends: b\n"),
            ("profiles/b.yaml", "extends: a\n"),
        ],
    );
    let (code, stderr) = check(dir.path());
    assert_eq!(code, Some(1), "{stderr}");
    let lines: BTreeMap<&str, &str> = stderr
        .lines()
        .filter_map(|l| {
            let (file, rest) = l.split_once(".yaml:")?;
            Some((file.rsplit(['/', '\\']).next().unwrap_or(file), rest))
        })
        .collect();
    assert!(lines["default"].starts_with("2:1: `extends: strcit`: there is no profile `strcit`"), "{stderr}");
    assert!(lines["ops"].starts_with("3:5: rule `no-secrets` is an organisation rule (org.yaml, line 2)"), "{stderr}");
    assert!(lines["a"].starts_with("1:1: `extends` makes a cycle: a -> b -> a"), "{stderr}");
    assert!(lines["b"].starts_with("1:1: `extends` makes a cycle: b -> a -> b"), "{stderr}");
    assert!(stderr.contains("4 error(s)"), "{stderr}");

    // org.yaml takes only what applies to every team.
    let dir = tempfile::tempdir().unwrap();
    write_all(dir.path(), &[("org.yaml", "rules: []\nsticky_local: false\n"), ("default.yaml", "default: cloud\n")]);
    let (code, stderr) = check(dir.path());
    assert_eq!(code, Some(1));
    assert!(stderr.contains("org.yaml:2:") && stderr.contains("unknown field `sticky_local`"), "{stderr}");

    // The shipped layout (org.yaml, a profile, a team extending it) is valid.
    let out = cli(&["policy", "check"], Some(&repo_policies()));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn policy_test_names_the_file_and_rule_that_decided_and_the_monitor_matches() {
    let test = |team: &str, prompt: &str, extra: &[&str]| {
        let out = std::process::Command::new(sluice_bin())
            .args(["policy", "test", "--team", team, "--prompt", prompt])
            .args(extra)
            .arg("--dir")
            .arg(repo_policies())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let text = test("engineering", SECRET_PROMPT, &[]);
    assert!(text.contains("decision: block") && text.contains("rule:     org.yaml#no-secrets"), "{text}");
    let text = test("payments", "Refund jane.doe@northwind-mail.com today", &[]);
    assert!(text.contains("rule:     profiles/regulated.yaml#any-pii-stays-local"), "{text}");
    let text = test("payments", "hello", &[]);
    assert!(text.contains("rule:     profiles/regulated.yaml#default"), "{text}");

    let text = test("default", "hello", &["--provider", "deepseek"]);
    assert!(text.contains("decision: cloud") && text.contains("rule:     default.yaml#default"), "{text}");
    assert!(text.contains("monitor:  org:unapproved-providers would have decided block"), "{text}");
    let json: Value = serde_json::from_str(&test("default", "hello", &["--provider", "deepseek", "--json"])).unwrap();
    assert_eq!(json["decided_by"], "default.yaml#default");
    assert_eq!(json["monitor"], json!([{ "rule": "org:unapproved-providers", "action": "block" }]));
}
