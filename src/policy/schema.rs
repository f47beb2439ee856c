//! The policy file schema, validated while it is deserialized.
//!
//! serde_yaml only knows where an error is while it is reading the value
//! that raised it, so every check that concerns a single value lives in a
//! `Deserialize` impl here, run inside serde_yaml's read of that scalar or
//! mapping (see [`checked_str`] and [`checked_map`]).
//! What comes out is already compiled for fast evaluation.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, value::MapAccessDeserializer, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::glob::Glob;
use super::{Action, RedactScope};
use crate::classify::Task;
use crate::inspect::{
    Category, Finding, ATTACHMENT_KIND, ENTITY_KINDS, PII_KINDS, SECRET_KINDS, SPECIAL_KINDS, TERM_KIND,
};

/// Provider names `when.provider` may name: every provider in the
/// catalog, so a policy can name any provider the proxy intercepts.
pub(super) const PROVIDERS: &[&str] = &crate::wire::providers::NAMES;

/// The PII kinds `when.people` may name: who someone is and where they live.
pub(super) const PEOPLE_KINDS: &[&str] = &["person", "street_address"];

// Kind sets are bit masks indexed by position in these lists.
const _: () = assert!(
    PII_KINDS.len() <= 64
        && SECRET_KINDS.len() <= 64
        && SPECIAL_KINDS.len() <= 64
        && ENTITY_KINDS.len() <= 64
        && PROVIDERS.len() <= 64
        && Task::ALL.len() <= 64
);

/// Read a string scalar and check it while serde_yaml is still reading that
/// scalar: only then does an error get the scalar's own position.
fn checked_str<'de, D, T>(
    deserializer: D,
    expecting: &'static str,
    check: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct StrVisitor<F>(F, &'static str);
    impl<T, F: FnOnce(&str) -> Result<T, String>> Visitor<'_> for StrVisitor<F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.1)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.0)(v).map_err(E::custom)
        }
    }
    deserializer.deserialize_str(StrVisitor(check, expecting))
}

/// Read a mapping as `S` and check it while serde_yaml is still reading that
/// mapping, so an error points at the mapping rather than at its parent.
fn checked_map<'de, D, S, T>(
    deserializer: D,
    expecting: &'static str,
    check: impl FnOnce(S) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    S: Deserialize<'de>,
{
    struct MapVisitor<S, F>(F, &'static str, PhantomData<S>);
    impl<'de, S: Deserialize<'de>, T, F: FnOnce(S) -> Result<T, String>> Visitor<'de> for MapVisitor<S, F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.1)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            let spec = S::deserialize(MapAccessDeserializer::new(map))?;
            (self.0)(spec).map_err(de::Error::custom)
        }
    }
    deserializer.deserialize_map(MapVisitor(check, expecting, PhantomData))
}

/// One team or profile file as written. Settings are optional here: a
/// file that `extends:` a profile inherits what it leaves out (see
/// `org.rs`), and a team file that extends nothing must set `default`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PolicyFile {
    /// Accepted for humans reading the file; sluice never uses it.
    #[serde(default, rename = "description")]
    _description: Option<String>,
    /// The profile (`profiles/<name>.yaml`) this file starts from.
    #[serde(default)]
    pub(super) extends: Option<ProfileName>,
    /// The mode of this file's rules that do not set their own.
    #[serde(default)]
    pub(super) mode: Option<Mode>,
    #[serde(default)]
    pub(super) dictionary: Option<DictionarySpec>,
    #[serde(default)]
    pub(super) min_confidence: Option<MinConfidence>,
    #[serde(default)]
    pub(super) rules: Vec<Rule>,
    #[serde(default)]
    pub(super) default: Option<Action>,
    #[serde(default)]
    pub(super) sticky_local: Option<bool>,
    #[serde(default)]
    pub(super) local: Option<super::LocalOptions>,
    #[serde(default)]
    pub(super) unparsed_requests: Option<super::Unparsed>,
    #[serde(default)]
    pub(super) ai_apps: Option<super::AiApps>,
    /// Budgets and rate limits; a team file's own, else its profile's.
    #[serde(default)]
    pub(super) limits: Option<super::limits::Limits>,
}

/// `org.yaml` as written: the organisation's rules, tried before every
/// team's. Only what applies to every team may be set here; the rest
/// (`default`, `local`, ...) is each team's to choose.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OrgFile {
    #[serde(default, rename = "description")]
    _description: Option<String>,
    #[serde(default)]
    pub(super) mode: Option<Mode>,
    /// A ceiling on every team's `min_confidence` (see `org.rs`).
    #[serde(default)]
    pub(super) min_confidence: Option<MinConfidence>,
    #[serde(default)]
    pub(super) rules: Vec<Rule>,
}

