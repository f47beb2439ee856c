//! Metrics: names, units and the Prometheus recorder.
//!
//! Names carry the `sluice_` prefix and base units (seconds, bytes). Labels
//! are bounded sets (team, decision, provider, type); nothing from a prompt
//! ever becomes a label.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const REQUESTS: &str = "sluice_requests_total";
pub const REQUEST_DURATION: &str = "sluice_request_duration_seconds";
/// What sluice itself adds to a relayed request: total minus upstream time.
pub const ADDED_LATENCY: &str = "sluice_added_latency_seconds";
pub const INSPECTION_DURATION: &str = "sluice_inspection_duration_seconds";
pub const FINDINGS: &str = "sluice_findings_total";
pub const UPSTREAM_ERRORS: &str = "sluice_upstream_errors_total";
pub const AUDIT_WRITE_ERRORS: &str = "sluice_audit_write_errors_total";
/// Answers cut or replaced because their record could not be made durable.
pub const AUDIT_WITHHELD: &str = "sluice_audit_withheld_answers_total";
/// Time of one write-ahead-log group commit (write + fdatasync).
pub const AUDIT_SYNC_SECONDS: &str = "sluice_audit_sync_seconds";
/// Records the audit writer found waiting when it last took work: its lag.
pub const AUDIT_QUEUE_RECORDS: &str = "sluice_audit_queue_records";
pub const LOCAL_QUEUE_DEPTH: &str = "sluice_local_queue_depth";
pub const LOCAL_TOKENS: &str = "sluice_local_generated_tokens_total";
pub const LOCAL_TOKENS_PER_SECOND: &str = "sluice_local_tokens_per_second";
pub const LOCAL_TIME_TO_FIRST_TOKEN: &str = "sluice_local_time_to_first_token_seconds";
pub const PROXY_CONNECTS: &str = "sluice_proxy_connects_total";
pub const PROXY_OPEN_CONNECTIONS: &str = "sluice_proxy_open_connections";
pub const PROXY_OPEN_TUNNELS: &str = "sluice_proxy_open_tunnels";
pub const PROXY_LEAF_CERTS: &str = "sluice_proxy_leaf_certs_total";
pub const LISTENER_CONNECTIONS: &str = "sluice_listener_connections_total";
pub const PROXY_TRAFFIC_CONNECTIONS: &str = "sluice_proxy_traffic_connections_total";
pub const PROXY_TRAFFIC_BYTES: &str = "sluice_proxy_traffic_bytes_total";
pub const AI_REQUESTS: &str = "sluice_ai_requests_total";
pub const EXPORT_LAG_RECORDS: &str = "sluice_export_lag_records";
pub const EXPORT_LAG_SECONDS: &str = "sluice_export_lag_seconds";
pub const EXPORT_EVENTS: &str = "sluice_export_events_total";
pub const EXPORT_RETRIES: &str = "sluice_export_retries_total";
pub const EXPORT_STOPPED: &str = "sluice_export_stopped";
/// Policy set loads (at start-up and on reload) by result.
pub const POLICY_LOADS: &str = "sluice_policy_loads_total";
/// Teams in the policy set now deciding.
pub const POLICY_TEAMS: &str = "sluice_policy_teams";
/// 1 when the latest policy load succeeded, 0 while a broken edit is
/// refused (the previous set keeps deciding).
pub const POLICY_LAST_RELOAD_SUCCESSFUL: &str = "sluice_policy_last_reload_successful";
/// Unix time of the latest successful policy load.
pub const POLICY_LAST_RELOAD_SUCCESS_TIMESTAMP: &str = "sluice_policy_last_reload_success_timestamp_seconds";
/// Matches of `mode: monitor` rules, by team, rule and the action the rule
/// would have taken. Rule names come from the policy files, a bounded set.
pub const POLICY_MONITOR_MATCHES: &str = "sluice_policy_monitor_matches_total";
/// Tokens by team, model (a price-table name, `local` or `other`) and type.
pub const TOKENS: &str = "sluice_tokens_total";
/// Estimated cost in millionths of a USD (counters are integers).
pub const COST_MICRO_USD: &str = "sluice_cost_microusd_total";
/// OpenTelemetry GenAI semantic conventions, Prometheus spelling.
pub const GEN_AI_TOKEN_USAGE: &str = "gen_ai_client_token_usage";
pub const GEN_AI_OPERATION_DURATION: &str = "gen_ai_client_operation_duration_seconds";
pub const GEN_AI_TIME_TO_FIRST_TOKEN: &str = "gen_ai_server_time_to_first_token_seconds";
pub const BUILD_INFO: &str = "sluice_build_info";
/// Callers by ingress and how they were identified (token,
/// trusted_header, network, anonymous).
pub const CALLERS: &str = "sluice_callers_total";
/// A team's use of each budget in its current window (`budget`:
/// requests_per_minute, tokens_per_day, usd_per_month; USD in dollars).
/// Per-user use is in `sluice budget status`, never a label.
pub const BUDGET_USED: &str = "sluice_budget_used";
pub const BUDGET_LIMIT: &str = "sluice_budget_limit";
/// Requests that met a limit, by team, budget, scope (team, user) and
/// what they got (block, local).
pub const LIMIT_REACHED: &str = "sluice_limit_reached_total";
/// 1 while the limits store answers (embedded or redis).
pub const LIMITS_STORE_UP: &str = "sluice_limits_store_up";
pub const LIMITS_STORE_ERRORS: &str = "sluice_limits_store_errors_total";

