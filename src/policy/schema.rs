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
use super::Action;
use crate::inspect::{PII_KINDS, SECRET_KINDS};

/// Provider names `when.provider` may name.
pub(super) const PROVIDERS: &[&str] = &["openai", "anthropic"];

// Kind sets are bit masks indexed by position in these lists.
const _: () = assert!(PII_KINDS.len() <= 64 && SECRET_KINDS.len() <= 64 && PROVIDERS.len() <= 64);

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
    impl<'de, S: Deserialize<'de>, T, F: FnOnce(S) -> Result<T, String>> Visitor<'de>
        for MapVisitor<S, F>
    {
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

/// One policy file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PolicyFile {
    /// Accepted for humans reading the file; sluice never uses it.
    #[serde(default, rename = "description")]
    _description: Option<String>,
    #[serde(default)]
    pub(super) dictionary: Option<DictionarySpec>,
    #[serde(default)]
    pub(super) rules: Vec<Rule>,
    pub(super) default: Action,
    #[serde(default)]
    pub(super) local: super::LocalOptions,
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
    pub(super) name: String,
    pub(super) when: When,
    pub(super) then: Action,
    pub(super) reason: Option<String>,
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
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_map(deserializer, "a rule mapping", |spec: RuleSpec| {
            let name = spec.name.0;
            let Some(when) = spec.when else {
                return Err(format!(
                    "rule `{name}` has no `when`; a catch-all belongs in the file's `default`"
                ));
            };
            let reason = match spec.reason {
                Some(r) if r.trim().is_empty() => {
                    return Err(format!(
                        "rule `{name}` has an empty `reason`; remove it to get the generated one"
                    ))
                }
                other => other,
            };
            Ok(Rule {
                name,
                when,
                then: spec.then,
                reason,
            })
        })
    }
}

/// A rule name: it appears in decisions, audit records and metric labels.
struct RuleName(String);

impl<'de> Deserialize<'de> for RuleName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_str(deserializer, "a rule name", |name| {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                return Err(format!(
                    "invalid rule name `{name}`: use letters, digits, `_`, `-` and `.`"
                ));
            }
            if name == "default" {
                return Err(
                    "rule name `default` is reserved for decisions made by the file's `default`"
                        .to_string(),
                );
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
                f.write_str("an action: local, cloud or block")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Action, E> {
                match v {
                    "local" => Ok(Action::Local),
                    "cloud" => Ok(Action::Cloud),
                    "block" => Ok(Action::Block),
                    other => Err(E::custom(format!(
                        "unknown action `{other}`; expected local, cloud or block"
                    ))),
                }
            }
        }
        deserializer.deserialize_str(ActionVisitor)
    }
}

/// The conditions of one rule, all of which must hold.
#[derive(Debug)]
pub(super) struct When {
    pub(super) pii: Option<KindSet>,
    pub(super) secrets: Option<KindSet>,
    pub(super) terms: bool,
    pub(super) model: Option<Box<[Glob]>>,
    /// Bit mask over [`PROVIDERS`].
    pub(super) provider: Option<u64>,
    pub(super) prompt_tokens: Option<TokenRange>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WhenSpec {
    #[serde(default)]
    pii: Option<NameSet<PiiNames>>,
    #[serde(default)]
    secrets: Option<NameSet<SecretNames>>,
    #[serde(default)]
    terms: Option<AnyOnly>,
    #[serde(default)]
    model: Option<Patterns>,
    #[serde(default)]
    provider: Option<NameSet<ProviderNames>>,
    #[serde(default)]
    prompt_tokens: Option<TokenRange>,
}

impl<'de> Deserialize<'de> for When {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_map(deserializer, "a mapping of conditions", |spec: WhenSpec| {
            let when = When {
                pii: spec.pii.map(|s| s.set),
                secrets: spec.secrets.map(|s| s.set),
                terms: spec.terms.is_some(),
                model: spec.model.map(|p| p.0),
                provider: spec.provider.map(|s| match s.set {
                    KindSet::Listed(mask) => mask,
                    // ProviderNames forbids `any`, so this arm is never taken.
                    KindSet::Any => u64::MAX,
                }),
                prompt_tokens: spec.prompt_tokens,
            };
            let empty = when.pii.is_none()
                && when.secrets.is_none()
                && !when.terms
                && when.model.is_none()
                && when.provider.is_none()
                && when.prompt_tokens.is_none();
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
    const NAMES: &'static [&'static str];
    const ALLOWS_ANY: bool;
}

struct PiiNames;
impl NameFamily for PiiNames {
    const KEY: &'static str = "pii";
    const WHAT: &'static str = "pii type";
    const NAMES: &'static [&'static str] = PII_KINDS;
    const ALLOWS_ANY: bool = true;
}

struct SecretNames;
impl NameFamily for SecretNames {
    const KEY: &'static str = "secrets";
    const WHAT: &'static str = "secret type";
    const NAMES: &'static [&'static str] = SECRET_KINDS;
    const ALLOWS_ANY: bool = true;
}

