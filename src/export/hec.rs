//! One stored audit record as a Splunk HTTP Event Collector event.
//!
//! The event's fields are the CIM Web data model's (`action`, `app`,
//! `dest`, `src`, `user`, `status`, `url`, `bytes_*`, ...; every one
//! present, empty or 0 when unknown) beside sluice's own (team, decision,
//! rule, findings, task, tokens, cost). Three sourcetypes:
//!
//! - `sluice:shadow`: the record carries shadow-AI usage (`ai`);
//! - `sluice:proxy`: the forward proxy's own traffic (tunnels, refusals at
//!   its door, relayed requests and WebSockets);
//! - `sluice:decision`: an LLM request sluice decided on.
//!
//! Signed checkpoints of the chain go out as a fourth, `sluice:checkpoint`
//! ([`checkpoint_event`]), which is not a CIM Web event.
//!
//! Values a client chose (user names, hosts, model names) pass through
//! as recorded; the URL is built from the host and the API's canonical
//! path, never from the path the client sent.

use std::net::SocketAddr;

use serde_json::{json, Map, Value};

use crate::audit::{AuditRecord, StoredRecord};

/// HEC's `source` when the caller names none.
/// The CIM Web data model's fields, which every event carries (empty or 0
/// when sluice does not know the value).
pub const CIM_WEB_FIELDS: [&str; 18] = [
    "action",
    "app",
    "dest",
    "dest_port",
    "src",
    "src_port",
    "user",
    "status",
    "http_method",
    "url",
    "url_domain",
    "http_user_agent",
    "bytes",
    "bytes_in",
    "bytes_out",
    "category",
    "vendor_product",
    "tag",
];

pub const SOURCE: &str = "sluice";

/// What HEC wants around each event besides its fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HecMeta {
    /// The sluice instance that wrote the log.
    pub host: String,
    /// Usually [`SOURCE`].
    pub source: String,
    /// Left out of the event when empty, so the token's default index applies.
    pub index: String,
}

impl Default for HecMeta {
    fn default() -> HecMeta {
        HecMeta { host: String::new(), source: SOURCE.to_string(), index: String::new() }
    }
}

/// The record's sourcetype (see the module docs).
pub fn sourcetype(record: &AuditRecord) -> &'static str {
    if record.ai.is_some() {
        "sluice:shadow"
    } else if is_proxy_api(&record.api) {
        "sluice:proxy"
    } else {
        "sluice:decision"
    }
}

fn is_proxy_api(api: &str) -> bool {
    api.starts_with("proxy.") || api == "passthrough" || api == "websocket"
}

/// The whole HEC event: `time` (seconds, millisecond fraction), `host`,
/// `source`, `sourcetype`, `index` (when set) and the [`flat_event`].
pub fn hec_event(stored: &StoredRecord, meta: &HecMeta) -> Value {
    let mut event = Map::new();
    // Whole milliseconds divided by 1000 print as at most three decimals.
    event.insert("time".into(), json!(stored.record.time_unix_ms as f64 / 1000.0));
    event.insert("host".into(), json!(meta.host));
    let source = if meta.source.is_empty() { SOURCE } else { meta.source.as_str() };
    event.insert("source".into(), json!(source));
    event.insert("sourcetype".into(), json!(sourcetype(&stored.record)));
    if !meta.index.is_empty() {
        event.insert("index".into(), json!(meta.index));
    }
    event.insert("event".into(), flat_event(stored));
    Value::Object(event)
}

