//! Policy replay: decide recorded requests again under a candidate policy
//! set, without their prompts, and say what would change (`sluice policy
//! replay`).
//!
//! Every decided request's audit record keeps all that
//! [`TeamPolicy::decide`](super::TeamPolicy::decide) reads: its `signals`
//! ([`SignalSummary`](super::SignalSummary): task and confidence, token
//! count, turns, tool steps, tools, stream, provider, cost estimate, local
//! queue depth, sticky state, and each finding type with its highest
//! confidence before any `min_confidence`) plus the record's `team` and
//! `model_requested`. [`RecordedDecision::of`] reads them back into a
//! [`Signals`], and [`Replayer`] decides each again under the candidate
//! set and tallies the differences per team: route changes, the rules
//! responsible, and the estimated cost difference. Deciding the same
//! records under the policies that recorded them changes nothing.
//!
//! What a replay cannot know, since it has no prompts:
//! - Dictionary terms: `term` findings are those of the dictionary in force
//!   when the request was made; terms a candidate adds are not searched for
//!   ([`dictionary_notes`] names the teams whose dictionary changed).
//! - Conversations a candidate would newly keep local: each record's sticky
//!   state is replayed as it was.
//! - Exact token counts: a record holds the count the policy of its day
//!   needed (an estimate unless a `prompt_tokens` or cost condition asked
//!   the local tokenizer for more).
//! - Load: the policy's decision is compared, not where a full local queue
//!   or a too-long prompt then sent the request (`local:` options).
//!
//! Records without a policy decision (tunnels, model lists, requests
//! refused before a decision) are counted and skipped; decisions recorded
//! before sluice stored every input are counted as not replayable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Action, PolicySet, Signals};
use crate::audit::{AuditRecord, StoredRecord};
use crate::classify::{Prediction, Task};
use crate::config::Config;
use crate::inspect::{
    Category, Finding, ATTACHMENT_KIND, ENTITY_KINDS, PII_KINDS, SECRET_KINDS, SPECIAL_KINDS, TERM_KIND,
};

/// The `rule` of a replayed decision for a team the candidate set has no
/// policy for: `sluice serve` refuses such requests.
pub const NO_POLICY: &str = "(no policy)";

/// What an audit record holds for a replay.
#[derive(Clone, Debug, PartialEq)]
pub enum Recorded {
    /// A policy decision with all its inputs.
    Decision(Box<RecordedDecision>),
    /// A policy decision recorded without all its inputs (an older record).
    NotReplayable,
    /// Not a policy decision: a tunnel, a model list, a request refused
    /// before its policy ran.
    NoDecision,
}

/// One recorded policy decision and every input it was made from.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedDecision {
    pub team: String,
    pub model: String,
    pub provider: String,
    /// One finding per type, at the type's highest recorded confidence.
    pub findings: Vec<Finding>,
    pub prompt_tokens: u64,
    pub prompt_tokens_exact: bool,
    pub task: Option<Prediction>,
    pub turns: u32,
    pub tool_steps: u32,
    pub tools_present: bool,
    pub stream: bool,
    pub unparsed: bool,
    pub estimated_cost_usd: Option<f64>,
    pub local_queue_depth: u64,
    pub sticky_local: bool,
    /// What the policy decided (the record's `decision` is where the
    /// request went, which local options can change).
    pub action: Action,
    pub rule: String,
}

/// The stored `signals` of a decision, as [`SignalSummary`](super::SignalSummary)
/// and `pipeline::signal_summary` write them.
#[derive(Deserialize)]
struct StoredSignals {
    task: Option<String>,
    task_confidence: Option<f64>,
    prompt_tokens: u64,
    #[serde(default)]
    prompt_tokens_exact: bool,
    turns: u32,
    tool_steps: u32,
    tools_present: bool,
    stream: bool,
    #[serde(default)]
    unparsed: bool,
    estimated_cost_usd: Option<f64>,
    local_queue_depth: u64,
    sticky_local: bool,
    // The members below came with replay; a record without them is older.
    provider: String,
    #[serde(default)]
    finding_confidence: BTreeMap<String, f64>,
    action: Action,
}

