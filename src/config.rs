//! `sluice.yaml`: listeners, policies, audit, identities, providers, upstream.
//!
//! Every field has a default, so an absent file (or an empty one) gives the
//! zero-config quick start: gateway on 127.0.0.1:8080, admin on
//! 127.0.0.1:9090, policies from `./policies`, audit log in `./data/audit`,
//! and anonymous callers mapped to the `default` team.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}:{column}: {reason}")]
    Parse { path: PathBuf, line: usize, column: usize, reason: String },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub gateway: GatewayConfig,
    pub admin: AdminConfig,
    pub policies_dir: PathBuf,
    pub audit: AuditConfig,
    pub identity: IdentityConfig,
    pub providers: Providers,
    pub upstream: UpstreamConfig,
    pub local: LocalConfig,
    pub proxy: ProxyConfig,
    pub ca: CaConfig,
    /// USD per million tokens, by model name or name prefix; policies can
    /// route on the estimated cost of a call.
    pub prices: BTreeMap<String, ModelPrice>,
    pub sessions: SessionsConfig,
    pub inspect: InspectConfig,
    pub shadow: ShadowConfig,
    /// Where audit records are shipped (Splunk HEC); nothing when absent.
    pub export: ExportConfig,
    /// Where budget and rate-limit counters live (the limits themselves
    /// are in each team's policy file).
    pub limits: LimitsConfig,
}

/// The counters behind the `limits:` of team policies.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// `embedded` (sled, in `dir`), or `redis://[user:password@]host:port/db`
    /// for counters shared by several sluice instances.
    pub store: String,
    /// The embedded counters, and `admin.token`, which lets
    /// `sluice budget status` read them from a running sluice.
    pub dir: PathBuf,
    /// When the Redis store cannot be reached: `closed` refuses the
    /// requests of teams with limits (503); `open` counts them in this
    /// instance's memory, so each instance enforces the limits on its own.
    pub on_store_error: OnStoreError,
    /// Longest wait for Redis (connect, or one command) before it counts
    /// as down.
    pub redis_timeout_ms: u64,
}

/// What a request meets while the shared counter store is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStoreError {
    Closed,
    Open,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            store: "embedded".into(),
            dir: PathBuf::from("data/limits"),
            on_store_error: OnStoreError::Closed,
            redis_timeout_ms: 250,
        }
    }
}

/// Destinations the audit log is exported to in the background.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExportConfig {
    pub splunk_hec: Option<SplunkHecConfig>,
}

/// Splunk HTTP Event Collector: the exporter reads the audit log from a
/// durable cursor and posts batches of events (`export::splunk`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplunkHecConfig {
    /// Base URL of the collector (`https://splunk.example:8088`); the
    /// exporter appends `/services/collector/event`.
    pub url: String,
    /// Environment variable holding the HEC token (never the token itself,
    /// so the file can be shared).
    pub token_env: String,
    /// Empty: the token's default index.
    #[serde(default)]
    pub index: String,
    /// HEC `source`; empty: `sluice`.
    #[serde(default)]
    pub source: String,
    /// Put before the sourcetype suffix (`decision`, `proxy`, `shadow`);
    /// default `sluice:`, which the shipped Splunk app expects.
    #[serde(default)]
    pub sourcetype_prefix: Option<String>,
    #[serde(default = "default_hec_batch_events")]
    pub batch_max_events: usize,
    #[serde(default = "default_hec_batch_bytes")]
    pub batch_max_bytes: usize,
    /// How long a partial batch may wait for more records.
    #[serde(default = "default_hec_flush_ms")]
    pub flush_ms: u64,
    /// Indexer acknowledgement: advance only on acknowledged batches.
    #[serde(default)]
    pub ack: bool,
    /// PEM file with the CA of the collector's certificate, trusted on
    /// top of the webpki roots and `upstream.extra_ca_file`.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
}

fn default_hec_batch_events() -> usize {
    500
}

fn default_hec_batch_bytes() -> usize {
    1024 * 1024
}

fn default_hec_flush_ms() -> u64 {
    1000
}