/// Whether a rule decides (`enforce`) or only records what it would have
/// decided (`monitor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Mode {
    Enforce,
    Monitor,
}

/// A profile's name: its file is `profiles/<name>.yaml`.
pub(super) struct ProfileName(pub(super) String);

impl<'de> Deserialize<'de> for ProfileName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_str(deserializer, "a profile name", |name| {
            if !super::is_team_name(name) {
                return Err(format!(
                    "invalid profile name `{name}`: use a-z, 0-9, `_` and `-` (the file is profiles/<name>.yaml)"
                ));
            }
            if name == super::org::ORG {
                return Err("`org` is not a profile: org.yaml applies to every team without being extended".to_string());
            }
            Ok(ProfileName(name.to_string()))
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DictionarySpec {
    #[serde(default)]
    pub(super) terms: Vec<Term>,
    /// Relative to the policy directory.
    #[serde(default)]
    pub(super) file: Option<String>,
}

/// A dictionary term, trimmed and non-empty.
pub(super) struct Term(pub(super) String);

impl<'de> Deserialize<'de> for Term {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_str(deserializer, "a dictionary term", |raw| {
            let trimmed = raw.trim();
            if trimmed.is_empty() {
                return Err("empty dictionary term".to_string());
            }
            Ok(Term(trimmed.to_string()))
        })
    }
}

/// A compiled rule.
#[derive(Debug)]
pub(super) struct Rule {
    /// The name as written in its file.
    pub(super) name: String,
    /// The name decisions and audit records carry: `name` for a team's
    /// own rules, `org:name` and `<profile>:name` for the others (set by
    /// the loader, see `org.rs`).
    pub(super) id: String,
    /// `<file>#<name>`, the file relative to the policy directory, for
    /// `sluice policy test` (set by the loader).
    pub(super) decided_by: std::sync::Arc<str>,
    pub(super) when: When,
    pub(super) then: Action,
    pub(super) reason: Option<String>,
    /// Set exactly when `then` is `redact`.
    pub(super) redact: Option<RedactScope>,
    /// As written; the loader resolves it against the file's `mode`.
    pub(super) mode: Option<Mode>,
    /// Matches are recorded, never decide (`mode: monitor`).
    pub(super) monitor: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    name: RuleName,
    #[serde(default)]
    when: Option<When>,
    then: Action,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    redact: Option<RedactList>,
    #[serde(default)]
    mode: Option<Mode>,
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_map(deserializer, "a rule mapping", |spec: RuleSpec| {
            let name = spec.name.0;
            let Some(when) = spec.when else {
                return Err(format!("rule `{name}` has no `when`; a catch-all belongs in the file's `default`"));
            };
            let reason = match spec.reason {
                Some(r) if r.trim().is_empty() => {
                    return Err(format!("rule `{name}` has an empty `reason`; remove it to get the generated one"))
                }
                other => other,
            };
            let redact = match (spec.then, spec.redact) {
                (Action::Redact, list) => Some(list.map_or_else(RedactScope::all, |l| l.0)),
                (_, None) => None,
                (other, Some(_)) => {
                    return Err(format!(
                        "rule `{name}` lists `redact:` but its action is `{}`; \
                         `redact:` only limits what a `then: redact` rule replaces",
                        other.as_str()
                    ))
                }
            };
            Ok(Rule {
                id: name.clone(),
                decided_by: std::sync::Arc::from(name.as_str()),
                name,
                when,
                then: spec.then,
                reason,
                redact,
                mode: spec.mode,
                monitor: false,
            })
        })
    }
}

/// A rule name: it appears in decisions, audit records and metric labels.
struct RuleName(String);

impl<'de> Deserialize<'de> for RuleName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_str(deserializer, "a rule name", |name| {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
                return Err(format!("invalid rule name `{name}`: use letters, digits, `_`, `-` and `.`"));
            }
            if name == "default" {
                return Err("rule name `default` is reserved for decisions made by the file's `default`".to_string());
            }
            if name == "sticky_local" {
                return Err(
                    "rule name `sticky_local` is reserved for decisions that keep a conversation local".to_string()
                );
            }
            if name == "unparsed_requests" {
                return Err("rule name `unparsed_requests` is reserved for decisions on requests sluice cannot parse"
                    .to_string());
            }
            Ok(RuleName(name.to_string()))
        })
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ActionVisitor;
        impl Visitor<'_> for ActionVisitor {
            type Value = Action;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an action: local, cloud, redact or block")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Action, E> {
                match v {
                    "local" => Ok(Action::Local),
                    "cloud" => Ok(Action::Cloud),
                    "redact" => Ok(Action::Redact),
                    "block" => Ok(Action::Block),
                    other => {
                        Err(E::custom(format!("unknown action `{other}`; expected local, cloud, redact or block")))
                    }
                }
            }
        }
        deserializer.deserialize_str(ActionVisitor)
    }
}

