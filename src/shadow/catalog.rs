//! The catalog of AI services: which hosts belong to which AI app, what the
//! app is, whether it has an API sluice can read, and what its vendor says
//! it does with what people send it.
//!
//! The builtin catalog is `catalog/ai-services.yaml`, embedded in the binary
//! and versioned by its `version` field. The organisation and its teams add
//! entries of their own with [`Catalog::with_extra`]: an extra entry whose id
//! is already in the catalog is refused unless it says `override: true`, in
//! which case it replaces that entry whole (same id, new facts). A domain
//! pattern claimed by two different entries is refused too, so a host never
//! names two apps; a more specific pattern (`mine.openai.azure.com`) next to
//! a broader one (`*.openai.azure.com`) is fine and the specific one wins.
//!
//! Two pattern syntaxes, for two jobs:
//! - `domains` say which traffic belongs to the app: an exact host,
//!   `*.example.ai` for any subdomain at any depth (not `example.ai` itself,
//!   which is listed on its own), or one `*` label inside a name for exactly
//!   one label there (`bedrock.*.amazonaws.com`, a region).
//! - `api_hosts` are in the proxy's intercept syntax, because the intercept
//!   list is derived from them: `*` is exactly one whole label, allowed
//!   where the CA can name-constrain it (first label, or
//!   `<service>.*.amazonaws.com`).
//!
//! [`Catalog::match_host`] runs on every proxied connection, so it is one
//! hash probe per label of the host and allocates only for hosts that are
//! not already lower case.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};

use crate::wire::Dialect;

/// The builtin catalog, as shipped.
const BUILTIN_YAML: &str = include_str!("../../catalog/ai-services.yaml");
const BUILTIN_ORIGIN: &str = "builtin catalog";

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The YAML does not have the catalog's shape (the message carries the
    /// line and column).
    #[error("{origin}: {source}")]
    Parse { origin: String, source: serde_yaml::Error },
    #[error("{origin}: entry `{id}`: {reason}")]
    Entry { origin: String, id: String, reason: String },
    #[error("{origin}: entries `{first}` and `{second}` both claim `{pattern}`")]
    Conflict { origin: String, pattern: String, first: String, second: String },
    #[error("{origin}: {reason}")]
    Document { origin: String, reason: String },
}

/// What kind of AI service an entry is. A closed set, so reports and
/// policies can group by it and a typo is an error, not a new category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    ChatAssistant,
    LlmApi,
    CodingAssistant,
    ImageGeneration,
    AudioGeneration,
    VideoGeneration,
    MeetingAssistant,
    WritingAssistant,
    ModelHub,
    SearchAssistant,
    AgentPlatform,
    Other,
}

impl Category {
    pub const ALL: [Category; 12] = [
        Category::ChatAssistant,
        Category::LlmApi,
        Category::CodingAssistant,
        Category::ImageGeneration,
        Category::AudioGeneration,
        Category::VideoGeneration,
        Category::MeetingAssistant,
        Category::WritingAssistant,
        Category::ModelHub,
        Category::SearchAssistant,
        Category::AgentPlatform,
        Category::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::ChatAssistant => "chat_assistant",
            Category::LlmApi => "llm_api",
            Category::CodingAssistant => "coding_assistant",
            Category::ImageGeneration => "image_generation",
            Category::AudioGeneration => "audio_generation",
            Category::VideoGeneration => "video_generation",
            Category::MeetingAssistant => "meeting_assistant",
            Category::WritingAssistant => "writing_assistant",
            Category::ModelHub => "model_hub",
            Category::SearchAssistant => "search_assistant",
            Category::AgentPlatform => "agent_platform",
            Category::Other => "other",
        }
    }

    pub fn parse(name: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The request shape an API host speaks. The names of the providers sluice
/// parses (`openai`, `anthropic`, `gemini`, `bedrock`, `cohere`) plus
/// `ollama` (its native `/api/chat`) and `other` (an API sluice has no parser
/// for: speech, images, a vendor's own format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiShape {
    #[serde(rename = "openai")]
    OpenAi,
    Anthropic,
    Gemini,
    Bedrock,
    Cohere,
    Ollama,
    Other,
}

