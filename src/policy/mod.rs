//! Per-team routing policies: load and validate `policies/<team>.yaml`, and
//! decide for each request whether it goes to the local model, to the cloud
//! (redacted first or as it is), or nowhere, and why.
//!
//! The organisation's rules (`org.yaml`) are tried first, then the team's
//! (those of the profile it `extends:`, then its own), in file order; the
//! first whose conditions all hold decides, otherwise the team's `default`
//! does (see `org.rs`). A rule in `mode: monitor` that matches is only
//! recorded in [`Decision::monitor`]. Findings below the team's
//! `min_confidence` are ignored throughout. Once a conversation has been
//! kept local for its content, later turns stay local (`sticky_local`),
//! though `block` rules still apply. The file format is documented in
//! `policies/default.yaml`; `reload.rs` keeps the live set current.
//!
//! The audit record of each decision keeps every input the decision read
//! ([`SignalSummary`]), and [`replay`] decides recorded requests again
//! under candidate policies (`sluice policy replay`).

mod glob;
pub mod limits;
mod org;
#[cfg(test)]
#[path = "org_tests.rs"]
mod org_tests;
#[cfg(test)]
#[path = "provider_tests.rs"]
mod provider_tests;
pub mod reload;
pub mod replay;
mod schema;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::classify::Task;
use crate::inspect::{Category, Finding, ENTITY_KINDS, PII_KINDS, SECRET_KINDS, SPECIAL_KINDS};
use org::{Layer, OrgPolicy, Profiles, Thresholds};
use schema::{number, KindSet, NumRange, Rule, Selector, PEOPLE_KINDS, PROVIDERS};

/// Where a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Local,
    Cloud,
    /// Replace the findings in [`Decision::redact`]'s scope with
    /// placeholders, then send to the cloud.
    Redact,
    Block,
}

impl Action {
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Local => "local",
            Action::Cloud => "cloud",
            Action::Redact => "redact",
            Action::Block => "block",
        }
    }
}

/// The outcome of evaluating one request against its team's policy.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Decision {
    pub action: Action,
    /// Name of the rule that matched, `"default"`, or `"sticky_local"`.
    /// An organisation rule is `org:<name>`, a profile's `<profile>:<name>`.
    pub rule: String,
    /// The file and rule that decided, for people: `org.yaml#no-secrets`,
    /// `payments.yaml#default` (files relative to the policy directory).
    #[serde(skip)]
    pub decided_by: Arc<str>,
    /// Human explanation; names finding types, never their values.
    pub reason: String,
    /// The signals that drove the decision, one per condition of the rule
    /// that matched: "pii: credit_card", "task: code_completion (0.91)",
    /// "tool_steps: 6 >= 5". Empty for the file's `default`.
    pub because: Vec<String>,
    /// Which findings to replace; `Some` exactly when `action` is `Redact`.
    /// [`TeamPolicy::findings_to_redact`] applies it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redact: Option<RedactScope>,
    /// Later turns of this conversation must stay local: the prompt was
    /// kept local because of what it contains (a rule on pii, secrets,
    /// terms or attachments, or an earlier sticky turn) and the team has
    /// `sticky_local` on. The caller remembers it and sets
    /// [`Signals::sticky_local`] on the conversation's next requests.
    pub sticky: bool,
    /// Rules in `mode: monitor` that matched before the decision was made,
    /// in evaluation order, with what each would have done.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub monitor: Vec<MonitorMatch>,
}

/// A `mode: monitor` rule that matched: recorded, not applied.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MonitorMatch {
    /// As in [`Decision::rule`].
    pub rule: String,
    pub action: Action,
}

/// Which findings a `redact` decision replaces with placeholders: every
/// PII, secret and dictionary-term finding, or only the categories and
/// types a rule's `redact:` lists. Attachments are never redacted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedactScope(Option<Arc<[Selector]>>);

impl RedactScope {
    fn all() -> RedactScope {
        RedactScope(None)
    }

    fn only(selectors: Vec<Selector>) -> RedactScope {
        RedactScope(Some(selectors.into()))
    }

    /// Whether `finding` is one this scope replaces.
    pub fn covers(&self, finding: &Finding) -> bool {
        match &self.0 {
            None => finding.category != Category::Attachment,
            Some(selectors) => selectors.iter().any(|s| s.matches(finding)),
        }
    }
}

/// Serialized as `"all"` or as the list of names the rule gave.
impl serde::Serialize for RedactScope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            None => serializer.serialize_str("all"),
            Some(selectors) => serializer.collect_seq(selectors.iter().map(Selector::name)),
        }
    }
}