/// The conditions of one rule, all of which must hold. `None` (or `false`
/// for `terms`) is a condition the rule does not have.
#[derive(Debug)]
pub(super) struct When {
    pub(super) pii: Option<KindSet>,
    pub(super) secrets: Option<KindSet>,
    /// Over [`PEOPLE_KINDS`].
    pub(super) people: Option<KindSet>,
    /// Over [`SPECIAL_KINDS`].
    pub(super) special: Option<KindSet>,
    /// Over [`ENTITY_KINDS`].
    pub(super) entities: Option<KindSet>,
    pub(super) terms: bool,
    pub(super) attachments: Option<bool>,
    pub(super) model: Option<Box<[Glob]>>,
    /// Bit mask over [`PROVIDERS`].
    pub(super) provider: Option<u64>,
    /// Bit mask over [`Task::ALL`].
    pub(super) task: Option<u64>,
    pub(super) task_confidence: Option<NumRange>,
    pub(super) prompt_tokens: Option<NumRange>,
    pub(super) turns: Option<NumRange>,
    pub(super) tool_steps: Option<NumRange>,
    pub(super) tools_present: Option<bool>,
    pub(super) stream: Option<bool>,
    pub(super) unparsed: Option<bool>,
    pub(super) estimated_cost_usd: Option<NumRange>,
    pub(super) local_queue_depth: Option<NumRange>,
}

impl When {
    /// True when any condition looks at findings: such a rule keeps a
    /// prompt local because of what it contains (see `Decision::sticky`).
    pub(super) fn on_findings(&self) -> bool {
        self.pii.is_some()
            || self.secrets.is_some()
            || self.people.is_some()
            || self.special.is_some()
            || self.entities.is_some()
            || self.terms
            || self.attachments == Some(true)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WhenSpec {
    #[serde(default)]
    pii: Option<NameSet<PiiNames>>,
    #[serde(default)]
    secrets: Option<NameSet<SecretNames>>,
    #[serde(default)]
    people: Option<NameSet<PeopleNames>>,
    #[serde(default)]
    special_category: Option<NameSet<SpecialNames>>,
    #[serde(default)]
    entities: Option<NameSet<EntityNames>>,
    #[serde(default)]
    terms: Option<AnyOnly>,
    #[serde(default)]
    attachments: Option<bool>,
    #[serde(default, alias = "requested_model")]
    model: Option<Patterns>,
    #[serde(default)]
    provider: Option<NameSet<ProviderNames>>,
    #[serde(default)]
    task: Option<NameSet<TaskNames>>,
    #[serde(default)]
    task_confidence: Option<Ranged<Fraction>>,
    #[serde(default)]
    prompt_tokens: Option<Ranged<Count>>,
    #[serde(default)]
    turns: Option<Ranged<Count>>,
    #[serde(default)]
    tool_steps: Option<Ranged<Count>>,
    #[serde(default)]
    tools_present: Option<bool>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    unparsed: Option<bool>,
    #[serde(default)]
    estimated_cost_usd: Option<Ranged<Usd>>,
    #[serde(default)]
    local_queue_depth: Option<Ranged<Count>>,
}

impl<'de> Deserialize<'de> for When {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_map(deserializer, "a mapping of conditions", |spec: WhenSpec| {
            let listed = |set: KindSet| match set {
                KindSet::Listed(mask) => mask,
                // Families without `any` reject it while parsing, so this
                // arm is never taken.
                KindSet::Any => u64::MAX,
            };
            let range = |r: Option<Ranged<_>>| r.map(|r| r.0);
            let when = When {
                pii: spec.pii.map(|s| s.set),
                secrets: spec.secrets.map(|s| s.set),
                people: spec.people.map(|s| s.set),
                special: spec.special_category.map(|s| s.set),
                entities: spec.entities.map(|s| s.set),
                terms: spec.terms.is_some(),
                attachments: spec.attachments,
                model: spec.model.map(|p| p.0),
                provider: spec.provider.map(|s| listed(s.set)),
                task: spec.task.map(|s| listed(s.set)),
                task_confidence: spec.task_confidence.map(|r| r.0),
                prompt_tokens: range(spec.prompt_tokens),
                turns: range(spec.turns),
                tool_steps: range(spec.tool_steps),
                tools_present: spec.tools_present,
                stream: spec.stream,
                unparsed: spec.unparsed,
                estimated_cost_usd: spec.estimated_cost_usd.map(|r| r.0),
                local_queue_depth: range(spec.local_queue_depth),
            };
            let empty = when.pii.is_none()
                && when.secrets.is_none()
                && when.people.is_none()
                && when.special.is_none()
                && when.entities.is_none()
                && !when.terms
                && when.attachments.is_none()
                && when.model.is_none()
                && when.provider.is_none()
                && when.task.is_none()
                && when.task_confidence.is_none()
                && when.prompt_tokens.is_none()
                && when.turns.is_none()
                && when.tool_steps.is_none()
                && when.tools_present.is_none()
                && when.stream.is_none()
                && when.unparsed.is_none()
                && when.estimated_cost_usd.is_none()
                && when.local_queue_depth.is_none();
            if empty {
                return Err("empty `when`; a catch-all belongs in the file's `default`".to_string());
            }
            Ok(when)
        })
    }
}

/// Which finding kinds (or providers) a condition accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum KindSet {
    Any,
    /// Bit mask over the family's name list.
    Listed(u64),
}