impl ApiShape {
    pub const ALL: [ApiShape; 7] = [
        ApiShape::OpenAi,
        ApiShape::Anthropic,
        ApiShape::Gemini,
        ApiShape::Bedrock,
        ApiShape::Cohere,
        ApiShape::Ollama,
        ApiShape::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ApiShape::OpenAi => "openai",
            ApiShape::Anthropic => "anthropic",
            ApiShape::Gemini => "gemini",
            ApiShape::Bedrock => "bedrock",
            ApiShape::Cohere => "cohere",
            ApiShape::Ollama => "ollama",
            ApiShape::Other => "other",
        }
    }

    pub fn parse(name: &str) -> Option<ApiShape> {
        ApiShape::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The API family whose error format sluice answers in on hosts of this
    /// shape, as `wire::providers` assigns it (Bedrock's runtime answers
    /// closest to Anthropic's Messages API, Cohere's to OpenAI's); `None`
    /// for shapes sluice cannot inspect as an LLM request.
    pub fn family(self) -> Option<Dialect> {
        match self {
            ApiShape::OpenAi | ApiShape::Cohere => Some(Dialect::OpenAiChat),
            ApiShape::Anthropic | ApiShape::Bedrock => Some(Dialect::AnthropicMessages),
            ApiShape::Gemini => Some(Dialect::GeminiGenerate),
            ApiShape::Ollama | ApiShape::Other => None,
        }
    }
}

impl fmt::Display for ApiShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the vendor trains its models on what users send, by default, for
/// the tier the entry describes (the consumer app or the API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trains {
    Yes,
    No,
    /// Yes unless the user or the organisation turns it off.
    OptOut,
    /// Not found in a source the catalog could cite.
    Unknown,
}

impl Trains {
    pub fn as_str(self) -> &'static str {
        match self {
            Trains::Yes => "yes",
            Trains::No => "no",
            Trains::OptOut => "opt_out",
            Trains::Unknown => "unknown",
        }
    }

    fn parse(name: &str) -> Option<Trains> {
        [Trains::Yes, Trains::No, Trains::OptOut, Trains::Unknown].into_iter().find(|t| t.as_str() == name)
    }
}

/// The `trains_on_inputs` fact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Training {
    pub value: Trains,
    /// What the one word leaves out (which tiers differ, where the switch is).
    pub detail: Option<String>,
    /// The vendor's page that says so; always present unless `value` is unknown.
    pub source: Option<String>,
}

/// The `retention` fact: how long the vendor keeps inputs, in a few words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Retention {
    /// `None` when unknown.
    pub value: Option<String>,
    pub source: Option<String>,
}

/// One API host of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiHost {
    /// A pattern in the proxy's intercept syntax (see the module docs).
    pub host: String,
    pub api: ApiShape,
    /// The name `wire::providers` knows this host by, for hosts sluice
    /// intercepts by default (`openai`, `bedrock`, ...).
    pub provider: Option<String>,
}

/// One AI service, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Stable kebab-case id, what policies name (`sanctioned: [openai-api]`).
    pub id: String,
    pub name: String,
    pub vendor: String,
    pub category: Category,
    pub domains: Vec<String>,
    pub api_hosts: Vec<ApiHost>,
    pub trains_on_inputs: Training,
    pub retention: Retention,
    /// Where the entry's domains and API hosts come from.
    pub source: String,
    pub notes: Option<String>,
    /// `builtin catalog`, or the origin given to [`Catalog::with_extra`].
    pub origin: String,
}

/// An entry as written in YAML, before validation. Policy and config
/// schemas can hold these (`Vec<EntrySpec>`) and hand them to
/// [`Catalog::with_extra`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntrySpec {
    pub id: String,
    // Everything else defaults so that a missing field is reported by
    // validation, naming the entry, rather than by serde without it.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub vendor: String,
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub domains: Vec<String>,
    #[serde(default)]
    pub api_hosts: Vec<ApiHostSpec>,
    #[serde(default)]
    pub trains_on_inputs: FactSpec,
    #[serde(default)]
    pub retention: FactSpec,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub notes: Option<String>,
    /// Replace the catalog's entry with this id instead of being refused
    /// as a duplicate.
    #[serde(default, rename = "override")]
    pub replaces: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiHostSpec {
    pub host: String,
    pub api: String,
    #[serde(default)]
    pub provider: Option<String>,
}