impl SplunkHecConfig {
    /// The checks `Config::validate` runs; the error names the key.
    fn validate(&self) -> Result<(), String> {
        let uri: http::Uri = self.url.parse().map_err(|e| format!("url: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(format!("url must be an http(s) URL with a host, not `{}`", self.url));
        }
        if self.token_env.trim().is_empty() {
            return Err("token_env must name the environment variable holding the HEC token".into());
        }
        if self.batch_max_events == 0 || self.batch_max_bytes == 0 || self.flush_ms == 0 {
            return Err("batch_max_events, batch_max_bytes and flush_ms must be at least 1".into());
        }
        Ok(())
    }
}

/// The shadow-AI monitor: which AI services proxied traffic reaches.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShadowConfig {
    /// Attribute proxied traffic to AI apps. Off, every tunnel is recorded
    /// as before the monitor and no usage events are written.
    pub enabled: bool,
    /// Catalog files with the organisation's own entries (or overrides,
    /// marked `override: true`), added to the shipped catalog.
    pub catalog_files: Vec<PathBuf>,
    /// The company's accounts at each provider (`openai: [org-...]`,
    /// `anthropic: [<organization id>]`); an intercepted call on any other
    /// account is flagged as a personal account.
    pub company_accounts: BTreeMap<String, Vec<String>>,
    /// Record tunnels to hosts outside the catalog one by one as well
    /// (they are always counted in metrics).
    pub record_other_tunnels: bool,
    /// The per-deployment secret that keys API-key fingerprints; created
    /// (0600) on first start.
    pub fingerprint_key: PathBuf,
}

impl Default for ShadowConfig {
    fn default() -> Self {
        ShadowConfig {
            enabled: true,
            catalog_files: Vec::new(),
            company_accounts: BTreeMap::new(),
            record_other_tunnels: false,
            fingerprint_key: PathBuf::from("data/shadow/fingerprint.key"),
        }
    }
}

/// Settings of the detectors.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InspectConfig {
    /// ISO 3166 regions whose numbering plans read phone numbers written
    /// without a country code ("0151 1234567" is German only if DE is
    /// listed); numbers with a '+' are read in their own country's plan.
    pub phone_regions: Vec<String>,
}

impl Default for InspectConfig {
    fn default() -> Self {
        InspectConfig { phone_regions: crate::inspect::DEFAULT_PHONE_REGIONS.iter().map(|r| r.to_string()).collect() }
    }
}

impl InspectConfig {
    /// The phone region hint for `Detectors::with_phone_regions`; the
    /// codes were checked when the file was loaded.
    pub fn phone_regions(&self) -> crate::inspect::PhoneRegions {
        crate::inspect::PhoneRegions::new(&self.phone_regions).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

/// Memory of conversations kept local for sensitive content (`sticky_local`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// Conversations remembered; the oldest are forgotten first.
    pub capacity: usize,
    pub ttl_hours: u64,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig { capacity: 100_000, ttl_hours: 24 }
    }
}

/// Output tokens assumed for a cost estimate when the client sets no limit.
const ASSUMED_OUTPUT_TOKENS: u64 = 500;

impl Config {
    /// Estimated cost in USD of sending `prompt_tokens` to `model`, by the
    /// longest matching price entry; `None` for models without a price.
    pub fn estimated_cost_usd(&self, model: &str, prompt_tokens: u64, max_tokens: Option<u64>) -> Option<f64> {
        self.cost_usd(model, prompt_tokens, max_tokens.unwrap_or(ASSUMED_OUTPUT_TOKENS))
    }

    /// Cost in USD of `input` and `output` tokens on `model`, by the longest
    /// matching price entry; `None` for models without a price.
    pub fn cost_usd(&self, model: &str, input: u64, output: u64) -> Option<f64> {
        let price = &self.prices[self.price_name(model)?];
        Some((input as f64 * price.input_per_mtok + output as f64 * price.output_per_mtok) / 1e6)
    }

    /// The price entry a model falls under: the longest matching name.
    pub fn price_name(&self, model: &str) -> Option<&str> {
        self.prices
            .keys()
            .filter(|name| model.starts_with(name.as_str()))
            .max_by_key(|name| name.len())
            .map(String::as_str)
    }
}