/// The event's fields alone: what a JSON-lines export writes per record.
pub fn flat_event(stored: &StoredRecord) -> Value {
    let r = &stored.record;
    // Usage fields (tokens, cost, TTFT, bytes) are read by name from the
    // record's JSON form: records gain them in a later version, and older
    // records must export all the same.
    let raw = serde_json::to_value(r).unwrap_or(Value::Null);
    let proxy = is_proxy_api(&r.api);
    let (dest, host_port) = dest_of(r);
    let dest_port = tunnel_port(r).or(host_port).unwrap_or(443);
    let (src, src_port) = src_of(&r.client_addr);
    let path = canonical_path(&r.api);
    let url = match (dest_is_host(r), dest_port) {
        (false, _) => String::new(),
        (true, 443) => format!("https://{}{path}", bracketed(&dest)),
        (true, port) => format!("https://{}:{port}{path}", bracketed(&dest)),
    };
    let blocked = matches!(r.decision.as_str(), "block" | "error") || r.status >= 400;
    let (bytes_out, bytes_in) = match &r.ai {
        Some(ai) => (ai.bytes_up, ai.bytes_down),
        None => (usage_count(&raw, "bytes_out").unwrap_or(0), usage_count(&raw, "bytes_in").unwrap_or(0)),
    };
    let signals = r.signals.as_ref();
    let task = signals.and_then(|s| s.get("task")).and_then(Value::as_str).unwrap_or("");
    let tokens_in = usage_count(&raw, "tokens_in")
        .or_else(|| signals.and_then(|s| s.get("prompt_tokens")).and_then(Value::as_u64))
        .unwrap_or(0);
    let tokens_out = usage_count(&raw, "tokens_out").unwrap_or(0);
    let cost_usd = usage_number(&raw, "cost_usd").unwrap_or_else(|| estimated_cost(r));
    let ttft_ms = usage_number(&raw, "ttft_ms").unwrap_or(0.0);
    let app = r.ai.as_ref().map_or(r.provider.as_str(), |ai| ai.app.as_str());
    let category = match &r.ai {
        Some(ai) => ai.category.as_str(),
        None if proxy => "proxy",
        None => "llm_api",
    };
    let http_method = if r.api == "proxy.connect" {
        "CONNECT"
    } else if r.api == "models" {
        "GET"
    } else if r.api.contains('.') && !proxy {
        // Every parsed API shape is a POST (`wire::shapes::shape_of`).
        "POST"
    } else {
        ""
    };
    let finding_types: Vec<&String> = r.findings.keys().collect();
    let mut event = json!({
        "id": event_id(stored),
        "seq": stored.seq,
        "chain_hash": stored.hash,
        // CIM Web.
        "action": if blocked { "blocked" } else { "allowed" },
        "app": app,
        "dest": dest,
        "dest_port": dest_port,
        "src": src,
        "src_port": src_port,
        "user": r.user,
        "status": r.status,
        "http_method": http_method,
        "url": url,
        "url_domain": if dest_is_host(r) { dest.as_str() } else { "" },
        "http_user_agent": "",
        "bytes": bytes_in.saturating_add(bytes_out),
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "category": category,
        "vendor_product": "sluice",
        "tag": ["web", "proxy"],
        // sluice's own.
        "team": r.team,
        "decision": r.decision,
        "rule": r.rule,
        "reason": r.reason,
        "ingress": r.ingress,
        "api": r.api,
        "provider": r.provider,
        "model_requested": r.model_requested,
        "model_used": r.model_used,
        "findings": r.findings,
        "finding_types": finding_types,
        "redacted": r.redacted,
        "task": task,
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "cost_usd": cost_usd,
        "ttft_ms": ttft_ms,
        "latency_ms": r.latency_us.total as f64 / 1000.0,
        "inspect_ms": r.latency_us.inspect as f64 / 1000.0,
        "upstream_ms": r.latency_us.upstream as f64 / 1000.0,
    });
    // Keyed, so it correlates equal prompts but confirms no guess (the
    // unkeyed `prompt_sha256` of older records stays out). Outside the
    // `json!` above, which is at the macro's recursion limit.
    if let Some(map) = event.as_object_mut() {
        map.insert("prompt_hmac".into(), json!(r.prompt_hmac));
        // The id the client saw in `x-request-id` (empty on older records).
        map.insert("request_id".into(), json!(r.request_id));
    }
    if let (false, Some(map)) = (r.monitor.is_empty(), event.as_object_mut()) {
        // What `mode: monitor` rules would have done; only on records
        // that have some, so other events keep their shape.
        map.insert("monitor".into(), json!(r.monitor));
    }
    if let (Some(ai), Some(map)) = (&r.ai, event.as_object_mut()) {
        let download = ai.download.as_ref();
        let account = ai.account.as_ref();
        let shadow = json!({
            "ai_app": ai.app,
            "ai_category": ai.category,
            "sanctioned": ai.sanctioned,
            "enforced": ai.enforced,
            "inspected": ai.inspected,
            "server": ai.server,
            "duration_ms": ai.duration_ms,
            "download_repo": download.map_or("", |d| d.repo.as_str()),
            "download_file": download.map_or("", |d| d.file.as_str()),
            "download_bytes": download.map_or(0, |d| d.bytes),
            "personal_account": account.is_some_and(|a| a.personal),
            "account_organization": account.map_or("", |a| a.organization.as_str()),
            "key_fingerprint": account.map_or("", |a| a.key_fingerprint.as_str()),
        });
        if let Value::Object(fields) = shadow {
            map.extend(fields);
        }
    }
    event
}