/// A data-handling fact: `unknown` alone, or a value with its source.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FactSpec {
    Short(String),
    Full(FactFields),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FactFields {
    pub value: String,
    #[serde(default)]
    pub detail: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
}

impl Default for FactSpec {
    fn default() -> Self {
        FactSpec::Short("unknown".to_owned())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    version: String,
    entries: Vec<EntrySpec>,
}

/// Extra entries in a file of their own: a plain list, or `entries:`.
#[derive(Deserialize)]
#[serde(untagged)]
enum ExtraDocument {
    List(Vec<EntrySpec>),
    Wrapped { entries: Vec<EntrySpec> },
}

/// The catalog, indexed for host lookup.
#[derive(Debug, Clone)]
pub struct Catalog {
    version: String,
    entries: Vec<Entry>,
    by_id: HashMap<String, usize>,
    /// Keyed by a host name; see [`Slot`].
    index: HashMap<Box<str>, Slot, BuildHasherDefault<Fnv>>,
}

/// Everything the catalog says about one host name `h`.
#[derive(Debug, Clone, Default)]
struct Slot {
    /// `h` itself is listed.
    exact: Option<usize>,
    /// `*.h` is listed: any subdomain of `h`.
    subdomains: Option<usize>,
    /// API host patterns `<prefix>.*.h` (prefix empty for `*.h`): exactly
    /// one label between the prefix and `h`.
    one_label: Vec<(Box<str>, usize)>,
}

/// The catalog shipped in the binary, parsed once per process.
pub fn builtin_shared() -> &'static Catalog {
    static BUILTIN: std::sync::OnceLock<Catalog> = std::sync::OnceLock::new();
    // The shipped file is validated by this module's tests, so it parses.
    BUILTIN.get_or_init(|| Catalog::builtin().expect("the builtin catalog is valid (see its tests)"))
}

impl Catalog {
    /// The catalog shipped in the binary. It is parsed and validated on
    /// each call (about a millisecond); hold on to the result.
    pub fn builtin() -> Result<Catalog, CatalogError> {
        Catalog::from_yaml(BUILTIN_ORIGIN, BUILTIN_YAML)
    }

    /// A whole catalog document (`version:` and `entries:`); `origin` names
    /// it in errors.
    pub fn from_yaml(origin: &str, text: &str) -> Result<Catalog, CatalogError> {
        let doc: Document =
            serde_yaml::from_str(text).map_err(|source| CatalogError::Parse { origin: origin.to_owned(), source })?;
        let version = doc.version.trim();
        if version.is_empty() || version.contains(char::is_whitespace) {
            return Err(CatalogError::Document {
                origin: origin.to_owned(),
                reason: "`version` must be one word".into(),
            });
        }
        let mut entries = Vec::with_capacity(doc.entries.len());
        let mut by_id = HashMap::with_capacity(doc.entries.len());
        for spec in doc.entries {
            let replaces = spec.replaces;
            let entry = validate(spec, origin)?;
            if replaces {
                return Err(entry_error(origin, &entry.id, "`override` only applies to additions to a catalog"));
            }
            if by_id.insert(entry.id.clone(), entries.len()).is_some() {
                return Err(entry_error(origin, &entry.id, "id used twice"));
            }
            entries.push(entry);
        }
        Catalog::indexed(version.to_owned(), entries, origin)
    }

    /// Parse extra entries from a file of their own: a YAML list of
    /// entries, or a mapping with an `entries:` list.
    pub fn parse_extra(origin: &str, text: &str) -> Result<Vec<EntrySpec>, CatalogError> {
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        match serde_yaml::from_str(text) {
            Ok(ExtraDocument::List(entries) | ExtraDocument::Wrapped { entries }) => Ok(entries),
            // Untagged errors say only "did not match"; parsing as a plain
            // list again gives the line and the field at fault.
            Err(_) => match serde_yaml::from_str::<Vec<EntrySpec>>(text) {
                Ok(entries) => Ok(entries),
                Err(source) => Err(CatalogError::Parse { origin: origin.to_owned(), source }),
            },
        }
    }

