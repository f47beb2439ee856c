//! The shadow-AI monitor's judgements about proxied traffic: which
//! catalogued app a host belongs to, whether a request has an LLM API's
//! shape, whose account an API call ran on, which model weights a download
//! fetched, which self-hosted server answered a model list. Plain functions
//! over the catalog; the proxy and the pipeline put the answers into audit
//! records and metrics.

use std::collections::HashSet;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use http::HeaderMap;
use sha2::Sha256;

use super::catalog::{builtin_shared, Catalog, CatalogError, Category, Entry};
use crate::audit::{AccountNote, AiUsage, ModelDownload};
use crate::config::ShadowConfig;

/// The app of an unlisted host whose traffic has an LLM API's shape.
pub const UNKNOWN_LLM_ENDPOINT: &str = "unknown-llm-endpoint";

/// File extensions of model weights.
const WEIGHT_EXTENSIONS: [&str; 6] = [".gguf", ".safetensors", ".bin", ".onnx", ".pt", ".pth"];

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("cannot read catalog file {path}: {source}")]
    ReadCatalog { path: PathBuf, source: std::io::Error },
    #[error("fingerprint key {path}: {source}")]
    Key { path: PathBuf, source: std::io::Error },
}

/// What the monitor knows, built once at start-up. The catalog is not
/// here: it reloads with the policies (`policy::reload::Policies`), so
/// each request passes the one it is judged under.
pub struct Monitor {
    /// Keys API-key fingerprints, so the log cannot confirm a guessed key.
    secret: [u8; 32],
    /// The company's organisation ids, at any provider.
    company_accounts: HashSet<String>,
    enabled: bool,
    record_other_tunnels: bool,
    /// Fingerprints of keys seen on a personal account, so a policy can
    /// refuse their next calls before they leave.
    personal_keys: Mutex<HashSet<String>>,
}

impl Monitor {
    /// The fingerprint key (created on first start, 0600).
    pub fn load(cfg: &ShadowConfig) -> Result<Monitor, MonitorError> {
        let secret = load_or_create_secret(&cfg.fingerprint_key)?;
        Ok(Monitor::new(cfg, secret))
    }

    pub fn new(cfg: &ShadowConfig, secret: [u8; 32]) -> Monitor {
        Monitor {
            secret,
            company_accounts: cfg.company_accounts.values().flatten().cloned().collect(),
            enabled: cfg.enabled,
            record_other_tunnels: cfg.record_other_tunnels,
            personal_keys: Mutex::new(HashSet::new()),
        }
    }

    /// Whether tunnels to hosts outside the catalog get a record each.
    pub fn records_other_tunnels(&self) -> bool {
        self.record_other_tunnels || !self.enabled
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The app in `catalog` that `host` belongs to (none while the
    /// monitor is off).
    pub fn app_of_host<'a>(&self, catalog: &'a Catalog, host: &str) -> Option<&'a Entry> {
        catalog.match_host(host).filter(|_| self.enabled)
    }

    /// A usage event for `entry` (or an unlisted LLM endpoint when `None`),
    /// sanctioned until a policy says otherwise.
    pub fn usage(&self, entry: Option<&Entry>, inspected: bool) -> AiUsage {
        let (app, category) = match entry {
            Some(e) => (e.id.clone(), e.category.as_str().to_string()),
            None => (UNKNOWN_LLM_ENDPOINT.to_string(), Category::LlmApi.as_str().to_string()),
        };
        AiUsage { app, category, sanctioned: true, inspected, ..AiUsage::default() }
    }

    /// HMAC-SHA-256 of an API key under the deployment's secret, first 16
    /// hex digits: the same key always gives the same fingerprint here,
    /// and nothing outside this deployment can test a guess against it.
    pub fn fingerprint(&self, key: &str) -> String {
        let mac = hmac_sha256(&self.secret, key.as_bytes());
        hex::encode(&mac[..8])
    }

    /// The account of an intercepted API call as far as its request says:
    /// the key's fingerprint ([`Monitor::note_answer`] adds the rest).
    pub fn account_of_request(&self, request: &HeaderMap) -> Option<AccountNote> {
        let key = api_key_of(request)?;
        Some(AccountNote { key_fingerprint: self.fingerprint(key), ..AccountNote::default() })
    }