impl RecordedDecision {
    /// Reads a record's decision inputs back.
    pub fn of(record: &AuditRecord) -> Recorded {
        let Some(signals) = record.signals.as_ref() else {
            return Recorded::NoDecision;
        };
        // Every policy decision's signals say `because`; tunnels' do not.
        if signals.get("because").is_none() {
            return Recorded::NoDecision;
        }
        let Ok(stored) = StoredSignals::deserialize(signals) else {
            return Recorded::NotReplayable;
        };
        let task = match (stored.task.as_deref(), stored.task_confidence) {
            (None, _) => None,
            (Some(name), confidence) => match (Task::from_name(name), confidence) {
                (Some(task), Some(confidence)) => Some(Prediction { task, confidence: confidence as f32 }),
                // A task this build does not know decides nothing it can replay.
                _ => return Recorded::NotReplayable,
            },
        };
        let mut findings = Vec::with_capacity(stored.finding_confidence.len());
        for (kind, confidence) in &stored.finding_confidence {
            match finding_of(kind, *confidence as f32) {
                Some(finding) => findings.push(finding),
                None => return Recorded::NotReplayable,
            }
        }
        Recorded::Decision(Box::new(RecordedDecision {
            team: record.team.clone(),
            model: record.model_requested.clone(),
            provider: stored.provider,
            findings,
            prompt_tokens: stored.prompt_tokens,
            prompt_tokens_exact: stored.prompt_tokens_exact,
            task,
            turns: stored.turns,
            tool_steps: stored.tool_steps,
            tools_present: stored.tools_present,
            stream: stored.stream,
            unparsed: stored.unparsed,
            estimated_cost_usd: stored.estimated_cost_usd,
            local_queue_depth: stored.local_queue_depth,
            sticky_local: stored.sticky_local,
            action: stored.action,
            rule: record.rule.clone(),
        }))
    }

    /// The signals the policy decided on.
    pub fn signals(&self) -> Signals<'_> {
        Signals {
            findings: &self.findings,
            requested_model: &self.model,
            provider: &self.provider,
            prompt_tokens: self.prompt_tokens,
            prompt_tokens_exact: self.prompt_tokens_exact,
            task: self.task,
            turns: self.turns,
            tool_steps: self.tool_steps,
            tools_present: self.tools_present,
            stream: self.stream,
            unparsed: self.unparsed,
            estimated_cost_usd: self.estimated_cost_usd,
            local_queue_depth: self.local_queue_depth,
            sticky_local: self.sticky_local,
        }
    }
}

/// A finding of a recorded type. Type names are unique across categories,
/// so the name says the category.
fn finding_of(kind: &str, confidence: f32) -> Option<Finding> {
    CATEGORIES.iter().find_map(|category| {
        kinds_of(*category).iter().find(|k| **k == kind).map(|kind| Finding {
            category: *category,
            kind,
            segment: 0,
            span: 0..0,
            confidence,
            validator: "recorded",
        })
    })
}

const CATEGORIES: [Category; 6] =
    [Category::Pii, Category::Secret, Category::Special, Category::Entity, Category::Term, Category::Attachment];

/// Exhaustive, so that a new category cannot be left out of replays (its
/// records would all count as not replayable).
fn kinds_of(category: Category) -> &'static [&'static str] {
    match category {
        Category::Pii => PII_KINDS,
        Category::Secret => SECRET_KINDS,
        Category::Special => SPECIAL_KINDS,
        Category::Entity => ENTITY_KINDS,
        Category::Term => &[TERM_KIND],
        Category::Attachment => &[ATTACHMENT_KIND],
    }
}

/// A decision as the report names it: where and by which rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Outcome {
    pub action: Action,
    pub rule: String,
}

/// One request whose decision would change, for `--show`: numbers and
/// names, never content.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    pub seq: u64,
    pub time_unix_ms: u64,
    pub team: String,
    pub from: Outcome,
    pub to: Outcome,
    pub cost_delta_usd: f64,
}

/// How many requests moved from one action (or rule) to another.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Moved {
    pub from: String,
    pub to: String,
    pub count: u64,
}

/// One team's part of a replay.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TeamReplay {
    pub replayed: u64,
    pub not_replayable: u64,
    /// Requests whose action or rule would change.
    pub changed: u64,
    /// Requests whose action would change, by old and new action, most first.
    pub routes: Vec<Moved>,
    /// Every changed request, by old and new rule, most first.
    pub rules: Vec<Moved>,
    /// Estimated cloud spend the candidate adds (negative: saves), USD.
    pub cost_delta_usd: f64,
    /// Requests the candidate would send to the cloud whose model has no
    /// price: their cost is not in `cost_delta_usd`.
    pub unpriced: u64,
}

/// The result of a replay (`sluice policy replay --json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ReplayReport {
    /// Records read in the period.
    pub records: u64,
    /// Records without a policy decision (tunnels, model lists, refusals
    /// before a decision).
    pub no_decision: u64,
    /// Decisions recorded before every input was stored.
    pub not_replayable: u64,
    pub replayed: u64,
    pub changed: u64,
    pub cost_delta_usd: f64,
    pub teams: BTreeMap<String, TeamReplay>,
    /// The first changed requests, up to `--show`.
    pub sample: Vec<Change>,
    /// What this replay could not take into account.
    pub notes: Vec<String>,
}