    /// This catalog plus `extra` entries (the organisation's or a team's),
    /// validated like builtin ones. An id already present is an error
    /// unless the extra entry says `override: true`, which replaces the
    /// existing entry in place; `override: true` on an id that is not
    /// present is an error too, so a typo cannot silently add an app.
    /// Calls chain: a team's additions can override the organisation's.
    pub fn with_extra(&self, origin: &str, extra: Vec<EntrySpec>) -> Result<Catalog, CatalogError> {
        let mut entries = self.entries.clone();
        let mut by_id = self.by_id.clone();
        let mut added: Vec<String> = Vec::new();
        for spec in extra {
            let replaces = spec.replaces;
            let entry = validate(spec, origin)?;
            if added.contains(&entry.id) {
                return Err(entry_error(origin, &entry.id, "id used twice"));
            }
            added.push(entry.id.clone());
            match by_id.get(&entry.id).copied() {
                Some(i) if replaces => entries[i] = entry,
                Some(i) => {
                    let reason = format!(
                        "id is already in the catalog (from {}); set `override: true` to replace that entry",
                        entries[i].origin
                    );
                    return Err(entry_error(origin, &entry.id, &reason));
                }
                None if replaces => {
                    return Err(entry_error(origin, &entry.id, "`override: true` but the catalog has no such id"));
                }
                None => {
                    by_id.insert(entry.id.clone(), entries.len());
                    entries.push(entry);
                }
            }
        }
        Catalog::indexed(self.version.clone(), entries, origin)
    }

    fn indexed(version: String, entries: Vec<Entry>, origin: &str) -> Result<Catalog, CatalogError> {
        let mut index: HashMap<Box<str>, Slot, BuildHasherDefault<Fnv>> = HashMap::default();
        let mut by_id = HashMap::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            by_id.insert(entry.id.clone(), i);
            let patterns =
                entry.domains.iter().map(String::as_str).chain(entry.api_hosts.iter().map(|h| h.host.as_str()));
            for pattern in patterns {
                let conflict = |other: usize| CatalogError::Conflict {
                    origin: origin.to_owned(),
                    pattern: pattern.to_owned(),
                    first: entries[other].id.clone(),
                    second: entry.id.clone(),
                };
                // The same pattern twice in one entry (a domain that is also
                // its API host) is harmless; only another entry's claim is not.
                let claim = |slot: &mut Option<usize>| match *slot {
                    Some(other) if other != i => Err(conflict(other)),
                    _ => {
                        *slot = Some(i);
                        Ok(())
                    }
                };
                match split_wildcard(pattern) {
                    None => claim(&mut index.entry(pattern.into()).or_default().exact)?,
                    Some(("", suffix)) if entry.domains.iter().any(|d| d == pattern) => {
                        claim(&mut index.entry(suffix.into()).or_default().subdomains)?
                    }
                    Some((prefix, suffix)) => {
                        let slot = index.entry(suffix.into()).or_default();
                        match slot.one_label.iter().find(|(p, _)| &**p == prefix) {
                            Some(&(_, other)) if other != i => return Err(conflict(other)),
                            Some(_) => {}
                            None => slot.one_label.push((prefix.into(), i)),
                        }
                    }
                }
            }
        }
        Ok(Catalog { version, entries, by_id, index })
    }

    /// The app a host belongs to: an exact listing first, then the most
    /// specific wildcard. ASCII case and one trailing dot are ignored; the
    /// caller strips the port.
    pub fn match_host(&self, host: &str) -> Option<&Entry> {
        let host = normalize(host);
        let host: &str = &host;
        if host.is_empty() {
            return None;
        }
        if let Some(i) = self.index.get(host).and_then(|slot| slot.exact) {
            return Some(&self.entries[i]);
        }
        // Parent suffixes from the longest down, so the most specific
        // wildcard wins.
        for (dot, _) in host.match_indices('.') {
            let Some(slot) = self.index.get(&host[dot + 1..]) else { continue };
            let head = &host[..dot];
            for (prefix, i) in &slot.one_label {
                let label = if prefix.is_empty() {
                    Some(head)
                } else {
                    head.strip_prefix(&**prefix).and_then(|rest| rest.strip_prefix('.'))
                };
                if label.is_some_and(|l| !l.is_empty() && !l.contains('.')) {
                    return Some(&self.entries[*i]);
                }
            }
            if let Some(i) = slot.subdomains {
                return Some(&self.entries[i]);
            }
        }
        None
    }

    /// Every API host pattern with its shape, in catalog order: what the
    /// proxy's intercept list can be derived from (typically those whose
    /// [`ApiShape::family`] is known).
    pub fn api_hosts(&self) -> impl Iterator<Item = (&str, ApiShape)> + '_ {
        self.entries.iter().flat_map(|e| e.api_hosts.iter().map(|h| (h.host.as_str(), h.api)))
    }

    /// The proxy's default intercept list: every API host whose shape
    /// sluice can read as an LLM request, in catalog order, each once.
    pub fn intercept_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = Vec::new();
        for (host, shape) in self.api_hosts() {
            if shape.family().is_some() && !hosts.iter().any(|h| h == host) {
                hosts.push(host.to_string());
            }
        }
        hosts
    }

    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.by_id.get(id).map(|&i| &self.entries[i])
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The builtin catalog's `version`, carried through additions.
    pub fn version(&self) -> &str {
        &self.version
    }
}