/// Sourcetype of signed checkpoints of the audit chain.
pub const CHECKPOINT_SOURCETYPE: &str = "sluice:checkpoint";

/// A signed checkpoint (`audit::checkpoint`, number `number` in the log's
/// store) as a HEC event of sourcetype `sluice:checkpoint`: the signed
/// note as it is (`checkpoint`, what an auditor verifies) and what it
/// names, read from its text, so a search can find the newest one.
pub fn checkpoint_event(number: u64, note: &str, meta: &HecMeta) -> Value {
    let text = note.rfind("\n\n").map(|end| &note[..end + 1]).unwrap_or(note);
    let checkpoint = crate::audit::note::Checkpoint::parse(text).ok();
    let time_ms = checkpoint.as_ref().and_then(|c| c.time_ms()).unwrap_or(0);
    let source = if meta.source.is_empty() { SOURCE } else { meta.source.as_str() };
    let mut event = Map::new();
    event.insert("time".into(), json!(time_ms as f64 / 1000.0));
    event.insert("host".into(), json!(meta.host));
    event.insert("source".into(), json!(source));
    event.insert("sourcetype".into(), json!(CHECKPOINT_SOURCETYPE));
    if !meta.index.is_empty() {
        event.insert("index".into(), json!(meta.index));
    }
    let fields = json!({
        "id": format!("checkpoint-{number}"),
        "checkpoint_number": number,
        "origin": checkpoint.as_ref().map_or("", |c| c.origin.as_str()),
        "seq": checkpoint.as_ref().map_or(0, |c| c.size),
        "chain_hash": checkpoint.as_ref().map(|c| c.hash_hex()).unwrap_or_default(),
        "kind": if checkpoint.as_ref().is_some_and(|c| c.is_cut()) { "retention_cut" } else { "head" },
        "checkpoint": note,
        "vendor_product": "sluice",
    });
    event.insert("event".into(), fields);
    Value::Object(event)
}

/// `<seq>-<first 16 hex digits of the chain hash>`: the same on every
/// export of the same record, so a re-sent batch can be de-duplicated.
fn event_id(stored: &StoredRecord) -> String {
    let short = stored.hash.get(..16).unwrap_or(&stored.hash);
    format!("{}-{short}", stored.seq)
}

/// The destination and a port written into it: the host the client
/// addressed (`host`, which may carry `:port`), else the provider's API
/// host, else the provider's name (`local`, an unknown name).
fn dest_of(r: &AuditRecord) -> (String, Option<u16>) {
    if !r.host.is_empty() {
        return split_host_port(&r.host);
    }
    match provider_host(&r.provider) {
        Some(host) => (host.to_string(), None),
        None => (r.provider.clone(), None),
    }
}

