use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::audit::{Latencies, UsageNote};
use crate::classify::Task;
use crate::inspect::Category;
use crate::policy::f32_for_json;
use crate::policy::{Decision, TeamPolicy};

fn finding(category: Category, kind: &'static str, confidence: f32) -> Finding {
    Finding { category, kind, segment: 3, span: 5..9, confidence, validator: "test" }
}

fn set_of(files: &[(&str, &str)]) -> (tempfile::TempDir, PolicySet) {
    let dir = tempfile::tempdir().expect("a temp dir");
    for (name, text) in files {
        fs::write(dir.path().join(name), text).expect("writable temp dir");
    }
    match PolicySet::load_dir(dir.path()) {
        Ok(set) => (dir, set),
        Err(e) => panic!("policies should load:\n{e}"),
    }
}

fn shipped() -> PolicySet {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    PolicySet::load_dir(&dir).unwrap_or_else(|e| panic!("shipped policies load:\n{e}"))
}

/// Thresholds set exactly at the values the signals below carry, so a
/// value that came back rounded would decide differently.
const EDGES: &str = "min_confidence: { default: 0.5, person: 0.7342, ip_address: 0.4 }\n\
    unparsed_requests: rules\n\
    rules:\n\
    - { name: keys, when: { secrets: any }, then: block }\n\
    - { name: raw, when: { unparsed: true }, then: block }\n\
    - { name: sure-code, when: { task: [code_completion], task_confidence: { min: 0.7342 } }, then: local }\n\
    - { name: cheap, when: { estimated_cost_usd: { max: 0.3 }, stream: true }, then: redact }\n\
    - { name: people, when: { people: any, special_category: [health] }, then: local }\n\
    - { name: addresses, when: { pii: [ip_address] }, then: redact }\n\
    - { name: agents, when: { tool_steps: { min: 5 }, tools_present: true }, then: cloud }\n\
    - { name: long, when: { prompt_tokens: { gt: 6000 }, turns: { max: 3 } }, then: cloud }\n\
    - { name: busy, when: { local_queue_depth: { lt: 4 }, model: [\"gpt-4o*\"], provider: [openai] }, then: local }\n\
    - { name: files, when: { attachments: true }, then: cloud }\n\
    - { name: terms, when: { terms: any }, then: local }\n\
    default: cloud\n";

/// Many requests, varied around the thresholds above and the shipped ones.
fn variants() -> Vec<(Vec<Finding>, Signals<'static>)> {
    let finding_sets: Vec<Vec<Finding>> = vec![
        vec![],
        vec![finding(Category::Pii, "person", 0.7342), finding(Category::Special, "health", 0.61)],
        vec![finding(Category::Pii, "person", 0.7341999), finding(Category::Special, "health", 0.9)],
        vec![finding(Category::Pii, "ip_address", 0.4), finding(Category::Pii, "ip_address", 0.35)],
        vec![finding(Category::Secret, "aws_access_key", 0.2)],
        vec![finding(Category::Secret, "github_token", 0.5), finding(Category::Secret, "github_token", 0.1)],
        vec![finding(Category::Pii, "credit_card", 0.99), finding(Category::Pii, "email", 0.95)],
        vec![finding(Category::Term, crate::inspect::TERM_KIND, 1.0)],
        vec![finding(Category::Attachment, crate::inspect::ATTACHMENT_KIND, 1.0)],
        vec![finding(Category::Pii, "street_address", 0.66)],
    ];
    let tasks = [
        None,
        Some((Task::CodeCompletion, 0.7342f32)),
        Some((Task::CodeCompletion, 0.734_199_9)),
        Some((Task::MathReasoning, 0.5)),
        Some((Task::Extraction, 0.6)),
        Some((Task::Extraction, 0.599_999_9)),
        Some((Task::OpenQaChat, 0.123_456_79)),
    ];
    // Each field drawn on its own from a fixed sequence, so that every
    // combination of conditions turns up.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut pick = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let mut out = Vec::new();
    for _ in 0..2000 {
        let anthropic = pick(3) == 0;
        let signals = Signals {
            findings: &[],
            requested_model: if anthropic { "claude-haiku-4" } else { "gpt-4o-mini" },
            provider: if anthropic { "anthropic" } else { "openai" },
            prompt_tokens: [6000, 6001, 12][pick(3)],
            prompt_tokens_exact: pick(2) == 0,
            task: tasks[pick(tasks.len())].map(|(task, confidence)| crate::classify::Prediction { task, confidence }),
            turns: [1, 3, 4, 40][pick(4)],
            tool_steps: [0, 4, 5, 31][pick(4)],
            tools_present: pick(2) == 0,
            stream: pick(2) == 0,
            unparsed: pick(8) == 0,
            estimated_cost_usd: [Some(0.1 + 0.2), Some(0.3), None, Some(2.5)][pick(4)],
            local_queue_depth: [3, 4, 8][pick(3)],
            sticky_local: pick(6) == 0,
        };
        out.push((finding_sets[pick(finding_sets.len())].clone(), signals));
    }
    out
}

