//! Per-team routing policies: load and validate `policies/<team>.yaml`, and
//! decide for each request whether it goes to the local model, to the cloud,
//! or nowhere.
//!
//! A team's rules are tried in file order; the first whose conditions all
//! hold decides, otherwise the file's `default` does. The file format is
//! documented in `policies/default.yaml`.

mod glob;
mod schema;

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::inspect::{Category, Finding, PII_KINDS, SECRET_KINDS};
use schema::{KindSet, PolicyFile, Rule, PROVIDERS};

/// Where a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Local,
    Cloud,
    Block,
}

impl Action {
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Local => "local",
            Action::Cloud => "cloud",
            Action::Block => "block",
        }
    }
}

/// The outcome of evaluating one request against its team's policy.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Decision {
    pub action: Action,
    /// Name of the rule that matched, or `"default"`.
    pub rule: String,
    /// Human explanation; names finding types, never their values.
    pub reason: String,
}

/// What is known about a request when its policy is evaluated.
pub struct Signals<'a> {
    pub findings: &'a [Finding],
    pub requested_model: &'a str,
    pub provider: &'a str,
    pub prompt_tokens: u64,
}

/// One team's parsed and validated policy file.
#[derive(Debug)]
pub struct TeamPolicy {
    team: String,
    terms: Vec<String>,
    rules: Vec<Rule>,
    default: Action,
    local: LocalOptions,
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
        LocalOptions {
            overflow: Overflow::Wait,
            overflow_wait_ms: 30_000,
            too_long: TooLong::Reject,
        }
    }
}

/// Finding kinds present in a request, gathered in one pass so every rule is
/// then tested with bit operations.
struct Present {
    pii: u64,
    pii_any: bool,
    secrets: u64,
    secrets_any: bool,
    terms: bool,
}

impl Present {
    fn scan(findings: &[Finding]) -> Present {
        let mut present = Present {
            pii: 0,
            pii_any: false,
            secrets: 0,
            secrets_any: false,
            terms: false,
        };
        for f in findings {
            match f.category {
                Category::Pii => {
                    present.pii_any = true;
                    present.pii |= kind_bit(PII_KINDS, f.kind);
                }
                Category::Secret => {
                    present.secrets_any = true;
                    present.secrets |= kind_bit(SECRET_KINDS, f.kind);
                }
                Category::Term => present.terms = true,
            }
        }
        present
    }
}

fn kind_bit(names: &[&str], kind: &str) -> u64 {
    names
        .iter()
        .position(|n| *n == kind)
        .map_or(0, |i| 1u64 << i)
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
    PROVIDERS
        .iter()
        .position(|p| p.eq_ignore_ascii_case(provider))
        .map_or(0, |i| 1u64 << i)
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
        if w.terms && !present.terms {
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
        if let Some(range) = w.prompt_tokens {
            if !range.contains(signals.prompt_tokens) {
                return false;
            }
        }
        true
    }

    /// "rule NAME matched: pii credit_card; terms; ..." — one part per
    /// condition, naming only types, never matched values.
    fn generated_reason(&self, present: &Present, signals: &Signals) -> String {
        let mut out = format!("rule {} matched: ", self.name);
        let mut parts = Parts {
            out: &mut out,
            any_written: false,
        };
        let w = &self.when;
        if let Some(set) = w.pii {
            let hit = kinds_hit(set, present.pii_any, present.pii).unwrap_or(0);
            parts.kinds("pii", PII_KINDS, hit);
        }
        if let Some(set) = w.secrets {
            let hit = kinds_hit(set, present.secrets_any, present.secrets).unwrap_or(0);
            parts.kinds("secrets", SECRET_KINDS, hit);
        }
        if w.terms {
            parts.start("terms");
        }
        if w.model.is_some() {
            parts.start("model ");
            parts.out.push_str(signals.requested_model);
        }
        if w.provider.is_some() {
            parts.start("provider ");
            parts.out.push_str(signals.provider);
        }
        if w.prompt_tokens.is_some() {
            parts.start("prompt_tokens ");
            // Writing to a String cannot fail.
            let _ = write!(parts.out, "{}", signals.prompt_tokens);
        }
        out
    }
}