    /// The organisation the provider names in its answer, and whether it
    /// is one of the company's.
    pub fn note_answer(&self, account: &mut AccountNote, response: &HeaderMap) {
        let header = |name: &str| response.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").trim().to_string();
        account.organization = [header("openai-organization"), header("anthropic-organization-id")]
            .into_iter()
            .find(|o| !o.is_empty())
            .unwrap_or_default();
        account.project = header("openai-project");
        // Only an answer that names an account can say whose it is.
        account.personal = !account.organization.is_empty() && !self.company_accounts.contains(&account.organization);
        if account.personal {
            self.personal_keys.lock().unwrap_or_else(|e| e.into_inner()).insert(account.key_fingerprint.clone());
        }
    }

    /// Whether a key with this fingerprint was seen on a personal account.
    pub fn is_personal_key(&self, fingerprint: &str) -> bool {
        self.personal_keys.lock().unwrap_or_else(|e| e.into_inner()).contains(fingerprint)
    }
}

/// The shipped catalog plus the organisation's files, as `serve` and
/// `sluice policy check` both read it.
pub fn load_catalog(cfg: &ShadowConfig) -> Result<Catalog, MonitorError> {
    let mut catalog = builtin_shared().clone();
    for path in &cfg.catalog_files {
        let text =
            std::fs::read_to_string(path).map_err(|source| MonitorError::ReadCatalog { path: path.clone(), source })?;
        let origin = path.display().to_string();
        let extra = Catalog::parse_extra(&origin, &text)?;
        catalog = catalog.with_extra(&origin, extra)?;
    }
    Ok(catalog)
}

/// The API key a request carries, in any provider's header.
pub fn api_key_of(headers: &HeaderMap) -> Option<&str> {
    if let Some(auth) = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, token) = auth.trim().split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|t| !t.is_empty());
    }
    ["x-api-key", "x-goog-api-key", "api-key"]
        .iter()
        .find_map(|name| headers.get(*name).and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Model weights fetched by `path` from `hub` (a catalog id, or the host
/// for unlisted ones): Hugging Face `/<repo>/resolve/<rev>/<file>`, the
/// Ollama registry's manifests and blobs, and any file with a weights
/// extension.
pub fn model_download(hub: &str, path: &str, bytes: u64) -> Option<ModelDownload> {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if let Some(at) = parts.iter().position(|p| *p == "resolve") {
        // `/<org>/<model>/resolve/<rev>/<file>`, or a legacy model without
        // an org; datasets and spaces are not models.
        if (1..=2).contains(&at) && parts.len() > at + 2 && !matches!(parts[0], "datasets" | "spaces") {
            return Some(ModelDownload {
                hub: hub.to_string(),
                repo: parts[..at].join("/"),
                file: parts[at + 2..].join("/"),
                bytes,
            });
        }
    }
    if parts.first() == Some(&"v2") {
        // Ollama's registry speaks the OCI distribution API:
        // `/v2/<namespace>/<model>/{manifests/<tag>,blobs/<digest>}`.
        if let Some(at) = parts.iter().position(|p| *p == "blobs" || *p == "manifests") {
            if at >= 2 && parts.len() == at + 2 {
                return Some(ModelDownload {
                    hub: hub.to_string(),
                    repo: parts[1..at].join("/"),
                    file: parts[at + 1].to_string(),
                    bytes,
                });
            }
        }
    }
    let file = parts.last()?;
    let lower = file.to_ascii_lowercase();
    WEIGHT_EXTENSIONS.iter().any(|ext| lower.ends_with(ext)).then(|| ModelDownload {
        hub: hub.to_string(),
        repo: String::new(),
        file: file.to_string(),
        bytes,
    })
}

/// Whether a request has an LLM API's shape: a POST to a known endpoint
/// path (OpenAI chat/completions/embeddings/responses, Anthropic messages,
/// Ollama's native API) whose JSON body names a model and carries input.
pub fn looks_like_llm_api(method: &http::Method, path: &str, body: &[u8]) -> bool {
    const PATHS: [&str; 9] = [
        "/chat/completions",
        "/completions",
        "/embeddings",
        "/responses",
        "/messages",
        "/api/chat",
        "/api/generate",
        "/api/embed",
        "/api/embeddings",
    ];
    if method != http::Method::POST {
        return false;
    }
    let path = path.split('?').next().unwrap_or(path).trim_end_matches('/').to_ascii_lowercase();
    if !PATHS.iter().any(|p| path.ends_with(p)) {
        return false;
    }
    let Ok(serde_json::Value::Object(obj)) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    obj.get("model").is_some_and(|m| m.is_string())
        && ["messages", "prompt", "input"].iter().any(|k| obj.contains_key(*k))
}

/// The kind of self-hosted server behind a model list: OpenAI-compatible
/// `/v1/models` answers carry tell-tale `owned_by` values, Ollama's
/// `/api/tags` lists `models` with `details`.
pub fn server_of_models(body: &[u8]) -> Option<&'static str> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    if let Some(data) = value.get("data").and_then(|d| d.as_array()) {
        return data.iter().find_map(|m| match m.get("owned_by")?.as_str()? {
            "vllm" => Some("vllm"),
            "llamacpp" | "llama.cpp" => Some("llamacpp"),
            "library" => Some("ollama"),
            "organization_owner" => Some("lmstudio"),
            _ => None,
        });
    }
    let models = value.get("models")?.as_array()?;
    models.iter().any(|m| m.get("details").is_some() && m.get("digest").is_some()).then_some("ollama")
}