/// The audit record `sluice serve` writes for a decision, stored as JSON
/// text and read back.
fn recorded(team: &str, signals: &Signals, decision: &Decision) -> AuditRecord {
    let record = AuditRecord {
        team: team.to_string(),
        model_requested: signals.requested_model.to_string(),
        decision: decision.action.as_str().to_string(),
        rule: decision.rule.clone(),
        signals: Some(crate::pipeline::signal_summary(signals, decision)),
        latency_us: Latencies::default(),
        ..AuditRecord::default()
    };
    let text = serde_json::to_string(&record).expect("a record serialises");
    serde_json::from_str(&text).expect("and reads back")
}

#[test]
fn recorded_inputs_decide_exactly_as_the_request_did_under_any_policy() {
    let (_dir, edges) = set_of(&[("default.yaml", "default: cloud\n"), ("t.yaml", EDGES)]);
    let shipped = shipped();
    let policies: Vec<&Arc<TeamPolicy>> =
        ["default", "engineering", "payments"].iter().filter_map(|t| shipped.team(t)).chain(edges.team("t")).collect();
    assert_eq!(policies.len(), 4);
    let mut rules = BTreeSet::new();
    for (findings, signals) in variants() {
        let signals = Signals { findings: &findings, ..signals };
        for recording in &policies {
            let decision = recording.decide(&signals);
            let record = recorded(recording.team(), &signals, &decision);
            let Recorded::Decision(back) = RecordedDecision::of(&record) else {
                panic!("a new record is replayable: {:?}", record.signals);
            };
            assert_eq!(back.action, decision.action);
            assert_eq!(back.rule, decision.rule);
            assert_eq!(back.team, recording.team());
            // Every policy, not only the one that recorded it, decides the
            // read-back signals as it would have decided the request.
            for candidate in &policies {
                let want = candidate.decide(&signals);
                assert_eq!(candidate.decide(&back.signals()), want, "{} on {signals:?}", candidate.team());
                rules.insert(want.rule);
            }
        }
    }
    // The variants reach far into every policy, not just its default.
    for rule in ["sure-code", "cheap", "people", "addresses", "raw", "agents", "long", "busy", "files", "terms", "keys"]
    {
        assert!(rules.contains(rule), "no variant reached `{rule}`: {rules:?}");
    }
    assert!(rules.contains("sticky_local") && rules.contains("unparsed_requests"), "{rules:?}");
    assert!(rules.contains("editor-completions-local") && rules.contains("simple-tasks-stay-local"), "{rules:?}");
}

#[test]
fn confidences_are_written_short_and_read_back_exactly() {
    assert_eq!(f32_for_json(0.91), 0.91);
    assert_eq!(serde_json::to_string(&f32_for_json(0.91)).unwrap(), "0.91");
    // A spread of f32 values across 0..=1, including awkward ones.
    let mut bits = 0u32;
    while bits <= 1.0f32.to_bits() {
        let x = f32::from_bits(bits);
        let text = serde_json::to_string(&f32_for_json(x)).unwrap();
        let back: f64 = serde_json::from_str(&text).unwrap();
        assert_eq!((back as f32).to_bits(), x.to_bits(), "{x:e} written as {text}");
        bits += 9973;
    }
}