/// List prices (USD per million tokens) shipped as defaults; override them
/// in `prices:` with the organisation's own rates.
fn default_prices() -> BTreeMap<String, ModelPrice> {
    let table: &[(&str, f64, f64)] = &[
        ("gpt-4o", 2.5, 10.0),
        ("gpt-4o-mini", 0.15, 0.6),
        ("gpt-4.1", 2.0, 8.0),
        ("gpt-4.1-mini", 0.4, 1.6),
        ("o3-mini", 1.1, 4.4),
        ("o3", 2.0, 8.0),
        ("claude-opus-4", 15.0, 75.0),
        ("claude-sonnet-4", 3.0, 15.0),
        ("claude-haiku-4", 1.0, 5.0),
        ("gemini-2.5-pro", 1.25, 10.0),
        ("gemini-2.5-flash", 0.3, 2.5),
    ];
    table
        .iter()
        .map(|&(name, input, output)| (name.to_string(), ModelPrice { input_per_mtok: input, output_per_mtok: output }))
        .collect()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// Request bodies above this are refused with 413 before parsing.
    pub max_body_bytes: usize,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_grace_ms: u64,
    /// Client connections open at once; further ones get 503 and are closed.
    pub max_connections: usize,
    /// Time from accepting a connection to its first byte, and for HTTP/2
    /// clients to the whole connection preface. The same limits apply to
    /// the admin listener.
    pub first_byte_timeout_ms: u64,
    /// Time a client gets to send an HTTP/1 request head, counted from the
    /// start of the connection or from the end of the previous response.
    pub header_read_timeout_ms: u64,
    /// A connection with no request in flight for this long is closed
    /// (HTTP/1 keep-alive and HTTP/2 alike).
    pub idle_timeout_ms: u64,
    /// HTTP/2 ping interval, and how long a ping may go unanswered before
    /// the connection is dropped as dead.
    pub http2_keepalive_interval_ms: u64,
    pub http2_keepalive_timeout_ms: u64,
    /// Longest silence between two chunks of a request body; here and on
    /// intercepted proxy requests.
    pub body_frame_timeout_ms: u64,
    /// Time allowed for a whole request body to arrive. A body that is too
    /// slow gets 408.
    pub body_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Client connections open at once on the admin listener; kept apart
    /// from the gateway's so a flood there cannot starve health probes.
    pub max_connections: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    pub dir: PathBuf,
    /// `strict` (default): a request is answered only once its record is
    /// fsync'd (group commit through a write-ahead log). `batched`: answered
    /// at once; a crash can lose the last ~200 ms of records.
    pub durability: crate::audit::Durability,
    /// Sign a checkpoint of the chain head once this many records were
    /// appended since the last one; 0: not by count.
    pub checkpoint_every_records: u64,
    /// ... or once this many seconds passed since the last one and the
    /// head moved; 0: not by time. Both 0: no periodic checkpoints (the
    /// retention cut is still signed).
    pub checkpoint_every_secs: u64,
    /// Also append every checkpoint to this file (fsync'd); best kept where
    /// whoever can write the audit directory cannot rewrite it.
    pub checkpoints_file: Option<PathBuf>,
    /// The name on checkpoints and their signatures; default
    /// `sluice/<host name>`.
    pub checkpoint_origin: Option<String>,
    /// Remove whole blocks of records older than this many days, after
    /// signing a checkpoint at the cut; absent: keep everything.
    pub retention_days: Option<u64>,
    /// Environment variable holding the prompt HMAC key (64 hex digits)
    /// instead of `<dir>/prompt.key`.
    pub prompt_key_env: Option<String>,
}

impl AuditConfig {
    /// `checkpoint_origin`, or `sluice/<host name>`.
    pub fn origin(&self) -> String {
        self.checkpoint_origin.clone().unwrap_or_else(crate::audit::keys::default_origin)
    }
}

/// Who is asking, in order of precedence: a sluice token, the user header
/// of a trusted authenticating proxy, the caller's network, the anonymous
/// team. `identity::IdentityTable` applies it.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// Team for callers nothing else identifies; `null` refuses them.
    pub anonymous_team: Option<String>,
    pub tokens: Vec<TokenEntry>,
    /// Source address ranges mapped to teams; the longest prefix wins.
    pub networks: Vec<NetworkEntry>,
    /// An authenticating proxy in front of sluice that names the user in a
    /// header; honoured only from its addresses.
    pub trusted_proxies: Option<TrustedProxies>,
}

/// `{ cidr: 10.20.0.0/16, team: payments }`: callers from this range are
/// the team's; the user is `user` when given, else the caller's address.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkEntry {
    pub cidr: String,
    pub team: String,
    #[serde(default)]
    pub user: Option<String>,
}