/// What is known about a request when its policy is evaluated.
#[derive(Clone, Debug, Default)]
pub struct Signals<'a> {
    pub findings: &'a [Finding],
    pub requested_model: &'a str,
    pub provider: &'a str,
    /// Counted with the local model's tokenizer when one is loaded,
    /// estimated otherwise (`prompt_tokens_exact` says which).
    pub prompt_tokens: u64,
    pub prompt_tokens_exact: bool,
    /// The task classifier's prediction for the last user turn.
    pub task: Option<crate::classify::Prediction>,
    /// Messages in the conversation (system prompt excluded).
    pub turns: u32,
    /// Assistant tool calls so far in the conversation.
    pub tool_steps: u32,
    pub tools_present: bool,
    pub stream: bool,
    /// The body is of a shape sluice does not parse (an unknown path on an
    /// intercepted host, or not JSON): it was inspected string by string.
    pub unparsed: bool,
    /// Estimated cloud cost of this call in USD, from the config's price
    /// table; `None` when the model has no price.
    pub estimated_cost_usd: Option<f64>,
    /// Requests waiting for the local engine right now.
    pub local_queue_depth: u64,
    /// An earlier turn of this conversation was kept local because it was
    /// sensitive (see `sticky_local`).
    pub sticky_local: bool,
}

/// The request-level signals of [`Signals`] for the audit record and
/// `sluice policy test --json`: numbers and names only, never text or
/// values. With the record's team and requested model it is everything
/// [`TeamPolicy::decide`] reads, exactly, so `sluice policy replay` can
/// decide the request again ([`replay`]).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SignalSummary {
    pub task: Option<&'static str>,
    /// The shortest decimal that reads back as the same f32 (0.91, where
    /// the f32 widened to f64 would print as 0.9100000262260437), so a
    /// replay compares exactly what the policy compared.
    pub task_confidence: Option<f64>,
    pub prompt_tokens: u64,
    pub prompt_tokens_exact: bool,
    pub turns: u32,
    pub tool_steps: u32,
    pub tools_present: bool,
    pub stream: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unparsed: bool,
    /// Unrounded, for the same reason as `task_confidence`.
    pub estimated_cost_usd: Option<f64>,
    pub local_queue_depth: u64,
    pub sticky_local: bool,
    /// The provider the request was addressed to. Records written before
    /// it was stored lack it, and are not replayable.
    pub provider: String,
    /// Finding type -> the highest confidence among the request's findings
    /// of that type, before any `min_confidence`: all a policy reads of
    /// findings, so a candidate with other thresholds decides as it would
    /// have. Written like `task_confidence`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub finding_confidence: BTreeMap<&'static str, f64>,
}

/// An f32 as the f64 of its shortest decimal form, which prints as that
/// decimal and converts back to the same f32.
pub(crate) fn f32_for_json(value: f32) -> f64 {
    value.to_string().parse().unwrap_or(f64::from(value))
}

impl Signals<'_> {
    pub fn summary(&self) -> SignalSummary {
        SignalSummary {
            task: self.task.map(|p| p.task.as_str()),
            task_confidence: self.task.map(|p| f32_for_json(p.confidence)),
            prompt_tokens: self.prompt_tokens,
            prompt_tokens_exact: self.prompt_tokens_exact,
            turns: self.turns,
            tool_steps: self.tool_steps,
            tools_present: self.tools_present,
            stream: self.stream,
            unparsed: self.unparsed,
            estimated_cost_usd: self.estimated_cost_usd,
            local_queue_depth: self.local_queue_depth,
            sticky_local: self.sticky_local,
            provider: self.provider.to_string(),
            finding_confidence: highest_confidences(self.findings),
        }
    }
}

/// Finding type -> its findings' highest confidence: [`Present::scan`]
/// keeps a type exactly when its most confident finding passes.
fn highest_confidences(findings: &[Finding]) -> BTreeMap<&'static str, f64> {
    let mut highest: BTreeMap<&'static str, f32> = BTreeMap::new();
    for f in findings {
        let best = highest.entry(f.kind).or_insert(f.confidence);
        *best = best.max(f.confidence);
    }
    highest.into_iter().map(|(kind, c)| (kind, f32_for_json(c))).collect()
}

/// One team's parsed and validated policy file.
#[derive(Debug)]
pub struct TeamPolicy {
    team: String,
    terms: Vec<String>,
    min_confidence: Thresholds,
    /// Organisation rules, then the profile's, then the team's own.
    rules: Vec<Arc<Rule>>,
    default: Action,
    /// `<file>#default`, `<file>#sticky_local`, `<file>#unparsed_requests`
    /// for [`Decision::decided_by`].
    default_by: Arc<str>,
    sticky_by: Arc<str>,
    unparsed_by: Arc<str>,
    sticky_local: bool,
    local: LocalOptions,
    unparsed: Unparsed,
    ai_apps: AiApps,
    /// The organisation's catalog plus `ai_apps.catalog`, when the team
    /// adds entries of its own.
    apps: Option<Arc<crate::shadow::Catalog>>,
    limits: limits::Limits,
}

