//! Budgets and rate limits: the counters behind a team policy's `limits:`
//! (`policy::limits`), per team and per user, in calendar windows (the UTC
//! minute, day and month, see [`window`]).
//!
//! Limits meter what would leave for a cloud provider: a request whose
//! policy decision is `cloud` or `redact` is **admitted** first
//! ([`Limiter::admit`]): one atomic step that checks every counter of the
//! team and the user against its limit and, only if all are below,
//! reserves one request in each per-minute counter. Tokens and cost are
//! **settled** when the answer's usage is known ([`Limiter::settle`], at
//! record time), so requests already in flight when a token or USD budget
//! runs out still finish: a budget can be overshot by what they use.
//! Requests the policy keeps local or blocks are neither limited nor
//! counted: they spend nothing at a provider, and the local tier has its
//! own queue bounds.
//!
//! The counters live in one of two stores: embedded ([`embedded`], sled in
//! `limits.dir`) for a single instance, or Redis ([`redis`]) shared by
//! several; while Redis is down, requests are refused or counted in this
//! instance's memory (`limits.on_store_error`).

mod embedded;
mod redis;
mod window;

pub use redis::{RedisError, RedisUrl};
pub use window::{CounterKey, Window};

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use embedded::{Admit, Embedded, Item};
use redis::Redis;
use sha2::{Digest, Sha256};

use crate::config::{LimitsConfig, OnStoreError};
use crate::policy::limits::{Budget, Kind, Limits};
use crate::telemetry;

/// The file in `limits.dir` holding the token of the admin listener's
/// `/budget` endpoint, made anew (0600) each time sluice starts serving.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// How often usage gauges are refreshed and ended windows forgotten.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// Answers whose usage may wait for the next Redis batch.
const USAGE_QUEUE: usize = 4096;
/// Most answers' usage added to Redis in one round trip.
const MAX_BATCH: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    #[error("limits store in {dir}: {source}")]
    Open { dir: PathBuf, source: sled::Error },
    #[error("limits directory {dir}: {source}")]
    Dir { dir: PathBuf, source: std::io::Error },
    #[error("limits.store: {0}")]
    Url(String),
    #[error("limits store: {0}")]
    Redis(#[from] RedisError),
}

/// Whose counter: the team's, or one of its users'.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Team,
    User(String),
}

impl Scope {
    pub fn as_str(&self) -> &'static str {
        match self {
            Scope::Team => "team",
            Scope::User(_) => "user",
        }
    }
}

/// A limit a request met.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Over {
    pub kind: Kind,
    pub team: String,
    pub scope: Scope,
    pub used: u64,
    pub limit: u64,
    /// Unix seconds when the window resets.
    pub resets: u64,
    /// Seconds until then, for `retry-after`.
    pub retry_after: u64,
}

impl Over {
    /// For the client and the record: whose budget, used and limit, when
    /// it resets. Never prompt content.
    pub fn explain(&self) -> String {
        let who = match &self.scope {
            Scope::Team => format!("Team `{}`", self.team),
            Scope::User(user) => format!("User `{user}` of team `{}`", self.team),
        };
        let (used, limit) = match self.kind {
            Kind::Usd => (dollars(self.used), format!("{} per month", dollars(self.limit))),
            Kind::Tokens => (self.used.to_string(), format!("{} tokens per day", self.limit)),
            Kind::Requests => (self.used.to_string(), format!("{} requests per minute", self.limit)),
        };
        let resets = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(self.resets));
        format!("{who} has used {used} of its {limit} ({}); it resets at {resets}", self.kind.name())
    }
}

fn dollars(micro: u64) -> String {
    format!("${:.2}", micro as f64 / 1e6)
}

/// Why a request may not go on.
#[derive(Debug)]
pub enum Refused {
    Over(Over),
    /// The shared store is down and `on_store_error` is `closed`.
    StoreDown(String),
}

/// What an admitted request is to be charged once its usage is known.
#[derive(Debug)]
pub struct Charge {
    team: String,
    /// Token and cost counters: (key, expires).
    counters: Vec<(CounterKey, u64)>,
    /// Admitted by the local fallback while Redis was down.
    fallback: bool,
}