/// The headers an authenticating proxy sets, and where it connects from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedProxies {
    /// Addresses (CIDR blocks) the proxy connects from. The headers of
    /// anyone else are ignored, and never forwarded.
    pub from: Vec<String>,
    /// Names the user (e.g. `x-forwarded-user`).
    pub user_header: String,
    /// Names the team; without it, the team is the network's or the
    /// anonymous team.
    #[serde(default)]
    pub team_header: Option<String>,
}

/// A sluice token is stored only as its SHA-256 (`sluice token hash` prints it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub sha256: String,
    pub team: String,
    pub user: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Providers {
    pub openai: ProviderConfig,
    pub anthropic: ProviderConfig,
    pub gemini: ProviderConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub base_url: String,
    /// Name of the environment variable holding the provider API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Forward the client's own provider key when it is not a sluice token.
    #[serde(default)]
    pub pass_client_key: bool,
    /// Models listed by `GET /v1/models`.
    #[serde(default)]
    pub models: Vec<String>,
}

/// Which local tier answers `local` decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalBackendKind {
    /// The embedded mistral.rs engine.
    Embedded,
    /// An OpenAI-compatible server (vLLM, Ollama, llama.cpp server, LM Studio, LocalAI, Jan, mlx_lm.server).
    External,
    /// No local model: `local` decisions get 503 (and never go to the cloud).
    None,
}

/// Where the embedded engine runs. `cuda` never falls back: without a CUDA
/// build or a usable GPU, sluice refuses to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalDevice {
    Cpu,
    /// GPU 0; needs a build with `--features cuda` (scripts/build-cuda).
    Cuda,
    /// GPU 0 when this build has CUDA and a GPU answers, else the CPU.
    Auto,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalConfig {
    pub backend: LocalBackendKind,
    /// Embedded: a `.gguf` file, or a Hugging Face model id on machines with hub access.
    pub model: String,
    /// Embedded: Hugging Face id whose tokenizer to use instead of the GGUF's own.
    pub tokenizer_model_id: Option<String>,
    pub device: LocalDevice,
    /// Sequences generated at once.
    pub max_concurrent: usize,
    /// Requests that may wait for a place beyond `max_concurrent`; past this
    /// the team policy's `local.overflow` applies.
    pub queue: usize,
    /// Upper bound on `max_tokens` for local generation (and its default).
    pub max_tokens_cap: u64,
    /// Context window in tokens; read from the model when embedded.
    pub context_length: Option<u64>,
    /// Longest prompt the local tier takes, if lower than the context: on a
    /// CPU a long prompt holds the engine for minutes (SmolLM2 reads about
    /// 70 tokens/s on two cores). Longer prompts get the policy's `too_long`.
    pub max_prompt_tokens: Option<u64>,
    pub external: ExternalConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExternalConfig {
    /// Base URL including the API prefix, e.g. `http://127.0.0.1:11434/v1`.
    pub base_url: String,
    /// Model name sent to the server.
    pub model: String,
    pub api_key_env: Option<String>,
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            backend: LocalBackendKind::Embedded,
            model: "models/SmolLM2-135M-Instruct.Q4_1.gguf".into(),
            tokenizer_model_id: None,
            device: LocalDevice::Cpu,
            max_concurrent: 4,
            queue: 16,
            max_tokens_cap: 512,
            context_length: None,
            max_prompt_tokens: None,
            external: ExternalConfig::default(),
        }
    }
}