/// What a team allows of AI apps (`ai_apps:`), for the shadow-AI monitor.
/// Apps are catalog ids (`sluice policy check` checks them).
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AiApps {
    /// The team's own catalog entries (or overrides, `override: true`),
    /// added to the organisation's catalog for this team's traffic.
    #[serde(default)]
    pub catalog: Vec<crate::shadow::EntrySpec>,
    /// The apps the team may use.
    #[serde(default)]
    pub sanctioned: Vec<String>,
    /// What happens when the team uses any other app.
    #[serde(default)]
    pub unsanctioned: Enforcement,
    /// What happens to an API call on an account that is not one of the
    /// company's (`shadow.company_accounts`).
    #[serde(default)]
    pub personal_accounts: PersonalAccounts,
}

/// What sluice does about an unsanctioned app.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    /// Let it through and record it.
    #[default]
    Monitor,
    /// Refuse it.
    Block,
    /// Refuse it with a message naming the sanctioned alternatives.
    Coach,
}

impl Enforcement {
    pub fn as_str(self) -> &'static str {
        match self {
            Enforcement::Monitor => "monitor",
            Enforcement::Block => "block",
            Enforcement::Coach => "coach",
        }
    }
}

/// What sluice does about calls on a personal account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PersonalAccounts {
    /// Record them, flagged.
    #[default]
    Monitor,
    /// Refuse calls with a key already seen on a personal account.
    Block,
}

impl AiApps {
    /// `None` when `app` is sanctioned, else what to do about it.
    pub fn verdict(&self, app: &str) -> Option<Enforcement> {
        (!self.sanctioned.iter().any(|s| s == app)).then_some(self.unsanctioned)
    }
}

/// What a policy does with requests whose shape sluice does not parse
/// (`unparsed_requests:`). Their every string was still inspected; the
/// question is whether the rules, written for conversations, may send
/// them out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unparsed {
    /// Refuse every unparsed request with a body.
    Block,
    /// Refuse unparsed requests with any finding (after `min_confidence`);
    /// the rules decide clean ones.
    #[default]
    BlockFindings,
    /// The rules decide, like any request (`when: { unparsed: true }`
    /// singles them out).
    Rules,
}

impl Unparsed {
    pub fn as_str(self) -> &'static str {
        match self {
            Unparsed::Block => "block",
            Unparsed::BlockFindings => "block_findings",
            Unparsed::Rules => "rules",
        }
    }
}

/// What happens when the local engine's queue is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Overflow {
    /// Wait for a place, up to `overflow_wait_ms`, then answer 429.
    #[default]
    Wait,
    /// Answer 429 at once.
    Reject,
    /// Send it to the cloud instead, unless the prompt has sensitive findings.
    Cloud,
}

/// What happens when a prompt does not fit the local model's context.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TooLong {
    /// Answer 413 in the client's wire format.
    #[default]
    Reject,
    /// Send it to the cloud instead, unless the prompt has sensitive findings.
    Cloud,
    /// Refuse it as a policy block (403).
    Block,
}

/// The `local:` section of a policy file: how local decisions behave under load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalOptions {
    pub overflow: Overflow,
    pub overflow_wait_ms: u64,
    pub too_long: TooLong,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions { overflow: Overflow::Wait, overflow_wait_ms: 30_000, too_long: TooLong::Reject }
    }
}

/// Finding kinds present in a request, gathered in one pass so every rule is
/// then tested with bit operations.
#[derive(Default)]
struct Present {
    pii: u64,
    pii_any: bool,
    secrets: u64,
    secrets_any: bool,
    /// Bits over `PEOPLE_KINDS` (a subset of the PII findings).
    people: u64,
    special: u64,
    special_any: bool,
    entities: u64,
    entities_any: bool,
    terms: bool,
    attachments: bool,
}

impl Present {
    /// Only findings `min_confidence` keeps are counted.
    fn scan(findings: &[Finding], min_confidence: &Thresholds) -> Present {
        let mut present = Present::default();
        for f in findings.iter().filter(|f| min_confidence.keeps(f)) {
            match f.category {
                Category::Pii => {
                    present.pii_any = true;
                    present.pii |= kind_bit(PII_KINDS, f.kind);
                    present.people |= kind_bit(PEOPLE_KINDS, f.kind);
                }
                Category::Secret => {
                    present.secrets_any = true;
                    present.secrets |= kind_bit(SECRET_KINDS, f.kind);
                }
                Category::Term => present.terms = true,
                Category::Attachment => present.attachments = true,
                Category::Special => {
                    present.special_any = true;
                    present.special |= kind_bit(SPECIAL_KINDS, f.kind);
                }
                Category::Entity => {
                    present.entities_any = true;
                    present.entities |= kind_bit(ENTITY_KINDS, f.kind);
                }
            }
        }
        present
    }
}

fn kind_bit(names: &[&str], kind: &str) -> u64 {
    names.iter().position(|n| *n == kind).map_or(0, |i| 1u64 << i)
}

