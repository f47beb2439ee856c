//! The audit record of one request, filled in as it moves along, and the
//! one place a record is written ([`Sluice::record`]): every exit of the
//! request path (answer, refusal, relayed or generated body ending or
//! dropped, tunnel closing) ends there.

use super::*;
use crate::audit::MonitorNote;

/// The audit record being filled in as the request moves along.
pub(super) struct Trail {
    pub(super) record: AuditRecord,
    pub(super) started: Instant,
    pub(super) dialect: Dialect,
    /// The answer is a model list from a host the catalog does not know:
    /// read its first bytes for the self-hosted server that sent it.
    pub(super) sniff_models: bool,
    /// The request's budgets, charged with its usage when it is recorded.
    pub(super) charge: Option<crate::limits::Charge>,
}

impl Trail {
    /// An LLM request, before the caller is known.
    pub(super) fn for_llm(shape: Shape, client: SocketAddr, via: &Via, id: &RequestId) -> Trail {
        let mut trail = Trail::new(shape.name, shape.api, client, via.ingress(), id);
        trail.record.provider = via.provider(shape.api);
        if let Via::Proxy { origin, .. } = via {
            trail.record.host = origin.target().host.clone();
        }
        trail
    }

    /// The record's usage block, created on first use.
    pub(super) fn usage(&mut self) -> &mut crate::audit::UsageNote {
        self.record.usage.get_or_insert_with(Default::default)
    }

    pub(super) fn caller(&mut self, identity: &Identity) {
        self.record.team = identity.team.clone();
        self.record.user = identity.user.clone();
        tracing::Span::current().record("team", identity.team.as_str());
    }

    /// The decision and the signals behind it: numbers and names, never
    /// text; and what `mode: monitor` rules would have done.
    pub(super) fn decided(&mut self, signals: &Signals, decision: &Decision) {
        self.record.signals = Some(signal_summary(signals, decision));
        self.record.decision = decision.action.as_str().to_string();
        self.record.rule = decision.rule.clone();
        self.record.reason = decision.reason.clone();
        self.record.monitor = decision
            .monitor
            .iter()
            .map(|m| MonitorNote { rule: m.rule.clone(), action: m.action.as_str().to_string() })
            .collect();
        count_monitor_matches(&self.record.team, decision);
        tracing::Span::current().record("decision", decision.action.as_str());
    }

    /// A proxied request forwarded without inspection (not an LLM call).
    pub(super) fn forwarded(
        api: &str,
        headers: &HeaderMap,
        client: SocketAddr,
        identity: &Identity,
        origin: &Origin,
        id: &RequestId,
    ) -> Trail {
        Trail::proxied(api, dialect_of(headers), client, Some(identity), &origin.target().host, "forward", id)
    }

    /// A request at the forward proxy, for `host`, already decided.
    pub(super) fn proxied(
        api: &str,
        dialect: Dialect,
        client: SocketAddr,
        identity: Option<&Identity>,
        host: &str,
        decision: &str,
        id: &RequestId,
    ) -> Trail {
        let mut trail = Trail::new(api, dialect, client, Ingress::Proxy, id);
        if let Some(identity) = identity {
            trail.record.team = identity.team.clone();
            trail.record.user = identity.user.clone();
        }
        trail.record.host = host.to_string();
        trail.record.provider = provider_of_host(host).to_string();
        trail.record.decision = decision.to_string();
        trail
    }

    pub(super) fn new(api: &str, dialect: Dialect, client: SocketAddr, ingress: Ingress, id: &RequestId) -> Trail {
        Trail {
            record: AuditRecord {
                request_id: id.as_str().to_string(),
                time_unix_ms: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
                client_addr: client.to_string(),
                ingress: ingress.as_str().to_string(),
                api: api.to_string(),
                latency_us: Latencies::default(),
                ..AuditRecord::default()
            },
            started: Instant::now(),
            dialect,
            sniff_models: false,
            charge: None,
        }
    }
}

/// What remains to do once a relayed body is finished.
pub(super) struct Completion {
    pub(super) sluice: Arc<Sluice>,
    pub(super) trail: Trail,
    pub(super) upstream_started: Instant,
}

impl Completion {
    /// What the answer's body carried, for the shadow-AI monitor: its size,
    /// and (for a model list) the self-hosted server that sent it.
    pub(super) fn received(
        &mut self,
        bytes: u64,
        sniffed: Option<Vec<u8>>,
        tokens: Option<(Option<u64>, Option<u64>)>,
        first_byte: Option<Instant>,
    ) {
        let usage = self.trail.usage();
        usage.bytes_out = bytes;
        usage.ttft_ms = first_byte.map(|t| millis(t.saturating_duration_since(self.upstream_started)));
        if let Some((input, output)) = tokens {
            usage.tokens_in = input.unwrap_or(0);
            usage.tokens_out = output.unwrap_or(0);
        }
        let record = &mut self.trail.record;
        if let Some(server) = sniffed.as_deref().and_then(crate::shadow::monitor::server_of_models) {
            let mut ai = self.sluice.monitor.usage(None, true);
            ai.server = server.to_string();
            record.ai = Some(ai);
        }
        if let Some(ai) = record.ai.as_mut() {
            ai.bytes_down = bytes;
            ai.duration_ms = u64::try_from(self.trail.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            if let Some(download) = ai.download.as_mut().filter(|d| d.bytes == 0) {
                download.bytes = bytes;
            }
        }
    }

    /// Writes the record; the ticket resolves once it is durable.
    pub(super) fn finish(mut self, problem: Option<&str>) -> Durable {
        if let Some(problem) = problem {
            self.trail.record.reason = format!("{}; {problem}", self.trail.record.reason);
        }
        let upstream = self.upstream_started.elapsed();
        self.sluice.record(self.trail, Some(upstream))
    }
}

impl Sluice {
    /// Fail closed: nothing leaves unless its record can be written.
    #[allow(clippy::result_large_err)]
    pub(super) fn gate_on_audit(&self, trail: Trail) -> Result<Trail, Response<RespBody>> {
        match self.audit.check_writable() {
            Ok(()) => Ok(trail),
            Err(e) => {
                tracing::error!(error = %e, "audit log not writable; refusing to forward");
                let message = "sluice cannot write its audit log, so the request was not forwarded";
                Err(self.refuse_now(trail, Refusal::new(ErrorKind::LocalUnavailable, message)))
            }
        }
    }