/// A family of names a list condition draws from.
trait NameFamily {
    /// The condition's key, for messages.
    const KEY: &'static str;
    /// What one name is, for messages.
    const WHAT: &'static str;
    const ALLOWS_ANY: bool;
    /// The name's position in the family, which is its bit in a mask.
    fn position(name: &str) -> Option<usize>;
    /// Every valid name, for messages.
    fn valid() -> String;
}

struct PiiNames;
impl NameFamily for PiiNames {
    const KEY: &'static str = "pii";
    const WHAT: &'static str = "pii type";
    const ALLOWS_ANY: bool = true;
    fn position(name: &str) -> Option<usize> {
        PII_KINDS.iter().position(|n| *n == name)
    }
    fn valid() -> String {
        PII_KINDS.join(", ")
    }
}

struct SecretNames;
impl NameFamily for SecretNames {
    const KEY: &'static str = "secrets";
    const WHAT: &'static str = "secret type";
    const ALLOWS_ANY: bool = true;
    fn position(name: &str) -> Option<usize> {
        SECRET_KINDS.iter().position(|n| *n == name)
    }
    fn valid() -> String {
        SECRET_KINDS.join(", ")
    }
}

struct PeopleNames;
impl NameFamily for PeopleNames {
    const KEY: &'static str = "people";
    const WHAT: &'static str = "people type";
    const ALLOWS_ANY: bool = true;
    fn position(name: &str) -> Option<usize> {
        PEOPLE_KINDS.iter().position(|n| *n == name)
    }
    fn valid() -> String {
        PEOPLE_KINDS.join(", ")
    }
}

struct SpecialNames;
impl NameFamily for SpecialNames {
    const KEY: &'static str = "special_category";
    const WHAT: &'static str = "special category";
    const ALLOWS_ANY: bool = true;
    fn position(name: &str) -> Option<usize> {
        SPECIAL_KINDS.iter().position(|n| *n == name)
    }
    fn valid() -> String {
        SPECIAL_KINDS.join(", ")
    }
}

struct EntityNames;
impl NameFamily for EntityNames {
    const KEY: &'static str = "entities";
    const WHAT: &'static str = "entity type";
    const ALLOWS_ANY: bool = true;
    fn position(name: &str) -> Option<usize> {
        ENTITY_KINDS.iter().position(|n| *n == name)
    }
    fn valid() -> String {
        ENTITY_KINDS.join(", ")
    }
}

struct ProviderNames;
impl NameFamily for ProviderNames {
    const KEY: &'static str = "provider";
    const WHAT: &'static str = "provider";
    const ALLOWS_ANY: bool = false;
    fn position(name: &str) -> Option<usize> {
        PROVIDERS.iter().position(|n| *n == name)
    }
    fn valid() -> String {
        PROVIDERS.join(", ")
    }
}

struct TaskNames;
impl NameFamily for TaskNames {
    const KEY: &'static str = "task";
    const WHAT: &'static str = "task";
    const ALLOWS_ANY: bool = false;
    fn position(name: &str) -> Option<usize> {
        let task = Task::from_name(name)?;
        Task::ALL.iter().position(|t| *t == task)
    }
    fn valid() -> String {
        Task::ALL.map(Task::as_str).join(", ")
    }
}

/// `any`, one name, or a list of names from family `F`.
struct NameSet<F> {
    set: KindSet,
    family: PhantomData<F>,
}