fn entry_error(origin: &str, id: &str, reason: &str) -> CatalogError {
    CatalogError::Entry { origin: origin.to_owned(), id: id.to_owned(), reason: reason.to_owned() }
}

fn validate(spec: EntrySpec, origin: &str) -> Result<Entry, CatalogError> {
    let id = spec.id;
    let fail = |reason: String| entry_error(origin, &id, &reason);
    if !is_kebab_id(&id) {
        return Err(fail("id must be kebab-case: lower-case letters, digits and single `-`".into()));
    }
    for (field, value) in [("name", &spec.name), ("vendor", &spec.vendor)] {
        if value.trim().is_empty() {
            return Err(fail(format!("no {field}")));
        }
    }
    let category = if spec.category.is_empty() {
        return Err(fail("no category".into()));
    } else {
        Category::parse(&spec.category).ok_or_else(|| {
            let names: Vec<&str> = Category::ALL.iter().map(|c| c.as_str()).collect();
            fail(format!("category `{}` is not one of {}", spec.category, names.join(", ")))
        })?
    };
    if !is_url(&spec.source) {
        return Err(fail("`source` must be the http(s) URL the entry's hosts come from".into()));
    }
    if spec.domains.is_empty() {
        return Err(fail("no domains".into()));
    }
    for domain in &spec.domains {
        check_domain(domain).map_err(|reason| fail(format!("domain `{domain}`: {reason}")))?;
    }
    let mut api_hosts = Vec::with_capacity(spec.api_hosts.len());
    for h in spec.api_hosts {
        let bad = |reason: String| fail(format!("api host `{}`: {reason}", h.host));
        check_api_host(&h.host).map_err(bad)?;
        let api = ApiShape::parse(&h.api).ok_or_else(|| {
            let names: Vec<&str> = ApiShape::ALL.iter().map(|s| s.as_str()).collect();
            bad(format!("api `{}` is not one of {}", h.api, names.join(", ")))
        })?;
        if let Some(name) = &h.provider {
            let Some(provider) = crate::wire::providers::by_name(name) else {
                let names: Vec<&str> = crate::wire::providers::names().collect();
                return Err(bad(format!("provider `{name}` is not one of {}", names.join(", "))));
            };
            // The provider decides how sluice answers on this host; a shape
            // saying otherwise would make reports and refusals disagree.
            if api.family() != Some(provider.api) {
                return Err(bad(format!("api `{api}` does not match provider `{name}`")));
            }
        }
        api_hosts.push(ApiHost { host: h.host, api, provider: h.provider });
    }
    let trains_on_inputs = match spec.trains_on_inputs {
        FactSpec::Short(v) => Training { value: parse_trains(&v).map_err(&fail)?, detail: None, source: None },
        FactSpec::Full(f) => {
            Training { value: parse_trains(&f.value).map_err(&fail)?, detail: f.detail, source: f.source }
        }
    };
    if trains_on_inputs.value != Trains::Unknown && !trains_on_inputs.source.as_deref().is_some_and(is_url) {
        return Err(fail("`trains_on_inputs` needs a `source` URL unless it is unknown".into()));
    }
    let retention = match spec.retention {
        FactSpec::Short(v) if v == "unknown" => Retention { value: None, source: None },
        FactSpec::Short(_) => {
            return Err(fail("`retention` needs a `value` and a `source` unless it is unknown".into()))
        }
        FactSpec::Full(f) => {
            if f.detail.is_some() {
                return Err(fail("`retention` has no `detail`; say it in `value`".into()));
            }
            if f.value == "unknown" {
                Retention { value: None, source: f.source }
            } else if f.source.as_deref().is_some_and(is_url) {
                Retention { value: Some(f.value), source: f.source }
            } else {
                return Err(fail("`retention` needs a `source` URL unless it is unknown".into()));
            }
        }
    };
    Ok(Entry {
        id: id.clone(),
        name: spec.name,
        vendor: spec.vendor,
        category,
        domains: spec.domains,
        api_hosts,
        trains_on_inputs,
        retention,
        source: spec.source,
        notes: spec.notes,
        origin: origin.to_owned(),
    })
}