#[test]
fn type_names_say_their_category() {
    let mut seen = BTreeSet::new();
    for kind in PII_KINDS.iter().chain(SECRET_KINDS).chain(SPECIAL_KINDS).chain([&TERM_KIND, &ATTACHMENT_KIND]) {
        assert!(seen.insert(*kind), "`{kind}` names two categories");
        assert!(finding_of(kind, 0.5).is_some());
    }
    assert_eq!(finding_of("health", 0.5).map(|f| f.category), Some(Category::Special));
    assert_eq!(finding_of("no_such_type", 0.5), None);
}

#[test]
fn older_records_and_records_without_a_decision_are_told_apart() {
    let older = AuditRecord {
        signals: Some(serde_json::json!({
            "task": "summarization", "task_confidence": 0.812, "prompt_tokens": 40, "prompt_tokens_exact": false,
            "turns": 1, "tool_steps": 0, "tools_present": false, "stream": false, "estimated_cost_usd": 0.0003,
            "local_queue_depth": 0, "sticky_local": false, "because": []
        })),
        ..AuditRecord::default()
    };
    assert_eq!(RecordedDecision::of(&older), Recorded::NotReplayable);
    let tunnel = AuditRecord {
        signals: Some(serde_json::json!({"tunnel": {"connect_host": "example.org", "port": 443}})),
        ..AuditRecord::default()
    };
    assert_eq!(RecordedDecision::of(&tunnel), Recorded::NoDecision);
    assert_eq!(RecordedDecision::of(&AuditRecord::default()), Recorded::NoDecision);

    // A type a later build added cannot be replayed by this one.
    let signals = Signals { provider: "openai", ..Signals::default() };
    let decision = shipped().team("default").expect("default").decide(&signals);
    let mut record = recorded("default", &signals, &decision);
    record.signals.as_mut().expect("signals")["finding_confidence"] = serde_json::json!({"martian_id": 0.9});
    assert_eq!(RecordedDecision::of(&record), Recorded::NotReplayable);
}

fn stored(seq: u64, record: AuditRecord) -> StoredRecord {
    StoredRecord { seq, prev_hash: String::new(), hash: String::new(), record }
}

/// A request recorded under `set`'s `team`, with what it cost.
fn traffic(set: &PolicySet, team: &str, seq: u64, signals: &Signals, cost: f64) -> StoredRecord {
    let decision = set.team(team).expect("team").decide(signals);
    let mut record = recorded(team, signals, &decision);
    record.usage = Some(UsageNote { tokens_in: 100, tokens_out: 50, cost_usd: cost, ..UsageNote::default() });
    if decision.action == Action::Local || decision.action == Action::Block {
        record.usage = None;
    }
    stored(seq, record)
}

