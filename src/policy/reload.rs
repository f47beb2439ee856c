//! The live policy set and its hot reload.
//!
//! [`Policies`] is everything a request is decided under that comes from
//! files an operator edits while sluice runs: the team policies (with
//! `org.yaml` and the profiles), each team's dictionary, and the catalog of
//! AI apps (the shipped one plus `shadow.catalog_files`). It is loaded
//! whole by [`Policies::load`] — at start-up, on reload and by `sluice
//! policy check`, so all three apply the same validation — and
//! [`LivePolicies`] swaps it in one step. A request takes one snapshot
//! ([`LivePolicies::current`]) at its start and is decided under it to the
//! end, however many reloads happen meanwhile.
//!
//! Reloads happen on SIGHUP and when a watched file changes: the files are
//! polled every [`POLL`] (their size, modification time and inode), and a
//! change is loaded once nothing has changed for [`SETTLE`], so an editor's
//! write-then-rename is read as one edit. A load that sees the files
//! change while it reads them is thrown away and tried again. A set that
//! fails validation never replaces the working one: sluice keeps deciding
//! under the old set, logs each error with its file, line and reason,
//! counts it, and shows it in `/readyz` (still ready: the old set is a
//! valid policy) until a later load succeeds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{PolicyError, PolicyErrors, PolicySet, TeamPolicy};
use crate::config::ShadowConfig;
use crate::inspect::Dictionary;
use crate::shadow::catalog::{Catalog, CatalogError};
use crate::shadow::monitor::{load_catalog, MonitorError};
use crate::telemetry;

/// How often the watched files are looked at.
pub const POLL: Duration = Duration::from_millis(250);
/// How long the files must stay unchanged before a change is loaded.
pub const SETTLE: Duration = Duration::from_millis(100);

/// Everything loaded from the policy directory and the catalog files.
pub struct Policies {
    set: PolicySet,
    dictionaries: HashMap<String, Dictionary>,
    catalog: Catalog,
    /// Every file read (policies, dictionaries, catalog files).
    sources: Vec<PathBuf>,
}

impl Policies {
    /// Load and validate the policy directory, the dictionaries it names
    /// and the organisation's catalog files. Every problem is reported,
    /// each with its file and, where it has one, its line.
    pub fn load(dir: &Path, shadow: &ShadowConfig) -> Result<Policies, PolicyErrors> {
        let catalog = load_catalog(shadow).map_err(|e| PolicyErrors(vec![catalog_error(e)]))?;
        let set = PolicySet::load_dir_with_apps(dir, &catalog)?;
        let mut dictionaries = HashMap::new();
        let mut errors = Vec::new();
        for (team, policy) in &set.teams {
            if policy.dictionary_terms().is_empty() {
                continue;
            }
            match Dictionary::new(policy.dictionary_terms()) {
                Ok(dictionary) => {
                    dictionaries.insert(team.clone(), dictionary);
                }
                Err(e) => {
                    errors.push(PolicyError::whole(&dir.join(format!("{team}.yaml")), format!("dictionary: {e}")))
                }
            }
        }
        if !errors.is_empty() {
            return Err(PolicyErrors(errors));
        }
        let mut sources = set.sources().to_vec();
        sources.extend(shadow.catalog_files.iter().cloned());
        Ok(Policies { set, dictionaries, catalog, sources })
    }

    pub fn team(&self, name: &str) -> Option<&Arc<TeamPolicy>> {
        self.set.team(name)
    }

    /// The team's dictionary, when it has terms.
    pub fn dictionary(&self, team: &str) -> Option<&Dictionary> {
        self.dictionaries.get(team)
    }

    /// The organisation's catalog of AI apps.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn set(&self) -> &PolicySet {
        &self.set
    }
}