/// (counter key, amount, expires): usage to add to one counter.
type Usage = (String, u64, u64);

enum Store {
    Embedded(Embedded),
    Redis {
        // Boxed: the variants differ in size (clippy), though Store lives once.
        redis: Box<Redis>,
        fallback: Embedded,
        on_error: OnStoreError,
        /// Usage waiting to be added in the next batch.
        usage: Option<tokio::sync::mpsc::Sender<Vec<Usage>>>,
    },
}

struct Inner {
    store: Store,
    /// Teams admitted since start, with their team budget: their usage
    /// gauges are refreshed as windows roll over.
    watched: Mutex<BTreeMap<String, Budget>>,
    admin_token: Option<[u8; 32]>,
    /// Answers queued for Redis and not yet added.
    queued: AtomicUsize,
}

/// The counters, shared by the request path, the admin listener and the
/// upkeep task.
#[derive(Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
}

impl Limiter {
    /// Open the configured store. `serving`: also make the admin token
    /// that lets `sluice budget status` read a running sluice's counters,
    /// and start the upkeep task.
    pub fn open(cfg: &LimitsConfig, serving: bool) -> Result<Limiter, LimitsError> {
        let dir_error = |source| LimitsError::Dir { dir: cfg.dir.clone(), source };
        let runtime = tokio::runtime::Handle::try_current().ok();
        let mut batches = None;
        let store = if cfg.store == "embedded" {
            crate::private_dir::create(&cfg.dir).map_err(dir_error)?;
            let path = cfg.dir.join("counters");
            let store =
                Embedded::open(&path, now()).map_err(|source| LimitsError::Open { dir: path.clone(), source })?;
            crate::private_dir::tighten_tree(&cfg.dir).map_err(dir_error)?;
            metrics::gauge!(telemetry::LIMITS_STORE_UP, "store" => "embedded").set(1.0);
            Store::Embedded(store)
        } else {
            let url = RedisUrl::parse(&cfg.store).map_err(LimitsError::Url)?;
            let redis = Box::new(Redis::new(url, Duration::from_millis(cfg.redis_timeout_ms)));
            let usage = runtime.as_ref().map(|_| {
                let (queue, receiver) = tokio::sync::mpsc::channel(USAGE_QUEUE);
                batches = Some(receiver);
                queue
            });
            Store::Redis { redis, fallback: Embedded::memory(), on_error: cfg.on_store_error, usage }
        };
        let admin_token = if serving {
            crate::private_dir::create(&cfg.dir).map_err(dir_error)?;
            Some(write_admin_token(&cfg.dir).map_err(dir_error)?)
        } else {
            None
        };
        let limiter = Limiter {
            inner: Arc::new(Inner {
                store,
                watched: Mutex::new(BTreeMap::new()),
                admin_token,
                queued: AtomicUsize::new(0),
            }),
        };
        if let (Some(runtime), Some(receiver)) = (&runtime, batches) {
            runtime.spawn(limiter.clone().add_batches(receiver));
        }
        if serving {
            if let Some(runtime) = &runtime {
                let upkeep = limiter.clone();
                runtime.spawn(async move {
                    loop {
                        tokio::time::sleep(UPKEEP_EVERY).await;
                        upkeep.upkeep().await;
                    }
                });
            }
        }
        Ok(limiter)
    }