/// Writes reason parts separated by "; ".
struct Parts<'s> {
    out: &'s mut String,
    any_written: bool,
}

impl Parts<'_> {
    fn start(&mut self, label: &str) {
        if self.any_written {
            self.out.push_str("; ");
        }
        self.any_written = true;
        self.out.push_str(label);
    }

    /// `label` followed by the names whose bits are set in `mask`.
    fn kinds(&mut self, label: &str, names: &[&str], mask: u64) {
        self.start(label);
        let mut first = true;
        for (i, name) in names.iter().enumerate() {
            if mask & (1u64 << i) != 0 {
                self.out.push_str(if first { " " } else { ", " });
                self.out.push_str(name);
                first = false;
            }
        }
    }
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

    /// How local decisions behave under load and for long prompts.
    pub fn local_options(&self) -> LocalOptions {
        self.local
    }

    /// Evaluate one request: first matching rule, else the default.
    pub fn decide(&self, signals: &Signals) -> Decision {
        let present = Present::scan(signals.findings);
        for rule in &self.rules {
            if rule.matches(&present, signals) {
                let reason = match &rule.reason {
                    Some(reason) => reason.clone(),
                    None => rule.generated_reason(&present, signals),
                };
                return Decision {
                    action: rule.then,
                    rule: rule.name.clone(),
                    reason,
                };
            }
        }
        Decision {
            action: self.default,
            rule: "default".to_string(),
            reason: "no rule matched".to_string(),
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
    pub fn load_dir(dir: &Path) -> Result<PolicySet, PolicyErrors> {
        let mut errors = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                return Err(PolicyErrors(vec![PolicyError::whole(
                    dir,
                    format!("cannot read policy directory: {e}"),
                )]))
            }
        };
        let mut files = Vec::new();
        for entry in entries {
            let path = match entry {
                Ok(entry) => entry.path(),
                Err(e) => {
                    errors.push(PolicyError::whole(
                        dir,
                        format!("cannot list policy directory: {e}"),
                    ));
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
            match load_file(dir, path) {
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
        } else if !files
            .iter()
            .any(|f| f.file_name() == Some("default.yaml".as_ref()))
        {
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
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Parse, validate and compile one policy file, collecting every problem
/// that can be found without the file parsing.
fn load_file(dir: &Path, path: &Path) -> Result<TeamPolicy, Vec<PolicyError>> {
    let mut errors = Vec::new();
    let team = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
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
    let only_comments = source
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    if only_comments {
        errors.push(PolicyError::whole(
            path,
            "file is empty; at least `default:` is required".to_string(),
        ));
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
                Some(first) => format!(
                    "duplicate rule name `{}` (first on line {first})",
                    rule.name
                ),
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
                    text.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                        .map(str::to_string),
                ),
                Err(e) => errors.push(PolicyError::at(
                    path,
                    at,
                    format!("cannot read dictionary file `{name}`: {e}"),
                )),
            }
        }
    }
    let mut unique = std::collections::HashSet::new();
    terms.retain(|t| unique.insert(t.clone()));

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(TeamPolicy {
        team,
        terms,
        rules: file.rules,
        default: file.default,
        local: file.local,
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
        PolicyError {
            file: file.to_path_buf(),
            line: None,
            column: None,
            reason,
        }
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
mod tests {
    use super::*;
    use std::fs;

    fn finding(category: Category, kind: &'static str) -> Finding {
        Finding {
            category,
            kind,
            segment: 0,
            span: 0..1,
            confidence: 1.0,
            validator: "test",
        }
    }

    fn pii(kind: &'static str) -> Finding {
        finding(Category::Pii, kind)
    }

    fn secret(kind: &'static str) -> Finding {
        finding(Category::Secret, kind)
    }

    fn term() -> Finding {
        finding(Category::Term, crate::inspect::TERM_KIND)
    }

    fn signals<'a>(
        findings: &'a [Finding],
        model: &'a str,
        provider: &'a str,
        tokens: u64,
    ) -> Signals<'a> {
        Signals {
            findings,
            requested_model: model,
            provider,
            prompt_tokens: tokens,
        }
    }

    /// A policy directory holding `files`, plus a trivial default.yaml unless given.
    fn policy_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("a temp dir can be created in tests");
        if !files.iter().any(|(name, _)| *name == "default.yaml") {
            fs::write(dir.path().join("default.yaml"), "default: cloud\n")
                .expect("writable temp dir");
        }
        for (name, text) in files {
            fs::write(dir.path().join(name), text).expect("writable temp dir");
        }
        dir
    }

    /// Load a single team file `t.yaml` that must be valid.
    fn team(yaml: &str) -> Arc<TeamPolicy> {
        let dir = policy_dir(&[("t.yaml", yaml)]);
        match PolicySet::load_dir(dir.path()) {
            Ok(set) => Arc::clone(set.team("t").expect("t.yaml was loaded")),
            Err(e) => panic!("policy should load:\n{e}"),
        }
    }

    fn errors(files: &[(&str, &str)]) -> Vec<PolicyError> {
        let dir = policy_dir(files);
        match PolicySet::load_dir(dir.path()) {
            Ok(_) => panic!("policy should have been rejected"),
            Err(PolicyErrors(errors)) => errors,
        }
    }

    /// The single error for `t.yaml`, as (line, reason).
    fn one_error(yaml: &str) -> (Option<usize>, String) {
        let errs = errors(&[("t.yaml", yaml)]);
        assert_eq!(errs.len(), 1, "expected one error, got: {errs:?}");
        assert!(errs[0].file.ends_with("t.yaml"), "{:?}", errs[0].file);
        (errs[0].line, errs[0].reason.clone())
    }

    #[test]
    fn shipped_policies_load_cleanly_and_behave_as_documented() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let set = match PolicySet::load_dir(&dir) {
            Ok(set) => set,
            Err(e) => panic!("shipped policies must load:\n{e}"),
        };
        assert_eq!(set.teams().collect::<Vec<_>>(), ["default", "payments"]);
        assert_eq!(set.len(), 2);

        let default = set.team("default").expect("default.yaml ships");
        assert!(default.dictionary_terms().is_empty());
        let decide = |f: &[Finding]| default.decide(&signals(f, "gpt-4o", "openai", 10));
        let d = decide(&[pii("email"), secret("aws_access_key")]);
        assert_eq!((d.action, d.rule.as_str()), (Action::Block, "no-secrets"));
        for kind in ["credit_card", "us_ssn", "iban"] {
            assert_eq!(decide(&[pii(kind)]).action, Action::Local, "{kind}");
        }
        assert_eq!(decide(&[term()]).action, Action::Local);
        assert_eq!(decide(&[pii("email")]).action, Action::Cloud);
        assert_eq!(decide(&[]).rule, "default");

        let payments = set.team("payments").expect("payments.yaml ships");
        assert_eq!(payments.team(), "payments");
        assert!(payments
            .dictionary_terms()
            .iter()
            .any(|t| t == "Project Falcon"));
        let decide = |f: &[Finding], model: &str, tokens: u64| {
            payments.decide(&signals(f, model, "openai", tokens))
        };
        assert_eq!(decide(&[pii("email")], "gpt-4o", 10).action, Action::Local);
        assert_eq!(
            decide(&[secret("github_token")], "gpt-4o", 10).action,
            Action::Block
        );
        assert_eq!(decide(&[], "gpt-4o", 9000).rule, "bulk-prompts-stay-local");
        assert_eq!(decide(&[], "gpt-4o", 8000).action, Action::Cloud);
        assert_eq!(decide(&[], "gpt-3.5-turbo", 9000).action, Action::Cloud);
    }

    #[test]
    fn first_matching_rule_wins_in_file_order() {
        let p = team(
            "rules:\n\
             - { name: first, when: { pii: [email] }, then: local }\n\
             - { name: second, when: { pii: any }, then: block }\n\
             - { name: third, when: { pii: [email] }, then: block }\n\
             default: cloud\n",
        );
        let d = p.decide(&signals(&[pii("email")], "m", "openai", 1));
        assert_eq!((d.action, d.rule.as_str()), (Action::Local, "first"));
        let d = p.decide(&signals(&[pii("phone")], "m", "openai", 1));
        assert_eq!((d.action, d.rule.as_str()), (Action::Block, "second"));
    }

    #[test]
    fn no_match_falls_back_to_default() {
        let p = team("rules:\n- { name: r, when: { terms: any }, then: cloud }\ndefault: block\n");
        let d = p.decide(&signals(&[pii("email")], "m", "openai", 1));
        assert_eq!(
            d,
            Decision {
                action: Action::Block,
                rule: "default".to_string(),
                reason: "no rule matched".to_string()
            }
        );
    }

    #[test]
    fn pii_and_secret_lists_match_only_named_kinds_of_their_category() {
        let p = team(
            "rules:\n\
             - { name: keys, when: { secrets: [aws_access_key, private_key] }, then: block }\n\
             - { name: cards, when: { pii: [credit_card, us_ssn] }, then: local }\n\
             default: cloud\n",
        );
        let action = |f: &[Finding]| p.decide(&signals(f, "m", "openai", 1)).action;
        assert_eq!(action(&[secret("private_key")]), Action::Block);
        assert_eq!(action(&[secret("github_token")]), Action::Cloud);
        assert_eq!(action(&[pii("us_ssn")]), Action::Local);
        assert_eq!(action(&[pii("email")]), Action::Cloud);
        // A term is not PII even if a detector gave it a PII-like kind name.
        assert_eq!(
            action(&[finding(Category::Term, "credit_card")]),
            Action::Cloud
        );
        assert_eq!(action(&[pii("email"), pii("credit_card")]), Action::Local);
    }

    #[test]
    fn any_matches_any_finding_of_the_category() {
        let p = team(
            "rules:\n\
             - { name: s, when: { secrets: any }, then: block }\n\
             - { name: p, when: { pii: any }, then: local }\n\
             - { name: t, when: { terms: any }, then: local }\n\
             default: cloud\n",
        );
        let rule = |f: &[Finding]| p.decide(&signals(f, "m", "openai", 1)).rule;
        assert_eq!(rule(&[secret("openai_key")]), "s");
        assert_eq!(rule(&[pii("phone")]), "p");
        assert_eq!(rule(&[term()]), "t");
        assert_eq!(rule(&[]), "default");
    }

    #[test]
    fn model_globs_and_providers_are_lists_of_alternatives() {
        let p = team(
            "rules:\n\
             - { name: big, when: { model: [\"gpt-4*\", \"o1?\"] }, then: local }\n\
             - { name: anth, when: { provider: [anthropic] }, then: block }\n\
             default: cloud\n",
        );
        let rule = |model: &str, provider: &str| p.decide(&signals(&[], model, provider, 1)).rule;
        assert_eq!(rule("gpt-4o-mini", "openai"), "big");
        assert_eq!(rule("o1x", "openai"), "big");
        assert_eq!(rule("o1-mini", "openai"), "default");
        assert_eq!(rule("gpt-3.5-turbo", "openai"), "default");
        assert_eq!(rule("claude-3-haiku", "anthropic"), "anth");
        assert_eq!(rule("claude-3-haiku", "gemini"), "default");
    }

    #[test]
    fn single_names_may_be_written_without_a_list() {
        let p = team("rules:\n- { name: r, when: { pii: iban, model: \"o1*\", provider: openai }, then: local }\ndefault: cloud\n");
        assert_eq!(
            p.decide(&signals(&[pii("iban")], "o1", "openai", 1)).rule,
            "r"
        );
    }

    #[test]
    fn prompt_token_comparisons_have_exact_boundaries() {
        let p = team(
            "rules:\n\
             - { name: gt, when: { prompt_tokens: { gt: 100 } }, then: block }\n\
             - { name: band, when: { prompt_tokens: { gte: 10, lte: 20 } }, then: local }\n\
             - { name: lt, when: { prompt_tokens: { lt: 5 } }, then: local }\n\
             default: cloud\n",
        );
        let rule = |n: u64| p.decide(&signals(&[], "m", "openai", n)).rule;
        assert_eq!(rule(101), "gt");
        assert_eq!(rule(100), "default");
        assert_eq!(rule(20), "band");
        assert_eq!(rule(10), "band");
        assert_eq!(rule(21), "default");
        assert_eq!(rule(9), "default");
        assert_eq!(rule(4), "lt");
        assert_eq!(rule(5), "default");
    }

    #[test]
    fn all_conditions_of_a_rule_must_hold() {
        let p = team(
            "rules:\n\
             - name: all\n  \
               when:\n    \
                 pii: [email]\n    \
                 model: [\"gpt-4*\"]\n    \
                 provider: [openai]\n    \
                 prompt_tokens: { gte: 1000 }\n  \
               then: local\n\
             default: cloud\n",
        );
        let rule = |f: &[Finding], model: &str, provider: &str, n: u64| {
            p.decide(&signals(f, model, provider, n)).rule
        };
        let email = [pii("email")];
        assert_eq!(rule(&email, "gpt-4o", "openai", 1000), "all");
        assert_eq!(rule(&[], "gpt-4o", "openai", 1000), "default");
        assert_eq!(rule(&email, "gpt-3.5", "openai", 1000), "default");
        assert_eq!(rule(&email, "gpt-4o", "anthropic", 1000), "default");
        assert_eq!(rule(&email, "gpt-4o", "openai", 999), "default");
    }

    #[test]
    fn reasons_name_the_triggering_types_or_use_the_given_text() {
        let p = team(
            "rules:\n\
             - { name: keys, when: { secrets: any }, then: block, reason: \"No credentials\" }\n\
             - { name: cards, when: { pii: [credit_card, us_ssn, iban], terms: any }, then: local }\n\
             - { name: big, when: { model: \"gpt-4*\", provider: openai, prompt_tokens: { gt: 5 } }, then: local }\n\
             default: cloud\n",
        );
        let reason = |f: &[Finding], n: u64| p.decide(&signals(f, "gpt-4o", "openai", n)).reason;
        assert_eq!(reason(&[secret("private_key")], 1), "No credentials");
        assert_eq!(
            reason(
                &[
                    pii("us_ssn"),
                    pii("email"),
                    term(),
                    pii("credit_card"),
                    pii("us_ssn")
                ],
                1
            ),
            "rule cards matched: pii credit_card, us_ssn; terms"
        );
        assert_eq!(
            reason(&[], 9),
            "rule big matched: model gpt-4o; provider openai; prompt_tokens 9"
        );
    }

    #[test]
    fn dictionary_combines_inline_and_file_terms_trimmed_and_deduplicated() {
        let dir = policy_dir(&[
            (
                "pay.yaml",
                "dictionary:\n  terms: [\" Project Falcon \", \"ACME Bank\"]\n  file: pay-terms.txt\ndefault: cloud\n",
            ),
            ("pay-terms.txt", "# code names\n\nACME Bank\n  Ledgerline  \nC# Tools\n"),
        ]);
        let set = PolicySet::load_dir(dir.path()).map_err(|e| e.to_string());
        let set = set.as_ref().map_err(String::as_str);
        let terms = set.map(|s| s.team("pay").map(|p| p.dictionary_terms().to_vec()));
        assert_eq!(
            terms,
            Ok(Some(vec![
                "Project Falcon".to_string(),
                "ACME Bank".to_string(),
                "Ledgerline".to_string(),
                "C# Tools".to_string()
            ]))
        );
    }

    #[test]
    fn unknown_pii_name_is_reported_at_the_name_with_valid_names() {
        let (line, reason) = one_error(
            "rules:\n\
             - name: r\n  \
               when:\n    \
                 pii:\n      \
                   - email\n      \
                   - passport\n  \
               then: local\n\
             default: cloud\n",
        );
        assert_eq!(line, Some(6));
        assert!(reason.contains("unknown pii type `passport`"), "{reason}");
        assert!(
            reason.contains("email, credit_card, us_ssn, phone, iban"),
            "{reason}"
        );
    }

    #[test]
    fn unknown_secret_name_and_provider_are_rejected() {
        let (line, reason) = one_error(
            "rules:\n- name: r\n  when: { secrets: [aws_key] }\n  then: block\ndefault: cloud\n",
        );
        assert_eq!(line, Some(3));
        assert!(reason.contains("unknown secret type `aws_key`"), "{reason}");
        let (line, reason) = one_error(
            "default: cloud\nrules:\n- name: r\n  when: { provider: [gemini] }\n  then: block\n",
        );
        assert_eq!(line, Some(4));
        assert!(reason.contains("openai, anthropic"), "{reason}");
    }

    #[test]
    fn unknown_action_is_reported_at_its_line() {
        let (line, reason) = one_error(
            "rules:\n\
             - name: r\n  \
               when: { pii: any }\n  \
               then: allow\n\
             default: cloud\n",
        );
        assert_eq!(line, Some(4));
        assert!(
            reason.contains("unknown action `allow`; expected local, cloud or block"),
            "{reason}"
        );
        let (line, _) = one_error("rules: []\ndefault: redact\n");
        assert_eq!(line, Some(2));
    }

    #[test]
    fn unknown_field_is_reported_at_its_line() {
        let (line, reason) = one_error(
            "rules:\n\
             - name: r\n  \
               when:\n    \
                 pii: any\n    \
                 pi: any\n  \
               then: local\n\
             default: cloud\n",
        );
        assert_eq!(line, Some(5));
        assert!(reason.contains("unknown field `pi`"), "{reason}");
        let (line, reason) = one_error("default: cloud\ndefualt: block\n");
        assert_eq!(line, Some(2));
        assert!(reason.contains("unknown field `defualt`"), "{reason}");
    }

    #[test]
    fn duplicate_rule_name_is_reported_at_the_second_use() {
        let errs = errors(&[(
            "t.yaml",
            "rules:\n\
             - name: same\n  \
               when: { pii: any }\n  \
               then: local\n\
             - name: other\n  \
               when: { terms: any }\n  \
               then: local\n\
             - name: \"same\"\n  \
               when: { secrets: any }\n  \
               then: block\n\
             default: cloud\n",
        )]);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!((errs[0].line, errs[0].column), (Some(8), Some(3)));
        assert_eq!(
            errs[0].reason,
            "duplicate rule name `same` (first on line 2)"
        );
    }

    #[test]
    fn missing_default_is_an_error() {
        let (line, reason) = one_error(
            "# no default here\nrules:\n- { name: r, when: { pii: any }, then: local }\n",
        );
        assert_eq!(line, Some(2));
        assert!(reason.contains("missing field `default`"), "{reason}");
    }

    #[test]
    fn bad_yaml_syntax_is_reported_at_its_line() {
        let (line, _) = one_error(
            "rules:\n- name: r\n  when: { pii: [email }\n  then: local\ndefault: cloud\n",
        );
        assert_eq!(line, Some(3));
        let errs = errors(&[("t.yaml", "default: cloud\nrules: oops: x\n")]);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].line, Some(2));
    }

    #[test]
    fn missing_dictionary_file_is_reported_at_the_file_key() {
        let (line, reason) =
            one_error("dictionary:\n  terms: [a]\n  file: nope.txt\ndefault: local\n");
        assert_eq!(line, Some(3));
        assert!(
            reason.starts_with("cannot read dictionary file `nope.txt`"),
            "{reason}"
        );
    }

    #[test]
    fn empty_or_missing_when_is_rejected() {
        let (line, reason) =
            one_error("default: cloud\nrules:\n- name: r\n  when: {}\n  then: local\n");
        assert_eq!(line, Some(4));
        assert!(reason.contains("empty `when`"), "{reason}");
        let (line, reason) = one_error("default: cloud\nrules:\n- name: r\n  then: local\n");
        assert_eq!(line, Some(3));
        assert!(reason.contains("has no `when`"), "{reason}");
    }

    #[test]
    fn malformed_values_are_rejected_where_they_are() {
        let cases = [
            ("when: { terms: some }", "accepts only `any`"),
            ("when: { model: [\"gpt-[45]\"] }", "only the wildcards"),
            ("when: { pii: [] }", "never matches"),
            ("when: { pii: [any] }", "`any` cannot be part of a list"),
            ("when: { provider: any }", "not allowed"),
            ("when: { prompt_tokens: {} }", "at least one of"),
            (
                "when: { prompt_tokens: { gt: 10, lt: 5 } }",
                "can never all hold",
            ),
            (
                "when: { prompt_tokens: { above: 10 } }",
                "unknown field `above`",
            ),
            ("when: { prompt_tokens: { gt: -1 } }", "-1"),
        ];
        for (when, expected) in cases {
            let (line, reason) = one_error(&format!(
                "default: cloud\nrules:\n- name: r\n  {when}\n  then: local\n"
            ));
            assert_eq!(line, Some(4), "{when}: {reason}");
            assert!(reason.contains(expected), "{when}: {reason}");
        }
        let (line, reason) = one_error(
            "default: cloud\nrules:\n- name: default\n  when: { pii: any }\n  then: local\n",
        );
        assert_eq!(line, Some(3));
        assert!(reason.contains("reserved"), "{reason}");
    }

    #[test]
    fn errors_from_several_files_are_all_reported() {
        let errs = errors(&[
            (
                "alpha.yaml",
                "rules:\n- name: r\n  when: { pii: [mail] }\n  then: local\ndefault: cloud\n",
            ),
            (
                "beta.yaml",
                "description: beta\nrules: []\ndefault: nowhere\n",
            ),
            ("Bad Name.yaml", "default: cloud\n"),
            ("notes.txt", "not a policy: ignored\n"),
        ]);
        let summary: Vec<(String, Option<usize>)> = errs
            .iter()
            .map(|e| {
                (
                    e.file
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    e.line,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("Bad Name.yaml".to_string(), None),
                ("alpha.yaml".to_string(), Some(3)),
                ("beta.yaml".to_string(), Some(3)),
            ]
        );
    }

    #[test]
    fn directory_without_default_or_without_policies_is_an_error() {
        let dir = tempfile::tempdir().expect("a temp dir can be created in tests");
        let err = PolicySet::load_dir(dir.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("no policy files"), "{err}");

        fs::write(dir.path().join("ops.yaml"), "default: local\n").expect("writable temp dir");
        let errs = PolicySet::load_dir(dir.path())
            .err()
            .map(|e| e.0)
            .unwrap_or_default();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].file.ends_with("default.yaml"));
        assert_eq!(errs[0].line, None);
    }

    #[test]
    fn key_search_finds_keys_not_text_inside_values() {
        let source = "description: \"see file: x\"\n\
                      # name: a\n\
                      rules:\n\
                      - name: a\n\
                      - { when: { pii: any }, name: 'a' }\n\
                      -   name: ab\n\
                      dictionary: { terms: [x], file: t.txt }\n";
        assert_eq!(find_key_lines(source, "name", Some("a")), [(4, 3), (5, 25)]);
        assert_eq!(find_key_lines(source, "file", None), [(7, 27)]);
    }

    #[test]
    fn errors_display_as_file_line_column_reason() {
        let located = PolicyError {
            file: PathBuf::from("policies/t.yaml"),
            line: Some(4),
            column: Some(9),
            reason: "bad".to_string(),
        };
        let unlocated = PolicyError {
            file: PathBuf::from("policies"),
            line: None,
            column: None,
            reason: "empty".to_string(),
        };
        assert_eq!(located.to_string(), "policies/t.yaml:4:9: bad");
        assert_eq!(unlocated.to_string(), "policies: empty");
        assert_eq!(
            PolicyErrors(vec![located, unlocated]).to_string(),
            "policies/t.yaml:4:9: bad\npolicies: empty"
        );
        // serde_yaml's own " at line L column C" is not repeated in the reason.
        let (_, reason) = one_error("default: maybe\n");
        assert!(!reason.contains("at line"), "{reason}");
    }

    #[test]
    fn local_options_parse_default_and_reject_unknown_values_with_lines() {
        assert_eq!(team("default: cloud\n").local_options(), LocalOptions::default());
        let t = team("default: local\nlocal:\n  overflow: cloud\n  overflow_wait_ms: 50\n  too_long: block\n");
        assert_eq!(
            t.local_options(),
            LocalOptions { overflow: Overflow::Cloud, overflow_wait_ms: 50, too_long: TooLong::Block }
        );
        let (line, reason) = one_error("default: local\nlocal:\n  overflow: spill\n");
        assert_eq!(line, Some(3), "{reason}");
        assert!(reason.contains("spill"), "{reason}");
        let (line, reason) = one_error("default: local\nlocal:\n  too_long: reject\n  queue: 3\n");
        assert_eq!(line, Some(4), "{reason}");
        assert!(reason.contains("unknown field `queue`"), "{reason}");
    }
}