#[derive(Default)]
struct TeamTally {
    replayed: u64,
    not_replayable: u64,
    changed: u64,
    routes: BTreeMap<(Action, Action), u64>,
    rules: BTreeMap<(String, String), u64>,
    cost_delta_usd: f64,
    unpriced: u64,
}

/// Decides recorded requests again under a candidate policy set, one
/// record at a time (so a long period streams through).
pub struct Replayer<'a> {
    candidate: &'a PolicySet,
    config: &'a Config,
    show: usize,
    records: u64,
    no_decision: u64,
    teams: BTreeMap<String, TeamTally>,
    sample: Vec<Change>,
    notes: Vec<String>,
}

impl<'a> Replayer<'a> {
    /// Prices come from `config` (`prices:`); `show` is how many changed
    /// requests the report lists.
    pub fn new(candidate: &'a PolicySet, config: &'a Config, show: usize) -> Replayer<'a> {
        Replayer {
            candidate,
            config,
            show,
            records: 0,
            no_decision: 0,
            teams: BTreeMap::new(),
            sample: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A caveat for the report (see [`dictionary_notes`]).
    pub fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    pub fn add(&mut self, stored: &StoredRecord) {
        self.records += 1;
        let record = &stored.record;
        let recorded = match RecordedDecision::of(record) {
            Recorded::Decision(recorded) => recorded,
            Recorded::NotReplayable => {
                self.teams.entry(record.team.clone()).or_default().not_replayable += 1;
                return;
            }
            Recorded::NoDecision => {
                self.no_decision += 1;
                return;
            }
        };
        let new = match self.candidate.team(&recorded.team) {
            Some(policy) => {
                let decision = policy.decide(&recorded.signals());
                Outcome { action: decision.action, rule: decision.rule }
            }
            None => Outcome { action: Action::Block, rule: NO_POLICY.to_string() },
        };
        let old = Outcome { action: recorded.action, rule: recorded.rule.clone() };
        let tally = self.teams.entry(recorded.team.clone()).or_default();
        tally.replayed += 1;
        if new == old {
            return;
        }
        tally.changed += 1;
        if new.action != old.action {
            *tally.routes.entry((old.action, new.action)).or_insert(0) += 1;
        }
        *tally.rules.entry((old.rule.clone(), new.rule.clone())).or_insert(0) += 1;
        let cost = cost_delta(self.config, record, &recorded, new.action);
        match cost {
            Some(delta) => tally.cost_delta_usd += delta,
            None => tally.unpriced += 1,
        }
        if self.sample.len() < self.show {
            self.sample.push(Change {
                seq: stored.seq,
                time_unix_ms: record.time_unix_ms,
                team: recorded.team.clone(),
                from: old,
                to: new,
                cost_delta_usd: cost.unwrap_or(0.0),
            });
        }
    }

    pub fn finish(self) -> ReplayReport {
        let mut report = ReplayReport {
            records: self.records,
            no_decision: self.no_decision,
            sample: self.sample,
            notes: self.notes,
            ..ReplayReport::default()
        };
        for (team, tally) in self.teams {
            report.replayed += tally.replayed;
            report.not_replayable += tally.not_replayable;
            report.changed += tally.changed;
            report.cost_delta_usd += tally.cost_delta_usd;
            let routes = tally.routes.into_iter().map(|((from, to), count)| Moved {
                from: from.as_str().to_string(),
                to: to.as_str().to_string(),
                count,
            });
            let rules = tally.rules.into_iter().map(|((from, to), count)| Moved { from, to, count });
            let team_report = TeamReplay {
                replayed: tally.replayed,
                not_replayable: tally.not_replayable,
                changed: tally.changed,
                routes: most_first(routes),
                rules: most_first(rules),
                cost_delta_usd: tally.cost_delta_usd,
                unpriced: tally.unpriced,
            };
            report.teams.insert(team, team_report);
        }
        report
    }
}

/// Sorted by count, most first; ties keep their (name) order.
fn most_first(moved: impl Iterator<Item = Moved>) -> Vec<Moved> {
    let mut moved: Vec<Moved> = moved.collect();
    moved.sort_by_key(|m| std::cmp::Reverse(m.count));
    moved
}

fn goes_to_cloud(action: &str) -> bool {
    matches!(action, "cloud" | "redact")
}

/// What a changed decision does to cloud spend, in USD; `None` when it
/// would now go to the cloud on a model without a price. A request that
/// went to the cloud saves the cost its record holds; one that did not
/// costs its token counts at `prices:` (the local engine's counts when it
/// answered, else the recorded estimate, else the prompt's tokens with the
/// usual assumed output).
fn cost_delta(config: &Config, record: &AuditRecord, recorded: &RecordedDecision, new: Action) -> Option<f64> {
    // The record's `decision` is where the request went, which is what was paid for.
    let was_cloud = goes_to_cloud(&record.decision);
    let now_cloud = goes_to_cloud(new.as_str());
    match (was_cloud, now_cloud) {
        // `+ 0.0` turns the -0.0 of a free request into 0.
        (true, false) => Some(-record.usage.as_ref().map_or(0.0, |u| u.cost_usd) + 0.0),
        (false, true) => {
            let model = &recorded.model;
            match record.usage.as_ref().filter(|u| u.tokens_in + u.tokens_out > 0) {
                Some(usage) => config.cost_usd(model, usage.tokens_in, usage.tokens_out),
                None => recorded
                    .estimated_cost_usd
                    .or_else(|| config.estimated_cost_usd(model, recorded.prompt_tokens, None)),
            }
        }
        _ => Some(0.0),
    }
}

/// Teams whose dictionary differs between the policies in force and the
/// candidate: their `term` findings are the old dictionary's.
pub fn dictionary_notes(current: &PolicySet, candidate: &PolicySet) -> Vec<String> {
    candidate
        .teams()
        .filter(|team| {
            let old = current.team(team).map(|p| p.dictionary_terms()).unwrap_or_default();
            let new = candidate.team(team).map(|p| p.dictionary_terms()).unwrap_or_default();
            old != new
        })
        .map(|team| {
            format!(
                "team {team}: the candidate's dictionary differs from the one in force; \
                 recorded `terms` findings are the old dictionary's (replay has no prompts to search)"
            )
        })
        .collect()
}

/// The report for a person.
pub fn render(report: &ReplayReport, candidate: &str) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Replayed {} decision(s) from {} record(s) under {candidate}: {} would change.",
        report.replayed, report.records, report.changed
    );
    if report.not_replayable > 0 {
        let _ = writeln!(
            out,
            "  {} decision(s) not replayable: recorded before sluice stored every decision input.",
            report.not_replayable
        );
    }
    if report.no_decision > 0 {
        let _ = writeln!(
            out,
            "  {} record(s) without a policy decision (tunnels, model lists, refusals before a decision).",
            report.no_decision
        );
    }
    for (team, t) in &report.teams {
        let _ = write!(out, "\nteam {team}: ");
        let unreplayable =
            if t.not_replayable > 0 { format!(", {} not replayable", t.not_replayable) } else { String::new() };
        if t.changed == 0 {
            let _ = writeln!(out, "no change ({} replayed{unreplayable})", t.replayed);
            continue;
        }
        let _ =
            writeln!(out, "{} of {} would change{unreplayable}; cost {}", t.changed, t.replayed, usd(t.cost_delta_usd));
        for m in &t.routes {
            let _ = writeln!(out, "  route  {:<22} {:>6}", format!("{} → {}", m.from, m.to), m.count);
        }
        for m in &t.rules {
            let _ = writeln!(out, "  rule   {:<44} {:>6}", format!("{} → {}", m.from, m.to), m.count);
        }
        if t.unpriced > 0 {
            let _ = writeln!(out, "  {} request(s) to models without a price are not in the cost", t.unpriced);
        }
    }
    let _ = writeln!(out, "\nEstimated cost difference: {} (negative: saved)", usd(report.cost_delta_usd));
    if !report.sample.is_empty() {
        let _ = writeln!(out, "\nChanged requests (first {}):", report.sample.len());
        for c in &report.sample {
            let time = humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(c.time_unix_ms),
            );
            let _ = writeln!(
                out,
                "  seq {:<8} {time}  {:<12} {} ({}) → {} ({})  {}",
                c.seq,
                c.team,
                c.from.action.as_str(),
                c.from.rule,
                c.to.action.as_str(),
                c.to.rule,
                usd(c.cost_delta_usd)
            );
        }
    }
    for note in &report.notes {
        let _ = writeln!(out, "\nnote: {note}");
    }
    out
}

fn usd(amount: f64) -> String {
    if amount < 0.0 {
        format!("-${:.6}", -amount)
    } else {
        format!("+${amount:.6}")
    }
}

#[cfg(test)]
#[path = "replay_tests.rs"]
mod tests;
