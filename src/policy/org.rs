//! The layers a team's policy is built from: the organisation's baseline
//! (`org.yaml`), the shared profiles a team file `extends:`
//! (`profiles/<name>.yaml`), and the team's own file.
//!
//! Precedence, for every request: `org.yaml`'s rules first, always; then
//! the team's rules, which are the extended profile's (its own base
//! profile's first) followed by the team file's own; then the team's
//! `default`. Rule names are unique across all of them, so a team cannot
//! shadow or drop an organisation rule by reusing its name. A rule in
//! `mode: monitor` only records what it would have decided.
//!
//! Settings other than rules (`default`, `min_confidence`, `sticky_local`,
//! `local`, `unparsed_requests`, `ai_apps`) come from the nearest layer
//! that sets them: the team file, else its profile, else that profile's
//! base. Dictionaries add up. `org.yaml` sets only rules, `mode` and a
//! `min_confidence` ceiling that no team can raise.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::schema::{MinConfidence, Mode, OrgFile, PolicyFile, Rule};
use super::{find_key_lines, Action, AiApps, LocalOptions, PolicyError, Unparsed};
use crate::inspect::Finding;

/// The organisation file's stem: `org.yaml` is not a team.
pub(super) const ORG: &str = "org";

/// The folder of shared profiles, inside the policy directory.
pub(super) const PROFILES: &str = "profiles";

/// `org.yaml`, loaded.
#[derive(Default)]
pub(super) struct OrgPolicy {
    pub(super) rules: Vec<Arc<Rule>>,
    pub(super) min_confidence: Option<Arc<MinConfidence>>,
    /// Rule name -> line in org.yaml, for messages about clashes.
    names: BTreeMap<String, Option<usize>>,
}

/// Finding thresholds for one team: its own `min_confidence`, capped by
/// the organisation's, so a team cannot hide from the organisation's rules
/// a finding the organisation counts.
#[derive(Debug, Default)]
pub(super) struct Thresholds {
    team: Option<Arc<MinConfidence>>,
    org: Option<Arc<MinConfidence>>,
}

impl Thresholds {
    pub(super) fn keeps(&self, finding: &Finding) -> bool {
        let team = self.team.as_ref().and_then(|t| t.threshold(finding)).unwrap_or(0.0);
        let threshold = match self.org.as_ref().and_then(|o| o.threshold(finding)) {
            Some(ceiling) => team.min(ceiling),
            None => team,
        };
        finding.confidence >= threshold
    }
}

/// One team or profile file, parsed, its rules named for decisions and
/// its dictionary read.
pub(super) struct Layer {
    /// The path relative to the policy directory (`profiles/strict.yaml`).
    pub(super) rel: String,
    pub(super) path: PathBuf,
    pub(super) source: String,
    pub(super) extends: Option<String>,
    pub(super) rules: Vec<Arc<Rule>>,
    pub(super) default: Option<Action>,
    pub(super) min_confidence: Option<Arc<MinConfidence>>,
    pub(super) sticky_local: Option<bool>,
    pub(super) local: Option<LocalOptions>,
    pub(super) unparsed: Option<Unparsed>,
    pub(super) ai_apps: Option<AiApps>,
    pub(super) limits: Option<super::limits::Limits>,
    pub(super) terms: Vec<String>,
}

impl Layer {
    /// Where `key:` first appears in this file.
    pub(super) fn key_at(&self, key: &str) -> Option<(usize, usize)> {
        find_key_lines(&self.source, key, None).first().copied()
    }

    fn rule_at(&self, name: &str) -> Option<(usize, usize)> {
        find_key_lines(&self.source, "name", Some(name)).first().copied()
    }
}