/// A catalog file's problem as a policy error: its file, line if known.
fn catalog_error(e: MonitorError) -> PolicyError {
    match e {
        MonitorError::ReadCatalog { path, source } => {
            PolicyError::whole(&path, format!("cannot read catalog file: {source}"))
        }
        MonitorError::Catalog(CatalogError::Parse { origin, source }) => {
            PolicyError::from_yaml(Path::new(&origin), &source)
        }
        MonitorError::Catalog(e) => {
            let origin = match &e {
                CatalogError::Entry { origin, .. }
                | CatalogError::Conflict { origin, .. }
                | CatalogError::Document { origin, .. }
                | CatalogError::Parse { origin, .. } => origin.clone(),
            };
            let text = e.to_string();
            let reason = text.strip_prefix(&format!("{origin}: ")).unwrap_or(&text).to_string();
            PolicyError::whole(Path::new(&origin), reason)
        }
        other => PolicyError::whole(Path::new("shadow.catalog_files"), other.to_string()),
    }
}

/// The outcome of the latest load, for `/readyz`.
struct Status {
    /// When the set now deciding was loaded.
    loaded_at: SystemTime,
    /// The latest load's errors, when it failed (cleared by a success).
    failed: Option<(SystemTime, Vec<String>)>,
}

/// The policy set now deciding, swapped whole by each successful reload.
pub struct LivePolicies {
    dir: PathBuf,
    shadow: ShadowConfig,
    current: RwLock<Arc<Policies>>,
    status: Mutex<Status>,
    /// One load at a time (SIGHUP and the watcher share the task, tests
    /// may call [`LivePolicies::reload`] too).
    loading: Mutex<()>,
    /// Teams callers are mapped to, to warn about those without a policy.
    expected_teams: Vec<String>,
}

impl LivePolicies {
    /// The first load, at start-up: sluice does not start without a valid set.
    pub fn start(dir: &Path, shadow: &ShadowConfig, expected_teams: Vec<String>) -> Result<LivePolicies, PolicyErrors> {
        let policies = match Policies::load(dir, shadow) {
            Ok(policies) => policies,
            Err(errors) => {
                metrics::counter!(telemetry::POLICY_LOADS, "result" => "error").increment(1);
                return Err(errors);
            }
        };
        let live = LivePolicies {
            dir: dir.to_path_buf(),
            shadow: shadow.clone(),
            current: RwLock::new(Arc::new(policies)),
            status: Mutex::new(Status { loaded_at: SystemTime::now(), failed: None }),
            loading: Mutex::new(()),
            expected_teams,
        };
        live.loaded(&live.current());
        Ok(live)
    }

    /// The set to decide a request under; hold it for the whole request.
    pub fn current(&self) -> Arc<Policies> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Load the files again and, if they are valid, decide every new
    /// request under them. On errors the set now deciding stays.
    pub fn reload(&self) -> Result<Arc<Policies>, PolicyErrors> {
        let _one = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        self.install(Policies::load(&self.dir, &self.shadow))
    }

    /// Swap in a loaded set, or record why there is none.
    fn install(&self, loaded: Result<Policies, PolicyErrors>) -> Result<Arc<Policies>, PolicyErrors> {
        match loaded {
            Ok(policies) => {
                let policies = Arc::new(policies);
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = policies.clone();
                let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
                *status = Status { loaded_at: SystemTime::now(), failed: None };
                drop(status);
                self.loaded(&policies);
                tracing::info!(teams = policies.set.len(), "policies reloaded");
                Ok(policies)
            }
            Err(errors) => {
                metrics::counter!(telemetry::POLICY_LOADS, "result" => "error").increment(1);
                metrics::gauge!(telemetry::POLICY_LAST_RELOAD_SUCCESSFUL).set(0.0);
                for e in &errors.0 {
                    tracing::error!(file = %e.file.display(), line = e.line, column = e.column, reason = %e.reason,
                        "policy reload refused: still deciding under the policies loaded before");
                }
                let lines = errors.0.iter().map(ToString::to_string).collect();
                self.status.lock().unwrap_or_else(|e| e.into_inner()).failed = Some((SystemTime::now(), lines));
                Err(errors)
            }
        }
    }

    /// Metrics and warnings for a set that was just put in place.
    fn loaded(&self, policies: &Policies) {
        metrics::counter!(telemetry::POLICY_LOADS, "result" => "ok").increment(1);
        metrics::gauge!(telemetry::POLICY_TEAMS).set(policies.set.len() as f64);
        metrics::gauge!(telemetry::POLICY_LAST_RELOAD_SUCCESSFUL).set(1.0);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        metrics::gauge!(telemetry::POLICY_LAST_RELOAD_SUCCESS_TIMESTAMP).set(now);
        for team in &self.expected_teams {
            if policies.team(team).is_none() {
                tracing::warn!(team = %team, "team has no policy file; its requests will be refused");
            }
        }
    }