fn parse_trains(value: &str) -> Result<Trains, String> {
    Trains::parse(value).ok_or_else(|| format!("trains_on_inputs `{value}` is not one of yes, no, opt_out, unknown"))
}

fn is_kebab_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-')
        && !id.contains("--")
}

fn is_url(s: &str) -> bool {
    let rest = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/')) && !s.contains(char::is_whitespace)
}

/// A domain pattern: a host name, `*.` and a host name, or a host name with
/// one whole `*` label inside (`bedrock.*.amazonaws.com`).
fn check_domain(pattern: &str) -> Result<(), String> {
    match split_wildcard(pattern) {
        None if pattern.contains('*') => Err("`*` must be a whole label, once".into()),
        None => check_name(pattern),
        Some((prefix, suffix)) => {
            if !prefix.is_empty() {
                check_labels(prefix)?;
            }
            check_name(suffix)
        }
    }
}

/// An API host pattern in the proxy's intercept syntax, which the CA must
/// be able to name-constrain: the derived intercept list has to yield a CA.
fn check_api_host(pattern: &str) -> Result<(), String> {
    match split_wildcard(pattern) {
        None => check_name(pattern),
        Some((prefix, suffix)) => {
            if !prefix.is_empty() {
                check_labels(prefix)?;
            }
            check_name(suffix)?;
            crate::ca::name_constraint_subtrees(&[pattern.to_owned()]).map(|_| ()).map_err(|e| e.to_string())
        }
    }
}

/// `prefix.*.suffix` or `*.suffix` as (prefix, suffix); `None` without a `*`.
fn split_wildcard(pattern: &str) -> Option<(&str, &str)> {
    if let Some(suffix) = pattern.strip_prefix("*.") {
        return Some(("", suffix));
    }
    let (prefix, suffix) = pattern.split_once(".*.")?;
    Some((prefix, suffix))
}

/// A lower-case DNS host name of at least two labels, not an IP address.
fn check_name(name: &str) -> Result<(), String> {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("must be lower case".into());
    }
    if name.len() > 253 {
        return Err("longer than 253 characters".into());
    }
    check_labels(name)?;
    let mut labels = name.rsplit('.');
    let tld = labels.next().unwrap_or_default();
    if labels.next().is_none() {
        return Err("needs at least two labels".into());
    }
    if tld.bytes().all(|b| b.is_ascii_digit()) {
        return Err("is an IP address, not a host name".into());
    }
    Ok(())
}

fn check_labels(name: &str) -> Result<(), String> {
    for label in name.split('.') {
        if label.is_empty() {
            return Err("has an empty label (a leading, trailing or double dot)".into());
        }
        if label.len() > 63 {
            return Err(format!("label `{label}` is longer than 63 characters"));
        }
        if !label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(format!("label `{label}` may only hold a-z, 0-9 and `-`"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label `{label}` starts or ends with `-`"));
        }
    }
    Ok(())
}

fn normalize(host: &str) -> Cow<'_, str> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// FNV-1a: host names are short, and the default SipHash costs more than
/// the rest of a lookup. The keys come from the catalog, not from clients,
/// so flooding the table is not a concern.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests;