#[test]
fn a_replay_counts_route_and_rule_changes_and_their_cost() {
    let before = "rules:\n\
        - { name: agents, when: { tool_steps: { min: 5 } }, then: cloud }\n\
        - { name: code, when: { task: [code_completion] }, then: local }\n\
        default: cloud\n";
    let after = "rules:\n\
        - { name: agents, when: { tool_steps: { min: 5 } }, then: local }\n\
        - { name: code, when: { task: [code_completion] }, then: cloud }\n\
        default: cloud\n";
    let (_a, old) = set_of(&[("default.yaml", before), ("eng.yaml", "default: cloud\n")]);
    let (_b, new) = set_of(&[("default.yaml", after), ("eng.yaml", "default: cloud\n")]);
    let config = Config::default();
    let agent = Signals { tool_steps: 6, provider: "openai", requested_model: "gpt-4o", ..Signals::default() };
    let code = Signals {
        task: Some(Prediction { task: Task::CodeCompletion, confidence: 0.9 }),
        provider: "openai",
        requested_model: "gpt-4o",
        prompt_tokens: 1000,
        estimated_cost_usd: config.estimated_cost_usd("gpt-4o", 1000, None),
        ..Signals::default()
    };
    let plain = Signals { provider: "openai", requested_model: "gpt-4o", ..Signals::default() };
    let records = [
        traffic(&old, "default", 1, &agent, 0.01),
        traffic(&old, "default", 2, &agent, 0.02),
        traffic(&old, "default", 3, &code, 0.0),
        traffic(&old, "default", 4, &plain, 0.03),
        traffic(&old, "eng", 5, &agent, 0.04),
        stored(6, AuditRecord { team: "default".into(), ..AuditRecord::default() }),
    ];

    let mut same = Replayer::new(&old, &config, 10);
    records.iter().for_each(|r| same.add(r));
    let same = same.finish();
    assert_eq!((same.records, same.replayed, same.changed, same.no_decision), (6, 5, 0, 1));
    assert!(same.sample.is_empty() && same.cost_delta_usd == 0.0);

    let mut replay = Replayer::new(&new, &config, 2);
    records.iter().for_each(|r| replay.add(r));
    let report = replay.finish();
    assert_eq!((report.records, report.replayed, report.changed, report.not_replayable), (6, 5, 3, 0));
    let team = &report.teams["default"];
    assert_eq!((team.replayed, team.changed), (4, 3));
    let moved = |m: &[Moved]| m.iter().map(|m| (m.from.clone(), m.to.clone(), m.count)).collect::<Vec<_>>();
    assert_eq!(moved(&team.routes), [("cloud".into(), "local".into(), 2), ("local".into(), "cloud".into(), 1)]);
    assert_eq!(moved(&team.rules), [("agents".into(), "agents".into(), 2), ("code".into(), "code".into(), 1)]);
    // Two cloud requests saved, one local request now paid at its estimate.
    let estimate = code.estimated_cost_usd.expect("gpt-4o has a price");
    assert_eq!(team.cost_delta_usd, -0.01 - 0.02 + estimate);
    assert_eq!(report.teams["eng"], TeamReplay { replayed: 1, ..TeamReplay::default() });
    assert_eq!(report.sample.len(), 2);
    assert_eq!(report.sample[0].seq, 1);
    assert_eq!(report.sample[0].from, Outcome { action: Action::Cloud, rule: "agents".into() });
    assert_eq!(report.sample[0].to, Outcome { action: Action::Local, rule: "agents".into() });
    let text = render(&report, "next/");
    assert!(text.contains("cloud → local") && text.contains("agents → agents"), "{text}");

    // A team the candidate has no policy for would be refused.
    let (_c, without_eng) = set_of(&[("default.yaml", before)]);
    let mut replay = Replayer::new(&without_eng, &config, 0);
    records.iter().for_each(|r| replay.add(r));
    let report = replay.finish();
    assert_eq!(report.changed, 1);
    assert_eq!(moved(&report.teams["eng"].rules), [("default".into(), NO_POLICY.into(), 1)]);
    assert_eq!(report.teams["eng"].cost_delta_usd, -0.04);
}

#[test]
fn changed_dictionaries_are_noted() {
    let (_a, old) =
        set_of(&[("default.yaml", "default: cloud\n"), ("x.yaml", "dictionary: { terms: [a] }\ndefault: cloud\n")]);
    let (_b, new) =
        set_of(&[("default.yaml", "default: cloud\n"), ("x.yaml", "dictionary: { terms: [b] }\ndefault: cloud\n")]);
    let notes = dictionary_notes(&old, &new);
    assert_eq!(notes.len(), 1);
    assert!(notes[0].starts_with("team x:"), "{notes:?}");
    assert!(dictionary_notes(&old, &old).is_empty());
}

#[test]
fn every_finding_kind_reads_back_in_its_category() {
    for category in CATEGORIES {
        for kind in kinds_of(category) {
            let finding = finding_of(kind, 0.9).unwrap_or_else(|| panic!("{kind} does not read back"));
            assert_eq!((finding.category, finding.kind), (category, *kind));
        }
    }
    assert!(finding_of("no_such_kind", 0.9).is_none());
}