fn name_bit<F: NameFamily>(name: &str) -> Result<u64, String> {
    F::position(name).map(|i| 1u64 << i).ok_or_else(|| format!("unknown {} `{name}`; valid: {}", F::WHAT, F::valid()))
}

impl<'de, F: NameFamily> Deserialize<'de> for NameSet<F> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SetVisitor<F>(PhantomData<F>);
        impl<'de, F: NameFamily> Visitor<'de> for SetVisitor<F> {
            type Value = KindSet;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                if F::ALLOWS_ANY {
                    write!(f, "`any` or a list of {} names", F::WHAT)
                } else {
                    write!(f, "a list of {} names", F::WHAT)
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KindSet, E> {
                if v == "any" {
                    if F::ALLOWS_ANY {
                        return Ok(KindSet::Any);
                    }
                    return Err(E::custom(format!(
                        "`{}: any` is not allowed; leave the condition out instead",
                        F::KEY
                    )));
                }
                name_bit::<F>(v).map(KindSet::Listed).map_err(E::custom)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KindSet, A::Error> {
                let mut mask = 0;
                let mut count = 0;
                // Each element is read on its own so an unknown name is
                // reported at its own position, not at the list's.
                while let Some(Name::<F>(bit, _)) = seq.next_element()? {
                    mask |= bit;
                    count += 1;
                }
                if count == 0 {
                    return Err(de::Error::custom(format!(
                        "empty `{}` list never matches; remove the condition{}",
                        F::KEY,
                        if F::ALLOWS_ANY { " or use `any`" } else { "" }
                    )));
                }
                Ok(KindSet::Listed(mask))
            }
        }
        let set = deserializer.deserialize_any(SetVisitor::<F>(PhantomData))?;
        Ok(NameSet { set, family: PhantomData })
    }
}

/// One list element: a name's bit.
struct Name<F>(u64, PhantomData<F>);

impl<'de, F: NameFamily> Deserialize<'de> for Name<F> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_str(deserializer, F::WHAT, |raw| {
            if raw == "any" {
                return Err(format!("`any` cannot be part of a list; write `{}: any`", F::KEY));
            }
            name_bit::<F>(raw).map(|bit| Name(bit, PhantomData))
        })
    }
}

/// `terms: any` — the only form, since a rule cannot name a secret term.
struct AnyOnly;

impl<'de> Deserialize<'de> for AnyOnly {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AnyVisitor;
        impl Visitor<'_> for AnyVisitor {
            type Value = AnyOnly;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`any`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AnyOnly, E> {
                if v == "any" {
                    Ok(AnyOnly)
                } else {
                    Err(E::custom(format!("`terms` accepts only `any` (a hit on the team's dictionary), not `{v}`")))
                }
            }
        }
        deserializer.deserialize_any(AnyVisitor)
    }
}

/// `model:` — one glob or a list of them.
struct Patterns(Box<[Glob]>);

impl<'de> Deserialize<'de> for Patterns {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PatternsVisitor;
        impl<'de> Visitor<'de> for PatternsVisitor {
            type Value = Patterns;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a model pattern or a list of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Patterns, E> {
                let glob = Glob::parse(v).map_err(E::custom)?;
                Ok(Patterns(Box::new([glob])))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Patterns, A::Error> {
                let mut globs = Vec::new();
                while let Some(PatternItem(glob)) = seq.next_element()? {
                    globs.push(glob);
                }
                if globs.is_empty() {
                    return Err(de::Error::custom("empty `model` list never matches; remove the condition"));
                }
                Ok(Patterns(globs.into_boxed_slice()))
            }
        }
        deserializer.deserialize_any(PatternsVisitor)
    }
}

struct PatternItem(Glob);

impl<'de> Deserialize<'de> for PatternItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_str(deserializer, "a model pattern", |raw| Glob::parse(raw).map(PatternItem))
    }
}

/// Read a number and check it while serde_yaml is still reading it, so an
/// error points at the number itself.
fn checked_num<'de, D, T>(
    deserializer: D,
    expecting: &'static str,
    check: impl FnOnce(f64) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct NumVisitor<F>(F, &'static str);
    impl<T, F: FnOnce(f64) -> Result<T, String>> Visitor<'_> for NumVisitor<F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.1)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
            (self.0)(v).map_err(E::custom)
        }
        // Counts and limits are far below 2^53, where f64 stops being exact.
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            (self.0)(v as f64).map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            (self.0)(v as f64).map_err(E::custom)
        }
    }
    deserializer.deserialize_f64(NumVisitor(check, expecting))
}