/// The path of `path` relative to `dir`, with `/` separators, for rule
/// locations (`profiles/strict.yaml#no-secrets`).
fn relative(dir: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(dir).unwrap_or(path);
    rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

/// Name rules for decisions and resolve their mode against the file's.
fn finalize(rules: Vec<Rule>, prefix: Option<&str>, rel: &str, file_mode: Option<Mode>) -> Vec<Arc<Rule>> {
    rules
        .into_iter()
        .map(|mut rule| {
            rule.id = match prefix {
                Some(prefix) => format!("{prefix}:{}", rule.name),
                None => rule.name.clone(),
            };
            rule.decided_by = Arc::from(format!("{rel}#{}", rule.name));
            rule.monitor = rule.mode.or(file_mode) == Some(Mode::Monitor);
            Arc::new(rule)
        })
        .collect()
}

/// Read a file, refusing one with nothing but comments.
fn read_source(path: &Path, empty: &str, sources: &mut Vec<PathBuf>) -> Result<String, PolicyError> {
    let source =
        std::fs::read_to_string(path).map_err(|e| PolicyError::whole(path, format!("cannot read file: {e}")))?;
    sources.push(path.to_path_buf());
    if source.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
        return Err(PolicyError::whole(path, empty.to_string()));
    }
    Ok(source)
}

/// Rule names are unique within a file so that a decision's `rule`
/// identifies one rule: every repeat, at the repeat.
fn duplicate_names(path: &Path, source: &str, rules: &[Rule], errors: &mut Vec<PolicyError>) {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for rule in rules {
        let count = seen.entry(rule.name.as_str()).or_insert(0);
        *count += 1;
        if *count == 2 {
            let lines = find_key_lines(source, "name", Some(&rule.name));
            let first = lines.first().map(|(line, _)| *line);
            let at = lines.get(1).copied();
            let reason = match first {
                Some(first) => format!("duplicate rule name `{}` (first on line {first})", rule.name),
                None => format!("duplicate rule name `{}`", rule.name),
            };
            errors.push(PolicyError::at(path, at, reason));
        }
    }
}

/// `org.yaml`, when there is one.
pub(super) fn load_org(dir: &Path, errors: &mut Vec<PolicyError>, sources: &mut Vec<PathBuf>) -> Option<OrgPolicy> {
    let path = dir.join(format!("{ORG}.yaml"));
    if !path.is_file() {
        return None;
    }
    let source = match read_source(&path, "file is empty; remove it or give it `rules:`", sources) {
        Ok(source) => source,
        Err(e) => {
            errors.push(e);
            return None;
        }
    };
    let file: OrgFile = match serde_yaml::from_str(&source) {
        Ok(file) => file,
        Err(e) => {
            errors.push(PolicyError::from_yaml(&path, &e));
            return None;
        }
    };
    let before = errors.len();
    duplicate_names(&path, &source, &file.rules, errors);
    if errors.len() > before {
        return None;
    }
    let names = file
        .rules
        .iter()
        .map(|r| (r.name.clone(), find_key_lines(&source, "name", Some(&r.name)).first().map(|(line, _)| *line)))
        .collect();
    Some(OrgPolicy {
        rules: finalize(file.rules, Some(ORG), &format!("{ORG}.yaml"), file.mode),
        min_confidence: file.min_confidence.map(Arc::new),
        names,
    })
}