    /// Check the team's and the user's counters before dispatch and
    /// reserve this request in the per-minute ones. `Ok(None)`: the team
    /// has no limits.
    pub async fn admit(&self, team: &str, user: &str, limits: &Limits) -> Result<Option<Charge>, Refused> {
        if limits.is_empty() {
            return Ok(None);
        }
        let now = now();
        self.watch(team, &limits.team);
        let mut keys: Vec<(CounterKey, u64, Window)> = Vec::new();
        for (who, budget) in [(None, &limits.team), (Some(user), &limits.per_user)] {
            for kind in Kind::ALL {
                if let Some(limit) = budget.get(kind) {
                    let window = Window::of(kind, now);
                    let key =
                        CounterKey { kind, window: window.id, team: team.to_string(), user: who.map(str::to_string) };
                    keys.push((key, limit, window));
                }
            }
        }
        let items: Vec<Item> = keys
            .iter()
            .map(|(key, limit, window)| Item {
                key: key.encode(),
                limit: *limit,
                reserve: key.kind == Kind::Requests,
                expires: window.end,
            })
            .collect();
        let (outcome, fallback) = match &self.inner.store {
            Store::Embedded(store) => (store.admit(team, &items, now), false),
            Store::Redis { redis, fallback, on_error, .. } => match redis.admit(&items).await {
                Ok(outcome) => (outcome, false),
                Err(e) => match on_error {
                    OnStoreError::Closed => {
                        return Err(Refused::StoreDown(format!("{}: {e}", redis.url().shown())));
                    }
                    OnStoreError::Open => (fallback.admit(team, &items, now), true),
                },
            },
        };
        match outcome {
            Admit::Admitted(values) => {
                for ((key, _, _), value) in keys.iter().zip(&values) {
                    if key.user.is_none() {
                        set_used_gauge(team, key.kind, *value);
                    }
                }
                let counters = keys
                    .into_iter()
                    .filter(|(key, _, _)| key.kind != Kind::Requests)
                    .map(|(key, _, window)| (key, window.end))
                    .collect();
                Ok(Some(Charge { team: team.to_string(), counters, fallback }))
            }
            Admit::Over { index, used } => {
                let (key, limit, window) = &keys[index];
                let scope = match &key.user {
                    None => Scope::Team,
                    Some(user) => Scope::User(user.clone()),
                };
                Err(Refused::Over(Over {
                    kind: key.kind,
                    team: team.to_string(),
                    scope,
                    used,
                    limit: *limit,
                    resets: window.end,
                    retry_after: window.seconds_left(now),
                }))
            }
        }
    }