    /// The `/readyz` detail: when the deciding set was loaded, and the
    /// errors of the latest reload if it failed.
    pub fn status_detail(&self) -> String {
        let status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let teams = self.current().set.len();
        let mut out = format!("policies: {teams} teams, loaded {}\n", rfc3339(status.loaded_at));
        if let Some((at, errors)) = &status.failed {
            out.push_str(&format!(
                "policies: the reload at {} failed; still deciding under the policies loaded before \
                 (sluice stays ready). {} error(s):\n",
                rfc3339(*at),
                errors.len()
            ));
            for e in errors {
                out.push_str(&format!("  {e}\n"));
            }
        }
        out
    }

    /// What the watcher compares: every file of the policy directory and
    /// of `profiles/` (hidden ones left out), the files the deciding set
    /// was read from (dictionaries elsewhere), and the catalog files.
    fn fingerprint(&self) -> Fingerprint {
        let mut paths: Vec<PathBuf> = Vec::new();
        for folder in [self.dir.clone(), self.dir.join(super::org::PROFILES)] {
            let Ok(entries) = std::fs::read_dir(&folder) else { continue };
            for entry in entries.flatten() {
                let hidden = entry.file_name().to_str().is_none_or(|n| n.starts_with('.'));
                if !hidden && entry.file_type().is_ok_and(|t| !t.is_dir()) {
                    paths.push(entry.path());
                }
            }
        }
        paths.extend(self.current().sources.iter().cloned());
        paths.extend(self.shadow.catalog_files.iter().cloned());
        paths.sort();
        paths.dedup();
        Fingerprint(paths.into_iter().map(|p| (stamp(&p), p)).collect())
    }

    /// Reload on SIGHUP and whenever the watched files change, until
    /// `stop`. The SIGHUP handler is in place when this returns (without
    /// one, SIGHUP would end the process).
    pub fn watch(self: &Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        #[cfg(unix)]
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(signal) => Some(signal),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; policies reload only when their files change");
                None
            }
        };
        let live = self.clone();
        tokio::spawn(async move {
            let mut seen = live.fingerprint();
            let mut tick = tokio::time::interval(POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                #[cfg(unix)]
                let hup = async {
                    match hangup.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let hup = std::future::pending::<Option<()>>();
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = hup => {
                        tracing::info!("SIGHUP: reloading policies");
                        seen = live.fingerprint();
                        let this = live.clone();
                        let _ = tokio::task::spawn_blocking(move || this.reload()).await;
                    }
                    _ = tick.tick() => {
                        let now = live.fingerprint();
                        if now == seen {
                            continue;
                        }
                        let settled = live.settle(now).await;
                        let this = live.clone();
                        let at = settled.clone();
                        // A load that saw the files move under it is
                        // dropped; `seen` stays behind so the next tick
                        // tries again.
                        let done = tokio::task::spawn_blocking(move || this.reload_if_unchanged(&at)).await;
                        if done.unwrap_or(true) {
                            seen = settled;
                        }
                    }
                }
            }
        })
    }

    /// Wait until the files stay unchanged for [`SETTLE`].
    async fn settle(&self, mut now: Fingerprint) -> Fingerprint {
        loop {
            tokio::time::sleep(SETTLE).await;
            let again = self.fingerprint();
            if again == now {
                return now;
            }
            now = again;
        }
    }

    /// Load, and put the result in place only if the files are still as
    /// `before` once read. False when they changed meanwhile.
    fn reload_if_unchanged(&self, before: &Fingerprint) -> bool {
        let _one = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        let loaded = Policies::load(&self.dir, &self.shadow);
        if self.fingerprint() != *before {
            return false;
        }
        let _ = self.install(loaded);
        true
    }
}

/// Size, modification time and inode of each watched file (`None` when it
/// is missing): a rename over a file changes its inode even when size and
/// time match.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Fingerprint(Vec<(Option<Stamp>, PathBuf)>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: SystemTime,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp { len: meta.len(), modified: meta.modified().ok()?, inode })
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}