struct ProviderNames;
impl NameFamily for ProviderNames {
    const KEY: &'static str = "provider";
    const WHAT: &'static str = "provider";
    const NAMES: &'static [&'static str] = PROVIDERS;
    const ALLOWS_ANY: bool = false;
}

/// `any`, one name, or a list of names from family `F`.
struct NameSet<F> {
    set: KindSet,
    family: PhantomData<F>,
}

fn name_bit<F: NameFamily>(name: &str) -> Result<u64, String> {
    F::NAMES
        .iter()
        .position(|n| *n == name)
        .map(|i| 1u64 << i)
        .ok_or_else(|| {
            format!(
                "unknown {} `{name}`; valid: {}",
                F::WHAT,
                F::NAMES.join(", ")
            )
        })
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
        Ok(NameSet {
            set,
            family: PhantomData,
        })
    }
}

/// One list element: a name's bit.
struct Name<F>(u64, PhantomData<F>);

impl<'de, F: NameFamily> Deserialize<'de> for Name<F> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_str(deserializer, F::WHAT, |raw| {
            if raw == "any" {
                return Err(format!(
                    "`any` cannot be part of a list; write `{}: any`",
                    F::KEY
                ));
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
                    Err(E::custom(format!(
                        "`terms` accepts only `any` (a hit on the team's dictionary), not `{v}`"
                    )))
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
                    return Err(de::Error::custom(
                        "empty `model` list never matches; remove the condition",
                    ));
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
        checked_str(deserializer, "a model pattern", |raw| {
            Glob::parse(raw).map(PatternItem)
        })
    }
}

/// `prompt_tokens: { gt, gte, lt, lte }` folded into one inclusive range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct TokenRange {
    pub(super) min: u64,
    pub(super) max: u64,
}

impl TokenRange {
    pub(super) fn contains(&self, n: u64) -> bool {
        self.min <= n && n <= self.max
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ComparisonSpec {
    #[serde(default)]
    gt: Option<u64>,
    #[serde(default)]
    gte: Option<u64>,
    #[serde(default)]
    lt: Option<u64>,
    #[serde(default)]
    lte: Option<u64>,
}

impl<'de> Deserialize<'de> for TokenRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_map(
            deserializer,
            "a comparison like { gt: 8000 }",
            |spec: ComparisonSpec| {
                if spec.gt.is_none()
                    && spec.gte.is_none()
                    && spec.lt.is_none()
                    && spec.lte.is_none()
                {
                    return Err(
                        "`prompt_tokens` needs at least one of gt, gte, lt, lte".to_string()
                    );
                }
                let never = || "`prompt_tokens` bounds can never all hold".to_string();
                let mut min = spec.gte.unwrap_or(0);
                if let Some(gt) = spec.gt {
                    min = min.max(gt.checked_add(1).ok_or_else(never)?);
                }
                let mut max = spec.lte.unwrap_or(u64::MAX);
                if let Some(lt) = spec.lt {
                    max = max.min(lt.checked_sub(1).ok_or_else(never)?);
                }
                if min > max {
                    return Err(never());
                }
                Ok(TokenRange { min, max })
            },
        )
    }
}