/// Holds a gauge one higher for as long as it lives.
pub struct GaugeGuard(&'static str);

impl GaugeGuard {
    pub fn new(name: &'static str) -> GaugeGuard {
        metrics::gauge!(name).increment(1.0);
        GaugeGuard(name)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        metrics::gauge!(self.0).decrement(1.0);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot install the metrics recorder: {0}")]
pub struct TelemetryError(String);

/// Install the global recorder; call once from `serve`.
pub fn install() -> Result<PrometheusHandle, TelemetryError> {
    // Request latencies span sub-millisecond refusals to minute-long streams.
    let request_buckets =
        [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];
    let inspect_buckets = [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), &request_buckets)
        .and_then(|b| {
            // Sub-millisecond: this is the figure sluice promises to keep small.
            let added = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];
            b.set_buckets_for_metric(Matcher::Full(ADDED_LATENCY.into()), &added)
        })
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(INSPECTION_DURATION.into()), &inspect_buckets))
        .and_then(|b| {
            // An fdatasync: tens of microseconds on NVMe, milliseconds on
            // network disks.
            let sync = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5];
            b.set_buckets_for_metric(Matcher::Full(AUDIT_SYNC_SECONDS.into()), &sync)
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(LOCAL_TOKENS_PER_SECOND.into()),
                &[1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 200.0, 400.0, 800.0],
            )
        })
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(LOCAL_TIME_TO_FIRST_TOKEN.into()), &request_buckets))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(GEN_AI_OPERATION_DURATION.into()), &request_buckets))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(GEN_AI_TIME_TO_FIRST_TOKEN.into()), &request_buckets))
        .and_then(|b| {
            // The GenAI conventions' advice for token counts: powers of four.
            let tokens: Vec<f64> = (0..14).map(|i| 4f64.powi(i)).collect();
            b.set_buckets_for_metric(Matcher::Full(GEN_AI_TOKEN_USAGE.into()), &tokens)
        })
        .and_then(|b| b.install_recorder())
        .map_err(|e| TelemetryError(e.to_string()))?;
    metrics::describe_counter!(REQUESTS, "Requests by team, decision, provider and HTTP status");
    metrics::describe_counter!(TOKENS, "Tokens by team, model and type (input, output), from the answer's usage");
    metrics::describe_counter!(COST_MICRO_USD, "Estimated cost in millionths of a USD by team and model");
    metrics::describe_histogram!(GEN_AI_TOKEN_USAGE, "Tokens per request by type and provider (OTel GenAI)");
    metrics::describe_histogram!(
        GEN_AI_OPERATION_DURATION,
        metrics::Unit::Seconds,
        "Request duration by provider and operation (OTel GenAI)"
    );
    metrics::describe_histogram!(
        GEN_AI_TIME_TO_FIRST_TOKEN,
        metrics::Unit::Seconds,
        "Time to the first byte of the answer by provider (OTel GenAI)"
    );
    metrics::describe_histogram!(
        REQUEST_DURATION,
        metrics::Unit::Seconds,
        "Whole request, first byte in to last byte out"
    );
    metrics::describe_histogram!(INSPECTION_DURATION, metrics::Unit::Seconds, "Time spent scanning a prompt");
    metrics::describe_histogram!(
        ADDED_LATENCY,
        metrics::Unit::Seconds,
        "Time sluice adds to a request relayed to a provider (total minus upstream), by decision"
    );
    metrics::describe_counter!(FINDINGS, "Findings by type");
    metrics::describe_counter!(UPSTREAM_ERRORS, "Failed calls to cloud providers, by provider and kind");
    metrics::describe_counter!(AUDIT_WRITE_ERRORS, "Audit records that could not be written");
    metrics::describe_counter!(
        AUDIT_WITHHELD,
        "Answers cut or replaced by an error because their audit record could not be made durable"
    );
    metrics::describe_histogram!(
        AUDIT_SYNC_SECONDS,
        metrics::Unit::Seconds,
        "Time of one audit write-ahead-log group commit (write and fdatasync), strict durability"
    );
    metrics::describe_gauge!(
        AUDIT_QUEUE_RECORDS,
        "Audit records waiting for the writer when it last took a batch (its lag; 0 when it keeps up)"
    );
    metrics::describe_gauge!(LOCAL_QUEUE_DEPTH, "Local requests waiting for an engine slot");
    metrics::describe_counter!(LOCAL_TOKENS, "Tokens generated by the local tier");
    metrics::describe_histogram!(LOCAL_TOKENS_PER_SECOND, "Decode speed of each local generation, tokens per second");
    metrics::describe_histogram!(
        LOCAL_TIME_TO_FIRST_TOKEN,
        metrics::Unit::Seconds,
        "Local generation: request admitted to first token"
    );
    metrics::describe_counter!(PROXY_CONNECTS, "Proxy CONNECTs by outcome (tunnel, intercept, refusals)");
    metrics::describe_gauge!(PROXY_OPEN_CONNECTIONS, "Client connections open on the proxy port");
    metrics::describe_gauge!(PROXY_OPEN_TUNNELS, "Uninspected CONNECT tunnels open");
    metrics::describe_counter!(PROXY_LEAF_CERTS, "Leaf certificates for intercepted hosts: minted or cache_hit");
    metrics::describe_counter!(
        LISTENER_CONNECTIONS,
        "Gateway, admin and proxy connections refused over the limit or closed by a timeout, by listener and outcome"
    );
    metrics::describe_counter!(
        PROXY_TRAFFIC_CONNECTIONS,
        "Proxy tunnels by AI app (a catalog id, or other) and category, counted when they end"
    );
    metrics::describe_counter!(
        PROXY_TRAFFIC_BYTES,
        metrics::Unit::Bytes,
        "Bytes through proxy tunnels by AI app (a catalog id, or other), category and direction"
    );
    metrics::describe_counter!(
        AI_REQUESTS,
        "Records of AI use by app (a catalog id, unknown-llm-endpoint, or other), whether sanctioned and inspected"
    );
    metrics::describe_gauge!(EXPORT_LAG_RECORDS, "Audit records not yet accepted by the exporter's destination");
    metrics::describe_gauge!(
        EXPORT_LAG_SECONDS,
        metrics::Unit::Seconds,
        "Age of the oldest audit record not yet accepted by the exporter's destination"
    );
    metrics::describe_counter!(EXPORT_EVENTS, "Exported audit events by outcome (sent, dropped as malformed)");
    metrics::describe_counter!(EXPORT_RETRIES, "Export batches sent again after a busy answer or a network error");
    metrics::describe_gauge!(EXPORT_STOPPED, "1 when the exporter stopped on an error that needs an operator");
    metrics::describe_counter!(POLICY_LOADS, "Policy set loads, at start-up and on reload, by result (ok, error)");
    metrics::describe_gauge!(POLICY_TEAMS, "Teams in the policy set now deciding");
    metrics::describe_counter!(CALLERS, "Callers by ingress and how they were identified");
    metrics::describe_gauge!(
        BUDGET_USED,
        "A team's use of a budget in its current window (requests, tokens, USD), as this instance last saw it"
    );
    metrics::describe_gauge!(BUDGET_LIMIT, "A team's limit for a budget (requests, tokens, USD)");
    metrics::describe_counter!(LIMIT_REACHED, "Requests that met a limit, by team, budget, scope and action");
    metrics::describe_gauge!(LIMITS_STORE_UP, "1 while the limits counter store answers");
    metrics::describe_counter!(LIMITS_STORE_ERRORS, "Failed reads and writes of the limits counter store");
    metrics::describe_gauge!(
        POLICY_LAST_RELOAD_SUCCESSFUL,
        "1 when the latest policy load succeeded; 0 while a broken edit is refused and the previous set decides"
    );
    metrics::describe_gauge!(
        POLICY_LAST_RELOAD_SUCCESS_TIMESTAMP,
        metrics::Unit::Seconds,
        "Unix time of the latest successful policy load"
    );
    metrics::describe_counter!(
        POLICY_MONITOR_MATCHES,
        "Matches of mode: monitor rules by team, rule and the action they would have taken (not applied)"
    );
    Ok(handle)
}