impl Default for ExternalConfig {
    fn default() -> Self {
        ExternalConfig { base_url: "http://127.0.0.1:11434/v1".into(), model: "llama3.2".into(), api_key_env: None }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// PEM file with extra CAs trusted for upstream TLS, on top of webpki roots.
    pub extra_ca_file: Option<PathBuf>,
    /// `host` or `host:port` → `ip` or `ip:port`, like curl's --resolve.
    pub resolve: BTreeMap<String, String>,
    pub connect_timeout_ms: u64,
    /// Time allowed until the upstream's response headers arrive.
    pub response_timeout_ms: u64,
    /// Longest silence allowed between two chunks of a response body.
    pub idle_timeout_ms: u64,
    pub pool_idle_per_host: usize,
    /// Offer HTTP/2 by ALPN (used when the provider accepts it); otherwise
    /// HTTP/1.1 over pooled keep-alive connections.
    pub http2: bool,
}

/// The forward proxy (`HTTPS_PROXY=http://127.0.0.1:3128`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Hosts whose TLS sluice terminates and inspects. `*` stands for exactly
    /// one DNS label. Everything else is tunneled byte for byte.
    pub intercept: Vec<String>,
    /// Ports a CONNECT may reach.
    pub allowed_ports: Vec<u16>,
    /// CIDR blocks of internal (non-public) destinations that are
    /// nevertheless allowed (all such destinations are refused by default).
    pub allow_private: Vec<String>,
    pub max_connections: usize,
    /// Time a client gets to finish its TLS handshake with sluice.
    pub handshake_timeout_ms: u64,
    /// Longest silence on a tunnel or an intercepted connection.
    pub idle_timeout_ms: u64,
    /// Leaf certificates kept in memory (one per intercepted host name).
    pub leaf_cache_size: usize,
    pub leaf_validity_hours: u64,
}

/// Where sluice keeps the CA that signs intercepted hosts' certificates.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaConfig {
    /// Holds `ca.pem` and `ca.key` (0600). Created on first `serve` if absent.
    pub dir: PathBuf,
    /// Limit the CA to the intercepted domains with X.509 name constraints.
    pub name_constraints: bool,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 3128)),
            // Every API host of the shadow-AI catalog that sluice can read
            // as an LLM request.
            intercept: crate::shadow::catalog::builtin_shared().intercept_hosts(),
            allowed_ports: vec![443],
            allow_private: Vec::new(),
            max_connections: 4096,
            handshake_timeout_ms: 10_000,
            idle_timeout_ms: 300_000,
            leaf_cache_size: 1024,
            leaf_validity_hours: 24,
        }
    }
}

impl Default for CaConfig {
    fn default() -> Self {
        CaConfig { dir: PathBuf::from("data/ca"), name_constraints: true }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            gateway: GatewayConfig::default(),
            admin: AdminConfig::default(),
            policies_dir: PathBuf::from("policies"),
            audit: AuditConfig::default(),
            identity: IdentityConfig::default(),
            providers: Providers::default(),
            upstream: UpstreamConfig::default(),
            local: LocalConfig::default(),
            proxy: ProxyConfig::default(),
            ca: CaConfig::default(),
            prices: default_prices(),
            sessions: SessionsConfig::default(),
            inspect: InspectConfig::default(),
            shadow: ShadowConfig::default(),
            export: ExportConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 10 * 1024 * 1024,
            shutdown_grace_ms: 30_000,
            max_connections: 4096,
            first_byte_timeout_ms: 10_000,
            header_read_timeout_ms: 30_000,
            idle_timeout_ms: 90_000,
            http2_keepalive_interval_ms: 30_000,
            http2_keepalive_timeout_ms: 10_000,
            body_frame_timeout_ms: 30_000,
            body_timeout_ms: 120_000,
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { listen: SocketAddr::from(([127, 0, 0, 1], 9090)), max_connections: 256 }
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            dir: PathBuf::from("data/audit"),
            durability: crate::audit::Durability::default(),
            checkpoint_every_records: 1000,
            checkpoint_every_secs: 60,
            checkpoints_file: None,
            checkpoint_origin: None,
            retention_days: None,
            prompt_key_env: None,
        }
    }
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            anonymous_team: Some("default".to_string()),
            tokens: Vec::new(),
            networks: Vec::new(),
            trusted_proxies: None,
        }
    }
}

impl Default for Providers {
    fn default() -> Self {
        Providers {
            openai: ProviderConfig {
                base_url: "https://api.openai.com".into(),
                api_key_env: Some("OPENAI_API_KEY".into()),
                pass_client_key: false,
                models: vec!["gpt-4o".into(), "gpt-4o-mini".into(), "o3-mini".into()],
            },
            anthropic: ProviderConfig {
                base_url: "https://api.anthropic.com".into(),
                api_key_env: Some("ANTHROPIC_API_KEY".into()),
                pass_client_key: false,
                models: vec!["claude-sonnet-4-5".into(), "claude-haiku-4-5".into(), "claude-opus-4-1".into()],
            },
            gemini: ProviderConfig {
                base_url: "https://generativelanguage.googleapis.com".into(),
                api_key_env: Some("GEMINI_API_KEY".into()),
                pass_client_key: false,
                models: vec!["gemini-2.5-flash".into(), "gemini-2.5-pro".into()],
            },
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            extra_ca_file: None,
            resolve: BTreeMap::new(),
            connect_timeout_ms: 5_000,
            response_timeout_ms: 120_000,
            idle_timeout_ms: 120_000,
            pool_idle_per_host: 64,
            http2: false,
        }
    }
}