/// Whether [`dest_of`] names a host (so a URL can be built on it), not a
/// provider's name.
fn dest_is_host(r: &AuditRecord) -> bool {
    !r.host.is_empty() || provider_host(&r.provider).is_some()
}

/// A provider's first API host without a wildcard (Azure's and Bedrock's
/// hosts depend on the deployment, so they have none).
fn provider_host(provider: &str) -> Option<&'static str> {
    crate::wire::providers::by_name(provider)?.hosts.iter().copied().find(|h| !h.contains('*'))
}

/// `host:port` → (`host`, port); `[v6]:port` → (`v6`, port); a bare host
/// or IPv6 address keeps no port.
fn split_host_port(host: &str) -> (String, Option<u16>) {
    if let Some(rest) = host.strip_prefix('[') {
        if let Some((addr, after)) = rest.split_once(']') {
            let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
            return (addr.to_string(), port);
        }
    }
    match host.rsplit_once(':') {
        // More than one colon without brackets is an IPv6 address.
        Some((name, port)) if !name.contains(':') => match port.parse() {
            Ok(port) => (name.to_string(), Some(port)),
            Err(_) => (host.to_string(), None),
        },
        _ => (host.to_string(), None),
    }
}

/// An IPv6 address back in brackets for a URL.
fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// The CONNECT port a tunnel's record keeps in `signals.tunnel.port`.
fn tunnel_port(r: &AuditRecord) -> Option<u16> {
    let port = r.signals.as_ref()?.get("tunnel")?.get("port")?.as_u64()?;
    u16::try_from(port).ok()
}

/// The client's address and port; an address that does not parse (older
/// or hand-made records) is kept whole with port 0.
fn src_of(client_addr: &str) -> (String, u16) {
    match client_addr.parse::<SocketAddr>() {
        Ok(addr) => (addr.ip().to_string(), addr.port()),
        Err(_) => (client_addr.to_string(), 0),
    }
}

/// The path an API is served on at its provider, for APIs with one fixed
/// path. Gemini's and Bedrock's paths carry the model, and OpenAI-style
/// paths differ on Azure, so the URL of those has no path: the URL says
/// where, and `api` and the model fields say what.
fn canonical_path(api: &str) -> &'static str {
    match api {
        "openai.chat_completions" => "/v1/chat/completions",
        "openai.responses" => "/v1/responses",
        "openai.responses_input_tokens" => "/v1/responses/input_tokens",
        "openai.completions" => "/v1/completions",
        "openai.embeddings" => "/v1/embeddings",
        "openai.moderations" => "/v1/moderations",
        "openai.batches" => "/v1/batches",
        "anthropic.messages" => "/v1/messages",
        "anthropic.count_tokens" => "/v1/messages/count_tokens",
        "anthropic.batches" => "/v1/messages/batches",
        "anthropic.complete" => "/v1/complete",
        "models" => "/v1/models",
        _ => "",
    }
}

/// A number the record may carry at the top level or under `usage`.
pub(super) fn usage_number(raw: &Value, key: &str) -> Option<f64> {
    raw.get(key).or_else(|| raw.get("usage").and_then(|u| u.get(key))).and_then(Value::as_f64)
}

/// A count the record may carry (see [`usage_number`]); 0 when it does not.
fn usage_count(raw: &Value, key: &str) -> Option<u64> {
    // Counts are whole and far below 2^53, so the float is exact.
    usage_number(raw, key).filter(|v| *v >= 0.0).map(|v| v as u64)
}

/// The routing signals' cost estimate, for records older than the
/// recorded cost, and only where the request went to the cloud and was
/// answered: a blocked or locally answered request cost nothing.
fn estimated_cost(r: &AuditRecord) -> f64 {
    if !matches!(r.decision.as_str(), "cloud" | "redact") || r.status >= 400 {
        return 0.0;
    }
    r.signals.as_ref().and_then(|s| s.get("estimated_cost_usd")).and_then(Value::as_f64).unwrap_or(0.0)
}