    /// A whole answer, recorded; its body is held until the record is
    /// durable (see `held`).
    pub(super) fn answer(&self, mut trail: Trail, status: StatusCode, body: Bytes) -> Response<RespBody> {
        trail.record.status = status.as_u16();
        let durable = self.record(trail, None);
        json_answer(status, held_body(body, durable))
    }

    /// Write the audit record and metrics for a finished request. The
    /// ticket resolves once the record is durable; whoever answers the
    /// client holds the answer's last frame until then.
    pub(super) fn record(&self, mut trail: Trail, upstream: Option<Duration>) -> Durable {
        if let Some(upstream) = upstream {
            trail.record.latency_us.upstream = micros(upstream);
        }
        let total = trail.started.elapsed();
        trail.record.latency_us.total = micros(total);
        self.count_usage(&mut trail.record);
        self.settle_limits(&mut trail);
        let r = &trail.record;
        let team = if r.team.is_empty() { "unknown".to_string() } else { r.team.clone() };
        metrics::counter!(telemetry::REQUESTS, "team" => team, "decision" => r.decision.clone(),
            "provider" => r.provider.clone(), "status" => telemetry::status_label(r.status))
        .increment(1);
        metrics::histogram!(telemetry::REQUEST_DURATION, "api" => r.api.clone(), "decision" => r.decision.clone())
            .record(total.as_secs_f64());
        if matches!(r.decision.as_str(), "cloud" | "redact") && r.latency_us.upstream > 0 {
            let added = r.latency_us.total.saturating_sub(r.latency_us.upstream);
            metrics::histogram!(telemetry::ADDED_LATENCY, "decision" => r.decision.clone()).record(added as f64 / 1e6);
        }
        for (kind, n) in &r.findings {
            metrics::counter!(telemetry::FINDINGS, "type" => kind.clone()).increment(u64::from(*n));
        }
        if let Some(ai) = &r.ai {
            // `app` is a catalog id or one of the monitor's fixed names,
            // never a host name a client chose.
            let yes_no = |b: bool| if b { "true" } else { "false" };
            metrics::counter!(telemetry::AI_REQUESTS, "app" => ai.app.clone(), "sanctioned" => yes_no(ai.sanctioned),
                "inspected" => yes_no(ai.inspected))
            .increment(1);
        }
        self.audit.submit_or_fail(trail.record)
    }
}

pub(super) fn json_answer(status: StatusCode, body: RespBody) -> Response<RespBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// One count per monitor-mode rule that matched.
pub(super) fn count_monitor_matches(team: &str, decision: &Decision) {
    for m in &decision.monitor {
        metrics::counter!(telemetry::POLICY_MONITOR_MATCHES, "team" => team.to_string(), "rule" => m.rule.clone(),
            "action" => m.action.as_str())
        .increment(1);
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

impl Sluice {
    /// Price what went to the cloud and count tokens and cost, with the
    /// model label bounded to the price table's names (`local`, `other`).
    fn count_usage(&self, record: &mut AuditRecord) {
        let Some(usage) = record.usage.as_mut() else {
            return;
        };
        let cloud = matches!(record.decision.as_str(), "cloud" | "redact");
        if cloud && usage.cost_usd == 0.0 {
            usage.cost_usd = self.config.cost_usd(&record.model_used, usage.tokens_in, usage.tokens_out).unwrap_or(0.0);
        }
        if usage.tokens_in == 0 && usage.tokens_out == 0 {
            return;
        }
        let model = if record.provider == "local" {
            "local".to_string()
        } else {
            self.config.price_name(&record.model_used).unwrap_or("other").to_string()
        };
        let team = if record.team.is_empty() { "unknown".to_string() } else { record.team.clone() };
        let provider = record.provider.clone();
        for (kind, n) in [("input", usage.tokens_in), ("output", usage.tokens_out)] {
            metrics::counter!(telemetry::TOKENS, "team" => team.clone(), "model" => model.clone(), "type" => kind)
                .increment(n);
            metrics::histogram!(telemetry::GEN_AI_TOKEN_USAGE, "gen_ai_token_type" => kind,
                "gen_ai_provider_name" => provider.clone())
            .record(n as f64);
        }
        if usage.cost_usd > 0.0 {
            // Counters are integers: cost is counted in micro-dollars and
            // exposed in dollars by the recorder's scale below.
            metrics::counter!(telemetry::COST_MICRO_USD, "team" => team, "model" => model)
                .increment((usage.cost_usd * 1e6).round() as u64);
        }
        if let Some(ttft) = usage.ttft_ms {
            metrics::histogram!(telemetry::GEN_AI_TIME_TO_FIRST_TOKEN, "gen_ai_provider_name" => provider.clone())
                .record(ttft as f64 / 1000.0);
        }
        metrics::histogram!(telemetry::GEN_AI_OPERATION_DURATION, "gen_ai_provider_name" => provider,
            "gen_ai_operation_name" => "chat")
        .record(record.latency_us.total as f64 / 1e6);
    }
}

pub(super) fn micros(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}