fn hmac_sha256(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// The fingerprint key: read, or created with fresh random bytes (0600, in
/// an owner-only directory) on first start.
fn load_or_create_secret(path: &Path) -> Result<[u8; 32], MonitorError> {
    let err = |source| MonitorError::Key { path: path.to_path_buf(), source };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            return crate::private_dir::parse_secret(&text)
                .ok_or_else(|| err(std::io::Error::other("expected 64 hex digits")))
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        Err(_) => {}
    }
    match crate::private_dir::create_secret(path) {
        Ok(Some(secret)) => Ok(secret),
        // Another process created it first: use theirs.
        Ok(None) => load_or_create_secret(path),
        Err(e) => Err(err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn monitor() -> Monitor {
        let mut cfg = ShadowConfig::default();
        cfg.company_accounts.insert("openai".into(), vec!["org-acme".into()]);
        Monitor::new(&cfg, [7u8; 32])
    }

    #[test]
    fn hosts_map_to_catalogued_apps() {
        let m = monitor();
        let catalog = builtin_shared();
        assert_eq!(m.app_of_host(catalog, "chatgpt.com").map(|e| e.id.as_str()), Some("chatgpt"));
        assert_eq!(m.app_of_host(catalog, "api.openai.com").map(|e| e.id.as_str()), Some("openai-api"));
        assert!(m.app_of_host(catalog, "example.org").is_none());
        assert_eq!(m.usage(None, true).app, UNKNOWN_LLM_ENDPOINT);
    }

    #[test]
    fn hmac_is_standard_and_fingerprints_are_keyed() {
        let key = [0x0bu8; 32];
        let mac = hmac_sha256(&key, b"Hi There");
        assert_eq!(
            hex::encode(mac),
            "198a607eb44bfbc69903a0f1cf2bbdc5ba0aa3f3d9ae3c1c7a3b1696a0b68cf7",
            "checked against Python's hmac module"
        );
        let m = monitor();
        let other = Monitor::new(&ShadowConfig::default(), [8u8; 32]);
        assert_eq!(m.fingerprint("sk-abc").len(), 16);
        assert_eq!(m.fingerprint("sk-abc"), m.fingerprint("sk-abc"));
        assert_ne!(m.fingerprint("sk-abc"), other.fingerprint("sk-abc"));
        assert!(!m.fingerprint("sk-abc").contains("abc"));
    }

    #[test]
    fn accounts_are_flagged_personal_outside_the_company() {
        let m = monitor();
        let mut req = HeaderMap::new();
        req.insert("authorization", "Bearer sk-test-1".parse().unwrap());
        let mut resp = HeaderMap::new();
        resp.insert("openai-organization", "user-abc123".parse().unwrap());
        let account = |req: &HeaderMap, resp: &HeaderMap| {
            let mut a = m.account_of_request(req)?;
            m.note_answer(&mut a, resp);
            Some(a)
        };
        let a = account(&req, &resp).unwrap();
        assert!(a.personal);
        assert_eq!(a.organization, "user-abc123");
        assert_eq!(a.key_fingerprint, m.fingerprint("sk-test-1"));
        resp.insert("openai-organization", "org-acme".parse().unwrap());
        assert!(!account(&req, &resp).unwrap().personal);
        let mut anthropic = HeaderMap::new();
        anthropic.insert("x-api-key", "sk-ant-1".parse().unwrap());
        let mut resp = HeaderMap::new();
        resp.insert("anthropic-organization-id", "9f0e".parse().unwrap());
        assert!(account(&anthropic, &resp).unwrap().personal);
        assert!(account(&HeaderMap::new(), &resp).is_none());
        assert!(!account(&req, &HeaderMap::new()).unwrap().personal, "no organisation named, nothing flagged");
    }

    #[test]
    fn model_downloads_by_path() {
        let hf =
            model_download("huggingface", "/TheBloke/Llama-2-7B-GGUF/resolve/main/llama-2-7b.Q4_K_M.gguf", 42).unwrap();
        assert_eq!(
            (hf.repo.as_str(), hf.file.as_str(), hf.bytes),
            ("TheBloke/Llama-2-7B-GGUF", "llama-2-7b.Q4_K_M.gguf", 42)
        );
        let legacy = model_download("huggingface", "/gpt2/resolve/main/model.safetensors?download=true", 1).unwrap();
        assert_eq!(legacy.repo, "gpt2");
        assert!(model_download("huggingface", "/datasets/x/y/resolve/main/train.csv", 1).is_none());
        let ollama = model_download("ollama-registry", "/v2/library/llama3/blobs/sha256:abc", 9).unwrap();
        assert_eq!((ollama.repo.as_str(), ollama.file.as_str()), ("library/llama3", "sha256:abc"));
        let any = model_download("files.example", "/w/model.ONNX", 3).unwrap();
        assert_eq!(any.file, "model.ONNX");
        assert!(model_download("huggingface", "/TheBloke/Llama-2-7B-GGUF", 1).is_none());
    }

    #[test]
    fn llm_shapes_and_local_servers() {
        let post = http::Method::POST;
        assert!(looks_like_llm_api(&post, "/api/chat", br#"{"model":"llama3","messages":[]}"#));
        assert!(looks_like_llm_api(&post, "/v1/chat/completions", br#"{"model":"m","messages":[]}"#));
        assert!(looks_like_llm_api(&post, "/api/generate", br#"{"model":"m","prompt":"hi"}"#));
        assert!(!looks_like_llm_api(&post, "/api/chat", br#"{"text":"hi"}"#));
        assert!(!looks_like_llm_api(&post, "/upload", br#"{"model":"m","prompt":"hi"}"#));
        assert!(!looks_like_llm_api(&http::Method::GET, "/api/chat", b""));
        assert_eq!(server_of_models(br#"{"object":"list","data":[{"id":"m","owned_by":"vllm"}]}"#), Some("vllm"));
        assert_eq!(server_of_models(br#"{"data":[{"id":"m","owned_by":"library"}]}"#), Some("ollama"));
        assert_eq!(server_of_models(br#"{"data":[{"id":"m","owned_by":"openai"}]}"#), None);
        assert_eq!(
            server_of_models(br#"{"models":[{"name":"llama3:latest","digest":"ab","details":{"family":"llama"}}]}"#),
            Some("ollama")
        );
    }

    #[test]
    fn the_secret_is_created_once_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shadow/fingerprint.key");
        let first = load_or_create_secret(&path).unwrap();
        assert_eq!(load_or_create_secret(&path).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