/// The kinds a set condition matched on, or `None` if it did not match.
fn kinds_hit(set: KindSet, present_any: bool, present: u64) -> Option<u64> {
    match set {
        KindSet::Any if present_any => Some(present),
        KindSet::Any => None,
        KindSet::Listed(mask) => Some(mask & present).filter(|hit| *hit != 0),
    }
}

fn provider_bit(provider: &str) -> u64 {
    PROVIDERS.iter().position(|p| p.eq_ignore_ascii_case(provider)).map_or(0, |i| 1u64 << i)
}

fn task_bit(task: Task) -> u64 {
    Task::ALL.iter().position(|t| *t == task).map_or(0, |i| 1u64 << i)
}

/// Whether an optional range condition holds for `value`.
fn in_range(range: Option<NumRange>, value: f64) -> bool {
    range.is_none_or(|r| r.contains(value))
}

// Counts stay far below 2^53, where f64 stops being exact.
fn count(n: u64) -> f64 {
    n as f64
}

impl Rule {
    fn matches(&self, present: &Present, signals: &Signals) -> bool {
        let w = &self.when;
        if let Some(set) = w.pii {
            if kinds_hit(set, present.pii_any, present.pii).is_none() {
                return false;
            }
        }
        if let Some(set) = w.secrets {
            if kinds_hit(set, present.secrets_any, present.secrets).is_none() {
                return false;
            }
        }
        // `people` and `special_category` are separate conditions, so a
        // rule naming both ("a person together with a health fact") needs
        // both, like every other pair of conditions.
        if let Some(set) = w.people {
            if kinds_hit(set, present.people != 0, present.people).is_none() {
                return false;
            }
        }
        if let Some(set) = w.special {
            if kinds_hit(set, present.special_any, present.special).is_none() {
                return false;
            }
        }
        if let Some(set) = w.entities {
            if kinds_hit(set, present.entities_any, present.entities).is_none() {
                return false;
            }
        }
        if w.terms && !present.terms {
            return false;
        }
        if w.attachments.is_some_and(|want| want != present.attachments) {
            return false;
        }
        if let Some(globs) = &w.model {
            if !globs.iter().any(|g| g.matches(signals.requested_model)) {
                return false;
            }
        }
        if let Some(mask) = w.provider {
            if mask & provider_bit(signals.provider) == 0 {
                return false;
            }
        }
        // Task and cost conditions never hold when the classifier gave no
        // answer or the model has no price.
        let task = signals.task;
        let task_ok = w.task.is_none_or(|mask| task.is_some_and(|p| mask & task_bit(p.task) != 0));
        let confidence_ok =
            w.task_confidence.is_none_or(|range| task.is_some_and(|p| range.contains(f64::from(p.confidence))));
        let cost = signals.estimated_cost_usd;
        let cost_ok = w.estimated_cost_usd.is_none_or(|range| cost.is_some_and(|c| range.contains(c)));
        task_ok
            && confidence_ok
            && cost_ok
            && in_range(w.prompt_tokens, count(signals.prompt_tokens))
            && in_range(w.turns, f64::from(signals.turns))
            && in_range(w.tool_steps, f64::from(signals.tool_steps))
            && in_range(w.local_queue_depth, count(signals.local_queue_depth))
            && w.tools_present.is_none_or(|want| want == signals.tools_present)
            && w.stream.is_none_or(|want| want == signals.stream)
            && w.unparsed.is_none_or(|want| want == signals.unparsed)
    }