impl Config {
    /// Load `path`, or the embedded defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let config = Config::parse(&text, path)?;
        // Relative paths in a config file are relative to the file, so a
        // config works the same from any working directory.
        Ok(config.rebased(path.parent().unwrap_or(Path::new("."))))
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let config: Config = serde_yaml::from_str(text).map_err(|e| {
            let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
            ConfigError::Parse { path: path.to_path_buf(), line, column, reason: e.to_string() }
        })?;
        config.validate(path)?;
        Ok(config.with_default_models())
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid { path: path.to_path_buf(), reason };
        for (i, t) in self.identity.tokens.iter().enumerate() {
            if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(format!(
                    "identity.tokens[{i}].sha256 must be 64 hex characters (use `sluice token hash`)"
                )));
            }
        }
        for (name, p) in [
            ("openai", &self.providers.openai),
            ("anthropic", &self.providers.anthropic),
            ("gemini", &self.providers.gemini),
        ] {
            let uri: http::Uri = p.base_url.parse().map_err(|e| invalid(format!("providers.{name}.base_url: {e}")))?;
            if uri.scheme_str() != Some("https") && uri.scheme_str() != Some("http") {
                return Err(invalid(format!("providers.{name}.base_url must be http(s)")));
            }
        }
        if self.local.backend == LocalBackendKind::External {
            let uri: http::Uri =
                self.local.external.base_url.parse().map_err(|e| invalid(format!("local.external.base_url: {e}")))?;
            if uri.scheme_str() != Some("https") && uri.scheme_str() != Some("http") {
                return Err(invalid("local.external.base_url must be http(s)".into()));
            }
        }
        if let Err(reason) = crate::inspect::PhoneRegions::new(&self.inspect.phone_regions) {
            return Err(invalid(format!("inspect.phone_regions: {reason} (use ISO 3166 codes such as US, DE)")));
        }
        if self.local.max_tokens_cap == 0 {
            return Err(invalid("local.max_tokens_cap must be at least 1".into()));
        }
        for (host, addr) in &self.upstream.resolve {
            if crate::net::parse_resolve_target(addr).is_none() {
                return Err(invalid(format!("upstream.resolve.{host}: `{addr}` is not an IP or IP:port")));
            }
        }
        for cidr in &self.proxy.allow_private {
            if crate::net::Cidr::parse(cidr).is_none() {
                return Err(invalid(format!("proxy.allow_private: `{cidr}` is not a CIDR block (e.g. 10.0.0.0/8)")));
            }
        }
        for host in &self.proxy.intercept {
            if host.is_empty() || host.contains(['/', ':', ' ']) {
                return Err(invalid(format!("proxy.intercept: `{host}` is not a host name pattern")));
            }
        }
        if self.gateway.max_connections == 0 || self.admin.max_connections == 0 {
            return Err(invalid("gateway.max_connections and admin.max_connections must be at least 1".into()));
        }
        let g = &self.gateway;
        for (name, ms) in [
            ("first_byte_timeout_ms", g.first_byte_timeout_ms),
            ("header_read_timeout_ms", g.header_read_timeout_ms),
            ("idle_timeout_ms", g.idle_timeout_ms),
            ("http2_keepalive_interval_ms", g.http2_keepalive_interval_ms),
            ("http2_keepalive_timeout_ms", g.http2_keepalive_timeout_ms),
            ("body_frame_timeout_ms", g.body_frame_timeout_ms),
            ("body_timeout_ms", g.body_timeout_ms),
        ] {
            // Zero would mean "no time at all", not "no limit": every
            // connection would be cut at once.
            if ms == 0 {
                return Err(invalid(format!("gateway.{name} must be at least 1")));
            }
        }
        if self.proxy.max_connections == 0 || self.proxy.leaf_cache_size == 0 {
            return Err(invalid("proxy.max_connections and proxy.leaf_cache_size must be at least 1".into()));
        }
        if let Some(origin) = &self.audit.checkpoint_origin {
            crate::audit::note::check_name(origin).map_err(|e| invalid(format!("audit.checkpoint_origin: {e}")))?;
        }
        if self.audit.retention_days == Some(0) {
            return Err(invalid("audit.retention_days must be at least 1 (leave it out to keep every record)".into()));
        }
        if self.audit.prompt_key_env.as_ref().is_some_and(|v| v.trim().is_empty()) {
            return Err(invalid("audit.prompt_key_env must name an environment variable".into()));
        }
        if let Some(hec) = &self.export.splunk_hec {
            hec.validate().map_err(|reason| invalid(format!("export.splunk_hec.{reason}")))?;
        }
        self.validate_identity().map_err(|reason| invalid(format!("identity.{reason}")))?;
        if self.limits.store != "embedded" {
            crate::limits::RedisUrl::parse(&self.limits.store)
                .map_err(|reason| invalid(format!("limits.store: {reason}")))?;
        }
        if self.limits.redis_timeout_ms == 0 {
            return Err(invalid("limits.redis_timeout_ms must be at least 1".into()));
        }
        Ok(())
    }

    /// The network and trusted-proxy parts of `identity`; the error names
    /// the key below `identity.`.
    fn validate_identity(&self) -> Result<(), String> {
        let id = &self.identity;
        let team_ok = |team: &str| crate::identity::is_team_name(team);
        if let Some(team) = id.anonymous_team.as_deref().filter(|t| !team_ok(t)) {
            return Err(format!("anonymous_team: `{team}` is not a team name (a-z, 0-9, `_`, `-`)"));
        }
        for (i, n) in id.networks.iter().enumerate() {
            if crate::net::Cidr::parse(&n.cidr).is_none() {
                return Err(format!("networks[{i}].cidr: `{}` is not a CIDR block (e.g. 10.20.0.0/16)", n.cidr));
            }
            if !team_ok(&n.team) {
                return Err(format!("networks[{i}].team: `{}` is not a team name (a-z, 0-9, `_`, `-`)", n.team));
            }
            if n.user.as_deref().is_some_and(|u| u.trim().is_empty()) {
                return Err(format!("networks[{i}].user must not be empty"));
            }
        }
        if let Some(t) = &id.trusted_proxies {
            if t.from.is_empty() {
                return Err("trusted_proxies.from must list the proxy's addresses".into());
            }
            for cidr in &t.from {
                if crate::net::Cidr::parse(cidr).is_none() {
                    return Err(format!("trusted_proxies.from: `{cidr}` is not a CIDR block"));
                }
            }
            for (key, name) in [("user_header", Some(&t.user_header)), ("team_header", t.team_header.as_ref())] {
                let Some(name) = name else { continue };
                crate::identity::check_identity_header(name).map_err(|why| format!("trusted_proxies.{key}: {why}"))?;
            }
        }
        Ok(())
    }

    /// A provider block that names no models still lists the usual ones.
    fn with_default_models(mut self) -> Config {
        let defaults = Providers::default();
        if self.providers.openai.models.is_empty() {
            self.providers.openai.models = defaults.openai.models;
        }
        if self.providers.anthropic.models.is_empty() {
            self.providers.anthropic.models = defaults.anthropic.models;
        }
        if self.providers.gemini.models.is_empty() {
            self.providers.gemini.models = defaults.gemini.models;
        }
        self
    }

    fn rebased(mut self, base: &Path) -> Config {
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        rebase(&mut self.policies_dir);
        rebase(&mut self.audit.dir);
        if let Some(file) = self.audit.checkpoints_file.as_mut() {
            rebase(file);
        }
        rebase(&mut self.ca.dir);
        rebase(&mut self.shadow.fingerprint_key);
        rebase(&mut self.limits.dir);
        for file in &mut self.shadow.catalog_files {
            rebase(file);
        }
        if let Some(ca) = self.upstream.extra_ca_file.as_mut() {
            rebase(ca);
        }
        if let Some(ca) = self.export.splunk_hec.as_mut().and_then(|h| h.tls_ca.as_mut()) {
            rebase(ca);
        }
        // A model given as a path (not a hub id) follows the file too.
        if self.local.model.ends_with(".gguf") {
            let mut model = PathBuf::from(&self.local.model);
            rebase(&mut model);
            self.local.model = model.to_string_lossy().into_owned();
        }
        self
    }
}

#[cfg(test)]
mod tests;