/// What the numbers of one range condition measure.
pub(super) trait Unit {
    /// Smallest and largest value the signal can take.
    const LOW: f64;
    const HIGH: f64;
    /// Counts take whole numbers only.
    const WHOLE: bool;
    /// What a valid bound is, for messages.
    const EXPECTING: &'static str;
    /// The bound as the signal's own precision sees it.
    fn canonical(v: f64) -> f64 {
        v
    }
}

/// Tokens, turns, tool steps, queued requests.
pub(super) struct Count;
impl Unit for Count {
    const LOW: f64 = 0.0;
    const HIGH: f64 = f64::INFINITY;
    const WHOLE: bool = true;
    const EXPECTING: &'static str = "a whole number, 0 or more";
}

/// An amount of US dollars.
pub(super) struct Usd;
impl Unit for Usd {
    const LOW: f64 = 0.0;
    const HIGH: f64 = f64::INFINITY;
    const WHOLE: bool = false;
    const EXPECTING: &'static str = "an amount in USD, 0 or more";
}

/// A confidence between 0 and 1.
pub(super) struct Fraction;
impl Unit for Fraction {
    const LOW: f64 = 0.0;
    const HIGH: f64 = 1.0;
    const WHOLE: bool = false;
    const EXPECTING: &'static str = "a number from 0 to 1";
    /// Confidences are f32: `min: 0.6` must accept a confidence of 0.6f32.
    fn canonical(v: f64) -> f64 {
        f64::from(v as f32)
    }
}

/// One number valid in unit `U`.
struct Num<U>(f64, PhantomData<U>);

impl<'de, U: Unit> Deserialize<'de> for Num<U> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_num(deserializer, U::EXPECTING, |v| {
            let whole_ok = !U::WHOLE || v.fract() == 0.0;
            if v.is_finite() && (U::LOW..=U::HIGH).contains(&v) && whole_ok {
                Ok(Num(U::canonical(v), PhantomData))
            } else {
                Err(format!("expected {}, not {v}", U::EXPECTING))
            }
        })
    }
}

/// One end of a [`NumRange`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Limit {
    pub(super) value: f64,
    /// `gt` / `lt` rather than `min` / `gte` / `max` / `lte`.
    pub(super) strict: bool,
}

/// A numeric condition such as `{ min: 5 }`, `{ gt: 6000 }` or
/// `{ gte: 1000, lt: 8000 }`; shared by every numeric signal.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct NumRange {
    pub(super) lower: Option<Limit>,
    pub(super) upper: Option<Limit>,
}

impl NumRange {
    pub(super) fn contains(&self, x: f64) -> bool {
        let above = self.lower.is_none_or(|l| if l.strict { x > l.value } else { x >= l.value });
        let below = self.upper.is_none_or(|u| if u.strict { x < u.value } else { x <= u.value });
        above && below
    }

    /// Whether every value in `lo..=hi` is inside, or every one outside.
    pub(super) fn constant_over(&self, lo: f64, hi: f64) -> bool {
        match (self.contains(lo), self.contains(hi)) {
            // An interval holding both ends holds everything between.
            (true, true) => true,
            (false, false) => {
                // Both ends outside: constant unless the range sits between them.
                let lo_above_upper = self.upper.is_some_and(|u| !(if u.strict { lo < u.value } else { lo <= u.value }));
                let hi_below_lower = self.lower.is_some_and(|l| !(if l.strict { hi > l.value } else { hi >= l.value }));
                lo_above_upper || hi_below_lower
            }
            _ => false,
        }
    }

    /// `value` compared with the bounds: "9000 > 6000", "5 <= 6 < 10".
    pub(super) fn explain(&self, value: &str) -> String {
        // Written left to right, smaller side first, except a lone lower
        // bound, which reads better as "9000 > 6000".
        let below = |limit: Limit| if limit.strict { "<" } else { "<=" };
        match (self.lower, self.upper) {
            (Some(l), None) => {
                let op = if l.strict { ">" } else { ">=" };
                format!("{value} {op} {}", number(l.value))
            }
            (None, Some(u)) => format!("{value} {} {}", below(u), number(u.value)),
            (Some(l), Some(u)) => format!("{} {} {value} {} {}", number(l.value), below(l), below(u), number(u.value)),
            (None, None) => value.to_string(),
        }
    }
}