    /// Add an admitted request's tokens and cost (millionths of a USD),
    /// once the answer is done. Redis is written off the request path.
    pub fn settle(&self, charge: Charge, tokens: u64, micro_usd: u64) {
        let Charge { team, counters, fallback: by_fallback } = charge;
        let items: Vec<Usage> = counters
            .iter()
            .filter_map(|(key, expires)| {
                let amount = match key.kind {
                    Kind::Tokens => tokens,
                    Kind::Usd => micro_usd,
                    Kind::Requests => 0,
                };
                (amount > 0).then(|| (key.encode(), amount, *expires))
            })
            .collect();
        if items.is_empty() {
            return;
        }
        match &self.inner.store {
            Store::Embedded(store) => set_used_gauges(&items, &store.add(&team, &items, now())),
            Store::Redis { fallback, .. } if by_fallback => {
                set_used_gauges(&items, &fallback.add(&team, &items, now()))
            }
            Store::Redis { usage, .. } => {
                // Queued for the next batch; spawned on its own only when
                // the queue is full (or there is none).
                self.inner.queued.fetch_add(1, Ordering::AcqRel);
                let items = match usage {
                    Some(queue) => match queue.try_send(items) {
                        Ok(()) => return,
                        Err(refused) => refused.into_inner(),
                    },
                    None => items,
                };
                self.inner.queued.fetch_sub(1, Ordering::AcqRel);
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    tracing::warn!("limits: no runtime to add usage to redis; this request's usage is not counted");
                    return;
                };
                let this = self.clone();
                runtime.spawn(async move { this.add_to_redis(items).await });
            }
        }
    }

    /// Add usage to Redis; while it is down, to this instance's memory
    /// (`open`) or nowhere (`closed`, logged).
    async fn add_to_redis(&self, items: Vec<Usage>) {
        let Store::Redis { redis, fallback, on_error, .. } = &self.inner.store else {
            return;
        };
        match redis.add(&items).await {
            Ok(values) => set_used_gauges(&items, &values),
            Err(e) if *on_error == OnStoreError::Open => {
                tracing::warn!(error = %e, "limits: usage counted in this instance's memory only");
                for item in &items {
                    let team = CounterKey::decode(&item.0).map(|k| k.team).unwrap_or_default();
                    fallback.add(&team, std::slice::from_ref(item), now());
                }
            }
            Err(e) => tracing::warn!(error = %e, "limits: usage could not be counted"),
        }
    }

    /// Add queued usage to Redis, many answers' in one round trip: what
    /// arrived while the previous batch was on its way, summed per counter.
    async fn add_batches(self, mut queue: tokio::sync::mpsc::Receiver<Vec<Usage>>) {
        while let Some(first) = queue.recv().await {
            let mut batch: BTreeMap<String, (u64, u64)> = BTreeMap::new();
            let mut merge = |items: Vec<Usage>| {
                for (key, amount, expires) in items {
                    let entry = batch.entry(key).or_insert((0, expires));
                    entry.0 = entry.0.saturating_add(amount);
                }
            };
            merge(first);
            let mut answers = 1;
            while answers < MAX_BATCH {
                match queue.try_recv() {
                    Ok(items) => merge(items),
                    Err(_) => break,
                }
                answers += 1;
            }
            let items = batch.into_iter().map(|(key, (amount, expires))| (key, amount, expires)).collect();
            self.add_to_redis(items).await;
            self.inner.queued.fetch_sub(answers, Ordering::AcqRel);
        }
    }

    /// A line for `/readyz` while the shared store is down.
    pub fn status_line(&self) -> Option<String> {
        let Store::Redis { redis, on_error, .. } = &self.inner.store else {
            return None;
        };
        let (since, error) = redis.problem()?;
        let mode = match on_error {
            OnStoreError::Closed => "refusing requests of teams with limits",
            OnStoreError::Open => "counting in this instance's memory",
        };
        Some(format!(
            "limits store {} unreachable since {} ({mode}): {error}",
            redis.url().shown(),
            humantime::format_rfc3339_seconds(since)
        ))
    }

    /// Whether `authorization` carries the admin token (`Bearer ...`).
    pub fn admin_token_accepts(&self, authorization: Option<&http::HeaderValue>) -> bool {
        let (Some(expected), Some(given)) = (self.inner.admin_token, authorization) else {
            return false;
        };
        let Some(token) = given.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) else {
            return false;
        };
        // Comparing digests: how long the comparison takes says nothing
        // about the token.
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        digest == expected
    }

    /// The usage of each team's budgets (and of each user with counters
    /// in the current windows) against its limits.
    pub async fn report(&self, teams: &[(String, Limits)], only: Option<&str>) -> Result<Report, LimitsError> {
        let now = now();
        let mut rows = Vec::new();
        for (team, limits) in teams.iter().filter(|(t, l)| only.is_none_or(|o| o == t) && !l.is_empty()) {
            let mut wanted: Vec<(CounterKey, u64)> = Vec::new();
            for kind in Kind::ALL {
                let window = Window::of(kind, now).id;
                if let Some(limit) = limits.team.get(kind) {
                    wanted.push((CounterKey { kind, window, team: team.clone(), user: None }, limit));
                }
                if let Some(limit) = limits.per_user.get(kind) {
                    for user in self.users(team, kind, window, now).await? {
                        wanted.push((CounterKey { kind, window, team: team.clone(), user: Some(user) }, limit));
                    }
                }
            }
            let keys: Vec<String> = wanted.iter().map(|(k, _)| k.encode()).collect();
            let values = self.values(team, &keys, now).await?;
            for ((key, limit), used) in wanted.into_iter().zip(values) {
                rows.push(Row {
                    budget: key.kind.name().to_string(),
                    unit: key.kind.unit().to_string(),
                    resets_unix: Window::of(key.kind, now).end,
                    on_limit: limits.on_limit.as_str().to_string(),
                    team: key.team,
                    user: key.user,
                    used,
                    limit,
                });
            }
        }
        rows.sort_by(|a, b| (&a.team, &a.user, &a.budget).cmp(&(&b.team, &b.user, &b.budget)));
        Ok(Report { store: self.store_name(), now_unix: now, rows })
    }

    fn store_name(&self) -> String {
        match &self.inner.store {
            Store::Embedded(_) => "embedded".into(),
            Store::Redis { redis, .. } => redis.url().shown(),
        }
    }

    /// Users of `team` with a live counter of `kind` in `window`.
    async fn users(&self, team: &str, kind: Kind, window: u64, now: u64) -> Result<Vec<String>, LimitsError> {
        let prefix = CounterKey { kind, window, team: team.to_string(), user: Some(String::new()) }.encode();
        let keys = match &self.inner.store {
            Store::Embedded(store) => store.entries(now).into_iter().map(|(k, _)| k).collect(),
            // Team names have no glob characters; the prefix is literal.
            Store::Redis { redis, .. } => redis.scan(&format!("{prefix}*")).await?,
        };
        let mut users: Vec<String> =
            keys.into_iter().filter_map(|k| k.strip_prefix(&prefix).map(String::from)).collect();
        users.sort();
        users.dedup();
        Ok(users)
    }

    async fn values(&self, team: &str, keys: &[String], now: u64) -> Result<Vec<u64>, LimitsError> {
        match &self.inner.store {
            Store::Embedded(store) => Ok(keys.iter().map(|k| store.get(team, k, now)).collect()),
            Store::Redis { redis, .. } => Ok(redis.get(keys).await?),
        }
    }

    /// Wait (up to `patience`) until usage queued for Redis is added: at
    /// shutdown, after the last answers.
    pub async fn drain(&self, patience: Duration) {
        let deadline = tokio::time::Instant::now() + patience;
        while self.inner.queued.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Make the embedded counters durable (at shutdown).
    pub fn flush(&self) -> Result<(), LimitsError> {
        let store = match &self.inner.store {
            Store::Embedded(store) => store,
            Store::Redis { .. } => return Ok(()),
        };
        store.flush().map_err(|source| LimitsError::Open { dir: PathBuf::from("counters"), source })
    }

    fn watch(&self, team: &str, budget: &Budget) {
        let mut watched = self.inner.watched.lock().unwrap_or_else(PoisonError::into_inner);
        if watched.get(team) != Some(budget) {
            for kind in Kind::ALL {
                if let Some(limit) = budget.get(kind) {
                    metrics::gauge!(telemetry::BUDGET_LIMIT, "team" => team.to_string(), "budget" => kind.name())
                        .set(gauge_value(kind, limit));
                }
            }
            watched.insert(team.to_string(), *budget);
        }
    }

    /// Refresh the usage gauges of watched teams (a window that rolled
    /// over shows 0) and forget ended windows.
    async fn upkeep(&self) {
        let now = now();
        let watched: Vec<(String, Budget)> = {
            let watched = self.inner.watched.lock().unwrap_or_else(PoisonError::into_inner);
            watched.iter().map(|(t, b)| (t.clone(), *b)).collect()
        };
        let mut keys = Vec::new();
        for (team, budget) in &watched {
            for kind in Kind::ALL.into_iter().filter(|k| budget.get(*k).is_some()) {
                let window = Window::of(kind, now).id;
                keys.push((team.clone(), kind, CounterKey { kind, window, team: team.clone(), user: None }.encode()));
            }
        }
        let values: Option<Vec<u64>> = match &self.inner.store {
            Store::Embedded(store) => {
                store.prune(now);
                Some(keys.iter().map(|(team, _, key)| store.get(team, key, now)).collect())
            }
            Store::Redis { redis, fallback, .. } => {
                fallback.prune(now);
                let names: Vec<String> = keys.iter().map(|(_, _, k)| k.clone()).collect();
                redis.get(&names).await.ok()
            }
        };
        for ((team, kind, _), value) in keys.iter().zip(values.unwrap_or_default()) {
            set_used_gauge(team, *kind, value);
        }
    }
}