    /// One entry per condition of this (matching) rule, naming the signal
    /// and the value that satisfied it — types and numbers, never text.
    fn because(&self, present: &Present, signals: &Signals) -> Vec<String> {
        let w = &self.when;
        let mut out = Vec::new();
        if let Some(set) = w.pii {
            let hit = kinds_hit(set, present.pii_any, present.pii).unwrap_or(0);
            out.push(format!("pii: {}", kind_names(PII_KINDS, hit)));
        }
        if let Some(set) = w.secrets {
            let hit = kinds_hit(set, present.secrets_any, present.secrets).unwrap_or(0);
            out.push(format!("secrets: {}", kind_names(SECRET_KINDS, hit)));
        }
        if let Some(set) = w.people {
            let hit = kinds_hit(set, present.people != 0, present.people).unwrap_or(0);
            out.push(format!("people: {}", kind_names(PEOPLE_KINDS, hit)));
        }
        if let Some(set) = w.special {
            let hit = kinds_hit(set, present.special_any, present.special).unwrap_or(0);
            out.push(format!("special_category: {}", kind_names(SPECIAL_KINDS, hit)));
        }
        if let Some(set) = w.entities {
            let hit = kinds_hit(set, present.entities_any, present.entities).unwrap_or(0);
            out.push(format!("entities: {}", kind_names(ENTITY_KINDS, hit)));
        }
        if w.terms {
            out.push("terms: dictionary match".to_string());
        }
        if let Some(want) = w.attachments {
            out.push(format!("attachments: {want}"));
        }
        if w.model.is_some() {
            out.push(format!("model: {}", signals.requested_model));
        }
        if w.provider.is_some() {
            out.push(format!("provider: {}", signals.provider));
        }
        if let (Some(_), Some(p)) = (w.task, signals.task) {
            // Two decimals say how sure the classifier was; the
            // task_confidence entry below shows the exact comparison.
            out.push(format!("task: {} ({:.2})", p.task.as_str(), p.confidence));
        }
        if let (Some(range), Some(p)) = (w.task_confidence, signals.task) {
            let confidence = number(f64::from(p.confidence));
            out.push(format!("task_confidence: {}", range.explain(&confidence)));
        }
        let ranges = [
            ("prompt_tokens", w.prompt_tokens, count(signals.prompt_tokens)),
            ("turns", w.turns, f64::from(signals.turns)),
            ("tool_steps", w.tool_steps, f64::from(signals.tool_steps)),
            ("local_queue_depth", w.local_queue_depth, count(signals.local_queue_depth)),
        ];
        for (name, range, value) in ranges {
            if let Some(range) = range {
                out.push(format!("{name}: {}", range.explain(&number(value))));
            }
        }
        if let (Some(range), Some(cost)) = (w.estimated_cost_usd, signals.estimated_cost_usd) {
            out.push(format!("estimated_cost_usd: {}", range.explain(&number(cost))));
        }
        if let Some(want) = w.tools_present {
            out.push(format!("tools_present: {want}"));
        }
        if let Some(want) = w.stream {
            out.push(format!("stream: {want}"));
        }
        if let Some(want) = w.unparsed {
            out.push(format!("unparsed: {want}"));
        }
        out
    }

    fn decision(&self, present: &Present, signals: &Signals, sticky_local: bool) -> Decision {
        let because = self.because(present, signals);
        let reason = match &self.reason {
            Some(reason) => reason.clone(),
            None => format!("rule {} matched: {}", self.id, because.join("; ")),
        };
        Decision {
            action: self.then,
            rule: self.id.clone(),
            decided_by: self.decided_by.clone(),
            reason,
            because,
            redact: self.redact.clone(),
            sticky: sticky_local && self.then == Action::Local && self.when.on_findings(),
            monitor: Vec::new(),
        }
    }

    fn monitored(&self) -> MonitorMatch {
        MonitorMatch { rule: self.id.clone(), action: self.then }
    }
}

