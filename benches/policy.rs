//! Cost of `TeamPolicy::decide` in an organisation-sized policy set: 20
//! teams, each deciding over 200 rules (20 from org.yaml, 80 from a shared
//! profile, 100 of the team's own). The request matches none of them, so
//! every rule is tried before the default decides: the worst case. Also a
//! request one of the last rules matches, and one an org rule blocks at
//! once. A p99 over 20,000 single decisions across the teams follows the
//! criterion groups (criterion reports means, the budget is a p99).
//! `policy_reload` times one reload of the shipped policies: the load, and
//! the drop of the set it replaces.

use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use sluice::classify::{Prediction, Task};
use sluice::inspect::{Category, Finding};
use sluice::policy::{PolicySet, Signals, TeamPolicy};

const TEAMS: usize = 20;

/// One rule of a realistic mix of conditions; `n` makes its numbers differ.
fn rule(out: &mut String, name: &str, n: usize) {
    let when = match n % 6 {
        0 => format!("{{ pii: [email, phone], model: [\"gpt-4*\", \"o1*\"], prompt_tokens: {{ gt: {} }} }}", 1000 + n),
        1 => "{ secrets: [github_token, slack_token], provider: [anthropic, mistral] }".to_string(),
        2 => format!("{{ model: [\"claude-3-opus*\", \"o1-pro*\"], prompt_tokens: {{ gt: {} }} }}", 2000 + n),
        3 => "{ task: [translation, creative_writing], task_confidence: { min: 0.9 } }".to_string(),
        4 => format!("{{ provider: [mistral, groq], tool_steps: {{ min: {} }} }}", 10 + n),
        _ => format!("{{ terms: any, stream: true, turns: {{ min: {} }} }}", 3 + n),
    };
    let then = ["local", "block", "cloud", "redact"][n % 4];
    let _ = writeln!(out, "  - {{ name: {name}, when: {when}, then: {then} }}");
}

fn write_policies(dir: &std::path::Path) {
    let mut org = String::from("rules:\n  - { name: no-secrets, when: { secrets: [aws_access_key] }, then: block }\n");
    for i in 1..20 {
        rule(&mut org, &format!("org-{i}"), i);
    }
    std::fs::write(dir.join("org.yaml"), org).unwrap();
    std::fs::create_dir_all(dir.join("profiles")).unwrap();
    let mut profile = String::from("rules:\n");
    for i in 0..80 {
        rule(&mut profile, &format!("shared-{i}"), 20 + i);
    }
    profile.push_str("default: cloud\n");
    std::fs::write(dir.join("profiles/shared.yaml"), profile).unwrap();
    for t in 0..TEAMS {
        let name = if t == 0 { "default".to_string() } else { format!("team-{t:02}") };
        let mut team = String::from("extends: shared\nrules:\n");
        for i in 0..99 {
            rule(&mut team, &format!("own-{i}"), 100 + i + t);
        }
        // The last rule: a card number stays local.
        team.push_str("  - { name: cards-local, when: { pii: [credit_card] }, then: local }\n");
        std::fs::write(dir.join(format!("{name}.yaml")), team).unwrap();
    }
}

fn finding(category: Category, kind: &'static str) -> Finding {
    Finding { category, kind, segment: 0, span: 0..16, confidence: 0.95, validator: "bench" }
}

fn signals(findings: &[Finding]) -> Signals<'_> {
    Signals {
        findings,
        requested_model: "gpt-4o-mini",
        provider: "openai",
        prompt_tokens: 800,
        task: Some(Prediction { task: Task::from_name("summarization").unwrap(), confidence: 0.8 }),
        turns: 2,
        ..Signals::default()
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    write_policies(dir.path());
    let set = PolicySet::load_dir(dir.path()).unwrap_or_else(|e| panic!("the bench policies load:\n{e}"));
    assert_eq!(set.len(), TEAMS);
    let teams: Vec<Arc<TeamPolicy>> = set.teams().map(|t| set.team(t).unwrap().clone()).collect();

    let none = [finding(Category::Pii, "ip_address")];
    let card = [finding(Category::Pii, "credit_card")];
    let key = [finding(Category::Secret, "aws_access_key")];
    let cases: [(&str, &[Finding], &str); 3] = [
        ("no_match_200_rules", &none, "default"),
        ("last_rule", &card, "cards-local"),
        ("org_rule", &key, "org:no-secrets"),
    ];
    for (_, findings, rule) in &cases {
        assert_eq!(teams[0].decide(&signals(findings)).rule, *rule);
    }

    let mut g = c.benchmark_group("policy_decide");
    for (name, findings, _) in &cases {
        let s = signals(findings);
        g.bench_function(*name, |b| b.iter(|| teams[3].decide(black_box(&s))));
    }
    g.finish();

    for (name, findings, _) in &cases {
        let s = signals(findings);
        let mut times: Vec<u64> = (0..20_000)
            .map(|i| {
                let team = &teams[i % TEAMS];
                let start = Instant::now();
                black_box(team.decide(black_box(&s)));
                start.elapsed().as_nanos() as u64
            })
            .collect();
        times.sort_unstable();
        let us = |q: f64| times[((times.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
        println!(
            "policy decide {name} ({TEAMS} teams x 200 rules), 20000 calls: p50 {:.2} us, p99 {:.2} us, max {:.2} us",
            us(0.5),
            us(0.99),
            us(1.0)
        );
    }
}

/// What one reload of the shipped policies costs: loading and validating
/// the directory (with the catalog and dictionaries), and dropping the set
/// it replaces.
fn reload(c: &mut Criterion) {
    use sluice::policy::reload::Policies;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let shadow = sluice::config::ShadowConfig::default();
    let mut g = c.benchmark_group("policy_reload");
    g.sample_size(30);
    g.bench_function("load_shipped", |b| b.iter(|| black_box(Policies::load(&dir, &shadow).unwrap())));
    g.bench_function("drop_shipped", |b| {
        b.iter_batched(|| Policies::load(&dir, &shadow).unwrap(), drop, criterion::BatchSize::LargeInput)
    });
    g.finish();
}

criterion_group!(benches, bench, reload);
criterion_main!(benches);