/// The team's own counters among `items`, with their new values.
fn set_used_gauges(items: &[Usage], values: &[u64]) {
    for ((key, _, _), value) in items.iter().zip(values) {
        if let Some(CounterKey { team, kind, user: None, .. }) = CounterKey::decode(key) {
            set_used_gauge(&team, kind, *value);
        }
    }
}

fn set_used_gauge(team: &str, kind: Kind, value: u64) {
    metrics::gauge!(telemetry::BUDGET_USED, "team" => team.to_string(), "budget" => kind.name())
        .set(gauge_value(kind, value));
}

/// Gauges show dollars, not the counters' millionths.
fn gauge_value(kind: Kind, value: u64) -> f64 {
    match kind {
        Kind::Usd => value as f64 / 1e6,
        _ => value as f64,
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// What `sluice budget status` shows.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// `embedded`, or the Redis URL without its password.
    pub store: String,
    pub now_unix: u64,
    pub rows: Vec<Row>,
}

/// One budget of a team or of one user, in its current window.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Row {
    pub team: String,
    /// `None` for the team's own budget.
    pub user: Option<String>,
    pub budget: String,
    /// `requests`, `tokens` or `micro_usd` (millionths of a dollar).
    pub unit: String,
    pub used: u64,
    pub limit: u64,
    pub resets_unix: u64,
    pub on_limit: String,
}