/// The names whose bits are set in `mask`, comma separated.
fn kind_names(names: &[&str], mask: u64) -> String {
    names
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1u64 << i) != 0)
        .map(|(_, name)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl TeamPolicy {
    /// The team this policy belongs to (the file stem).
    pub fn team(&self) -> &str {
        &self.team
    }

    /// The team's dictionary: inline terms then file terms, trimmed, deduplicated.
    pub fn dictionary_terms(&self) -> &[String] {
        &self.terms
    }

    /// Whether an exact prompt-token count could decide differently from
    /// any count between 0 and `at_most`: some rule's `prompt_tokens` range
    /// holds for part of that span only, or some rule looks at the cost
    /// (which follows the count). When false, the cheap estimate gives the
    /// decision the tokenizer would.
    pub fn needs_exact_tokens(&self, at_most: u64) -> bool {
        self.rules.iter().any(|rule| {
            rule.when.estimated_cost_usd.is_some()
                || rule.when.prompt_tokens.is_some_and(|range| !range.constant_over(0.0, count(at_most)))
        })
    }

    /// What the team allows of AI apps.
    pub fn ai_apps(&self) -> &AiApps {
        &self.ai_apps
    }

    /// The team's own catalog of AI apps, when it adds entries to the
    /// organisation's.
    pub fn app_catalog(&self) -> Option<&crate::shadow::Catalog> {
        self.apps.as_deref()
    }

    /// The team's budgets and rate limits (`limits:`).
    pub fn limits(&self) -> &limits::Limits {
        &self.limits
    }

    /// How local decisions behave under load and for long prompts.
    pub fn local_options(&self) -> LocalOptions {
        self.local
    }

    /// Whether the team keeps a conversation local once one of its turns
    /// was kept local for its content (`sticky_local:`, default true).
    pub fn sticky_local(&self) -> bool {
        self.sticky_local
    }

    /// The findings this team's `min_confidence` keeps, in their order.
    /// [`TeamPolicy::decide`] applies the same filter itself, so passing
    /// either list to it gives the same decision.
    pub fn relevant_findings(&self, findings: &[Finding]) -> Vec<Finding> {
        findings.iter().filter(|f| self.min_confidence.keeps(f)).cloned().collect()
    }

    /// The findings to replace with placeholders for `decision`: the
    /// relevant findings its [`RedactScope`] covers; empty unless the
    /// decision is `redact`. May be empty for a `redact` decision too (a
    /// rule on the model alone), which then sends the prompt unchanged.
    pub fn findings_to_redact(&self, decision: &Decision, findings: &[Finding]) -> Vec<Finding> {
        let Some(scope) = decision.redact.as_ref().filter(|_| decision.action == Action::Redact) else {
            return Vec::new();
        };
        findings.iter().filter(|f| self.min_confidence.keeps(f) && scope.covers(f)).cloned().collect()
    }

    /// Evaluate one request: first matching rule, else the default; with
    /// `signals.sticky_local` (and the option on), see [`Self::decide_sticky`].
    /// Matching rules in `mode: monitor` are noted on the way and skipped.
    pub fn decide(&self, signals: &Signals) -> Decision {
        let present = Present::scan(signals.findings, &self.min_confidence);
        if let Some(refused) = self.refuse_unparsed(&present, signals) {
            return refused;
        }
        let mut monitor = Vec::new();
        let mut decision = if self.sticky_local && signals.sticky_local {
            self.decide_sticky(&present, signals, &mut monitor)
        } else {
            let mut decided = None;
            for rule in &self.rules {
                if rule.matches(&present, signals) {
                    if rule.monitor {
                        monitor.push(rule.monitored());
                        continue;
                    }
                    decided = Some(rule.decision(&present, signals, self.sticky_local));
                    break;
                }
            }
            decided.unwrap_or_else(|| self.default_decision())
        };
        decision.monitor = monitor;
        decision
    }

    /// A conversation already kept local stays local, whatever later rules
    /// would say (a follow-up question carries the earlier answer's context
    /// even when it has no findings of its own). Refusals still win, since
    /// local is a destination, not a pass: the first matching `block` rule
    /// anywhere in the file (a key pasted in a later turn is still
    /// stopped), and a `block` default when no rule matches at all.
    /// Monitor-mode rules never decide here either; the ones that match
    /// before the decision are noted.
    fn decide_sticky(&self, present: &Present, signals: &Signals, monitor: &mut Vec<MonitorMatch>) -> Decision {
        let mut any_matched = false;
        for rule in &self.rules {
            if rule.matches(present, signals) {
                if rule.monitor {
                    monitor.push(rule.monitored());
                    continue;
                }
                if rule.then == Action::Block {
                    return rule.decision(present, signals, self.sticky_local);
                }
                any_matched = true;
            }
        }
        if !any_matched && self.default == Action::Block {
            return self.default_decision();
        }
        Decision {
            action: Action::Local,
            rule: "sticky_local".to_string(),
            decided_by: self.sticky_by.clone(),
            reason: "an earlier turn of this conversation was kept local because it was \
                     sensitive, so the conversation stays local"
                .to_string(),
            because: vec!["sticky_local: earlier turn was sensitive".to_string()],
            redact: None,
            sticky: true,
            monitor: Vec::new(),
        }
    }

    /// Fail closed on shapes sluice cannot read as a conversation, unless
    /// the policy says otherwise (`unparsed_requests:`).
    fn refuse_unparsed(&self, present: &Present, signals: &Signals) -> Option<Decision> {
        if !signals.unparsed {
            return None;
        }
        // A named place or organisation alone is no reason to refuse.
        let any = present.pii_any || present.secrets_any || present.special_any || present.terms || present.attachments;
        let reason = match self.unparsed {
            Unparsed::Rules => return None,
            Unparsed::BlockFindings if !any => return None,
            Unparsed::BlockFindings => "the request is of a shape sluice does not parse and has findings",
            Unparsed::Block => "the request is of a shape sluice does not parse",
        };
        Some(Decision {
            action: Action::Block,
            rule: "unparsed_requests".to_string(),
            decided_by: self.unparsed_by.clone(),
            reason: reason.to_string(),
            because: vec![format!("unparsed: true (unparsed_requests: {})", self.unparsed.as_str())],
            redact: None,
            sticky: false,
            monitor: Vec::new(),
        })
    }

    fn default_decision(&self) -> Decision {
        Decision {
            action: self.default,
            rule: "default".to_string(),
            decided_by: self.default_by.clone(),
            reason: "no rule matched".to_string(),
            because: Vec::new(),
            redact: (self.default == Action::Redact).then(RedactScope::all),
            sticky: false,
            monitor: Vec::new(),
        }
    }
}

/// Every team's policy, loaded from one directory.
#[derive(Debug)]
pub struct PolicySet {
    teams: BTreeMap<String, Arc<TeamPolicy>>,
    /// Every file read to build the set (team files, org.yaml, profiles,
    /// dictionary files), for the reloader to watch.
    sources: Vec<PathBuf>,
}

impl PolicySet {
    /// Load every team's file, checking `ai_apps` ids against the shipped
    /// catalog of AI apps.
    pub fn load_dir(dir: &Path) -> Result<PolicySet, PolicyErrors> {
        PolicySet::load_dir_with_apps(dir, crate::shadow::catalog::builtin_shared())
    }

    /// Load and validate the policy directory against a catalog with the
    /// organisation's own entries: `org.yaml`, every profile in
    /// `profiles/`, and every other `*.yaml` file as a team. Other files
    /// (dictionary term lists) and hidden files (editors' locks and swap
    /// files) are ignored. All problems in all files are reported together.
    pub fn load_dir_with_apps(dir: &Path, apps: &crate::shadow::Catalog) -> Result<PolicySet, PolicyErrors> {
        let mut errors = Vec::new();
        let mut sources = Vec::new();
        if let Err(e) = std::fs::read_dir(dir) {
            return Err(PolicyErrors(vec![PolicyError::whole(dir, format!("cannot read policy directory: {e}"))]));
        }
        let org = org::load_org(dir, &mut errors, &mut sources);
        let profiles = org::load_profiles(dir, org.as_ref(), &mut errors, &mut sources);
        let org_file = format!("{}.yaml", org::ORG);
        let files: Vec<PathBuf> =
            yaml_files(dir, &mut errors).into_iter().filter(|f| f.file_name() != Some(org_file.as_ref())).collect();

        let mut teams = BTreeMap::new();
        for path in &files {
            match load_team(dir, path, org.as_ref(), &profiles, apps, &mut sources) {
                Ok(policy) => {
                    teams.insert(policy.team.clone(), Arc::new(policy));
                }
                Err(mut file_errors) => errors.append(&mut file_errors),
            }
        }

        if files.is_empty() {
            errors.push(PolicyError::whole(
                dir,
                "no policy files (*.yaml) in directory; default.yaml is required".to_string(),
            ));
        } else if !files.iter().any(|f| f.file_name() == Some("default.yaml".as_ref())) {
            errors.push(PolicyError::whole(
                &dir.join("default.yaml"),
                "missing: default.yaml is the policy for requests without a team".to_string(),
            ));
        }

        if errors.is_empty() {
            Ok(PolicySet { teams, sources })
        } else {
            Err(PolicyErrors(errors))
        }
    }

    pub fn team(&self, name: &str) -> Option<&Arc<TeamPolicy>> {
        self.teams.get(name)
    }

    /// Team names in sorted order.
    pub fn teams(&self) -> impl Iterator<Item = &str> {
        self.teams.keys().map(String::as_str)
    }

    // No `is_empty`: a loaded set always holds at least `default`.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.teams.len()
    }

    /// Every file the set was read from.
    pub fn sources(&self) -> &[PathBuf] {
        &self.sources
    }
}

