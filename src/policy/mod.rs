//! Per-team routing policies: load and validate `policies/<team>.yaml`, and
//! decide for each request whether it goes to the local model, to the cloud
//! (redacted first or as it is), or nowhere, and why.
//!
//! A team's rules are tried in file order; the first whose conditions all
//! hold decides, otherwise the file's `default` does. Findings below the
//! team's `min_confidence` are ignored throughout. Once a conversation has
//! been kept local for its content, later turns stay local (`sticky_local`),
//! though `block` rules still apply. The file format is documented in
//! `policies/default.yaml`.

mod glob;
#[cfg(test)]
#[path = "provider_tests.rs"]
mod provider_tests;
mod schema;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::classify::Task;
use crate::inspect::{Category, Finding, ENTITY_KINDS, PII_KINDS, SECRET_KINDS, SPECIAL_KINDS};
use schema::{number, KindSet, MinConfidence, NumRange, PolicyFile, Rule, Selector, PEOPLE_KINDS, PROVIDERS};

/// Where a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
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
    pub rule: String,
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
/// `sluice policy test --json`: numbers and names only, never text, values
/// or findings.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SignalSummary {
    pub task: Option<&'static str>,
    /// Rounded to 3 decimals: an f32 widened to f64 would print as
    /// 0.9100000262260437.
    pub task_confidence: Option<f64>,
    pub prompt_tokens: u64,
    pub prompt_tokens_exact: bool,
    pub turns: u32,
    pub tool_steps: u32,
    pub tools_present: bool,
    pub stream: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unparsed: bool,
    pub estimated_cost_usd: Option<f64>,
    pub local_queue_depth: u64,
    pub sticky_local: bool,
}

impl Signals<'_> {
    pub fn summary(&self) -> SignalSummary {
        SignalSummary {
            task: self.task.map(|p| p.task.as_str()),
            task_confidence: self.task.map(|p| (f64::from(p.confidence) * 1000.0).round() / 1000.0),
            prompt_tokens: self.prompt_tokens,
            prompt_tokens_exact: self.prompt_tokens_exact,
            turns: self.turns,
            tool_steps: self.tool_steps,
            tools_present: self.tools_present,
            stream: self.stream,
            unparsed: self.unparsed,
            // Micro-dollars are precise enough and print cleanly.
            estimated_cost_usd: self.estimated_cost_usd.map(|c| (c * 1e6).round() / 1e6),
            local_queue_depth: self.local_queue_depth,
            sticky_local: self.sticky_local,
        }
    }
}

/// One team's parsed and validated policy file.
#[derive(Debug)]
pub struct TeamPolicy {
    team: String,
    terms: Vec<String>,
    min_confidence: MinConfidence,
    rules: Vec<Rule>,
    default: Action,
    sticky_local: bool,
    local: LocalOptions,
    unparsed: Unparsed,
    ai_apps: AiApps,
    /// The organisation's catalog plus `ai_apps.catalog`, when the team
    /// adds entries of its own.
    apps: Option<Arc<crate::shadow::Catalog>>,
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
    fn scan(findings: &[Finding], min_confidence: &MinConfidence) -> Present {
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
            None => format!("rule {} matched: {}", self.name, because.join("; ")),
        };
        Decision {
            action: self.then,
            rule: self.name.clone(),
            reason,
            because,
            redact: self.redact.clone(),
            sticky: sticky_local && self.then == Action::Local && self.when.on_findings(),
        }
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
    pub fn decide(&self, signals: &Signals) -> Decision {
        let present = Present::scan(signals.findings, &self.min_confidence);
        if let Some(refused) = self.refuse_unparsed(&present, signals) {
            return refused;
        }
        if self.sticky_local && signals.sticky_local {
            return self.decide_sticky(&present, signals);
        }
        match self.rules.iter().find(|r| r.matches(&present, signals)) {
            Some(rule) => rule.decision(&present, signals, self.sticky_local),
            None => self.default_decision(),
        }
    }

    /// A conversation already kept local stays local, whatever later rules
    /// would say (a follow-up question carries the earlier answer's context
    /// even when it has no findings of its own). Refusals still win, since
    /// local is a destination, not a pass: the first matching `block` rule
    /// anywhere in the file (a key pasted in a later turn is still
    /// stopped), and a `block` default when no rule matches at all.
    fn decide_sticky(&self, present: &Present, signals: &Signals) -> Decision {
        let mut any_matched = false;
        for rule in &self.rules {
            if rule.matches(present, signals) {
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
            reason: "an earlier turn of this conversation was kept local because it was \
                     sensitive, so the conversation stays local"
                .to_string(),
            because: vec!["sticky_local: earlier turn was sensitive".to_string()],
            redact: None,
            sticky: true,
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
            reason: reason.to_string(),
            because: vec![format!("unparsed: true (unparsed_requests: {})", self.unparsed.as_str())],
            redact: None,
            sticky: false,
        })
    }

    fn default_decision(&self) -> Decision {
        Decision {
            action: self.default,
            rule: "default".to_string(),
            reason: "no rule matched".to_string(),
            because: Vec::new(),
            redact: (self.default == Action::Redact).then(RedactScope::all),
            sticky: false,
        }
    }
}