/// A number as people write it: no trailing zeros, at most 4 decimals.
pub(super) fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        return format!("{x:.0}");
    }
    let text = format!("{x:.4}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, bound = "U: Unit")]
struct RangeSpec<U> {
    #[serde(default)]
    min: Option<Num<U>>,
    #[serde(default)]
    max: Option<Num<U>>,
    #[serde(default)]
    gt: Option<Num<U>>,
    #[serde(default)]
    gte: Option<Num<U>>,
    #[serde(default)]
    lt: Option<Num<U>>,
    #[serde(default)]
    lte: Option<Num<U>>,
}

/// A [`NumRange`] whose bounds are valid in unit `U`.
struct Ranged<U>(NumRange, PhantomData<U>);

/// The tighter of two lower (`upper == false`) or upper limits; at equal
/// values the strict one is tighter.
fn tighter(a: Option<Limit>, b: Option<Limit>, upper: bool) -> Option<Limit> {
    match (a, b) {
        (Some(a), Some(b)) => {
            let a_wins = if a.value == b.value { a.strict } else { (a.value > b.value) != upper };
            Some(if a_wins { a } else { b })
        }
        (a, b) => a.or(b),
    }
}

impl<'de, U: Unit> Deserialize<'de> for Ranged<U> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_map(deserializer, "a range like { min: 5 } or { gt: 8000 }", |spec: RangeSpec<U>| {
            let limit = |n: Option<Num<U>>, strict| n.map(|n| Limit { value: n.0, strict });
            let lower = [limit(spec.gt, true), limit(spec.gte, false)]
                .into_iter()
                .fold(limit(spec.min, false), |a, b| tighter(a, b, false));
            let upper = [limit(spec.lt, true), limit(spec.lte, false)]
                .into_iter()
                .fold(limit(spec.max, false), |a, b| tighter(a, b, true));
            if lower.is_none() && upper.is_none() {
                return Err("a range needs at least one of min, max, gt, gte, lt, lte".to_string());
            }
            let range = NumRange { lower, upper };
            if range_is_empty::<U>(&range) {
                return Err(format!("range bounds can never all hold (a value {})", range.explain("x")));
            }
            Ok(Ranged(range, PhantomData))
        })
    }
}

/// True when no value the signal can take lies in `range`.
fn range_is_empty<U: Unit>(range: &NumRange) -> bool {
    let lower = range.lower.unwrap_or(Limit { value: U::LOW, strict: false });
    let upper = range.upper.unwrap_or(Limit { value: U::HIGH, strict: false });
    if U::WHOLE {
        // Compare the smallest and largest whole numbers inside.
        let lo = if lower.strict { lower.value.floor() + 1.0 } else { lower.value.ceil() };
        let hi = if upper.strict { upper.value.ceil() - 1.0 } else { upper.value.floor() };
        lo > hi
    } else {
        lower.value > upper.value || (lower.value == upper.value && (lower.strict || upper.strict))
    }
}

/// Which findings a name in `min_confidence:` or `redact:` stands for: a
/// whole category, or one type within its category.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Selector {
    Category(Category),
    Kind(Category, &'static str),
}

/// Category names as written in policies, with the category they stand for.
const CATEGORY_NAMES: &[(&str, Category)] = &[
    ("pii", Category::Pii),
    ("secrets", Category::Secret),
    ("terms", Category::Term),
    ("attachments", Category::Attachment),
    ("special_category", Category::Special),
    ("entities", Category::Entity),
];

impl Selector {
    fn parse(name: &str) -> Result<Selector, String> {
        if let Some((_, category)) = CATEGORY_NAMES.iter().find(|(n, _)| *n == name) {
            return Ok(Selector::Category(*category));
        }
        let families = [
            (Category::Pii, PII_KINDS),
            (Category::Secret, SECRET_KINDS),
            (Category::Term, &[TERM_KIND][..]),
            (Category::Attachment, &[ATTACHMENT_KIND][..]),
            (Category::Special, SPECIAL_KINDS),
            (Category::Entity, ENTITY_KINDS),
        ];
        for (category, kinds) in families {
            if let Some(kind) = kinds.iter().find(|k| **k == name) {
                return Ok(Selector::Kind(category, kind));
            }
        }
        Err(format!(
            "unknown finding type `{name}`; valid: the categories pii, secrets, terms, \
             attachments, special_category, entities; the pii types {}; the secret types {}; the \
             special categories {}; the entity types {}; {TERM_KIND}; {ATTACHMENT_KIND}",
            PII_KINDS.join(", "),
            SECRET_KINDS.join(", "),
            SPECIAL_KINDS.join(", "),
            ENTITY_KINDS.join(", ")
        ))
    }

    pub(super) fn matches(&self, finding: &Finding) -> bool {
        match *self {
            Selector::Category(category) => finding.category == category,
            Selector::Kind(category, kind) => finding.category == category && finding.kind == kind,
        }
    }