/// A team or profile file as a [`Layer`]: parsed, its rule names checked
/// within the file, its dictionary read. `prefix` names its rules in
/// decisions (`None` for a team's own).
pub(super) fn read_layer(
    dir: &Path,
    path: &Path,
    prefix: Option<&str>,
    empty: &str,
    sources: &mut Vec<PathBuf>,
) -> Result<Layer, Vec<PolicyError>> {
    let source = read_source(path, empty, sources).map_err(|e| vec![e])?;
    let file: PolicyFile = serde_yaml::from_str(&source).map_err(|e| vec![PolicyError::from_yaml(path, &e)])?;
    let mut errors = Vec::new();
    duplicate_names(path, &source, &file.rules, &mut errors);

    let mut terms: Vec<String> = Vec::new();
    if let Some(dictionary) = file.dictionary {
        terms.extend(dictionary.terms.into_iter().map(|t| t.0));
        if let Some(name) = dictionary.file {
            let at = find_key_lines(&source, "file", None).first().copied();
            let terms_path = dir.join(&name);
            match std::fs::read_to_string(&terms_path) {
                Ok(text) => {
                    sources.push(terms_path);
                    terms.extend(
                        text.lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty() && !l.starts_with('#'))
                            .map(str::to_string),
                    )
                }
                Err(e) => errors.push(PolicyError::at(path, at, format!("cannot read dictionary file `{name}`: {e}"))),
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let rel = relative(dir, path);
    Ok(Layer {
        rules: finalize(file.rules, prefix, &rel, file.mode),
        rel,
        path: path.to_path_buf(),
        source,
        extends: file.extends.map(|p| p.0),
        default: file.default,
        min_confidence: file.min_confidence.map(Arc::new),
        sticky_local: file.sticky_local,
        local: file.local,
        unparsed: file.unparsed_requests,
        ai_apps: file.ai_apps,
        limits: file.limits,
        terms,
    })
}

/// Every profile in `profiles/`, loaded whether or not a team extends it,
/// so `sluice policy check` finds a broken one before anyone uses it.
#[derive(Default)]
pub(super) struct Profiles {
    by_name: BTreeMap<String, Layer>,
    /// Profiles with errors of their own or in their chain: teams that
    /// extend them are not built (the errors are already reported).
    broken: HashSet<String>,
}

/// Why a team cannot start from a profile.
pub(super) enum ChainError {
    Missing,
    /// The profile has errors, reported against its own file.
    Broken,
}

impl Profiles {
    /// The layers a file extending `name` starts from, base first.
    pub(super) fn chain(&self, name: &str) -> Result<Vec<&Layer>, ChainError> {
        if self.broken.contains(name) {
            return Err(ChainError::Broken);
        }
        let mut chain = Vec::new();
        let mut next = Some(name);
        while let Some(name) = next {
            // Cycles and missing bases made the profile broken above.
            let layer = self.by_name.get(name).ok_or(ChainError::Missing)?;
            if chain.len() > self.by_name.len() {
                return Err(ChainError::Broken);
            }
            chain.push(layer);
            next = layer.extends.as_deref();
        }
        chain.reverse();
        Ok(chain)
    }
}

pub(super) fn load_profiles(
    dir: &Path,
    org: Option<&OrgPolicy>,
    errors: &mut Vec<PolicyError>,
    sources: &mut Vec<PathBuf>,
) -> Profiles {
    let mut profiles = Profiles::default();
    let folder = dir.join(PROFILES);
    if !folder.is_dir() {
        return profiles;
    }
    for path in super::yaml_files(&folder, errors) {
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        if !super::is_team_name(&name) || name == ORG {
            errors.push(PolicyError::whole(
                &path,
                format!("file name `{name}` is not a valid profile name: use a-z, 0-9, `_` and `-` (not `org`)"),
            ));
            continue;
        }
        match read_layer(dir, &path, Some(&name), "file is empty; a profile sets rules or settings", sources) {
            Ok(layer) => {
                profiles.by_name.insert(name, layer);
            }
            Err(mut e) => {
                errors.append(&mut e);
                profiles.broken.insert(name);
            }
        }
    }

    // Each profile's chain: a missing base or a cycle is an error in the
    // file whose `extends:` names it; a profile built on a broken one is
    // broken too, silently (the error is the base's).
    let names: Vec<String> = profiles.by_name.keys().cloned().collect();
    let mut broken = Vec::new();
    for name in &names {
        let mut seen = vec![name.as_str()];
        let mut current = name.as_str();
        // Each step visits a new profile, so the walk ends.
        while let Some(base) = profiles.by_name.get(current).and_then(|l| l.extends.as_deref()) {
            let exists = profiles.by_name.contains_key(base) || profiles.broken.contains(base);
            if current == name.as_str() && !exists {
                let layer = &profiles.by_name[name.as_str()];
                errors.push(PolicyError::at(&layer.path, layer.key_at("extends"), missing_profile(dir, base)));
                broken.push(name.clone());
                break;
            }
            if base == name.as_str() {
                let layer = &profiles.by_name[name.as_str()];
                let cycle = format!("{} -> {base}", seen.join(" -> "));
                errors.push(PolicyError::at(
                    &layer.path,
                    layer.key_at("extends"),
                    format!("`extends` makes a cycle: {cycle}"),
                ));
                broken.push(name.clone());
                break;
            }
            if seen.contains(&base) || !profiles.by_name.contains_key(base) {
                broken.push(name.clone());
                break;
            }
            seen.push(base);
            current = base;
        }
    }
    profiles.broken.extend(broken);

    // A profile's rule names are unique along its chain and against org.yaml.
    for name in &names {
        if profiles.broken.contains(name) {
            continue;
        }
        let Ok(chain) = profiles.chain(name) else { continue };
        let Some((own, bases)) = chain.split_last() else { continue };
        let before = errors.len();
        clashes(own, bases, org, errors);
        if errors.len() > before {
            profiles.broken.insert(name.clone());
        }
    }
    profiles
}

pub(super) fn missing_profile(dir: &Path, name: &str) -> String {
    let path = dir.join(PROFILES).join(format!("{name}.yaml"));
    format!("`extends: {name}`: there is no profile `{name}` ({} does not exist)", path.display())
}

/// Errors for `own`'s rules whose names an organisation rule or a rule of
/// a layer it extends already has.
pub(super) fn clashes(own: &Layer, bases: &[&Layer], org: Option<&OrgPolicy>, errors: &mut Vec<PolicyError>) {
    for rule in &own.rules {
        let at = own.rule_at(&rule.name);
        if let Some(line) = org.and_then(|o| o.names.get(&rule.name)) {
            let line = line.map(|l| format!(", line {l}")).unwrap_or_default();
            errors.push(PolicyError::at(
                &own.path,
                at,
                format!(
                    "rule `{}` is an organisation rule (org.yaml{line}); org rules come first for every team and \
                     cannot be overridden or dropped: give this rule another name",
                    rule.name
                ),
            ));
            continue;
        }
        if let Some(base) = bases.iter().find(|b| b.rules.iter().any(|r| r.name == rule.name)) {
            let line = base.rule_at(&rule.name).map(|(l, _)| format!(", line {l}")).unwrap_or_default();
            errors.push(PolicyError::at(
                &own.path,
                at,
                format!(
                    "rule `{}` is already a rule of the profile this file extends ({}{line}); rule names are \
                     unique across a team's file and its profiles: give this rule another name",
                    rule.name, base.rel
                ),
            ));
        }
    }
}

/// A team's settings, each from the nearest layer that sets it.
pub(super) struct Merged<'a> {
    pub(super) default: Option<(Action, &'a Layer)>,
    pub(super) thresholds: Thresholds,
    pub(super) sticky_local: bool,
    pub(super) local: LocalOptions,
    pub(super) unparsed: Unparsed,
    pub(super) ai_apps: Option<(&'a AiApps, &'a Layer)>,
    pub(super) terms: Vec<String>,
    /// Organisation rules, then each layer's, base first.
    pub(super) rules: Vec<Arc<Rule>>,
}

/// Merge `layers` (base first, the team's own file last) under `org`.
pub(super) fn merge<'a>(layers: &[&'a Layer], org: Option<&OrgPolicy>) -> Merged<'a> {
    let nearest = |get: &dyn Fn(&'a Layer) -> bool| layers.iter().rev().copied().find(|l| get(l));
    let default = nearest(&|l| l.default.is_some()).and_then(|l| l.default.map(|d| (d, l)));
    let team_confidence = nearest(&|l| l.min_confidence.is_some()).and_then(|l| l.min_confidence.clone());
    let mut terms: Vec<String> = layers.iter().flat_map(|l| l.terms.iter().cloned()).collect();
    let mut unique = HashSet::new();
    terms.retain(|t| unique.insert(t.clone()));
    let mut rules: Vec<Arc<Rule>> = org.map(|o| o.rules.clone()).unwrap_or_default();
    rules.extend(layers.iter().flat_map(|l| l.rules.iter().cloned()));
    Merged {
        default,
        thresholds: Thresholds { team: team_confidence, org: org.and_then(|o| o.min_confidence.clone()) },
        sticky_local: nearest(&|l| l.sticky_local.is_some()).and_then(|l| l.sticky_local).unwrap_or(true),
        local: nearest(&|l| l.local.is_some()).and_then(|l| l.local).unwrap_or_default(),
        unparsed: nearest(&|l| l.unparsed.is_some()).and_then(|l| l.unparsed).unwrap_or_default(),
        ai_apps: nearest(&|l| l.ai_apps.is_some()).and_then(|l| l.ai_apps.as_ref().map(|a| (a, l))),
        terms,
        rules,
    }
}