/// A fresh admin token in `dir/admin.token` (0600, replaced atomically);
/// its digest is what the admin listener keeps.
fn write_admin_token(dir: &Path) -> std::io::Result<[u8; 32]> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let token = hex::encode(bytes);
    let tmp = dir.join(format!("{ADMIN_TOKEN_FILE}.tmp"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, crate::private_dir::FILE_MODE);
    let mut file = options.open(&tmp)?;
    file.write_all(token.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(ADMIN_TOKEN_FILE))?;
    Ok(Sha256::digest(token.as_bytes()).into())
}

/// The admin token a running sluice wrote into `dir`, if any.
pub fn read_admin_token(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join(ADMIN_TOKEN_FILE)).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::limits::OnLimit;

    fn limits(team_rpm: Option<u64>, user_tokens: Option<u64>) -> Limits {
        Limits {
            team: Budget { requests_per_minute: team_rpm, ..Budget::default() },
            per_user: Budget { tokens_per_day: user_tokens, ..Budget::default() },
            on_limit: OnLimit::Block,
        }
    }

    fn embedded(dir: &Path) -> LimitsConfig {
        LimitsConfig { dir: dir.to_path_buf(), ..LimitsConfig::default() }
    }

    #[tokio::test]
    async fn admits_up_to_the_limit_then_says_which_and_when() {
        let dir = tempfile::tempdir().unwrap();
        let limiter = Limiter::open(&embedded(dir.path()), false).unwrap();
        let l = limits(Some(2), Some(100));
        for _ in 0..2 {
            assert!(limiter.admit("payments", "alice", &l).await.unwrap().is_some());
        }
        let Err(Refused::Over(over)) = limiter.admit("payments", "bob", &l).await else {
            panic!("third request admitted")
        };
        assert_eq!((over.kind, over.scope.clone(), over.used, over.limit), (Kind::Requests, Scope::Team, 2, 2));
        assert!((1..=60).contains(&over.retry_after));
        assert!(
            over.explain().starts_with("Team `payments` has used 2 of its 2 requests per minute"),
            "{}",
            over.explain()
        );
        assert!(limiter.admit("payments", "alice", &Limits::default()).await.unwrap().is_none(), "no limits");
    }

    #[tokio::test]
    async fn usage_settles_into_the_users_token_budget() {
        let dir = tempfile::tempdir().unwrap();
        let limiter = Limiter::open(&embedded(dir.path()), false).unwrap();
        let l = limits(None, Some(100));
        let charge = limiter.admit("payments", "alice", &l).await.unwrap().unwrap();
        limiter.settle(charge, 150, 0);
        let Err(Refused::Over(over)) = limiter.admit("payments", "alice", &l).await else { panic!("over budget") };
        assert_eq!((over.kind, over.scope, over.used), (Kind::Tokens, Scope::User("alice".into()), 150));
        // Another user of the team has their own budget.
        assert!(limiter.admit("payments", "bob", &l).await.is_ok());
        let report = limiter.report(&[("payments".into(), l)], None).await.unwrap();
        let users: Vec<(Option<&str>, u64)> = report.rows.iter().map(|r| (r.user.as_deref(), r.used)).collect();
        assert_eq!(users, [(Some("alice"), 150)], "bob has no counter until he is charged");
    }

    #[test]
    fn admin_token_is_private_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let limiter = Limiter::open(&embedded(dir.path()), true).unwrap();
        let token = read_admin_token(dir.path()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(ADMIN_TOKEN_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let header = |v: &str| http::HeaderValue::from_str(v).unwrap();
        assert!(limiter.admin_token_accepts(Some(&header(&format!("Bearer {token}")))));
        assert!(!limiter.admin_token_accepts(Some(&header("Bearer nope"))));
        assert!(!limiter.admin_token_accepts(None));
    }
}