fn is_team_name(name: &str) -> bool {
    crate::identity::is_team_name(name)
}

/// The `*.yaml` files directly in `dir`, sorted, hidden ones left out.
fn yaml_files(dir: &Path, errors: &mut Vec<PolicyError>) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            errors.push(PolicyError::whole(dir, format!("cannot read policy directory: {e}")));
            return Vec::new();
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = match entry {
            Ok(entry) => entry.path(),
            Err(e) => {
                errors.push(PolicyError::whole(dir, format!("cannot list policy directory: {e}")));
                continue;
            }
        };
        if path.file_name().and_then(|n| n.to_str()).is_none_or(|n| n.starts_with('.')) {
            continue;
        }
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml") if path.is_file() => files.push(path),
            Some("yml") => {
                tracing::warn!(file = %path.display(), "ignored: policy files must end in .yaml")
            }
            _ => {}
        }
    }
    files.sort();
    files
}

/// Parse, validate and compile one team's file on top of the profile it
/// extends and the organisation's rules, collecting every problem that can
/// be found without the file parsing.
fn load_team(
    dir: &Path,
    path: &Path,
    org: Option<&OrgPolicy>,
    profiles: &Profiles,
    apps: &crate::shadow::Catalog,
    sources: &mut Vec<PathBuf>,
) -> Result<TeamPolicy, Vec<PolicyError>> {
    let mut errors = Vec::new();
    let team = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
    if !is_team_name(&team) {
        errors.push(PolicyError::whole(
            path,
            format!("file name `{team}` is not a valid team name: use a-z, 0-9, `_` and `-`"),
        ));
    }
    let own = match org::read_layer(dir, path, None, "file is empty; at least `default:` is required", sources) {
        Ok(own) => own,
        Err(mut e) => {
            errors.append(&mut e);
            return Err(errors);
        }
    };

    let bases = match own.extends.as_deref() {
        None => Vec::new(),
        Some(name) => match profiles.chain(name) {
            Ok(chain) => chain,
            Err(org::ChainError::Missing) => {
                errors.push(PolicyError::at(path, own.key_at("extends"), org::missing_profile(dir, name)));
                return Err(errors);
            }
            // Reported against the profile's own file.
            Err(org::ChainError::Broken) => return Err(errors),
        },
    };
    org::clashes(&own, &bases, org, &mut errors);
    let mut layers: Vec<&Layer> = bases;
    layers.push(&own);
    let merged = org::merge(&layers, org);

    let Some((default, default_from)) = merged.default else {
        // Where serde would have put it: the first line of the mapping.
        let first = own.source.lines().position(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        let reason = match own.extends.as_deref() {
            None => "missing field `default`: the action when no rule matches".to_string(),
            Some(name) => format!("missing field `default`: neither this file nor profile `{name}` sets one"),
        };
        errors.push(PolicyError::at(path, first.map(|i| (i + 1, 1)), reason));
        return Err(errors);
    };

    let default_apps = AiApps::default();
    let (ai_apps, apps_from) = merged.ai_apps.unwrap_or((&default_apps, &own));
    let team_apps = if ai_apps.catalog.is_empty() {
        None
    } else {
        let origin = apps_from.path.display().to_string();
        match apps.with_extra(&origin, ai_apps.catalog.clone()) {
            Ok(catalog) => Some(Arc::new(catalog)),
            Err(e) => {
                errors.push(PolicyError::at(
                    &apps_from.path,
                    apps_from.key_at("catalog"),
                    format!("ai_apps.catalog: {e}"),
                ));
                None
            }
        }
    };
    let known = team_apps.as_deref().unwrap_or(apps);
    for app in &ai_apps.sanctioned {
        if known.get(app).is_none() {
            // Ids are plain words: the first line naming one is where it is.
            let at =
                apps_from.source.lines().position(|l| l.contains(app.as_str()) && !l.trim_start().starts_with('#'));
            errors.push(PolicyError::at(
                &apps_from.path,
                at.map(|i| (i + 1, 1)),
                format!("ai_apps.sanctioned: `{app}` is not an app in the catalog (see catalog/ai-services.yaml)"),
            ));
        }
    }

    if !errors.is_empty() {
        return Err(errors);
    }
    let by = |file: &str, what: &str| Arc::<str>::from(format!("{file}#{what}"));
    Ok(TeamPolicy {
        terms: merged.terms,
        min_confidence: merged.thresholds,
        rules: merged.rules,
        default,
        default_by: by(&default_from.rel, "default"),
        sticky_by: by(&own.rel, "sticky_local"),
        unparsed_by: by(&own.rel, "unparsed_requests"),
        sticky_local: merged.sticky_local,
        local: merged.local,
        unparsed: merged.unparsed,
        ai_apps: ai_apps.clone(),
        apps: team_apps,
        limits: layers.iter().rev().find_map(|l| l.limits.clone()).unwrap_or_default(),
        team,
    })
}

/// 1-based (line, column) of every `key:` in `source` — optionally only those
/// whose plain or quoted scalar value is `value`. A text search: it serves
/// checks that run after parsing, when serde no longer knows positions.
fn find_key_lines(source: &str, key: &str, value: Option<&str>) -> Vec<(usize, usize)> {
    let needle = format!("{key}:");
    let mut found = Vec::new();
    for (i, line) in source.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with('#') {
            continue;
        }
        let mut from = 0;
        while let Some(off) = line[from..].find(&needle) {
            let start = from + off;
            from = start + needle.len();
            // A key starts a line (after an optional `- `) or follows `{` or
            // `,` in a flow mapping; anything else is inside some value.
            let before = line[..start].trim();
            let boundary = before.is_empty() || before == "-" || before.ends_with(['{', ',']);
            if !boundary {
                continue;
            }
            let matched = match value {
                None => true,
                Some(want) => {
                    let rest = &line[from..];
                    let end = rest.find([',', '}', '#']).unwrap_or(rest.len());
                    let got = rest[..end].trim().trim_matches(|c| c == '"' || c == '\'');
                    got == want
                }
            };
            if matched {
                found.push((i + 1, line[..start].chars().count() + 1));
            }
        }
    }
    found
}