    pub(super) fn name(&self) -> &'static str {
        match *self {
            Selector::Category(category) => CATEGORY_NAMES.iter().find(|(_, c)| *c == category).map_or("", |(n, _)| n),
            Selector::Kind(_, kind) => kind,
        }
    }

    fn is_attachment(&self) -> bool {
        matches!(self, Selector::Category(Category::Attachment) | Selector::Kind(Category::Attachment, _))
    }
}

/// `redact:` — one name or a list of category and type names.
struct RedactList(RedactScope);

/// One element of `redact:`, checked at its own position.
struct RedactName(Selector);

impl<'de> Deserialize<'de> for RedactName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_str(deserializer, "a finding category or type", redact_name)
    }
}

fn redact_name(name: &str) -> Result<RedactName, String> {
    let selector = Selector::parse(name)?;
    if selector.is_attachment() {
        // The redactor leaves binary payloads alone (it cannot place them),
        // so listing them would fail every such request at run time.
        return Err(format!(
            "`{name}` cannot be redacted: attachments are not inspected; \
             route them with `when: {{ attachments: true }}` instead"
        ));
    }
    Ok(RedactName(selector))
}

impl<'de> Deserialize<'de> for RedactList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = RedactList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a finding category or type, or a list of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RedactList, E> {
                let RedactName(selector) = redact_name(v).map_err(E::custom)?;
                Ok(RedactList(RedactScope::only(vec![selector])))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RedactList, A::Error> {
                let mut selectors = Vec::new();
                while let Some(RedactName(selector)) = seq.next_element()? {
                    if !selectors.contains(&selector) {
                        selectors.push(selector);
                    }
                }
                if selectors.is_empty() {
                    return Err(de::Error::custom(
                        "empty `redact` list would replace nothing; remove it to redact every finding",
                    ));
                }
                Ok(RedactList(RedactScope::only(selectors)))
            }
        }
        deserializer.deserialize_any(ListVisitor)
    }
}

/// `min_confidence:` compiled: findings below their threshold are ignored.
#[derive(Debug, Default)]
pub(super) struct MinConfidence {
    /// For findings no entry names; unset keeps everything in a team's
    /// file and sets no ceiling in org.yaml.
    default: Option<f32>,
    /// Type entries are consulted before category entries.
    kinds: Vec<(Selector, f32)>,
    categories: Vec<(Selector, f32)>,
}

impl MinConfidence {
    /// The threshold for `finding`: its type's entry, else its
    /// category's, else `default`; `None` when none of them is written.
    pub(super) fn threshold(&self, finding: &Finding) -> Option<f32> {
        self.kinds.iter().chain(&self.categories).find(|(s, _)| s.matches(finding)).map(|(_, t)| *t).or(self.default)
    }
}

/// A `min_confidence:` key: `default` or a category or type name.
enum ConfidenceKey {
    Default,
    Of(Selector),
}

/// Reads one key, rejecting repeats at the repeated key.
struct ConfidenceKeySeed<'a>(&'a [ConfidenceKey]);

impl<'de> de::DeserializeSeed<'de> for ConfidenceKeySeed<'_> {
    type Value = ConfidenceKey;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        let seen = self.0;
        checked_str(deserializer, "a finding category or type, or `default`", |raw| {
            let key = if raw == "default" { ConfidenceKey::Default } else { ConfidenceKey::Of(Selector::parse(raw)?) };
            let repeated = seen.iter().any(|k| match (k, &key) {
                (ConfidenceKey::Default, ConfidenceKey::Default) => true,
                (ConfidenceKey::Of(a), ConfidenceKey::Of(b)) => a == b,
                _ => false,
            });
            if repeated {
                return Err(format!("`{raw}` is listed twice in `min_confidence`"));
            }
            Ok(key)
        })
    }
}

impl<'de> Deserialize<'de> for MinConfidence {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor;
        impl<'de> Visitor<'de> for MapVisitor {
            type Value = MinConfidence;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping from finding type to a confidence from 0 to 1")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MinConfidence, A::Error> {
                let mut keys = Vec::new();
                let mut out = MinConfidence::default();
                while let Some(key) = map.next_key_seed(ConfidenceKeySeed(&keys))? {
                    let Num(value, _) = map.next_value::<Num<Fraction>>()?;
                    // Confidences are f32; thresholds are written with few digits.
                    let value = value as f32;
                    match key {
                        ConfidenceKey::Default => out.default = Some(value),
                        ConfidenceKey::Of(s @ Selector::Kind(..)) => out.kinds.push((s, value)),
                        ConfidenceKey::Of(s) => out.categories.push((s, value)),
                    }
                    keys.push(key);
                }
                Ok(out)
            }
        }
        deserializer.deserialize_map(MapVisitor)
    }
}