/// Every team's policy, loaded from one directory.
#[derive(Debug)]
pub struct PolicySet {
    teams: BTreeMap<String, Arc<TeamPolicy>>,
}

impl PolicySet {
    /// Load and validate every `*.yaml` file in `dir`. Other files are
    /// ignored (dictionary files live beside the policies). All problems in
    /// all files are reported together.
    /// Load every team's file, checking `ai_apps` ids against the shipped
    /// catalog of AI apps.
    pub fn load_dir(dir: &Path) -> Result<PolicySet, PolicyErrors> {
        PolicySet::load_dir_with_apps(dir, crate::shadow::catalog::builtin_shared())
    }

    /// [`PolicySet::load_dir`] against a catalog with the organisation's
    /// own entries.
    pub fn load_dir_with_apps(dir: &Path, apps: &crate::shadow::Catalog) -> Result<PolicySet, PolicyErrors> {
        let mut errors = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                return Err(PolicyErrors(vec![PolicyError::whole(dir, format!("cannot read policy directory: {e}"))]))
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
            match path.extension().and_then(|e| e.to_str()) {
                Some("yaml") if path.is_file() => files.push(path),
                Some("yml") => {
                    tracing::warn!(file = %path.display(), "ignored: policy files must end in .yaml")
                }
                _ => {}
            }
        }
        files.sort();

        let mut teams = BTreeMap::new();
        for path in &files {
            match load_file(dir, path, apps) {
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
            Ok(PolicySet { teams })
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
}

fn is_team_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Parse, validate and compile one policy file, collecting every problem
/// that can be found without the file parsing.
fn load_file(dir: &Path, path: &Path, apps: &crate::shadow::Catalog) -> Result<TeamPolicy, Vec<PolicyError>> {
    let mut errors = Vec::new();
    let team = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
    if !is_team_name(&team) {
        errors.push(PolicyError::whole(
            path,
            format!("file name `{team}` is not a valid team name: use a-z, 0-9, `_` and `-`"),
        ));
    }

    let source = match std::fs::read_to_string(path) {
        Ok(source) => source,
        Err(e) => {
            errors.push(PolicyError::whole(path, format!("cannot read file: {e}")));
            return Err(errors);
        }
    };
    let only_comments = source.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    if only_comments {
        errors.push(PolicyError::whole(path, "file is empty; at least `default:` is required".to_string()));
        return Err(errors);
    }

    let file: PolicyFile = match serde_yaml::from_str(&source) {
        Ok(file) => file,
        Err(e) => {
            errors.push(PolicyError::from_yaml(path, &e));
            return Err(errors);
        }
    };

    // Rule names are unique so that a decision's `rule` identifies one rule.
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for rule in &file.rules {
        let count = seen.entry(rule.name.as_str()).or_insert(0);
        *count += 1;
        if *count == 2 {
            let lines = find_key_lines(&source, "name", Some(&rule.name));
            let first = lines.first().map(|(line, _)| *line);
            let at = lines.get(1).copied();
            let reason = match first {
                Some(first) => format!("duplicate rule name `{}` (first on line {first})", rule.name),
                None => format!("duplicate rule name `{}`", rule.name),
            };
            errors.push(PolicyError::at(path, at, reason));
        }
    }

    let mut terms: Vec<String> = Vec::new();
    if let Some(dictionary) = file.dictionary {
        terms.extend(dictionary.terms.into_iter().map(|t| t.0));
        if let Some(name) = dictionary.file {
            let at = find_key_lines(&source, "file", None).first().copied();
            match std::fs::read_to_string(dir.join(&name)) {
                Ok(text) => terms.extend(
                    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string),
                ),
                Err(e) => errors.push(PolicyError::at(path, at, format!("cannot read dictionary file `{name}`: {e}"))),
            }
        }
    }
    let mut unique = std::collections::HashSet::new();
    terms.retain(|t| unique.insert(t.clone()));

    let team_apps = if file.ai_apps.catalog.is_empty() {
        None
    } else {
        let origin = path.display().to_string();
        match apps.with_extra(&origin, file.ai_apps.catalog.clone()) {
            Ok(catalog) => Some(Arc::new(catalog)),
            Err(e) => {
                let at = find_key_lines(&source, "catalog", None).first().copied();
                errors.push(PolicyError::at(path, at, format!("ai_apps.catalog: {e}")));
                None
            }
        }
    };
    let known = team_apps.as_deref().unwrap_or(apps);
    for app in &file.ai_apps.sanctioned {
        if known.get(app).is_none() {
            // Ids are plain words: the first line naming one is where it is.
            let at = source.lines().position(|l| l.contains(app.as_str()) && !l.trim_start().starts_with('#'));
            errors.push(PolicyError::at(
                path,
                at.map(|i| (i + 1, 1)),
                format!("ai_apps.sanctioned: `{app}` is not an app in the catalog (see catalog/ai-services.yaml)"),
            ));
        }
    }

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(TeamPolicy {
        team,
        terms,
        min_confidence: file.min_confidence,
        rules: file.rules,
        default: file.default,
        sticky_local: file.sticky_local,
        local: file.local,
        unparsed: file.unparsed_requests,
        ai_apps: file.ai_apps,
        apps: team_apps,
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