/// Decisions a request record can carry (`sluice` is sluice's own answers).
const DECISIONS: [&str; 5] = ["cloud", "local", "redact", "block", "error"];
/// Outcomes of a proxy CONNECT: tunnel, interception, and every refusal kind.
const PROXY_OUTCOMES: [&str; 15] = [
    "tunnel",
    "intercept",
    "intercept_by_sni",
    "auth_required",
    "app_refused",
    "bad_target",
    "connect_failed",
    "port",
    "private_address",
    "resolve",
    "not_tls",
    "hello_too_large",
    "bad_hello",
    "hello_timeout",
    "no_hello",
];
const LISTENER_OUTCOMES: [&str; 4] = ["over_limit", "first_byte_timeout", "preface_timeout", "idle_closed"];
const CLOUD_PROVIDERS: [&str; 3] = ["openai", "anthropic", "gemini"];

/// Register every series the shipped dashboards read, at zero, for the label
/// values known at start-up (teams from the identity config, the decisions,
/// providers, proxy outcomes, listeners, finding types), set the gauges and
/// `sluice_build_info`, so a fresh deployment shows zeros rather than "No
/// data". Call once, right after [`install`]. Histograms are registered
/// empty: the exporter renders their buckets, `_sum` and `_count` at zero.
pub fn register_known(config: &crate::config::Config) {
    use metrics::{counter, gauge, histogram};
    let features = if cfg!(feature = "cuda") { "cuda" } else { "cpu" };
    metrics::describe_gauge!(BUILD_INFO, "Always 1; the version and enabled features as labels");
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "features" => features).set(1.0);

    let mut teams: Vec<String> = vec!["default".into(), "anonymous".into(), "unknown".into()];
    teams.extend(config.identity.anonymous_team.iter().cloned());
    teams.extend(config.identity.tokens.iter().map(|t| t.team.clone()));
    teams.extend(config.identity.networks.iter().map(|n| n.team.clone()));
    teams.sort();
    teams.dedup();
    // Model labels as the request path bounds them: a price-table name,
    // `local` or `other`.
    let mut models: Vec<String> = vec!["local".into(), "other".into()];
    models.extend(config.prices.keys().cloned());
    models.sort();
    models.dedup();

    for team in &teams {
        for decision in DECISIONS {
            // A local decision the engine did not answer (overflow, no
            // engine) keeps the dialect's provider.
            let providers: &[&str] =
                if decision == "local" { &["local", "openai", "anthropic", "gemini"] } else { &CLOUD_PROVIDERS };
            // The status each decision usually answers with; others
            // appear when they first happen.
            let status = match decision {
                "block" => "403",
                "error" => "502",
                _ => "200",
            };
            for provider in providers {
                counter!(REQUESTS, "team" => team.clone(), "decision" => decision, "provider" => *provider,
                    "status" => status)
                .increment(0);
            }
        }
        for model in &models {
            for kind in ["input", "output"] {
                counter!(TOKENS, "team" => team.clone(), "model" => model.clone(), "type" => kind).increment(0);
            }
            counter!(COST_MICRO_USD, "team" => team.clone(), "model" => model.clone()).increment(0);
        }
    }
    for api in ["openai.chat_completions", "openai.responses", "anthropic.messages", "gemini.generate_content"] {
        for decision in DECISIONS {
            let _ = histogram!(REQUEST_DURATION, "api" => api, "decision" => decision);
        }
    }
    let _ = histogram!(INSPECTION_DURATION);
    for decision in ["cloud", "redact"] {
        let _ = histogram!(ADDED_LATENCY, "decision" => decision);
    }
    let kinds = crate::inspect::PII_KINDS
        .iter()
        .chain(crate::inspect::SECRET_KINDS)
        .chain(crate::inspect::SPECIAL_KINDS)
        .chain(crate::inspect::ENTITY_KINDS);
    for kind in kinds {
        counter!(FINDINGS, "type" => *kind).increment(0);
    }
    for provider in CLOUD_PROVIDERS {
        for kind in ["timeout", "connect", "request", "status"] {
            counter!(UPSTREAM_ERRORS, "provider" => provider, "kind" => kind).increment(0);
        }
        let _ = histogram!(GEN_AI_TIME_TO_FIRST_TOKEN, "gen_ai_provider_name" => provider);
        let _ = histogram!(GEN_AI_OPERATION_DURATION, "gen_ai_provider_name" => provider,
            "gen_ai_operation_name" => "chat");
        for kind in ["input", "output"] {
            let _ = histogram!(GEN_AI_TOKEN_USAGE, "gen_ai_token_type" => kind,
                "gen_ai_provider_name" => provider);
        }
    }
    counter!(AUDIT_WRITE_ERRORS).increment(0);
    counter!(AUDIT_WITHHELD).increment(0);
    gauge!(AUDIT_QUEUE_RECORDS).set(0.0);
    if config.audit.durability == crate::audit::Durability::Strict {
        let _ = histogram!(AUDIT_SYNC_SECONDS);
    }
    gauge!(LOCAL_QUEUE_DEPTH).set(0.0);
    counter!(LOCAL_TOKENS).increment(0);
    let _ = histogram!(LOCAL_TOKENS_PER_SECOND);
    let _ = histogram!(LOCAL_TIME_TO_FIRST_TOKEN);
    for outcome in PROXY_OUTCOMES {
        counter!(PROXY_CONNECTS, "outcome" => outcome).increment(0);
    }
    gauge!(PROXY_OPEN_CONNECTIONS).increment(0.0);
    gauge!(PROXY_OPEN_TUNNELS).increment(0.0);
    for outcome in ["minted", "cache_hit"] {
        counter!(PROXY_LEAF_CERTS, "outcome" => outcome).increment(0);
    }
    for listener in ["gateway", "admin", "proxy"] {
        for outcome in LISTENER_OUTCOMES {
            counter!(LISTENER_CONNECTIONS, "listener" => listener, "outcome" => outcome).increment(0);
        }
    }
    counter!(PROXY_TRAFFIC_CONNECTIONS, "app" => "other", "category" => "none").increment(0);
    for direction in ["up", "down"] {
        counter!(PROXY_TRAFFIC_BYTES, "app" => "other", "category" => "none", "direction" => direction).increment(0);
    }
    counter!(AI_REQUESTS, "app" => "other", "sanctioned" => "false", "inspected" => "false").increment(0);
    // The Splunk exporter's lag; zero until (and unless) it runs.
    for result in ["ok", "error"] {
        counter!(POLICY_LOADS, "result" => result).increment(0);
    }
    for ingress in ["gateway", "proxy"] {
        for source in ["token", "trusted_header", "network", "anonymous"] {
            counter!(CALLERS, "ingress" => ingress, "source" => source).increment(0);
        }
    }
    gauge!(EXPORT_LAG_RECORDS).increment(0.0);
    gauge!(EXPORT_LAG_SECONDS).increment(0.0);
}

/// The `status` label of [`REQUESTS`]: the HTTP status code, a bounded set.
/// The common codes are static, so the request path does not allocate.
pub fn status_label(code: u16) -> metrics::SharedString {
    let known = match code {
        200 => "200",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        408 => "408",
        413 => "413",
        415 => "415",
        421 => "421",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        _ => return metrics::SharedString::from(code.to_string()),
    };
    metrics::SharedString::const_str(known)
}