/// One problem in the policy directory, with its position when known.
#[derive(Debug, Clone, thiserror::Error)]
pub struct PolicyError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub reason: String,
}

impl PolicyError {
    fn whole(file: &Path, reason: String) -> PolicyError {
        PolicyError { file: file.to_path_buf(), line: None, column: None, reason }
    }

    fn at(file: &Path, at: Option<(usize, usize)>, reason: String) -> PolicyError {
        PolicyError {
            file: file.to_path_buf(),
            line: at.map(|(line, _)| line),
            column: at.map(|(_, column)| column),
            reason,
        }
    }

    fn from_yaml(file: &Path, error: &serde_yaml::Error) -> PolicyError {
        let mut reason = error.to_string();
        let location = error.location();
        if let Some(loc) = &location {
            // The position is reported in its own fields; drop serde_yaml's copy.
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            if let Some(at) = reason.find(&suffix) {
                reason.replace_range(at..at + suffix.len(), "");
            }
        }
        PolicyError {
            file: file.to_path_buf(),
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
            reason,
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}:", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, "{line}:")?;
            if let Some(column) = self.column {
                write!(f, "{column}:")?;
            }
        }
        write!(f, " {}", self.reason)
    }
}

/// Every problem found while loading a policy directory.
#[derive(Debug, thiserror::Error)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
